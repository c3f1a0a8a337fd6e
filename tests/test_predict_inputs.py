"""`seglab predict` on any input a user has: RGBA, grayscale, palette, 16-bit and EXIF-rotated photos
(converted with a note), nested folders (mirrored in --out), a video (an overlay video, label PNGs per
frame on request), the default output folder, outputs that never overwrite inputs, legends. The real-photo
checks (a phone-rotated and an upscaled CamVid frame) use the shipped model and skip without ../shared."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import seglab
from seglab.cli import main

TINY = {"width_mult": 0.25, "head_channels": 16}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    model = seglab.create_model("bisenetv2", num_classes=3, **TINY).eval()
    return seglab.save_model(model, tmp_path_factory.mktemp("m") / "m.safetensors", classes=["sky", "road", "car"],
                             palette=[[0, 0, 255], [128, 128, 128], [255, 0, 0]], extra={"train_size": [48, 64]})


def _rgb(h=48, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_photos_of_any_mode_are_converted_with_a_note(model_file, tmp_path, capsys):
    photos = tmp_path / "in"
    photos.mkdir()
    Image.fromarray(np.dstack([_rgb(), np.full((48, 64), 200, np.uint8)]), "RGBA").save(photos / "rgba.png")
    Image.fromarray(_rgb()[:, :, 0]).save(photos / "gray.png")
    Image.fromarray(_rgb()).convert("P").save(photos / "palette.png")
    Image.fromarray(_rgb()[:, :, 0].astype(np.uint16) * 200).save(photos / "deep.png")
    Image.fromarray(_rgb()).convert("LA").save(photos / "la.png")
    assert main(["predict", "--checkpoint", str(model_file), str(photos), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    for name, what in [("rgba", "RGBA image converted to RGB (alpha dropped)"), ("gray", "grayscale image"),
                       ("palette", "palette image"), ("deep", "I;16 image scaled to 8 bits"), ("la", "LA image")]:
        assert f"{name}.png: {what}" in out
        labels = np.array(Image.open(tmp_path / "o" / f"{name}.png"))
        assert labels.shape == (48, 64) and labels.max() < 3
        assert (tmp_path / "o" / f"{name}_overlay.png").is_file()
    assert "predicting with bisenetv2" in out and "short side 48" in out


def test_nested_folders_are_mirrored_and_the_default_out_is_numbered(model_file, tmp_path, monkeypatch, capsys):
    for rel in ["a.png", "x/b.png", "x/y/c.jpg"]:
        (tmp_path / "photos" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_rgb()).save(tmp_path / "photos" / rel)
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--checkpoint", str(model_file), "photos"]) == 0
    assert main(["predict", "--checkpoint", str(model_file), "photos/x/b.png"]) == 0
    out = capsys.readouterr().out
    first, second = Path("runs/predict/1"), Path("runs/predict/2")
    assert {p.relative_to(first).as_posix() for p in first.rglob("*.png")} == {
        "a.png", "a_overlay.png", "x/b.png", "x/b_overlay.png", "x/y/c.png", "x/y/c_overlay.png"}
    assert (second / "b.png").is_file() and "runs/predict/2" in out


def test_outputs_never_overwrite_the_inputs(model_file, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_rgb()).save(photos / "x.png")
    before = (photos / "x.png").read_bytes()
    assert main(["predict", "--checkpoint", str(model_file), str(photos), "--out", str(photos)]) == 2
    err = capsys.readouterr().err
    assert "output folder" in err and len(err.strip().splitlines()) == 1
    assert (photos / "x.png").read_bytes() == before and sorted(p.name for p in photos.iterdir()) == ["x.png"]


def test_video_gives_an_overlay_video_and_label_pngs_per_frame(model_file, tmp_path, capsys):
    import cv2

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    for i in range(6):
        writer.write(_rgb(seed=i)[:, :, ::-1])
    writer.release()
    assert main(["predict", "--checkpoint", str(model_file), str(video), "--out", str(tmp_path / "o"),
                 "--save-frames"]) == 0
    assert "6 frames" in capsys.readouterr().out
    result = cv2.VideoCapture(str(tmp_path / "o" / "clip_overlay.mp4"))
    assert int(result.get(cv2.CAP_PROP_FRAME_COUNT)) == 6 and result.get(cv2.CAP_PROP_FPS) == 5.0
    ok, frame = result.read()
    assert ok and frame.shape == (48, 64, 3)
    frames = sorted((tmp_path / "o" / "clip").glob("*.png"))
    assert [f.name for f in frames] == [f"{i:06d}.png" for i in range(1, 7)]
    assert np.array(Image.open(frames[0])).shape == (48, 64)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    assert main(["predict", "--checkpoint", str(model_file), str(bad), "--out", str(tmp_path / "b")]) == 2
    assert "broken.mp4" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_overlays_carry_a_legend_of_the_classes_present(model_file, tmp_path):
    from seglab.inference.files import SemanticWriter
    from seglab.structures import SemanticResult

    labels = torch.zeros(120, 160, dtype=torch.long)
    labels[60:, :] = 2  # sky and car, no road
    writer = SemanticWriter(tmp_path, palette=[[0, 0, 255], [128, 128, 128], [255, 0, 0]], classes=["sky", "road", "car"])
    picture = writer.render(np.full((120, 160, 3), 255, np.uint8), SemanticResult(labels=labels))
    corner = picture[:30, :60]
    assert (corner == [0, 0, 255]).all(-1).any() and (corner == [255, 0, 0]).all(-1).any()   # the swatches
    assert not (corner == [128, 128, 128]).all(-1).any()                                      # no absent class
    assert (picture[100:, 100:] == np.round(0.5 * 255 + 0.5 * np.array([255, 0, 0]))).all()  # overlay elsewhere


def _camvid_frame(shared_dir) -> Path:
    return sorted((shared_dir / "data" / "camvid" / "val").glob("*.png"))[10]


def test_real_phone_photo_is_segmented_upright(shared_dir, tmp_path):
    frame = _camvid_frame(shared_dir)
    upright = np.array(Image.open(frame).convert("RGB"))
    img = Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=-1)))  # stored turned, as a phone does
    exif = img.getexif()
    exif[0x0112] = 8  # "rotate 90 degrees counter-clockwise to view"
    img.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    Image.fromarray(upright).save(tmp_path / "upright.jpg", quality=100)
    a = seglab.predict(tmp_path / "phone.jpg", model="bisenetv2.camvid").labels
    b = seglab.predict(tmp_path / "upright.jpg", model="bisenetv2.camvid").labels
    assert a.shape == (360, 480) and (a == b).float().mean() > 0.99


def test_real_photo_at_four_times_the_training_size_gets_the_frames_labels(shared_dir):
    """A 1920x1440 photo of a CamVid street: resized to the training scale by default, its labels are those
    of the 480x360 frame; predicted at its own size (--scale 1) they are far worse."""
    frame = np.array(Image.open(_camvid_frame(shared_dir)).convert("RGB"))
    big = np.array(Image.fromarray(frame).resize((1920, 1440), Image.BICUBIC))
    reference = seglab.predict(frame, model="bisenetv2.camvid", tta="none").labels
    default = seglab.predict(big, model="bisenetv2.camvid", tta="none").labels
    native = seglab.predict(big[::2, ::2], model="bisenetv2.camvid", tta="none", scale=1.0).labels  # 2x, to save time
    small = torch.nn.functional.interpolate(default[None, None].float(), size=(360, 480), mode="nearest")[0, 0].long()
    small_native = torch.nn.functional.interpolate(native[None, None].float(), size=(360, 480), mode="nearest")[0, 0].long()
    agree_default = (small == reference).float().mean().item()
    agree_native = (small_native == reference).float().mean().item()
    print(f"agreement with the 480x360 frame's labels: default {agree_default:.3f}, at 2x own size {agree_native:.3f}")
    assert default.shape == (1440, 1920) and agree_default > 0.95 and agree_native < agree_default - 0.05
