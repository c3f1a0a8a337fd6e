"""examples/conv_autoencoder.py: the lecture's convolutional auto-encoder (seed 002) learns to reconstruct
seglab's synthetic images: its loss falls, and on held-out images it beats the mean training image."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from seglab.data import generate_synthetic

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "conv_autoencoder.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("conv_autoencoder", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("synthetic"), num_train=32, num_val=8, size=(48, 48))


def test_the_lecture_s_layers(example):
    model = example.ConvAutoencoder(3, 4)
    x = torch.rand(2, 3, 48, 48)
    code = model.encode(x)
    assert code.shape == (2, 4, 12, 12)  # 4 channels at 1/4 resolution
    out = model(x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1  # sigmoid output
    convs = [(m.in_channels, m.out_channels, m.kernel_size) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [(3, 16, (3, 3)), (16, 4, (3, 3)), (4, 16, (3, 3)), (16, 3, (3, 3))]


def test_reconstruction_loss_falls_and_beats_the_mean_image(example, data):
    torch.manual_seed(0)
    train_images, val_images = example.load_images(data, "train"), example.load_images(data, "val")
    assert train_images.shape == (32, 3, 48, 48) and 0 <= train_images.min() and train_images.max() <= 1
    model = example.ConvAutoencoder(3, 4)
    history = example.train(model, train_images, epochs=20, batch_size=8, lr=5e-3)
    assert history[-1] < 0.5 * history[0], history
    mse = example.reconstruction_mse(model, val_images)
    baseline = example.mean_image_mse(train_images, val_images)
    assert mse < 0.5 * baseline, (mse, baseline)


def test_command_line_run(example, data, tmp_path, capsys):
    assert example.main(["--data", str(data), "--epochs", "2", "--out", str(tmp_path), "--threads", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["epoch"] for line in lines[:-1]] == [1, 2]
    assert {"val_mse", "mean_image_mse", "parameters"} <= set(lines[-1])
    assert (tmp_path / "reconstructions.png").is_file()
