"""The convolutional auto-encoder of the lecture on image segmentation (seed 002, "Convolutional
Auto-Encoder"), trained to reconstruct seglab's synthetic images: a teaching example of the
encoder-decoder ("autoencoder-style") shape that SegNet and DeconvNet give a segmentation head.

The network is the lecture's, layer for layer (its second version, the 4-channel code):
  encoder: conv 3x3 (C -> 16) + ReLU, max-pool 2x2; conv 3x3 (16 -> 4) + ReLU, max-pool 2x2
           -> the code: 4 channels at 1/4 resolution (12x fewer numbers than an RGB image);
  decoder: nearest-neighbour upsampling x2, conv 3x3 (4 -> 16) + ReLU; upsampling x2, conv 3x3
           (16 -> C) + sigmoid, an image in [0, 1].
The lecture's model reads 1-channel images; here `in_channels` is 3 for the synthetic set's RGB images
(`--code-channels 8` gives the lecture's first version). Trained with the mean squared error and Adam
(lr 1e-3), a plain loop over seglab's `synthetic` data set (`seglab.data.build_dataset`; written first
with `seglab.data.generate_synthetic` when the folder has none). Images whose sides are not multiples
of 4 are cropped to them, so the two poolings and upsamplings give the input size back.

    python examples/conv_autoencoder.py --data data/synthetic --epochs 30 --out runs/autoencoder

prints one JSON line per epoch ({"epoch", "train_mse", "val_mse"}) and a last line comparing the
validation error with that of always answering the mean training image ("mean_image_mse"), and writes
`reconstructions.png` (originals above, reconstructions below) into --out.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seglab.data import build_dataset, generate_synthetic


class ConvAutoencoder(nn.Module):
    """The lecture's convolutional auto-encoder; `forward(x)` -> reconstruction in [0, 1], same size."""

    def __init__(self, in_channels: int = 3, code_channels: int = 4):
        super().__init__()
        # encoder
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, code_channels, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        # decoder
        self.conv4 = nn.Conv2d(code_channels, 16, 3, padding=1)
        self.conv5 = nn.Conv2d(16, in_channels, 3, padding=1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        return self.pool(F.relu(self.conv2(x)))  # the compressed representation

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv4(F.interpolate(code, scale_factor=2, mode="nearest")))
        return torch.sigmoid(self.conv5(F.interpolate(x, scale_factor=2, mode="nearest")))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def load_images(root: str | Path, split: str) -> torch.Tensor:
    """Every image of the synthetic set's `split` as (N, 3, H, W) floats in [0, 1], cropped to sides that
    are multiples of 4."""
    dataset = build_dataset("synthetic", root=root, split=split)
    images = np.stack([dataset.read_raw(i)[0] for i in range(len(dataset))])  # (N, H, W, 3) uint8
    h, w = (s - s % 4 for s in images.shape[1:3])
    return torch.from_numpy(images[:, :h, :w]).permute(0, 3, 1, 2).float() / 255.0


def train(model: nn.Module, images: torch.Tensor, *, epochs: int, batch_size: int = 16, lr: float = 1e-3,
          seed: int = 0, on_epoch=None) -> list[float]:
    """Adam on the mean squared reconstruction error; returns the mean training loss of every epoch."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(images), generator=generator).split(batch_size):
            batch = images[idx]
            loss = F.mse_loss(model(batch), batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        history.append(total / len(images))
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    return history


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
    p.add_argument("--code-channels", type=int, default=4, help="4 (the lecture's second version) or 8")
    p.add_argument("--out", default="runs/autoencoder")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if not (Path(args.data) / "meta.json").is_file():
        generate_synthetic(args.data)
    train_images, val_images = load_images(args.data, "train"), load_images(args.data, "val")
    model = ConvAutoencoder(train_images.shape[1], args.code_channels)

    def report(epoch: int, loss: float) -> None:
        print(json.dumps({"epoch": epoch + 1, "train_mse": round(loss, 6),
                          "val_mse": round(reconstruction_mse(model, val_images), 6)}), flush=True)

    train(model, train_images, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, on_epoch=report)
    out = Path(args.out)
    save_reconstructions(model, val_images, out / "reconstructions.png")
    print(json.dumps({"val_mse": round(reconstruction_mse(model, val_images), 6),
                      "mean_image_mse": round(mean_image_mse(train_images, val_images), 6),
                      "parameters": sum(q.numel() for q in model.parameters()),
                      "reconstructions": str(out / "reconstructions.png")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
