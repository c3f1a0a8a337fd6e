"""Spectral clustering of pixels by their predicted instance locations, as the proposal-free network uses
it: Liang, Wei, Shen, Yang, Lin & Yan, "Proposal-free Network for Instance-level Object Segmentation",
TPAMI 2018 (Sec. 3.4: spectral clustering of each category's pixels into the predicted number of
instances; the clustering method itself is Ng, Jordan & Weiss, "On Spectral Clustering: Analysis and an
algorithm", NeurIPS 2001).

`spectral_clustering(features, k)`: Gaussian affinities A_ij = exp(-|f_i - f_j|^2 / (2 sigma^2)) (A_ii =
0), the normalised matrix L = D^-1/2 A D^-1/2, its k leading eigenvectors as rows, each row scaled to
unit length, and k-means on the rows (k-means++ seeding from a fixed seed, then Lloyd iterations). A
dense eigendecomposition costs O(n^3), so at most `max_points` points (an evenly spaced subset, in the
given order) are clustered; every point then joins the cluster whose mean feature (over its clustered
points) is nearest. `sigma` is in the features' units (PFN's locations are image-normalised, so 0.05
is 5% of the image side). Deterministic for a given input.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError

__all__ = ["kmeans", "spectral_clustering"]


def kmeans(points: torch.Tensor, k: int, *, iterations: int = 50, seed: int = 0) -> torch.Tensor:
    """(n,) cluster index in [0, k) of (n, d) points: k-means++ seeding, then Lloyd's iterations."""
    n = points.shape[0]
    if k < 1:
        raise ConfigError(f"kmeans needs k >= 1 clusters, got {k}")
    if n <= k:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    centres = [points[int(torch.randint(n, (1,), generator=generator))]]
    for _ in range(1, k):
        distance = torch.cdist(points, torch.stack(centres)).amin(1).pow(2)
        if float(distance.sum()) <= 0:
            centres.append(points[int(torch.randint(n, (1,), generator=generator))])
            continue
        centres.append(points[int(torch.multinomial(distance / distance.sum(), 1, generator=generator))])
    centres = torch.stack(centres)
    labels = torch.cdist(points, centres).argmin(1)
    for _ in range(iterations):
        sums = torch.zeros_like(centres).index_add_(0, labels, points)
        counts = torch.bincount(labels, minlength=k).to(points.dtype)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
        new = torch.cdist(points, centres).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    return labels


def spectral_clustering(features: torch.Tensor, k: int, *, sigma: float = 0.05, max_points: int = 1000,
                        seed: int = 0) -> torch.Tensor:
    """(n,) cluster index in [0, k) of (n, d) `features` (see the module docstring)."""
    if k < 1:
        raise ConfigError(f"spectral clustering needs k >= 1 clusters, got {k}")
    if sigma <= 0 or max_points < 1:
        raise ConfigError(f"spectral clustering needs sigma > 0 and max_points >= 1, got {sigma}, {max_points}")
    features = features.detach().double().cpu()
    n = features.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    if k == 1:
        return torch.zeros(n, dtype=torch.long)
    subset = torch.linspace(0, n - 1, min(n, max_points)).round().long().unique()
    points = features[subset]
    affinity = torch.exp(-torch.cdist(points, points).pow(2) / (2 * sigma ** 2))
    affinity.fill_diagonal_(0)
    inv_sqrt = affinity.sum(1).clamp(min=1e-12).rsqrt()
    normalised = inv_sqrt[:, None] * affinity * inv_sqrt[None, :]
    _, vectors = torch.linalg.eigh(normalised)  # ascending eigenvalues
    rows = vectors[:, -k:]
    rows = rows / rows.norm(dim=1, keepdim=True).clamp(min=1e-12)
    labels = kmeans(rows, k, seed=seed)
    if subset.numel() == n:
        return labels
    sums = torch.zeros(k, features.shape[1], dtype=features.dtype).index_add_(0, labels, points)
    counts = torch.bincount(labels, minlength=k).clamp(min=1).to(features.dtype)
    means = sums / counts[:, None]
    present = torch.bincount(labels, minlength=k) > 0
    distance = torch.cdist(features, means)
    distance[:, ~present] = float("inf")
    return distance.argmin(1)
