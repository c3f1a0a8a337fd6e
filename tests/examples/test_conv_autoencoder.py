"""examples/conv_autoencoder.py: the lecture's convolutional auto-encoder (seed 002) learns to reconstruct
seglab's synthetic images through seglab's training loop: its loss falls, and on held-out images it beats
the mean training image."""
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


def test_seglab_s_loop_trains_it_loss_falls_and_it_beats_the_mean_image(example, data, tmp_path):
    """Through seglab.engine.loop.train with the example's ReconstructionTask: the training MSE falls,
    validation runs the task's evaluator, and the held-out error ends under half the mean image's."""
    torch.manual_seed(0)
    cfg = example.autoencoder_config(data, epochs=8, batch_size=4, lr=5e-3, crop_size=(48, 48), out_dir=tmp_path)
    result = example.train_loop(cfg, task=example.ReconstructionTask(), progress=False, log=lambda s: None)
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0], losses
    assert result.best_key == "PSNR" and (tmp_path / "best.safetensors").is_file()
    model = example.ConvAutoencoder(3, 4)
    model.load_state_dict(example.load_checkpoint(result.last_path)["model"])
    train_images, val_images = example.load_images(data, "train"), example.load_images(data, "val")
    mse = example.reconstruction_mse(model, val_images)
    assert mse == pytest.approx(result.history[-1]["val_mse"], rel=1e-4)  # the loop's evaluator agrees
    assert mse < 0.5 * example.mean_image_mse(train_images, val_images)


def test_predictor_pads_sides_that_are_not_multiples_of_4(example):
    model = example.ConvAutoencoder(3, 4).eval()
    out = example.ReconstructionPredictor(model).predict_tensor(torch.rand(3, 30, 37))
    assert out.shape == (3, 30, 37)


def test_command_line_run(example, data, tmp_path, capsys):
    assert example.main(["--data", str(data), "--epochs", "2", "--crop", "48", "--out", str(tmp_path),
                         "--threads", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["epoch"] for line in lines[:-1]] == [1, 2]
    assert {"val_mse", "mean_image_mse", "parameters"} <= set(lines[-1])
    assert (tmp_path / "reconstructions.png").is_file()
