"""Holistically-guided decoder: Liu, He, Zhang, Ren & Li, "EfficientFCN: Holistically-guided Decoding
for Semantic Segmentation", ECCV 2020, Sec. 3.2-3.3.

Inputs are the last three stages of a dilation-free backbone, at output strides 8, 16 and 32. As in
the authors' release (jianbo909/efficientFCN, `HGDModule` / `HGDecoder`), the OS-16 and OS-32 maps
are reduced by 1x1 conv + BN + ReLU to `channels` (512) and the OS-8 map is used as it is; all three
are resized to OS 32 and to OS 8 and concatenated in the order (OS 8, OS 16, OS 32): m32 and m8.

- Codebook generation (from high-level features, OS 32): 1x1 conv + BN + ReLU gives the bases
  B (`codeword_channels` = 1024, per OS-32 pixel); 1x1 conv + BN + ReLU + 1x1 conv + BN gives n
  (`num_codewords` = 256) spatial weighting maps A, softmax-normalised over the pixels. The
  codewords are c_i = sum_j softmax_j(A_i)(j) B(j), (1024 x n): sums over pixels, so they do not
  depend on where each OS-32 pixel sits.
- Codeword assembly (guided by mid-level features, OS 8): 1x1 conv + BN + ReLU turns m8 into the
  guide G (1024); the global average of the bases is added, and two 1x1 conv + BN + ReLU give the
  assembly coefficients W (n per OS-8 position). The upsampled feature at each OS-8 position p is
  f(p) = n^-1/2 sum_i W_i(p) c_i.
- f and G are concatenated (2048) and fused by 1x1 conv + BN + ReLU to `codeword_channels`.

Resizing is bilinear with align_corners=False (the release uses True).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..layers import ConvNormAct, resize_to

__all__ = ["HolisticallyGuidedDecoder"]


class HolisticallyGuidedDecoder(nn.Module):
    """`forward([f8, f16, f32])` -> (B, out_channels, H8, W8): the holistically-guided OS-8 map."""

    def __init__(self, in_channels: Sequence[int], *, channels: int = 512, codeword_channels: int = 1024,
                 num_codewords: int = 256):
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"HolisticallyGuidedDecoder takes the OS 8/16/32 features, got {len(in_channels)} "
                             "channel counts")
        c8, c16, c32 = in_channels
        fused = c8 + 2 * channels
        self.num_codewords = num_codewords
        self.reduce16 = ConvNormAct(c16, channels, 1)
        self.reduce32 = ConvNormAct(c32, channels, 1)
        self.bases = ConvNormAct(fused, codeword_channels, 1)
        self.weighting = nn.Sequential(ConvNormAct(fused, num_codewords, 1),
                                       ConvNormAct(num_codewords, num_codewords, 1, act=False))
        self.guide = ConvNormAct(fused, codeword_channels, 1)
        self.coefficients = nn.Sequential(ConvNormAct(codeword_channels, num_codewords, 1),
                                          ConvNormAct(num_codewords, num_codewords, 1))
        self.fuse = ConvNormAct(2 * codeword_channels, codeword_channels, 1)
        self.out_channels = codeword_channels

    def fused_maps(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(m8, m32): the three stages concatenated at OS 8 and at OS 32."""
        f8, f16, f32 = feats
        f16, f32 = self.reduce16(f16), self.reduce32(f32)
        size8, size32 = f8.shape[-2:], f32.shape[-2:]
        m8 = torch.cat([f8, resize_to(f16, size8), resize_to(f32, size8)], 1)
        m32 = torch.cat([resize_to(f8, size32), resize_to(f16, size32), f32], 1)
        return m8, m32

    def codewords(self, m32: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codewords (B, codeword_channels, n), global average of the bases (B, codeword_channels, 1, 1))."""
        bases = self.bases(m32).flatten(2)  # (B, C, L)
        weights = torch.softmax(self.weighting(m32).flatten(2), dim=-1)  # (B, n, L), over pixels
        return bases @ weights.transpose(1, 2), bases.mean(-1)[..., None, None]

    def assembly_coefficients(self, m8: torch.Tensor, bases_mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(coefficients (B, n, H8, W8), guide (B, codeword_channels, H8, W8))."""
        guide = self.guide(m8)
        return self.coefficients(guide + bases_mean), guide

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        m8, m32 = self.fused_maps(feats)
        codewords, bases_mean = self.codewords(m32)
        coeffs, guide = self.assembly_coefficients(m8, bases_mean)
        upsampled = (codewords @ coeffs.flatten(2)) * self.num_codewords ** -0.5
        return self.fuse(torch.cat([upsampled.view_as(guide), guide], 1))
