"""Gaussian filtering in linear time with the permutohedral lattice.

Adams, Baek and Davis, "Fast High-Dimensional Filtering Using the Permutohedral Lattice",
Eurographics 2010 (Computer Graphics Forum 29(2)), its splat / blur / slice algorithm: each
d-dimensional feature vector is
embedded ("elevated") in the hyperplane H_d of R^(d+1), located in its enclosing simplex of the
permutohedral lattice A*_d, and its value is *splatted* onto the simplex's d+1 vertices with
barycentric weights; the lattice is *blurred* with the separable [1 2 1]/4 kernel along each of its
d+1 directions; the result is *sliced* back at every input position with the same weights. The cost
is O(N d^2) for N points, independent of the kernel width.

The vertex arithmetic follows the reference implementation that Kraehenbuehl and Koltun distribute
with densecrf (the same feature scaling sqrt(2/3)(d+1), rank/remainder-0 construction and canonical
simplex), but vectorised with torch ops instead of a per-point hash table: the points are elevated,
rounded and ranked in chunks of 2^15 (so each float64 pass stays in cache; the whole-array passes
were most of the build at 2 M points), the vertex keys are encoded into one int64 each (mixed radix,
ranges bounded from the features' own range), deduplicated by one stable sort (`torch.sort` +
`unique_consecutive`, which also yields the inverse index), and the blur's neighbours are found with
`torch.searchsorted` on the sorted codes (a neighbour's code differs from its vertex's code by a
constant per direction; the -direction is the inverse of the +direction). Keys too wide for int64
fall back to `torch.unique(dim=0)`. Splat, each directional blur and slice are then weighted row sums
over fixed index lists, each one `F.embedding_bag(mode="sum", per_sample_weights=...)` call: twice as
fast here as the sparse CSR products they replaced (benchmarks/crf_speed.py measures both).

Scale. Splat and slice use barycentric weights that sum to one and the blur preserves mass, so on a
full lattice the filter's kernel integrates to V (the volume of one lattice cell in feature space).
`filter` multiplies by (2 pi)^(d/2) / V, so it approximates the *unnormalised* Gaussian sum
    out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j          (self term j = i included)
for features already divided by their standard deviations. This is an approximation: the lattice
kernel is not exactly Gaussian, and only vertices that some point touches are stored, so mass blurred
through absent vertices is lost (in 5-D on sparse data the kernel comes out about 0.7-0.9 times as
high). Adams et al. report > 45 dB against ground truth for *normalised* filters (bilateral
filtering divides by the filtered ones), where such losses largely cancel. docs/crf.md and
tests/inference/test_crf.py give the errors measured against the O(N^2) sum.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_MAX_CODE = 2 ** 62
_CHUNK = 1 << 15


def _elevation(d: int) -> torch.Tensor:
    """(d, d+1) float64 matrix E^T: features (N, d) @ it = the points on H_d (Adams et al.'s E, scaled by
    sqrt(2/3)(d+1) / sqrt(j(j+1)) so that the blur has unit standard deviation, as densecrf)."""
    d1 = d + 1
    j = torch.arange(1, d + 1, dtype=torch.float64)
    scale = math.sqrt(2.0 / 3.0) * d1 / torch.sqrt(j * (j + 1))
    e = torch.zeros(d, d1, dtype=torch.float64)
    for i in range(d1):                    # elevated_i = sum_{k >= i} cf_k - i cf_{i-1}
        e[i:, i] = scale[i:]
        if i > 0:
            e[i - 1, i] = -i * scale[i - 1]
    return e


def _simplices(features: torch.Tensor, elevation: torch.Tensor):
    """Enclosing simplex of each point (P, d): the remainder-0 vertex rem0 (P, d+1) as multiples of d+1
    (int64), the rank of each coordinate (P, d+1) and the barycentric weights (P, d+1) float64.
    (Written to avoid dtype-casting ops: bool counts are added as uint8 views, the wrap-around of the
    ranks is one floor division.)"""
    p, d = features.shape
    d1 = d + 1
    elevated = features.to(torch.float64) @ elevation
    rem0 = torch.round(elevated / d1)                        # closest remainder-0 point, in units of d+1
    total = rem0.sum(1).long()
    diff = elevated - rem0 * d1
    # rank_i = #{j: diff_j > diff_i} + #{j < i: diff_j == diff_i}, pairwise as in densecrf (uint8 counts).
    cols = diff.t().contiguous()
    rank_t = torch.zeros(d1, p, dtype=torch.uint8)
    for a in range(d1):
        for b in range(a + 1, d1):
            smaller = cols[a] < cols[b]
            rank_t[a] += smaller.view(torch.uint8)
            rank_t[b] += (~smaller).view(torch.uint8)
    # Bring points with sum(rem0) != 0 back onto the plane: ranks below 0 / above d wrap around by d+1,
    # and rem0 moves by one step of d+1 the other way.
    rank = rank_t.t().long() + total[:, None]
    wrap = rank.div(d1, rounding_mode="floor")               # -1, 0 or 1
    rank -= wrap * d1
    rem0 -= wrap
    # Barycentric coordinates: differences of the sorted differential.
    v = elevated / d1 - rem0
    bary = torch.zeros(p, d + 2, dtype=torch.float64)
    bary.scatter_add_(1, d - rank, v)
    bary.scatter_add_(1, d - rank + 1, -v)
    bary[:, 0] += 1.0 + bary[:, d + 1]
    return rem0.long() * d1, rank, bary[:, :d1]


class PermutohedralLattice:
    """A lattice built once for `features` (N, d), reused by `filter(values (N, C))`."""

    def __init__(self, features: torch.Tensor):
        if features.dim() != 2 or features.shape[0] == 0 or features.shape[1] == 0:
            raise ValueError(f"features must be (N, d) with N, d >= 1, got shape {tuple(features.shape)}")
        f = features.detach().cpu()
        n, d = f.shape
        self.num_points, self.dim = n, d
        d1 = d + 1
        elevation = _elevation(d)
        inv_std = math.sqrt(2.0 / 3.0) * d1
        ar = torch.arange(d1)
        # Key range per coordinate, bounded from the features' range (interval arithmetic on E): rem0 lies
        # within one step of d+1 of the elevated point, vertices within d of rem0, neighbours d+1 further.
        f_lo, f_hi = f.min(0).values.double(), f.max(0).values.double()
        el_lo = (elevation.clamp(min=0) * f_lo[:, None] + elevation.clamp(max=0) * f_hi[:, None]).sum(0)
        el_hi = (elevation.clamp(min=0) * f_hi[:, None] + elevation.clamp(max=0) * f_lo[:, None]).sum(0)
        lo = (torch.floor(el_lo[:d] / d1).long() - 2) * d1 - d - d1
        span = (torch.ceil(el_hi[:d] / d1).long() + 2) * d1 + d + d1 - lo + 1
        strides = torch.ones(d, dtype=torch.long)
        if d > 1:
            strides[:-1] = span.flip(0)[:-1].cumprod(0).flip(0)
        fits = math.prod(float(s) for s in span.tolist()) < _MAX_CODE
        # The kernel's value at zero offset, K(f_i, f_i), so that callers can exclude the self term: on a
        # complete lattice the blur links vertices a, b of one simplex by the [1 2 1]/4 paths that cross
        # |a - b| or d+1-|a - b| directions, beta(k) = 4^-k 2^-(d+1-k) + 4^-(d+1-k) 2^-k, beta(0) adds
        # the two paths around all d+1 directions. Exact where those vertices exist; at the edge of the
        # data, where some are absent, the true value is lower (by up to ~20% in our measurements).
        k = (ar[:, None] - ar[None, :]).abs().double()
        beta = torch.where(k == 0, 0.5 ** d1 + 2 * 0.25 ** d1,
                           0.25 ** k * 0.5 ** (d1 - k) + 0.25 ** (d1 - k) * 0.5 ** k)
        # canonical[k, r] (vertex k of the canonical simplex, coordinate of rank r) is in [-d, d].
        canonical = torch.where(ar[None, :] <= d - ar[:, None], ar[:, None], ar[:, None] - d1)
        bary = torch.empty(n, d1, dtype=torch.float32)
        self_weight = torch.empty(n, dtype=torch.float64)
        keys = torch.empty(n, d1, dtype=torch.long) if fits else torch.empty(n, d1, d, dtype=torch.long)
        for start in range(0, n, _CHUNK):
            rem0, rank, w = _simplices(f[start:start + _CHUNK], elevation)
            stop = start + w.shape[0]
            bary[start:stop] = w
            self_weight[start:stop] = ((w @ beta) * w).sum(1)
            rem0, rank = rem0[:, :d], rank[:, :d]               # the last coordinate is redundant
            if fits:
                # code of vertex k = base + sum_i canonical[k, rank_i] stride_i, canonical[k, r] = k - (d+1)[r > d-k]
                base = ((rem0 - lo) * strides).sum(1, keepdim=True)
                by_rank = torch.zeros(w.shape[0], d1 + 1, dtype=torch.long).scatter_add_(
                    1, rank, strides.expand(w.shape[0], d))
                above = by_rank.flip(1).cumsum(1).flip(1)          # above[:, r] = sum over ranks >= r
                keys[start:stop] = base + ar * strides.sum() - d1 * above[:, torch.arange(d1, 0, -1)]
            else:
                keys[start:stop] = rem0[:, None, :] + canonical[:, rank].permute(1, 0, 2)
        # Neighbour offsets along direction j: +1 on every coordinate, -d on coordinate j.
        steps = torch.ones(d1, d, dtype=torch.long) - d1 * torch.eye(d1, d, dtype=torch.long)
        if fits:
            codes = keys.view(-1)
            sorted_codes, perm = torch.sort(codes, stable=True)
            uniq, counts = torch.unique_consecutive(sorted_codes, return_counts=True)
            m = uniq.numel()
            inverse = torch.empty_like(perm).scatter_(0, perm, torch.repeat_interleave(torch.arange(m), counts))
            nb_codes = uniq[None, :] + (steps * strides).sum(1)[:, None]       # +step_j, (d+1, M)
            pos = torch.searchsorted(uniq, nb_codes).clamp_max_(m - 1)
            plus = torch.where(uniq[pos] == nb_codes, pos, torch.full_like(pos, m))
        else:  # very fine lattices: deduplicate rows directly (slower, no overflow)
            uniq_keys, inverse, counts = torch.unique(keys.view(-1, d), dim=0, return_inverse=True,
                                                      return_counts=True)
            perm = torch.argsort(inverse, stable=True)
            m = uniq_keys.shape[0]
            allk, inv_all = torch.unique(torch.cat([uniq_keys, (uniq_keys[None] + steps[:, None]).view(-1, d)]),
                                         dim=0, return_inverse=True)
            table = torch.full((allk.shape[0],), m, dtype=torch.long)
            table[inv_all[:m]] = torch.arange(m)
            plus = table[inv_all[m:]].view(d1, m)
        # -step_j: invert plus (column M collects the vertices without a + neighbour and is then reset).
        minus = torch.full((d1, m + 1), m, dtype=torch.long)
        minus.scatter_(1, plus, torch.arange(m).expand(d1, m))
        minus[:, m] = m
        self.num_vertices = m
        # Volume of a lattice cell: (d+1)^(d-1/2) in H_d coordinates, / inv_std^d in feature space.
        log_cell = (d - 0.5) * math.log(d1) - d * math.log(inv_std)
        self.scale = math.exp(0.5 * d * math.log(2 * math.pi) - log_cell)
        self.self_weight = (self_weight * self.scale).to(torch.float32)      # (N,)
        # Index lists and weights for F.embedding_bag. Lattice tensors have M+1 rows: row M is a
        # "missing vertex" that stays zero, neighbours not in the lattice map to it.
        # Splat: vertex v sums the points whose simplex has it (sorted by vertex, an empty bag for row M).
        self._splat_points = perm // d1
        self._splat_weights = bary.view(-1).index_select(0, perm)
        self._splat_offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        # Blur along direction j: 1/2 the vertex + 1/4 each neighbour; row M reads itself (zero).
        rows = torch.arange(m + 1)
        plus = torch.cat([plus, torch.full((d1, 1), m, dtype=torch.long)], 1)
        self._blur = [torch.stack([rows, p, q], 1) for p, q in zip(plus, minus)]
        self._blur_weights = torch.tensor([0.5, 0.25, 0.25]).repeat(m + 1, 1)
        # Slice: each point's d+1 vertices, barycentric weights times the scale.
        self._slice = inverse.view(n, d1)
        self._slice_weights = bary * self.scale

    def splat(self, values: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (M+1, C) lattice values (the last row is the zero "missing vertex")."""
        return F.embedding_bag(self._splat_points, values, self._splat_offsets, mode="sum",
                               per_sample_weights=self._splat_weights)

    def blur(self, lattice: torch.Tensor) -> torch.Tensor:
        """[1 2 1]/4 along each of the d+1 lattice directions in turn, (M+1, C) -> (M+1, C)."""
        for index in self._blur:
            lattice = F.embedding_bag(index, lattice, mode="sum", per_sample_weights=self._blur_weights)
        return lattice

    def slice(self, lattice: torch.Tensor) -> torch.Tensor:
        """(M+1, C) -> (N, C): barycentric interpolation at every input point (times `scale`)."""
        return F.embedding_bag(self._slice, lattice, mode="sum", per_sample_weights=self._slice_weights)

    def filter(self, values: torch.Tensor, *, exclude_self: bool = False) -> torch.Tensor:
        """values (N, C) -> (N, C): approx. sum_j exp(-|f_i - f_j|^2 / 2) values_j, self term included;
        with `exclude_self`, the lattice's own self term `self_weight * values` is subtracted (sum over
        j != i)."""
        if values.dim() != 2 or values.shape[0] != self.num_points:
            raise ValueError(f"values must be ({self.num_points}, C), got shape {tuple(values.shape)}")
        values = values.to(torch.float32).contiguous()
        out = self.slice(self.blur(self.splat(values)))
        if exclude_self:
            out.addcmul_(values, self.self_weight[:, None], value=-1)
        return out
