"""Graph reasoning units: project pixels onto a few graph nodes, reason on the graph, project back.

`GloRe`: Chen, Rohrbach, Yan, Yan, Feng & Kalantidis, "Graph-Based Global Reasoning Networks",
CVPR 2019, Sec. 3 (Fig. 2, Eq. 1-3), with the sizes of the authors' release (facebookresearch/GloRe,
`GloRe_Unit(num_in=C, num_mid=C/4)`):
- state reduction phi: 1x1 conv C -> C' = C/2 (the release's `num_state = 2 * num_mid`), with bias;
- node projection theta: 1x1 conv C -> N = C/4 (`num_node = num_mid`), with bias; its output per pixel
  is the column of B, so V = B X^T (N x C'), weighted global pooling;
- graph convolution Z = (I - A_g) V W_g exactly as Eq. 3: A_g a 1D conv (kernel 1, no bias) mixing the
  node dimension, W_g a 1D conv (kernel 1, no bias) over the state dimension;
- reverse projection Y = B^T Z with the same B (weighted broadcasting), a 1x1 conv C' -> C (no bias)
  + BN whose scale starts at zero (the release's "blocker"), and the residual X + Y, so a new unit starts
  as the identity.
Deviations from the release: it computes (I + A_g) V with a bias on A_g and puts a ReLU before W_g;
here Eq. 3 is followed literally (the sign of A_g is a convention of a learned matrix; 128 fewer
parameters at C = 512). V is divided by the number of pixels L (the release's `normalize=True`,
which it advises when input sizes vary, as in segmentation; `normalize=False` turns it off).

`GraphConvolutionalUnit`: Li & Gupta, "Beyond Grids: Learning Graph Representations for Visual
Recognition", NeurIPS 2018, Sec. 3:
- graph projection: soft assignment of pixel x_i to node k with learned centre w_k and per-dimension
  scale sigma_k, q_ik = softmax_k(-||(x_i - w_k) / sigma_k||^2 / 2); node features
  z_k = sum_i q_ik (x_i - w_k) / sigma_k / sum_i q_ik, L2-normalised; adjacency A = Z^T Z (cosine
  similarities of the nodes, symmetric);
- graph convolution Z' = ReLU(A Z^T W_g), W_g: d -> d_out;
- re-projection X' = Q Z'^T (each pixel mixes the node outputs with its own assignment weights).
Choices the text leaves open: sigma is stored as log(sigma) so it stays positive, initialised to
sqrt(d) (the squared distance is then a per-dimension mean, so the first assignments are soft rather
than one-hot); centres start N(0, 1) (no clustering of pretrained features at build time); W_g
starts N(0, 1) (see `GraphConvolutionalUnit.__init__`).
`ParallelGCU` runs several GCUs on the same map and concatenates their outputs with it (the paper's
segmentation model: |V| = 2, 4, 8, 32 on res5).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

__all__ = ["GloRe", "GraphConvolutionalUnit", "ParallelGCU"]


class GloRe(nn.Module):
    """Global Reasoning unit: `forward(x) = x + BN(conv(B^T ((I - A_g) (B X^T / L) W_g)))`."""

    def __init__(self, channels: int, *, state_channels: int | None = None, num_nodes: int | None = None,
                 normalize: bool = True):
        super().__init__()
        if channels < 4:
            raise ConfigError(f"GloRe: channels must be at least 4 (C' = C/2, N = C/4), got {channels}")
        self.state_channels = state_channels or channels // 2
        self.num_nodes = num_nodes or channels // 4
        self.normalize = normalize
        self.state_conv = nn.Conv2d(channels, self.state_channels, 1)  # phi: X -> C' states
        self.projection_conv = nn.Conv2d(channels, self.num_nodes, 1)  # theta: X -> B (N per pixel)
        self.adjacency = nn.Conv1d(self.num_nodes, self.num_nodes, 1, bias=False)  # A_g over nodes
        self.state_update = nn.Conv1d(self.state_channels, self.state_channels, 1, bias=False)  # W_g
        self.extend = nn.Conv2d(self.state_channels, channels, 1, bias=False)
        self.extend_norm = nn.BatchNorm2d(channels, eps=1e-4)
        nn.init.zeros_(self.extend_norm.weight)  # start as the identity, as the release does

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, V): projection weights B (n, N, L) and node features V = B X^T (n, N, C')."""
        states = self.state_conv(x).flatten(2)  # (n, C', L)
        b = self.projection_conv(x).flatten(2)  # (n, N, L)
        v = torch.bmm(b, states.transpose(1, 2))
        if self.normalize:
            v = v / states.shape[-1]
        return b, v

    def reason(self, v: torch.Tensor) -> torch.Tensor:
        """Graph convolution Z = (I - A_g) V W_g on node features V (n, N, C')."""
        h = v - self.adjacency(v)  # Conv1d with the N nodes as channels: A_g V
        return self.state_update(h.transpose(1, 2)).transpose(1, 2)  # states as channels: (.) W_g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        b, v = self.project(x)
        y = torch.bmm(b.transpose(1, 2), self.reason(v))  # B^T Z: (n, L, C'), same B as the projection
        y = y.transpose(1, 2).reshape(n, self.state_channels, height, width)
        return x + self.extend_norm(self.extend(y))


