import pytest
import torch

from seglab.losses import SegmentationLoss


def colour_block_batch(size: int = 64):
    """Two size x size images of 2x2 class blocks (3 classes), each class its own colour, plus noise."""
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([[[0, 1], [2, 0]], [[2, 2], [1, 0]]])
    labels = labels.repeat_interleave(size // 2, 1).repeat_interleave(size // 2, 2)
    colours = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 0.0, -1.0]])
    images = colours[labels].permute(0, 3, 1, 2) + 0.2 * torch.randn(2, 3, size, size, generator=g)
    return images, labels


@pytest.fixture
def fit_tiny_batch():
    """`fit(model, steps=, lr=, size=)`: Adam steps on the colour-block batch; returns the training-mode
    losses (cross-entropy + 0.4 x each auxiliary head). Training mode because eval mode's BN running
    statistics lag behind after a few steps on tiny nets."""

    def fit(model, *, steps: int, lr: float, size: int = 64) -> list[float]:
        images, labels = colour_block_batch(size)
        criterion = SegmentationLoss()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        losses = []
        for _ in range(steps):
            loss = criterion(model(images), labels)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    return fit
