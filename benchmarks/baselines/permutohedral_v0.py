"""BASELINE, not used by seglab: `seglab.inference.permutohedral` as of commit 47bcbd2 (before issue 20),
kept verbatim so that benchmarks/crf_speed.py can time the old and new code in one run and compare
their outputs.

Gaussian filtering in linear time with the permutohedral lattice.

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
simplex), but vectorised with torch ops instead of a per-point hash table: the vertex keys are
encoded into one int64 each (mixed radix), deduplicated by one sort (`torch.sort` +
`unique_consecutive`, which also yields the inverse index), and the blur's neighbours are found with
`torch.searchsorted` on the sorted codes (a neighbour's code differs from its vertex's code by a
constant per direction; the -direction is the inverse of the +direction). Splat, each directional
blur and slice are then sparse CSR matrices built once: on this CPU sparse-dense products were
faster than index_add_ / index_select. Keys too wide for int64 fall back to `torch.unique(dim=0)`.

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
import warnings

import torch

_MAX_CODE = 2 ** 62


class PermutohedralLattice:
    """A lattice built once for `features` (N, d), reused by `filter(values (N, C))`."""

    def __init__(self, features: torch.Tensor):
        if features.dim() != 2 or features.shape[0] == 0 or features.shape[1] == 0:
            raise ValueError(f"features must be (N, d) with N, d >= 1, got shape {tuple(features.shape)}")
        f = features.detach().to(torch.float64)   # float64: keys of large coordinates stay exact
        n, d = f.shape
        self.num_points, self.dim = n, d
        d1 = d + 1
        # Elevate onto H_d (Adams et al.'s matrix E, scaled so the blur has unit standard deviation).
        inv_std = math.sqrt(2.0 / 3.0) * d1
        j = torch.arange(1, d + 1, dtype=torch.float64)
        cf = f * (inv_std / torch.sqrt(j * (j + 1)))                            # (N, d)
        suffix = cf.flip(1).cumsum(1).flip(1)                                   # sum_{k>=i} cf_k
        elevated = torch.empty(n, d1, dtype=torch.float64)
        elevated[:, 0] = suffix[:, 0]
        elevated[:, 1:] = torch.cat([suffix[:, 1:], torch.zeros(n, 1, dtype=torch.float64)], 1) - j * cf
        # Closest remainder-0 point and the rank (descending order) of the differential.
        rem0 = torch.round(elevated / d1) * d1
        total = (rem0.sum(1) / d1).round().long()                               # (N,)
        diff = elevated - rem0
        # rank_i = #{j: diff_j > diff_i} + #{j < i: diff_j == diff_i}: pairwise, as in densecrf.
        cols = diff.t().contiguous()
        rank_t = torch.zeros(d1, n, dtype=torch.long)
        for a in range(d1):
            for b in range(a + 1, d1):
                smaller = cols[a] < cols[b]
                rank_t[a] += smaller
                rank_t[b] += ~smaller
        rank = rank_t.t()
        ar = torch.arange(d1)
        # Bring points with sum(rem0) != 0 back onto the plane.
        rank = rank + total[:, None]
        low, high = rank < 0, rank > d
        rank = torch.where(low, rank + d1, torch.where(high, rank - d1, rank))
        rem0 = rem0 + d1 * low - d1 * high
        # Barycentric coordinates: differences of the sorted differential.
        v = (elevated - rem0) / d1
        bary = torch.zeros(n, d + 2, dtype=torch.float64)
        bary.scatter_add_(1, d - rank, v)
        bary.scatter_add_(1, d - rank + 1, -v)
        bary[:, 0] += 1.0 + bary[:, d + 1]
        # Vertex k of the simplex: rem0 + canonical[k, rank]; the last coordinate is redundant.
        # canonical[k, r] is in [-d, d], so the keys lie within rem0 -/+ d.
        canonical = torch.where(ar[None, :] <= d - ar[:, None], ar[:, None], ar[:, None] - d1)  # (k, r)
        rem0 = rem0[:, :d].long()
        # Keys are encoded into int64 codes (mixed radix; margin d+1 so that neighbours encode too).
        lo = rem0.min(0).values - d - d1
        span = rem0.max(0).values + d + d1 - lo + 1
        strides = torch.ones(d, dtype=torch.long)
        if d > 1:
            strides[:-1] = span.flip(0)[:-1].cumprod(0).flip(0)
        fits = math.prod(float(s) for s in span.tolist()) < _MAX_CODE
        # Neighbour offsets along direction j: +1 on every coordinate, -d on coordinate j.
        steps = torch.ones(d1, d, dtype=torch.long) - d1 * torch.eye(d1, d, dtype=torch.long)
        rank = rank[:, :d]
        if fits:
            # code of vertex k = base + sum_i canonical[k, rank_i] stride_i, canonical[k, r] = k - (d+1)[r > d-k]
            base = ((rem0 - lo) * strides).sum(1, keepdim=True)
            by_rank = torch.zeros(n, d1 + 1, dtype=torch.long).scatter_add_(1, rank, strides.expand(n, d))
            above = by_rank.flip(1).cumsum(1).flip(1)                        # above[:, r] = sum over ranks >= r
            codes = (base + ar * strides.sum() - d1 * above[:, torch.arange(d1, 0, -1)]).reshape(-1)
            sorted_codes, perm = torch.sort(codes, stable=True)
            uniq, counts = torch.unique_consecutive(sorted_codes, return_counts=True)
            m = uniq.numel()
            inverse = torch.empty_like(perm)
            inverse[perm] = torch.repeat_interleave(torch.arange(m), counts)
            nb_codes = uniq[None, :] + (steps * strides).sum(1)[:, None]       # +step_j, (d+1, M)
            pos = torch.searchsorted(uniq, nb_codes).clamp_max_(m - 1)
            plus = torch.where(uniq[pos] == nb_codes, pos, torch.full_like(pos, m))
            minus = torch.full((d1, m + 1), m, dtype=torch.long)               # -step_j: invert plus
            minus.scatter_(1, plus, torch.arange(m).expand(d1, m))
            neighbours = torch.cat([plus, minus[:, :m]])
        else:  # very fine lattices: deduplicate rows directly (slower, no overflow)
            keys = (rem0[:, None, :] + canonical[:, rank].permute(1, 0, 2)).reshape(-1, d)
            uniq_keys, inverse, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
            perm = torch.argsort(inverse, stable=True)
            m = uniq_keys.shape[0]
            nb = torch.cat([uniq_keys[None] + steps[:, None], uniq_keys[None] - steps[:, None]]).reshape(-1, d)
            allk, inv_all = torch.unique(torch.cat([uniq_keys, nb]), dim=0, return_inverse=True)
            table = torch.full((allk.shape[0],), m, dtype=torch.long)
            table[inv_all[:m]] = torch.arange(m)
            neighbours = table[inv_all[m:]].reshape(2 * d1, m)
        self.num_vertices = m
        # Volume of a lattice cell: (d+1)^(d-1/2) in H_d coordinates, / inv_std^d in feature space.
        log_cell = (d - 0.5) * math.log(d1) - d * math.log(inv_std)
        self.scale = math.exp(0.5 * d * math.log(2 * math.pi) - log_cell)
        # The kernel's value at zero offset, K(f_i, f_i), so that callers can exclude the self term: on a
        # complete lattice the blur links vertices a, b of one simplex by the [1 2 1]/4 paths that cross
        # |a - b| or d+1-|a - b| directions, beta(k) = 4^-k 2^-(d+1-k) + 4^-(d+1-k) 2^-k, beta(0) adds
        # the two paths around all d+1 directions. Exact where those vertices exist; at the edge of the
        # data, where some are absent, the true value is lower (by up to ~20% in our measurements).
        a = torch.arange(d1, dtype=torch.float64)
        k = (a[:, None] - a[None, :]).abs()
        beta = torch.where(k == 0, 0.5 ** d1 + 2 * 0.25 ** d1,
                           0.25 ** k * 0.5 ** (d1 - k) + 0.25 ** (d1 - k) * 0.5 ** k)
        w = bary[:, :d1]
        self.self_weight = (((w @ beta) * w).sum(1) * self.scale).to(torch.float32)   # (N,)
        # Splat ((M+1) x N), blur ((M+1) x (M+1) per direction) and slice (N x (M+1)) as sparse CSR
        # matrices; row M is a "missing vertex" that stays zero, neighbours not in the lattice map to it.
        weights = bary[:, :d1].to(torch.float32).reshape(-1)
        rows = torch.arange(m + 1)
        ends = counts.cumsum(0)
        splat_rows = torch.cat([torch.zeros(1, dtype=torch.long), ends, ends[-1:]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            self._splat = torch.sparse_csr_tensor(splat_rows, perm // d1, weights[perm], (m + 1, n))
            self._slice = torch.sparse_csr_tensor(torch.arange(0, n * d1 + 1, d1), inverse, weights * self.scale,
                                                  (n, m + 1))          # the scale folded into the slice
            blur_values = torch.tensor([0.5, 0.25, 0.25]).repeat(m + 1)
            self._blur = []
            for plus, minus in zip(neighbours[:d1], neighbours[d1:]):
                cols = torch.stack([rows[:m], plus, minus], 1).reshape(-1)
                cols = torch.cat([cols, torch.full((3,), m, dtype=torch.long)])   # the zero row
                self._blur.append(torch.sparse_csr_tensor(torch.arange(0, 3 * (m + 1) + 1, 3), cols,
                                                          blur_values, (m + 1, m + 1)))

    def splat(self, values: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (M+1, C) lattice values (the last row is the zero "missing vertex")."""
        return self._splat @ values

    def blur(self, lattice: torch.Tensor) -> torch.Tensor:
        """[1 2 1]/4 along each of the d+1 lattice directions in turn, (M+1, C) -> (M+1, C)."""
        for matrix in self._blur:
            lattice = matrix @ lattice
        return lattice

    def slice(self, lattice: torch.Tensor) -> torch.Tensor:
        """(M+1, C) -> (N, C): barycentric interpolation at every input point (times `scale`)."""
        return self._slice @ lattice

    def filter(self, values: torch.Tensor, *, exclude_self: bool = False) -> torch.Tensor:
        """values (N, C) -> (N, C): approx. sum_j exp(-|f_i - f_j|^2 / 2) values_j, self term included;
        with `exclude_self`, the lattice's own self term `self_weight * values` is subtracted (sum over
        j != i)."""
        if values.dim() != 2 or values.shape[0] != self.num_points:
            raise ValueError(f"values must be ({self.num_points}, C), got shape {tuple(values.shape)}")
        values = values.to(torch.float32).contiguous()
        out = self.slice(self.blur(self.splat(values)))
        if exclude_self:
            out.sub_(values * self.self_weight[:, None])
        return out
