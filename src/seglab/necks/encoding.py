"""Context Encoding: Zhang, Dana, Shi, Zhang, Wang, Tyagi & Agrawal, "Context Encoding for Semantic
Segmentation", CVPR 2018 (Sec. 2.1 encoding layer, Sec. 2.2 featuremap attention).

`Encoding` is the paper's encoding layer (after Zhang, Xue & Dana, "Deep TEN", CVPR 2017). For the N
pixel descriptors x_i (D channels) of one image and K learned codewords d_k with learned smoothing
factors s_k:

    r_ik = x_i - d_k,   a_ik = softmax_k(-s_k ||r_ik||^2),   e_k = sum_i a_ik r_ik        (K x D)

The sum runs over pixels, so the encoding is orderless: it does not depend on where a pixel sits.
Parameters are named and initialised as in the authors' release (zhanghang1989/PyTorch-Encoding,
`encoding.nn.Encoding`): `codewords` (K, D) ~ U(-1/sqrt(KD), 1/sqrt(KD)) and `scale` (K,) ~ U(-1, 0),
where the release stores the factor with its sign, so `scale_k = -s_k` (logits `scale_k ||r_ik||^2`).

`EncModule` is the release's `EncModule` (also mmsegmentation's): 1x1 conv + BN + ReLU, `Encoding`
(K = 32), BN over the K codewords + ReLU, mean over k -> the encoded vector e (D). The featuremap
attention is an FC + sigmoid on e, gamma = sigmoid(W e + b) (D), and the output is
relu(x + x * gamma): the paper writes Y = X (x) gamma; the release adds the input back (a residual)
before the ReLU, which we follow. The SE-loss classifier on e lives in the model
(`seglab.models.encnet`), since it depends on the class count.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..layers.conv_norm_act import ConvNormAct

__all__ = ["EncModule", "Encoding"]


class Encoding(nn.Module):
    """(B, D, H, W) or (B, D, N) descriptors -> (B, K, D) aggregated residuals e_k."""

    def __init__(self, channels: int, num_codes: int = 32):
        super().__init__()
        if channels < 1 or num_codes < 1:
            raise ValueError(f"Encoding needs channels >= 1 and num_codes >= 1, got {channels}, {num_codes}")
        self.channels, self.num_codes = channels, num_codes
        self.codewords = nn.Parameter(torch.empty(num_codes, channels))
        self.scale = nn.Parameter(torch.empty(num_codes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.num_codes * self.channels)
        nn.init.uniform_(self.codewords, -bound, bound)
        nn.init.uniform_(self.scale, -1.0, 0.0)

    def assignments(self, x: torch.Tensor) -> torch.Tensor:
        """Soft-assignment weights a_ik, (B, N, K), of descriptors x (B, N, D); rows sum to 1."""
        codes = self.codewords.to(x)
        # ||x_i - d_k||^2 expanded, so no (B, N, K, D) tensor of residuals is ever built.
        sq_dist = (x.pow(2).sum(-1, keepdim=True) - 2 * x @ codes.t() + codes.pow(2).sum(-1)).clamp_min(0)
        return torch.softmax(self.scale.to(x) * sq_dist, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim not in (3, 4) or x.shape[1] != self.channels:
            raise ValueError(f"Encoding expects (B, {self.channels}, H, W) or (B, {self.channels}, N), "
                             f"got {tuple(x.shape)}")
        # float32 even under autocast: the expanded distance cancels badly in bf16.
        with torch.autocast(device_type=x.device.type, enabled=False):
            desc = x.float().flatten(2).transpose(1, 2)  # (B, N, D)
            a = self.assignments(desc)
            # e_k = sum_i a_ik (x_i - d_k) = (A^T X)_k - (sum_i a_ik) d_k
            return a.transpose(1, 2) @ desc - a.sum(1).unsqueeze(-1) * self.codewords.float()

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_codes={self.num_codes}"


class EncModule(nn.Module):
    """Context encoding + featuremap attention. `forward(x)` returns (relu(x + x * gamma), e), with e
    the (B, C) encoded vector that also feeds the SE-loss classifier."""

    def __init__(self, channels: int, num_codes: int = 32):
        super().__init__()
        self.project = ConvNormAct(channels, channels, 1)
        self.encoding = Encoding(channels, num_codes)
        self.code_norm = nn.BatchNorm1d(num_codes)  # (B, K, D): one BN channel per codeword
        self.attention = nn.Sequential(nn.Linear(channels, channels), nn.Sigmoid())
        self.out_channels = channels

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoded vector e (B, C): mean over the K normalised, rectified codeword residuals."""
        codes = torch.relu(self.code_norm(self.encoding(self.project(x))))
        return codes.mean(1).to(x.dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = self.encode(x)
        gamma = self.attention(encoded)[:, :, None, None]
        return torch.relu(x + x * gamma), encoded
