"""Fully connected CRF post-processing with mean-field inference.

Kraehenbuehl and Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge Potentials",
NIPS 2011: the model, Algorithm 1 (the mean-field update) and message passing as high-dimensional
Gaussian filtering; as used on top of a network's softmax by DeepLab (Chen et al., ICLR 2015,
Section 4; TPAMI 2018, Section 3.3).

Energy: E(x) = sum_i U_i(x_i) + sum_{i<j} mu(x_i, x_j) k(f_i, f_j), with unary U_i(l) = -log P_i(l),
Potts compatibility mu(l, l') = [l != l'], and the kernel
    k(f_i, f_j) = w1 exp(-|p_i-p_j|^2 / 2 s_a^2 - |I_i-I_j|^2 / 2 s_b^2)      (appearance, bilateral)
                + w2 exp(-|p_i-p_j|^2 / 2 s_g^2)                               (smoothness)
Mean field (Algorithm 1): Q_i(l) = softmax_l(-U_i(l)); repeat: Qm_i(l) = sum_{j != i} k_m(f_i, f_j)
Q_j(l) for each kernel m; Q_i(l) proportional to exp(-U_i(l) - sum_{l'} mu(l, l') sum_m w_m Qm_i(l')).

Filtering. The appearance kernel (5-D features) uses the permutohedral lattice
(`permutohedral.PermutohedralLattice`, Adams et al., Eurographics 2010), built once per image. The
smoothness kernel (2-D positions on the pixel grid) is computed *exactly* as a separable Gaussian
convolution (truncated at 6 sigma, where the tail is below 2e-8): it is both exact and faster than a
lattice here. Self-exclusion is "filter, then subtract Q_i", as in the paper; for the lattice, the
subtracted self term is the lattice kernel's own value at zero offset (`self_weight`), not the exact
Gaussian's 1 (this cut the mean |Q_lattice - Q_exact| up to 3x in our tests, see docs/crf.md).
With the Potts model, sum_{l' != l} Qm_i(l') = sum_l' Qm_i(l') - Qm_i(l), and the first term is the
same for every label, so it cancels in the normalisation of Q_i; the update adds + w_m Qm_i(l) to
the log-probability of l.

Normalisation. `normalize=True` (default) follows the densecrf code that DeepLab runs: each kernel's
output at pixel i is divided by sum_j k_m(f_i, f_j) (filtering an image of ones), so a weight means
the same at any bandwidth; DeepLab's published weights assume this. `normalize=False` is the
unnormalised model of the paper's equations.

Defaults: the CRF settings of DeepLab v2's released ResNet-101 VOC 2012 model, bi_w=4,
bi_xy_std=67, bi_rgb_std=3, pos_w=3, pos_xy_std=1 (as carried by the PyTorch ports of DeepLab v2,
which list VGG-16's as pos 2/2, bi 4/65/3; DeepLab ran 10 iterations, the default here is 5). The
papers themselves fix the smoothness kernel's w2 = 3 and s_g = 3 and cross-validate w1, s_a, s_b on
100 val images (TPAMI 2018, Section 4.1), so weights are data-set specific: see docs/crf.md.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F

from .permutohedral import PermutohedralLattice

_BRUTE_MAX_PIXELS = 4096
_MIN_PROB = 1e-8


def _as_image(image) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 (H, W, 3), got dtype {image.dtype}")
        image = torch.from_numpy(np.ascontiguousarray(image))
    elif isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            raise ValueError(f"image must be uint8 (H, W, 3), got dtype {image.dtype}")
    else:
        raise ValueError(f"image must be a numpy array or tensor, got {type(image).__name__}")
    if image.dim() != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image must be (H, W, 3) uint8 with H, W >= 1, got shape {tuple(image.shape)}")
    return image.cpu()


def _as_probs(probs, h: int, w: int) -> torch.Tensor:
    probs = torch.as_tensor(probs).detach().cpu()
    if not probs.is_floating_point():
        raise ValueError(f"probs must be float probabilities (C, H, W), got dtype {probs.dtype}")
    if probs.dim() != 3 or probs.shape[1:] != (h, w):
        raise ValueError(f"probs must be (C, H, W) = (C, {h}, {w}) to match the image, "
                         f"got shape {tuple(probs.shape)}")
    probs = probs.float()
    lo, hi = torch.aminmax(probs)           # one pass; NaN makes both comparisons false
    if not (lo >= 0 and hi < math.inf):
        raise ValueError("probs must be finite and non-negative (softmax probabilities, not logits)")
    if (probs.sum(0) - 1).abs().max() > 1e-2:
        raise ValueError("probs must sum to 1 over the class axis at every pixel (apply softmax first)")
    return probs


def _gaussian_taps(sigma: float, size: int) -> torch.Tensor:
    radius = min(int(math.ceil(6 * sigma)), size - 1)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    return torch.exp(-t ** 2 / (2 * sigma ** 2)).float()


def gaussian_grid_filter(values: torch.Tensor, sigma: float) -> torch.Tensor:
    """Exact sum_j exp(-|p_i - p_j|^2 / 2 sigma^2) values_j over the pixel grid (self included):
    (C, H, W) -> (C, H, W). Two depthwise 1-D convolutions, run in channels-last layout (several times
    faster than NCHW depthwise convolution on this CPU), zero padding (pixels outside the image do not
    exist), taps cut at 6 sigma (the dropped tail is below 2e-8 of the peak)."""
    return _grid_filter_hwc(values.float().permute(1, 2, 0), sigma).permute(2, 0, 1).contiguous()


def _grid_filter_hwc(values: torch.Tensor, sigma: float) -> torch.Tensor:
    """`gaussian_grid_filter` on pixel-major values (H, W, C) -> (H, W, C): the channels-last memory the
    convolutions run in, so a contiguous (H, W, C) input or output costs no copy."""
    h, w, c = values.shape
    x = values.permute(2, 0, 1)[None].contiguous(memory_format=torch.channels_last)
    for k, horizontal in ((_gaussian_taps(sigma, w), True), (_gaussian_taps(sigma, h), False)):
        size = (1, k.numel()) if horizontal else (k.numel(), 1)
        weight = k.view(1, 1, *size).expand(c, 1, *size).contiguous(memory_format=torch.channels_last)
        x = F.conv2d(x, weight, padding=(0, k.numel() // 2) if horizontal else (k.numel() // 2, 0), groups=c)
    return x[0].permute(1, 2, 0)


def _features(image: torch.Tensor, xy_std: float, rgb_std: float | None) -> torch.Tensor:
    h, w = image.shape[:2]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    feats = [xs.reshape(-1, 1) / xy_std, ys.reshape(-1, 1) / xy_std]
    if rgb_std is not None:
        feats.append(image.reshape(-1, 3).float() / rgb_std)
    return torch.cat(feats, 1)


class _BruteKernel:
    """O(N^2) reference: the dense kernel matrix (tests and tiny images only)."""

    def __init__(self, features: torch.Tensor):
        self.matrix = torch.exp(-torch.cdist(features.double(), features.double()) ** 2 / 2).float()

    def filter(self, values: torch.Tensor, exclude_self: bool = False) -> torch.Tensor:   # (N, C) -> (N, C)
        out = self.matrix @ values
        return out - values if exclude_self else out


def _softmax_rows(logits: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """softmax over dim 1 of (N, C) logits into `out` as exp(logits) / sum, without subtracting each row's
    maximum: torch.softmax over short rows (C = 11) was 10x slower than exp + sum here, and the row
    maximum alone costs as much as the exp. Here logits = log P (<= 0, and >= -log C for P's top label)
    plus messages of at most sum_m w_m (normalised kernels), so exp neither overflows nor underflows to
    an all-zero row; where it would (large unnormalised weights), torch.softmax."""
    torch.exp(logits, out=out)
    total = out.sum(1, keepdim=True)
    if not (torch.isfinite(total).all() and total.min() > 1e-30):
        return torch.softmax(logits, dim=1, out=out)
    return out.div_(total)


def dense_crf(image, probs, iterations: int = 5, *, pos_w: float = 3.0, pos_xy_std: float = 1.0,
              bi_w: float = 4.0, bi_xy_std: float = 67.0, bi_rgb_std: float = 3.0, normalize: bool = True,
              method: str = "lattice", return_history: bool = False):
    """Refine per-pixel class probabilities with a fully connected CRF (mean-field inference).

    image: (H, W, 3) uint8, numpy or tensor (RGB, the colours the network saw). probs: (C, H, W)
    softmax probabilities (numpy or tensor). Returns refined (C, H, W) float32 probabilities
    (a tensor; every pixel sums to one). `method="brute"` filters with the exact O(N^2) kernel sums
    (for tests, at most 4096 pixels). `return_history=True` also returns the list of Q after each
    iteration (starting with the initial softmax of the unary).
    """
    image = _as_image(image)
    h, w = image.shape[:2]
    probs = _as_probs(probs, h, w)
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative int, got {iterations!r}")
    iterations = int(iterations)
    for name, value in (("pos_xy_std", pos_xy_std), ("bi_xy_std", bi_xy_std), ("bi_rgb_std", bi_rgb_std)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
    if method not in ("lattice", "brute"):
        raise ValueError(f"method must be 'lattice' or 'brute', got {method!r}")
    if method == "brute" and h * w > _BRUTE_MAX_PIXELS:
        raise ValueError(f"method='brute' is O(N^2): at most {_BRUTE_MAX_PIXELS} pixels, got {h * w}")
    c, n = probs.shape[0], h * w

    # Each kernel maps (N, C) -> (N, C): sum_j k(f_i, f_j) v_j, over j != i when exclude_self. Q is kept
    # pixel-major (N, C), the layout the lattice's row gathers and the channels-last convolutions use.
    kernels = []
    if pos_w:
        if method == "brute":
            pos = _BruteKernel(_features(image, pos_xy_std, None))
            kernels.append((pos_w, pos.filter))
        else:
            def smooth(v, exclude_self):
                out = _grid_filter_hwc(v.view(h, w, -1), pos_xy_std).reshape(n, -1)
                return out.sub_(v) if exclude_self else out                  # exact: k(f_i, f_i) = 1
            kernels.append((pos_w, smooth))
    if bi_w:
        feats = _features(image, bi_xy_std, bi_rgb_std)
        kernel = _BruteKernel(feats) if method == "brute" else PermutohedralLattice(feats)
        kernels.append((bi_w, lambda v, exclude_self, k=kernel: k.filter(v, exclude_self=exclude_self)))
    # Per-pixel factor of each kernel's message: w_m, times 1 / sum_j k_m(f_i, f_j) when normalising
    # (the sum includes j = i, as in densecrf, so it never vanishes).
    coefs = [weight / filt(torch.ones(n, 1), False).clamp_min(1e-20) if normalize
             else torch.full((n, 1), float(weight)) for weight, filt in kernels]

    # Algorithm 1 with the Potts model: the pairwise energy of label l at pixel i is
    # sum_m coef_m,i * sum_{l' != l} Qm_i(l') = const_i - sum_m coef_m,i * Qm_i(l), and the constant
    # (the same for every label) cancels in the normalisation. Qm excludes j = i.
    logp = probs.permute(1, 2, 0).reshape(n, c).clone(memory_format=torch.contiguous_format)  # (N, C), a copy
    logp.clamp_min_(_MIN_PROB).log_()                                                          # -unary
    q = _softmax_rows(logp, torch.empty_like(logp))
    history = [q.clone()] if return_history else []
    logits = torch.empty_like(logp)       # buffers reused across iterations: a fresh 2 MP x 19 tensor
    for _ in range(iterations):           # costs about as much in page faults as a pass over it
        for m, ((weight, filt), coef) in enumerate(zip(kernels, coefs)):
            if m == 0:
                torch.addcmul(logp, filt(q, True), coef, out=logits)
            else:
                logits.addcmul_(filt(q, True), coef)
        if not kernels:
            logits.copy_(logp)
        _softmax_rows(logits, out=q)
        if return_history:
            history.append(q.clone())
    out = q.t().reshape(c, h, w).contiguous()
    if return_history:
        return out, [s.t().reshape(c, h, w).contiguous() for s in history]
    return out
