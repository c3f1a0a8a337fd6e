"""The convolutional auto-encoder of the lecture on image segmentation (seed 002, "Convolutional
Auto-Encoder"), trained to reconstruct seglab's synthetic images: a teaching example of the
encoder-decoder ("autoencoder-style") shape that SegNet and DeconvNet give a segmentation head.

The network is the lecture's, layer for layer (its second version, the 4-channel code):
  encoder: conv 3x3 (C -> 16) + ReLU, max-pool 2x2; conv 3x3 (16 -> 4) + ReLU, max-pool 2x2
           -> the code: 4 channels at 1/4 resolution (12x fewer numbers than an RGB image);
  decoder: nearest-neighbour upsampling x2, conv 3x3 (4 -> 16) + ReLU; upsampling x2, conv 3x3
           (16 -> C) + sigmoid, an image in [0, 1].
The lecture's model reads 1-channel images; here `in_channels` is 3 for the synthetic set's RGB images
(`--code-channels 8` gives the lecture's first version).

It trains with seglab's own training loop (`seglab.engine.loop.train`, the loop behind `seglab train`)
and seglab's `synthetic` data set: `ReconstructionTask` is a `seglab.tasks.Task` whose data are the
synthetic images (random scale / crop / flip from the config's `data:`, no normalisation, so pixels
stay in [0, 1]), whose loss is the mean squared error against the input, and whose validation scores
the reconstruction error (MSE, and PSNR, by which best.safetensors is kept). The lecture's Adam at
lr 1e-3 is the loop's AdamW with no weight decay. Validation images whose sides are not multiples of 4
are padded (edge values) for the two poolings and cropped back.

    python examples/conv_autoencoder.py --data data/synthetic --epochs 30 --out runs/autoencoder

prints one JSON line per epoch ({"epoch", "train_mse", "val_mse", "val_PSNR"}) and a last line comparing
the validation error with that of always answering the mean training image ("mean_image_mse"), and
writes the loop's files (metrics.jsonl, last.pt, best.safetensors, curves.png) and `reconstructions.png`
(originals above, reconstructions below) into --out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seglab.config import config_from_dict
from seglab.data import build_dataset, generate_synthetic
from seglab.data.transforms import EvalTransform, TrainTransform
from seglab.engine.checkpoint import load_checkpoint
from seglab.engine.loop import train as train_loop
from seglab.tasks import Task

UNIT_RANGE = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # "normalised" pixels stay in [0, 1]


class ConvAutoencoder(nn.Module):
    """The lecture's convolutional auto-encoder; `forward(x)` -> reconstruction in [0, 1], same size
    (sides multiples of 4)."""

    def __init__(self, in_channels: int = 3, code_channels: int = 4):
        super().__init__()
        # encoder
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, code_channels, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        # decoder
        self.conv4 = nn.Conv2d(code_channels, 16, 3, padding=1)
        self.conv5 = nn.Conv2d(16, in_channels, 3, padding=1)
        # what seglab's model files record to rebuild it (best.safetensors)
        self.seglab_config = {"name": "conv_autoencoder", "num_classes": 0,
                              "kwargs": {"in_channels": in_channels, "code_channels": code_channels}}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        return self.pool(F.relu(self.conv2(x)))  # the compressed representation

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv4(F.interpolate(code, scale_factor=2, mode="nearest")))
        return torch.sigmoid(self.conv5(F.interpolate(x, scale_factor=2, mode="nearest")))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


# ------------------------------------------------------------------------ the task for seglab's loop
class ReconstructionLoss:
    """The mean squared error between the reconstruction and the input."""

    def forward(self, model: nn.Module, inputs, targets):
        return model(inputs)

    def losses(self, outputs, targets) -> dict[str, torch.Tensor]:
        return {"loss": F.mse_loss(outputs.float(), targets.float())}


class ReconstructionPredictor:
    """One (3, H, W) image -> its reconstruction, padded to sides that are multiples of 4 and cropped back."""

    needs_image = False

    def __init__(self, model: nn.Module):
        self.model, self.device = model, next(model.parameters()).device

    @torch.no_grad()
    def predict_tensor(self, x: torch.Tensor, *, image=None) -> torch.Tensor:
        h, w = x.shape[-2:]
        padded = F.pad(x[None].to(self.device), (0, -w % 4, 0, -h % 4), mode="replicate")
        return self.model(padded)[0, :, :h, :w].cpu()


class ReconstructionError:
    """Mean squared error over every validation pixel, and the PSNR it gives for images in [0, 1]."""

    def __init__(self):
        self.squared_error, self.values = 0.0, 0

    def process(self, index: int, target: torch.Tensor, prediction: torch.Tensor) -> None:
        self.squared_error += float(((prediction.float() - target.float()) ** 2).sum())
        self.values += target.numel()

    def all_reduce(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            t = torch.tensor([self.squared_error, float(self.values)], dtype=torch.float64)
            dist.all_reduce(t)
            self.squared_error, self.values = float(t[0]), int(t[1])

    def compute(self) -> dict:
        mse = self.squared_error / max(self.values, 1)
        return {"mse": mse, "PSNR": 10 * math.log10(1 / mse) if mse > 0 else math.inf}

    def summary(self, results: dict) -> dict:
        return dict(results)

    def report(self, results: dict, out_dir: Path, log: Callable[[str], None]) -> list[str]:
        log(f"val mse {results['mse']:.6f}  PSNR {results['PSNR']:.2f} dB")
        return []


class ReconstructionTask(Task):
    """Image reconstruction on the `synthetic` set, for `seglab.engine.loop.train(cfg, task=...)`."""

    name = "reconstruction"
    best_key = "PSNR"
    line_keys = ("mse", "PSNR")

    def build_datasets(self, cfg, *, train: bool = True):
        d = cfg.data
        val = build_dataset("synthetic", root=d.root, split=d.val_split, transform=EvalTransform(**UNIT_RANGE))
        if not train:
            return None, val
        transform = TrainTransform(crop_size=d.crop_size, scale_range=d.scale_range, hflip=d.hflip,
                                   color_jitter=d.color_jitter, **UNIT_RANGE)
        return build_dataset("synthetic", root=d.root, split=d.train_split, transform=transform), val

    def build_model(self, cfg, dataset) -> nn.Module:
        return ConvAutoencoder(**cfg.model.kwargs)

    def split_batch(self, batch):
        return batch["image"], batch["image"]

    def split_sample(self, sample):
        return sample["image"], sample["image"]

    def build_loss(self, cfg, train_ds, log):
        return ReconstructionLoss()

    def build_predictor(self, model: nn.Module, options):
        return ReconstructionPredictor(model)

    def build_evaluator(self, dataset, *, out_dir=None, detailed: bool = False):
        return ReconstructionError()

    def epoch_line(self, entry, epochs: int) -> str:
        s = f"epoch {entry['epoch']:>3}/{epochs}  mse {entry['train_loss']:.5f}  {entry['epoch_time_s']:.1f}s"
        return s + (f"  val mse {entry['val_mse']:.5f}  PSNR {entry['val_PSNR']:.2f} dB" if "val_mse" in entry else "")


def autoencoder_config(data: str | Path, *, epochs: int, batch_size: int = 16, lr: float = 1e-3,
                       code_channels: int = 4, crop_size=(128, 128), out_dir: str | Path = "runs/autoencoder"):
    """A seglab config for the auto-encoder (validated like any YAML config)."""
    return config_from_dict({
        "model": {"name": "conv_autoencoder", "kwargs": {"in_channels": 3, "code_channels": code_channels}},
        "data": {"name": "synthetic", "root": str(data), "crop_size": list(crop_size), "scale_range": [0.75, 1.5],
                 "color_jitter": 0.0, "batch_size": batch_size, "num_workers": 0,
                 "mean": list(UNIT_RANGE["mean"]), "std": list(UNIT_RANGE["std"])},
        "train": {"epochs": epochs, "optimizer": "adamw", "lr": lr, "weight_decay": 0.0, "warmup_iters": 0,
                  "poly_power": 0.0, "out_dir": str(out_dir)}}, source="examples/conv_autoencoder.py")


# ------------------------------------------------------------------------ baseline and pictures
def load_images(root: str | Path, split: str) -> torch.Tensor:
    """Every image of the synthetic set's `split` as (N, 3, H, W) floats in [0, 1], cropped to sides that
    are multiples of 4."""
    dataset = build_dataset("synthetic", root=root, split=split)
    images = np.stack([dataset.read_raw(i)[0] for i in range(len(dataset))])  # (N, H, W, 3) uint8
    h, w = (s - s % 4 for s in images.shape[1:3])
    return torch.from_numpy(images[:, :h, :w]).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def reconstruction_mse(model: nn.Module, images: torch.Tensor) -> float:
    model.eval()
    return float(F.mse_loss(model(images), images))


def mean_image_mse(train_images: torch.Tensor, images: torch.Tensor) -> float:
    """The error of answering every image with the mean training image: the baseline to beat."""
    return float(F.mse_loss(train_images.mean(0, keepdim=True).expand_as(images), images))


def save_reconstructions(model: nn.Module, images: torch.Tensor, path: Path, count: int = 6) -> None:
    from PIL import Image

    with torch.no_grad():
        recon = model.eval()(images[:count])
    rows = [torch.cat(list(batch), dim=2) for batch in (images[:count], recon)]  # (3, H, count * W) each
    grid = (torch.cat(rows, dim=1).permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synthetic", help="synthetic data folder (written when missing)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--crop", type=int, default=128, help="square training crop (a multiple of 4)")
    p.add_argument("--code-channels", type=int, default=4, help="4 (the lecture's second version) or 8")
    p.add_argument("--out", default="runs/autoencoder")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out (as seglab train)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not (Path(args.data) / "meta.json").is_file():
        generate_synthetic(args.data)
    cfg = autoencoder_config(args.data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             code_channels=args.code_channels, crop_size=(args.crop, args.crop), out_dir=args.out)

    def report(entry: dict) -> None:
        print(json.dumps({"epoch": entry["epoch"], "train_mse": round(entry["train_loss"], 6),
                          "val_mse": round(entry["val_mse"], 6), "val_PSNR": round(entry["val_PSNR"], 3)}),
              flush=True)

    result = train_loop(cfg, task=ReconstructionTask(), progress=False, log=lambda line: None, on_epoch=report,
                        overwrite=args.overwrite)
    model = ConvAutoencoder(**cfg.model.kwargs)
    model.load_state_dict(load_checkpoint(result.last_path)["model"])
    train_images, val_images = load_images(args.data, "train"), load_images(args.data, "val")
    out = Path(args.out)
    save_reconstructions(model, val_images, out / "reconstructions.png")
    print(json.dumps({"val_mse": round(reconstruction_mse(model, val_images), 6),
                      "mean_image_mse": round(mean_image_mse(train_images, val_images), 6),
                      "parameters": sum(q.numel() for q in model.parameters()),
                      "reconstructions": str(out / "reconstructions.png")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
