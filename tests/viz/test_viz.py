"""Label colouring, indexed PNGs (VOC format) and the diagnostic plots; every write is atomic."""
import numpy as np
import pytest
import torch
from PIL import Image

from seglab.viz import colorize, overlay, plot_confusion_matrix, plot_training_curves, save_label_png

PALETTE = [(128, 64, 128), (70, 70, 70), (220, 20, 60)]
LABELS = np.array([[0, 1, 2], [2, 255, 0]])


def test_colorize_maps_palette_and_ignore_black():
    rgb = np.asarray(colorize(torch.from_numpy(LABELS), PALETTE))
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, 2].tolist() == [220, 20, 60]
    assert rgb[1, 1].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="palette"):
        colorize(np.array([[3]]), PALETTE)


def test_overlay_alpha_endpoints():
    image = np.random.default_rng(0).integers(0, 256, (2, 3, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(overlay(image, LABELS, PALETTE, alpha=0.0)), image)
    assert np.array_equal(np.asarray(overlay(image, LABELS, PALETTE, alpha=1.0)),
                          np.asarray(colorize(LABELS, PALETTE)))
    half = np.asarray(overlay(image, LABELS, PALETTE, alpha=0.5)).astype(int)
    want = (image.astype(int) + np.asarray(colorize(LABELS, PALETTE)).astype(int)) / 2
    assert np.abs(half - want).max() <= 0.5


def test_save_label_png_round_trip(tmp_path):
    path = tmp_path / "sub" / "label.png"
    save_label_png(path, LABELS, PALETTE)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "P"
        assert np.array_equal(np.array(img), LABELS)
        assert img.getpalette()[: 3 * len(PALETTE)] == [v for rgb in PALETTE for v in rgb]
    assert [p.name for p in path.parent.iterdir()] == ["label.png"]      # no temp file left


def test_failed_label_write_leaves_nothing(tmp_path, monkeypatch):
    def broken_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG half")                  # a partial file, then the failure
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_label_png(tmp_path / "label.png", LABELS, PALETTE)
    assert list(tmp_path.iterdir()) == []


def assert_valid_png(path):
    assert path.stat().st_size > 0
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 100 and img.height > 100


def test_confusion_matrix_plot(tmp_path):
    cm = torch.tensor([[3, 1, 0], [1, 2, 1], [0, 0, 0]])      # last class without GT: row of zeros
    plot_confusion_matrix(cm, ["road", "car", "sky"], tmp_path / "cm.png")
    plot_confusion_matrix(cm.numpy(), ["road", "car", "sky"], tmp_path / "cm_counts.png", normalize=False)
    assert_valid_png(tmp_path / "cm.png")
    assert_valid_png(tmp_path / "cm_counts.png")
    with pytest.raises(ValueError):
        plot_confusion_matrix(cm, ["road", "car"], tmp_path / "bad.png")


def test_training_curves_plot(tmp_path):
    history = [{"epoch": e, "train_loss": 1.0 / e, "lr": 0.01 * (1 - e / 6)} for e in range(1, 6)]
    for row, miou in zip(history[1::2], [0.42, 0.57]):
        row["val_mIoU"] = miou
    plot_training_curves(history, tmp_path / "curves.png")
    plot_training_curves([{"epoch": 1, "train_loss": 0.7}], tmp_path / "one.png")
    assert_valid_png(tmp_path / "curves.png")
    assert_valid_png(tmp_path / "one.png")


def test_failed_plot_write_leaves_nothing(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken_savefig(self, fname, *args, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError):
        plot_training_curves([{"epoch": 1, "train_loss": 0.7}], tmp_path / "curves.png")
    with pytest.raises(RuntimeError):
        plot_confusion_matrix(np.eye(2), ["a", "b"], tmp_path / "cm.png")
    assert list(tmp_path.iterdir()) == []
