"""`seglab serve` over real HTTP (uvicorn on a loopback port): cards, predictions identical to `seglab
predict` with the model file's stored settings, the three reply formats, batching, the admission bound
(503 + Retry-After), a free event loop while the model runs, and one-line JSON errors for bad requests."""
import io
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from seglab.cli import main
from seglab.serve import build_app
from seglab.serve.app import ServeSettings, create_app
from seglab.serve.models import load_served_model
from serve_helpers import ServerThread, decode_map, get_json, photo, png, post_image, request

IMAGE = photo(48, 64)


@pytest.fixture(scope="module")
def server(tiny_model_file):
    with ServerThread(build_app([str(tiny_model_file)], device="cpu")) as s:
        yield s


def test_health_and_model_cards(server, tiny_model_file):
    status, health = get_json(server.port, "/health")
    assert status == 200 and health["status"] == "ok" and health["models"] == ["tiny"]
    status, body = get_json(server.port, "/models")
    card = body["models"][0]
    assert status == 200 and card["name"] == "tiny" and card["task"] == "semantic" and card["architecture"] == "bisenetv2"
    assert card["classes"] == ["sky", "road", "tree", "car"] and len(card["palette"]) == 4
    assert card["inference"]["tta"] == {"flip": True, "scales": [1.0]}, "the stored setting is in use"
    assert card["input"]["channels"] == 3 and card["input"]["scale"] == "resized to short side 32", "the training size"
    assert card["inference"]["resize"]["short_side"] == 32
    assert card["trained"] == {}, "an untrained file records no dataset or validation figure"