class GraphConvolutionalUnit(nn.Module):
    """GCU with `num_nodes` vertices: `forward(x)` (n, d, H, W) -> (n, out_channels, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, num_nodes: int):
        super().__init__()
        if num_nodes < 1:
            raise ConfigError(f"GraphConvolutionalUnit: num_nodes must be a positive integer, got {num_nodes}")
        self.in_channels, self.out_channels, self.num_nodes = in_channels, out_channels, num_nodes
        self.centres = nn.Parameter(torch.randn(num_nodes, in_channels))  # w_k
        # sigma_k = exp(log_scales_k) > 0; sqrt(d) makes the initial distance a per-dimension mean.
        self.log_scales = nn.Parameter(torch.full((num_nodes, in_channels), 0.5 * math.log(in_channels)))
        self.node_transform = nn.Linear(in_channels, out_channels, bias=False)  # W_g
        # z_k has unit norm, so N(0, 1) weights give Z^T W_g unit-variance entries, the scale of the
        # features the output is concatenated with (fan-in init would make it ~100x smaller at d = 2048).
        nn.init.normal_(self.node_transform.weight)

    def assign(self, pixels: torch.Tensor) -> torch.Tensor:
        """Soft assignment Q (n, L, |V|) of pixels (n, L, d) to nodes; each row sums to 1."""
        inv_var = torch.exp(-2 * self.log_scales)  # 1 / sigma^2, (V, d)
        # ||(x - w) / sigma||^2 expanded into matmuls so no (n, L, V, d) tensor is formed.
        sq_dist = (pixels * pixels) @ inv_var.T - 2 * pixels @ (self.centres * inv_var).T \
            + (self.centres * self.centres * inv_var).sum(-1)
        return torch.softmax(-0.5 * sq_dist, dim=-1)

    def graph(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Q, Z, A): assignments (n, L, |V|), normalised node features (n, |V|, d), adjacency (n, |V|, |V|)."""
        pixels = x.flatten(2).transpose(1, 2)  # (n, L, d)
        q = self.assign(pixels)
        mass = q.sum(1).clamp_min(1e-6).unsqueeze(-1)  # sum_i q_ik, (n, V, 1)
        # sum_i q_ik (x_i - w_k) / sigma_k / sum_i q_ik = (weighted mean of x_i - w_k) / sigma_k.
        z = (q.transpose(1, 2) @ pixels / mass - self.centres) * torch.exp(-self.log_scales)
        z = F.normalize(z, dim=-1)
        return q, z, z @ z.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        q, z, adjacency = self.graph(x)
        nodes_out = F.relu(adjacency @ self.node_transform(z))  # Z' = f(A Z^T W_g), (n, V, d_out)
        out = q @ nodes_out  # X' = Q Z'^T, (n, L, d_out)
        return out.transpose(1, 2).reshape(n, self.out_channels, height, width)


class ParallelGCU(nn.Module):
    """GCUs with different node counts on one map; `forward(x) = cat([x, gcu_1(x), ...])`."""

    def __init__(self, in_channels: int, unit_channels: int, node_counts: Sequence[int] = (2, 4, 8, 32)):
        super().__init__()
        counts = tuple(node_counts)
        if not counts or not all(isinstance(c, int) and c > 0 for c in counts):
            raise ConfigError(f"node_counts must be a non-empty list of positive integers, got {node_counts!r}")
        self.node_counts = counts
        self.units = nn.ModuleList(GraphConvolutionalUnit(in_channels, unit_channels, c) for c in counts)
        self.out_channels = in_channels + unit_channels * len(counts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, *(unit(x) for unit in self.units)], dim=1)
