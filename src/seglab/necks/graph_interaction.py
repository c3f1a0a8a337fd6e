"""Graph Interaction unit: Wu, Lu, Zhu, Zhang, Wu, Ma & Guo, "GINet: Graph Interaction Network for
Scene Parsing", ECCV 2020, Sec. 3 (graph construction, semantic-to-visual and visual-to-semantic
reasoning, unit output), with the graph convolution of GloRe (Chen et al., "Graph-Based Global
Reasoning Networks", CVPR 2019).

For a feature map X (C channels, L pixels), M classes, N visual nodes and node width D:
- visual graph: a 1x1 conv gives each pixel logits over the N nodes; a softmax over the nodes makes
  them assignments Q (N x L, each pixel's column sums to 1). Node n is the Q-weighted mean of the
  pixels' 1x1-reduced features (D): P = (Q X W) / rowsum(Q);
- semantic graph: one node per class, s_m = MLP(l_m) (Linear 300 -> 128 + BN + ReLU, Linear -> D +
  BN + ReLU, as the authors' release). The paper's l_m are fixed 300-d word vectors;
  nothing can be downloaded here, so l_m are learned embeddings, `nn.Parameter(M, 300)`: still one
  vector per class, shared by every image;
- graph convolution on each graph (GloRe): Z = W_c relu(A V + V) with A (nodes x nodes, with bias)
  mixing nodes and W_c (D x D, no bias) mixing channels;
- one affinity E = (S W_q)(P W_k)^T (M x N), normalised two ways:
  semantic-to-visual, G_s2v = softmax over the classes: P_o = P + beta_s2v * (G_s2v^T S W_s2v);
  visual-to-semantic, G_v2s = softmax over the visual nodes: S_o = S + beta_v2s * (G_v2s P W_v2s),
  so S_o depends on the image while S does not. beta_s2v (N) starts at 0, so the unit starts as
  plain graph reasoning (the release's gamma_vis); beta_v2s (M) starts at 1, so the semantic context
  loss sees the image from the first step (the release's gamma_word * S + (...) also starts with
  the update at full strength; with 0 the presence loss barely moves in our tests);
- unit output: X_o = X + BN(W_o (Q^T P_o)), back to C channels.

Deviations from the authors' release (as ported to PaddleSeg, `paddleseg/models/ginet.py`): the
release projects with the raw 1x1 conv output B (no softmax) and divides by L, and reprojects with B
as well; here the assignments are a softmax over nodes, so they sum to 1 (a pixel's output is a
convex combination of the nodes) and nodes are weighted means, as in Li & Gupta's graph convolution
unit (NeurIPS 2018). The release writes S_o = gamma * S + G_v2s P W_v2s; we use the paper's
S_o = S + beta_v2s * (...). `semantic_update=False` leaves out the visual-to-semantic step, whose
only reader is the semantic context loss (so without that loss its weights would get no gradient).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = ["GraphConvolution", "GraphInteractionUnit", "GraphState"]


class GraphConvolution(nn.Module):
    """GloRe's graph convolution on node features (B, K, D): `W_c relu(A V + V)`."""

    def __init__(self, num_nodes: int, channels: int):
        super().__init__()
        self.node_mix = nn.Linear(num_nodes, num_nodes)  # the learned adjacency A (+ bias)
        self.channel_mix = nn.Linear(channels, channels, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        mixed = self.node_mix(nodes.transpose(1, 2)).transpose(1, 2)
        return self.channel_mix(self.relu(mixed + nodes))


class GraphState(NamedTuple):
    """The unit's graphs for one batch: `assignments` (B, N, L), node features (B, nodes, D)."""

    assignments: torch.Tensor
    visual: torch.Tensor
    semantic: torch.Tensor
    visual_out: torch.Tensor
    semantic_out: torch.Tensor | None


class GraphInteractionUnit(nn.Module):
    """`forward(x)` -> `(x_o, s_o)`: the map with graph reasoning added back (same shape as x) and the
    updated semantic nodes (B, num_classes, node_channels), or None without `semantic_update`."""

    def __init__(self, in_channels: int, num_classes: int, *, node_channels: int = 256,
                 num_nodes: int = 84, embed_dim: int = 300, hidden_dim: int = 128,
                 semantic_update: bool = True, eps: float = 1e-6):
        super().__init__()
        self.num_classes, self.num_nodes, self.eps = num_classes, num_nodes, eps
        # visual graph
        self.assign = nn.Conv2d(in_channels, num_nodes, 1)
        self.reduce = nn.Conv2d(in_channels, node_channels, 1)
        # semantic graph: learned stand-ins for the paper's word vectors, then the MLP
        self.class_embedding = nn.Parameter(torch.randn(num_classes, embed_dim))
        self.semantic_mlp = nn.Sequential(
            nn.Linear(embed_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, node_channels), nn.BatchNorm1d(node_channels), nn.ReLU(inplace=True))
        self.visual_gcn = GraphConvolution(num_nodes, node_channels)
        self.semantic_gcn = GraphConvolution(num_classes, node_channels)
        # interaction: one affinity between class nodes (queries) and visual nodes (keys)
        self.query = nn.Linear(node_channels, node_channels // 2)
        self.key = nn.Linear(node_channels, node_channels // 2)
        self.s2v_value = nn.Linear(node_channels, node_channels)
        self.beta_s2v = nn.Parameter(torch.zeros(num_nodes))
        self.v2s_value = nn.Linear(node_channels, node_channels) if semantic_update else None
        self.beta_v2s = nn.Parameter(torch.ones(num_classes)) if semantic_update else None
        # unit output
        self.reproject = nn.Conv2d(node_channels, in_channels, 1, bias=False)
        self.reproject_norm = nn.BatchNorm2d(in_channels)

    def assignments(self, x: torch.Tensor) -> torch.Tensor:
        """Soft assignment of each pixel to the visual nodes, (B, N, H*W); sums to 1 over N."""
        return torch.softmax(self.assign(x).flatten(2), dim=1)

    def semantic_nodes(self) -> torch.Tensor:
        """The semantic graph before any image is seen, (num_classes, node_channels)."""
        return self.semantic_mlp(self.class_embedding)

    def graphs(self, x: torch.Tensor) -> GraphState:
        q = self.assignments(x)
        feats = self.reduce(x).flatten(2).transpose(1, 2)  # (B, L, D)
        mass = q.sum(-1, keepdim=True).clamp_min(self.eps)
        visual = self.visual_gcn(q @ feats / mass)  # (B, N, D)
        semantic = self.semantic_gcn(self.semantic_nodes().unsqueeze(0)).expand(x.shape[0], -1, -1)
        affinity = self.query(semantic) @ self.key(visual).transpose(1, 2)  # (B, M, N)
        s2v = torch.softmax(affinity, dim=1).transpose(1, 2) @ self.s2v_value(semantic)
        visual_out = visual + self.beta_s2v[:, None] * s2v
        semantic_out = None
        if self.v2s_value is not None:
            v2s = torch.softmax(affinity, dim=2) @ self.v2s_value(visual)
            semantic_out = semantic + self.beta_v2s[:, None] * v2s
        return GraphState(q, visual, semantic, visual_out, semantic_out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        state = self.graphs(x)
        pixels = (state.assignments.transpose(1, 2) @ state.visual_out).transpose(1, 2)  # (B, D, L)
        pixels = pixels.reshape(x.shape[0], -1, *x.shape[-2:])
        return x + self.reproject_norm(self.reproject(pixels)), state.semantic_out
