"""The one-line Python API: `seglab.predict(source, model=...)` and `Predictor.from_pretrained(...)`, for
every kind of source (path, folder, PIL image, array, tensor, list) and for semantic, instance and
panoptic models, with the model's stored settings applied as `seglab predict` applies them."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_settings import load_tiny_settings

import seglab
from seglab.errors import SeglabError
from seglab.inference import Predictor, TTAPredictor
from seglab.inference.scale import InputScale
from seglab.structures import InstanceResult, PanopticResult, SemanticResult

TINY = {"width_mult": 0.25, "head_channels": 16}


@pytest.fixture(scope="module")
def semantic_file(tmp_path_factory):
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("api")
    model = seglab.create_model("bisenetv2", num_classes=4, **TINY).eval()
    return seglab.save_model(model, tmp / "m.safetensors", classes=["a", "b", "c", "d"],
                             palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]],
                             extra={"train_size": [48, 64], "inference": {"tta": {"flip": True, "scales": [1.0]}}})


def _images(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i, rel in enumerate(["x.png", "sub/y.png", "sub/z.jpg"]):
        p = tmp_path / "photos" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_from_pretrained_applies_the_stored_settings(semantic_file):
    predictor = Predictor.from_pretrained(semantic_file, device="cpu")
    assert isinstance(predictor, TTAPredictor) and predictor.flip        # stored flip TTA
    assert predictor.resize == InputScale(short_side=48)                 # the training size's short side
    assert any("folded" in n for n in predictor.notes)                   # the fast path, and it says so
    assert Predictor.from_pretrained(semantic_file, tta="none", scale=1.0).resize == InputScale(factor=1.0)


def test_every_kind_of_source(semantic_file, tmp_path):
    paths = _images(tmp_path)
    predictor = Predictor.from_pretrained(semantic_file, device="cpu")
    one = predictor(paths[0])
    assert isinstance(one, SemanticResult) and one.labels.shape == (96, 128) and one.probs is None
    assert one.path == str(paths[0])
    array = np.array(Image.open(paths[0]))
    by_kind = [predictor(array), predictor(Image.open(paths[0])), predictor(torch.from_numpy(array).permute(2, 0, 1)),
               predictor(torch.from_numpy(array).permute(2, 0, 1).float() / 255)]
    for r in by_kind:  # the same picture, whatever it is wrapped in
        assert torch.equal(r.labels, one.labels)
    folder = predictor(tmp_path / "photos", probs=True)
    assert [Path(r.path).name for r in folder] == ["x.png", "y.png", "z.jpg"]
    assert all(r.probs.shape == (4, 96, 128) for r in folder)
    assert torch.allclose(folder[0].probs.sum(0), torch.ones(96, 128), atol=1e-4)
    mixed = predictor([paths[1], array, torch.zeros(2, 3, 40, 50, dtype=torch.uint8)])
    assert [r.labels.shape for r in mixed] == [(96, 128), (96, 128), (40, 50), (40, 50)]
    with pytest.raises(SeglabError, match="uint8"):
        predictor(np.zeros((10, 10, 3), np.float64))


def test_seglab_predict_one_line_equals_the_predictor_and_batches_same_size_images(semantic_file, tmp_path):
    paths = _images(tmp_path)
    results = seglab.predict(paths, model=semantic_file)
    predictor = Predictor.from_pretrained(semantic_file)
    singles = [predictor(p) for p in paths]
    for batched, single in zip(results, singles):  # batching does not change the labels
        assert (batched.labels == single.labels).float().mean() > 0.999
    calls = []
    predictor.model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    predictor(paths, batch_size=8)
    assert calls == [6]  # three same-size images and their mirrors in one pass


def test_a_video_is_refused_with_where_to_predict_it(semantic_file, tmp_path):
    with pytest.raises(SeglabError, match="video"):
        seglab.predict(tmp_path / "clip.mp4", model=semantic_file)


@pytest.mark.parametrize("name, folder, kind", [("yolact_resnet18", "tiny_instance", InstanceResult),
                                                ("upsnet_resnet18", "tiny_panoptic", PanopticResult)])
def test_instance_and_panoptic_models(tmp_path, name, folder, kind):
    kwargs = load_tiny_settings(folder)[name]
    num_classes = 4
    extra = {"num_things": 2} if kind is PanopticResult else {}
    model = seglab.create_model(name, num_classes=num_classes, **kwargs, **extra).eval()
    path = seglab.save_model(model, tmp_path / "m.safetensors", classes=list("abcd"), extra={"train_size": [32, 32]})
    image = np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    result = seglab.predict(image, model=path)
    assert isinstance(result, kind)
    if kind is InstanceResult:
        assert result.masks.shape[1:] == (64, 80)                  # masks back at the image's size
        assert (result.boxes[:, 2] <= 80 + 1e-3).all() and (result.boxes[:, 3] <= 64 + 1e-3).all()
    else:
        assert result.segments.shape == (64, 80)
        ids, counts = result.segments.unique(return_counts=True)
        area = dict(zip(ids.tolist(), counts.tolist()))
        assert all(info["area"] == area[info["id"]] for info in result.segments_info)
    with pytest.raises(SeglabError, match="probabilities"):
        seglab.predict(image, model=path, probs=True)
    with pytest.raises(SeglabError, match="--tta"):
        seglab.predict(image, model=path, tta="flip")