def test_labels_are_those_of_seglab_predict_with_the_stored_settings(server, tiny_model_file, tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(IMAGE).save(tmp_path / "in" / "street.png")
    assert main(["predict", "--checkpoint", str(tiny_model_file), str(tmp_path / "in" / "street.png"),
                 "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    expected = np.array(Image.open(tmp_path / "out" / "street.png"))
    status, headers, body = post_image(server.port, png(IMAGE), "format=label")
    assert status == 200 and headers["content-type"] == "image/png"
    labels = Image.open(io.BytesIO(body))
    assert labels.mode == "P" and np.array_equal(np.array(labels), expected)
    assert len(np.unique(expected)) > 1, "a label map with several classes makes the comparison count"
    # the same through the JSON view map, raw body or multipart form alike
    for multipart in (False, True):
        status, _, body = post_image(server.port, png(IMAGE), "map=1", multipart=multipart)
        reply = json.loads(body)
        assert status == 200 and np.array_equal(decode_map(reply["map"]), expected)
    # and the stored settings mattered: without the flip TTA, or at the photo's own size, the labels differ
    for override in ({"tta": "none"}, {"imgsz": "native"}):
        plain = load_served_model(str(tiny_model_file), device="cpu", **override)
        assert not np.array_equal(plain.predictor.predict_image(IMAGE).labels.numpy(), expected), override


def test_a_photo_of_another_size_in_a_batch_gets_the_labels_of_seglab_predict(tiny_model_file, tmp_path):
    """Photos of two sizes arriving together (one batch): each is resized to the model's scale on its own
    and gets the labels `seglab predict` writes for it."""
    images = {"small": photo(48, 64, seed=1), "wide": photo(40, 90, seed=2)}
    (tmp_path / "in").mkdir()
    for name, image in images.items():
        Image.fromarray(image).save(tmp_path / "in" / f"{name}.png")
    assert main(["predict", "--checkpoint", str(tiny_model_file), str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                 "--device", "cpu"]) == 0
    gate, server = gated_server(tiny_model_file, max_batch=4, batch_wait_ms=5, queue_limit=8)
    with server, ThreadPoolExecutor(3) as pool:
        first = pool.submit(post_image, server.port, png(photo(48, 64, seed=9)), "format=label")
        assert gate.entered.wait(30)
        waiting = {name: pool.submit(post_image, server.port, png(image), "format=label")
                   for name, image in images.items()}
        deadline = time.monotonic() + 30
        while get_json(server.port, "/health")[1]["in_progress"] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        gate.gate.set()
        assert first.result()[0] == 200
        for name, future in waiting.items():
            status, headers, body = future.result()
            assert status == 200 and headers["x-seglab-batch"] == "2", "the two waiting photos went together"
            expected = np.array(Image.open(tmp_path / "out" / f"{name}.png"))
            assert np.array_equal(np.array(Image.open(io.BytesIO(body))), expected), name


def test_json_histogram_and_overlay(server):
    status, _, body = post_image(server.port, png(IMAGE), "map=1")
    reply = json.loads(body)
    assert status == 200 and reply["model"] == "tiny" and reply["task"] == "semantic"
    assert (reply["width"], reply["height"]) == (64, 48)
    labels = decode_map(reply["map"])
    counts = np.bincount(labels.reshape(-1), minlength=4)
    assert [c["pixels"] for c in reply["classes"]] == sorted(counts[counts > 0].tolist(), reverse=True)
    assert {c["name"] for c in reply["classes"]} == {["sky", "road", "tree", "car"][i] for i in np.flatnonzero(counts)}
    assert sum(c["share"] for c in reply["classes"]) == pytest.approx(1.0, abs=1e-5)
    assert reply["timing"]["batch"] >= 1 and reply["timing"]["predict_ms"] > 0
    from seglab.data.palettes import default_palette
    from seglab.viz import overlay

    status, _, body = post_image(server.port, png(IMAGE), "format=overlay&alpha=0.3")
    assert status == 200
    assert np.array_equal(np.array(Image.open(io.BytesIO(body))), np.asarray(overlay(IMAGE, labels, default_palette(4), 0.3)))


@pytest.mark.parametrize("query, body, status, words", [
    ("model=nope", "png", 404, "unknown model 'nope'"),
    ("format=xml", "png", 400, "format must be one of json, label, overlay"),
    ("alpha=1.5", "png", 400, "alpha must be a number in [0, 1]"),
    ("alpha=nan", "png", 400, "alpha must be"),
    ("map=maybe", "png", 400, "map must be 1 or 0"),
    ("colour=red", "png", 400, "unknown query parameter 'colour'"),
    ("score_thresh=0.5", "png", 400, "unknown query parameter 'score_thresh' for semantic model"),
    ("format=json&format=label", "png", 400, "'format' is given twice"),
    ("", "text", 415, "not an image"),
    ("", "empty", 400, "empty upload"),
    ("", "truncated", 400, "truncated or corrupt"),
    ("", "bomb", 413, "10000000000 pixels"),
])
def test_bad_requests_get_one_line_json_errors(server, query, body, status, words):
    from serve_bad_inputs import bad_input

    got, headers, reply = post_image(server.port, bad_input(body, png(IMAGE)), query)
    assert got == status and headers["content-type"] == "application/json"
    error = json.loads(reply)["error"]
    assert words in error and "\n" not in error
    assert get_json(server.port, "/health")[0] == 200


def test_wrong_routes_and_methods_are_json_errors(server):
    for method, path, status in (("GET", "/predict", 405), ("GET", "/nothing", 404), ("DELETE", "/models", 405)):
        got, headers, body = request(server.port, method, path)
        assert got == status and "error" in json.loads(body)
    got, headers, body = request(server.port, "GET", "/")
    assert got == 200 and headers["content-type"].startswith("text/html") and b"<canvas" in body
    assert "default-src 'none'" in headers["content-security-policy"]
    assert b"http://" not in body and b"https://" not in body, "the page loads nothing from elsewhere"


def test_upload_and_pixel_limits(tiny_model_file):
    settings = ServeSettings(max_upload_bytes=20_000, max_pixels=48 * 64 - 1)
    with ServerThread(build_app([str(tiny_model_file)], device="cpu", settings=settings)) as s:
        big = png(photo(160, 240))
        status, _, body = post_image(s.port, big)
        assert status == 413 and "limit of 20000 bytes" in json.loads(body)["error"]
        # without a Content-Length (chunked), the limit holds as the body streams in
        def chunks():
            for i in range(0, len(big), 4000):
                yield big[i:i + 4000]
        status, _, body = request(s.port, "POST", "/predict", chunks())  # http.client sends it chunked
        assert status == 413 and "limit of 20000 bytes" in json.loads(body)["error"]
        status, _, body = post_image(s.port, png(IMAGE))
        assert status == 413 and "3072 pixels, more than the server's limit of 3071" in json.loads(body)["error"]


class GatedPredictor:
    """The real predictor behind a gate the test opens (so requests pile up while the model 'runs')."""

    def __init__(self, inner):
        self.inner, self.model = inner, inner.model
        self.gate, self.entered = threading.Event(), threading.Event()

    def predict_image(self, image):
        self.entered.set()
        assert self.gate.wait(60)
        return self.inner.predict_image(image)

    def predict_images(self, images):  # the batched path the server takes for several images
        self.entered.set()
        assert self.gate.wait(60)
        return self.inner.predict_images(images)


def gated_server(tiny_model_file, **settings):
    served = load_served_model(str(tiny_model_file), device="cpu")
    served.predictor = GatedPredictor(served.predictor)
    return served.predictor, ServerThread(create_app([served], ServeSettings(**settings)))


def test_waiting_requests_are_batched_and_the_event_loop_stays_free(tiny_model_file):
    gate, server = gated_server(tiny_model_file, max_batch=4, batch_wait_ms=5, queue_limit=16)
    data = png(IMAGE)
    with server, ThreadPoolExecutor(4) as pool:
        first = pool.submit(post_image, server.port, data)
        assert gate.entered.wait(30)
        rest = [pool.submit(post_image, server.port, data) for _ in range(3)]
        deadline = time.monotonic() + 30
        while get_json(server.port, "/health")[1]["in_progress"] < 4:  # answered while the model is busy
            assert time.monotonic() < deadline
            time.sleep(0.02)
        t0 = time.monotonic()
        assert get_json(server.port, "/models")[0] == 200 and time.monotonic() - t0 < 5
        gate.gate.set()
        replies = [json.loads(f.result()[2]) for f in [first, *rest]]
    assert replies[0]["timing"]["batch"] == 1
    assert [r["timing"]["batch"] for r in replies[1:]] == [3, 3, 3], "the three waiting requests went together"
    assert all(r["classes"] == replies[0]["classes"] for r in replies)


def test_beyond_the_queue_limit_503_with_retry_after(tiny_model_file):
    gate, server = gated_server(tiny_model_file, max_batch=1, queue_limit=2)
    data = png(IMAGE)
    with server, ThreadPoolExecutor(4) as pool:
        admitted = [pool.submit(post_image, server.port, data) for _ in range(2)]
        deadline = time.monotonic() + 30
        while get_json(server.port, "/health")[1]["in_progress"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        status, headers, body = post_image(server.port, data)
        assert status == 503 and int(headers["retry-after"]) >= 1
        assert "limit is 2" in json.loads(body)["error"]
        gate.gate.set()
        assert [f.result()[0] for f in admitted] == [200, 200]
        assert post_image(server.port, data)[0] == 200, "free again once the queue drains"


def test_instance_model_segments_with_class_score_box_and_rle(tmp_path):
    from seglab.data.coco_masks import rle_to_mask
    from serve_helpers import save_tiny_model

    path = save_tiny_model(tmp_path / "inst.safetensors", "mask_rcnn_resnet18_fpn", num_classes=3,
                           classes=["bg", "cat", "dog"], width=8, fpn_channels=16, representation_size=32,
                           mask_channels=16, mask_layers=1, anchor_sizes=[[16], [32], [64], [128], [256]],
                           rpn_post_nms_top_n_test=20, box_score_thresh=0.0)
    with ServerThread(build_app([str(path)], device="cpu")) as s:
        status, _, body = post_image(s.port, png(IMAGE), "score_thresh=0&map=1")
        reply = json.loads(body)
        assert status == 200 and reply["task"] == "instance" and reply["segments"], "an untrained head still detects"
        scores = [seg["score"] for seg in reply["segments"]]
        assert scores == sorted(scores, reverse=True)
        seg = reply["segments"][0]
        assert seg["name"] in ("bg", "cat", "dog") and len(seg["box"]) == 4 and len(seg["bbox"]) == 4
        mask = rle_to_mask(seg["segmentation"], backend="numpy")
        assert mask.shape == (48, 64) and mask.sum() == seg["area"]
        view = decode_map(reply["map"])
        assert (view == 1).sum() == seg["pixels"], "the top segment is fully visible in the view map"
        threshold = (scores[0] + scores[-1]) / 2
        fewer = json.loads(post_image(s.port, png(IMAGE), f"score_thresh={threshold}")[2])["segments"]
        assert 0 < len(fewer) < len(scores) and all(x["score"] >= threshold for x in fewer)
        status, _, body = post_image(s.port, png(IMAGE), "score_thresh=0&format=label")
        assert status == 200 and np.array_equal(np.array(Image.open(io.BytesIO(body))), view)
        assert post_image(s.port, png(IMAGE), "format=overlay")[0] == 200
        status, _, body = post_image(s.port, png(IMAGE), "score_thresh=2")
        assert status == 400 and "score_thresh must be a number in [0, 1]" in json.loads(body)["error"]


def test_panoptic_and_joint_models(tmp_path):
    from seglab.data.panoptic import rgb2id
    from serve_helpers import save_tiny_model

    pan = save_tiny_model(tmp_path / "pan.safetensors", "panoptic_fpn_resnet18", num_classes=3, num_things=1,
                          width=8, fpn_channels=16, representation_size=32, mask_channels=16, mask_layers=1,
                          anchor_sizes=[[16], [32], [64], [128], [256]], rpn_post_nms_top_n_test=20,
                          box_score_thresh=0.0, semantic_channels=8, panoptic_score_thresh=0.0, stuff_area_limit=0)
    joint = save_tiny_model(tmp_path / "joint.safetensors", "joint_resnet18", num_classes=3, width=8,
                            label_spaces={"semantic": 3, "geometric": 2})
    with ServerThread(build_app([str(pan), f"scene={joint}"], device="cpu")) as s:
        status, _, body = post_image(s.port, png(IMAGE), "model=pan&map=1")
        reply = json.loads(body)
        assert status == 200 and reply["task"] == "panoptic" and reply["segments"]
        view = decode_map(reply["map"])
        assert {seg["id"] for seg in reply["segments"]} == set(np.unique(view[view > 0]).tolist())
        assert sum(seg["pixels"] for seg in reply["segments"]) == (view > 0).sum()
        status, _, body = post_image(s.port, png(IMAGE), "model=pan&format=label")
        assert status == 200 and np.array_equal(rgb2id(np.array(Image.open(io.BytesIO(body)))), view)

        status, _, body = post_image(s.port, png(IMAGE), "model=scene&space=geometric&map=1")
        reply = json.loads(body)
        assert status == 200 and reply["task"] == "joint" and reply["space"] == "geometric"
        assert set(reply["spaces"]) == {"semantic", "geometric"} and decode_map(reply["map"]).max() < 2
        status, _, body = post_image(s.port, png(IMAGE), "model=scene&space=depth")
        assert status == 400 and "space must be one of semantic, geometric" in json.loads(body)["error"]
        status, _, body = post_image(s.port, png(IMAGE))
        assert status == 400 and "say which model" in json.loads(body)["error"]
        cards = {c["name"]: c for c in get_json(s.port, "/models")[1]["models"]}
        assert cards["scene"]["spaces"]["geometric"]["classes"] == ["0", "1"] and cards["pan"]["task"] == "panoptic"


OPENED: list = []   # files opened while RECORDING (an audit hook cannot be removed, so it is installed once)
RECORDING = threading.Event()


def record_open(event: str, args) -> None:
    if RECORDING.is_set() and event in ("open", "os.open", "tempfile.mkstemp", "tempfile.mkdtemp", "os.mkdir"):
        OPENED.append((event, args[0] if args else None))


def test_uploads_never_touch_the_disk(server):
    """A 2 MiB multipart upload (Starlette's form parser would spool it to a temporary file) whose file name
    is a path: while the server handles it, no file is opened or created, and that name is never used."""
    if not getattr(record_open, "installed", False):
        sys.addaudithook(record_open)
        record_open.installed = True
    big = png(np.random.default_rng(0).integers(0, 256, (800, 900, 3), dtype=np.uint8))
    assert len(big) > 2**21
    for query in ("", "format=label", "format=overlay"):  # warm-up: lazy imports open their modules
        assert post_image(server.port, big, query, multipart=True)[0] == 200
    assert post_image(server.port, b"not an image", multipart=True)[0] == 415  # Pillow loads every plug-in
    OPENED.clear()
    RECORDING.set()
    try:
        import tempfile

        with tempfile.SpooledTemporaryFile(max_size=10) as spool:  # what a spooling form parser would do
            spool.write(b"x" * 100)
        assert OPENED, "the audit hook sees files being created"
        OPENED.clear()
        for query in ("", "format=label", "format=overlay"):
            status, _, _ = post_image(server.port, big, query, multipart=True, filename="../../tmp/seglab_probe.png")
            assert status == 200
        status, _, body = post_image(server.port, b"not an image", filename="/etc/passwd", multipart=True)
        assert status == 415
    finally:
        RECORDING.clear()
    assert OPENED == [], f"the server opened files while handling uploads: {OPENED[:5]}"


def test_an_exported_onnx_file_is_served_as_seglab_predict_runs_it(tmp_path):
    """`--model model.onnx`: the exported file (onnxruntime, its metadata for classes and the training
    size) gives the labels `seglab predict --checkpoint model.onnx` writes."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install -e '.[onnx]'")
    from seglab.export import export_model
    from serve_helpers import save_tiny_model

    from .conftest import TINY_SEMANTIC

    source = save_tiny_model(tmp_path / "tiny.safetensors", "bisenetv2", num_classes=4, train_size=[32, 40],
                             **TINY_SEMANTIC)
    onnx = export_model(str(source), "onnx", out=str(tmp_path / "street.onnx"), dynamic=True).path
    (tmp_path / "in").mkdir()
    Image.fromarray(IMAGE).save(tmp_path / "in" / "street.png")
    assert main(["predict", "--checkpoint", str(onnx), str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0
    with ServerThread(build_app([str(onnx)], device="cpu")) as s:
        card = get_json(s.port, "/models")[1]["models"][0]
        assert card["name"] == "street" and card["source"] == "street.onnx" and card["input"]["scale"] == "resized to short side 32"
        status, _, body = post_image(s.port, png(IMAGE), "format=label")
        assert status == 200
        assert np.array_equal(np.array(Image.open(io.BytesIO(body))), np.array(Image.open(tmp_path / "out" / "street.png")))
