"""Monotone rational-quadratic splines (Durkan et al. 2019, "Neural Spline Flows"), elementwise.

On ``[-bound, bound]`` the map is a spline of ``K`` bins whose widths, heights and inner knot
slopes come from unconstrained parameters; outside it is the identity (the end knots have slope 1),
so the map is a bijection of the real line. All-zero parameters give equal bins and unit slopes:
the identity. Written from the paper's formulas (its eqs. 4-6 and the quadratic inverse).

The bins lie along dimension -2 (``x``: ``(..., F)``, parameters ``(..., K, F)``): the coupling's
networks emit that layout, and each operation then runs along the contiguous features (a softmax
over a last dimension of 8 is several times slower on CPUs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MIN_BIN = 1e-3    # smallest bin width/height, as a fraction of the interval: keeps the slopes bounded
MIN_SLOPE = 1e-3
_SLOPE_SHIFT = math.log(math.expm1(1.0))  # softplus(0 + shift) = 1: zero parameters give unit slopes


def _knots(raw: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin sizes (softmax, at least MIN_BIN) and the K+1 knot positions, exactly from -bound to bound."""
    bins = raw.shape[-2]
    sizes = (MIN_BIN + (1 - MIN_BIN * bins) * torch.softmax(raw, dim=-2)) * (2 * bound)
    inner = torch.cumsum(sizes, dim=-2)[..., :-1, :] - bound
    ends = inner.new_full((*inner.shape[:-2], 1, inner.shape[-1]), bound)
    knots = torch.cat([-ends, inner, ends], dim=-2)
    return knots[..., 1:, :] - knots[..., :-1, :], knots


def rational_quadratic(x: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor, slopes: torch.Tensor,
                       bound: float, inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The spline of ``x`` ``(..., F)`` with raw ``widths`` and ``heights`` ``(..., K, F)`` and raw inner slopes
    ``(..., K-1, F)``; returns ``y`` and ``log|dy/dx|`` elementwise (for ``inverse``, ``x`` is ``y`` and the
    log-det is that of the inverse map)."""
    w, xk = _knots(widths, bound)
    h, yk = _knots(heights, bound)
    d = MIN_SLOPE + (1 - MIN_SLOPE) * F.softplus(slopes + _SLOPE_SHIFT)
    d = F.pad(d, (0, 0, 1, 1), value=1.0)  # slope 1 at both ends: the identity tails join smoothly
    inside = (x > -bound) & (x < bound)
    v = x.clamp(-bound, bound)[..., None, :]
    # The bin of each value: how many inner knots (of the side the value lives on) lie at or below it.
    edges = yk if inverse else xk
    k = (edges[..., 1:-1, :] <= v).sum(dim=-2, keepdim=True)

    def at(t):
        return t.gather(-2, k)[..., 0, :]

    wk, hk, x0, y0, d0, d1 = at(w), at(h), at(xk), at(yk), at(d), at(d[..., 1:, :])
    v = v[..., 0, :]
    s = hk / wk
    curve = d1 + d0 - 2 * s
    if inverse:
        dy = v - y0
        a = hk * (s - d0) + dy * curve
        b = hk * d0 - dy * curve
        c = -s * dy
        xi = (2 * c) / (-b - torch.sqrt((b * b - 4 * a * c).clamp(min=0)))
        out = x0 + xi * wk
    else:
        xi = (v - x0) / wk
    one = xi * (1 - xi)
    denom = s + curve * one
    if not inverse:
        out = y0 + hk * (s * xi**2 + d0 * one) / denom
    logdet = 2 * torch.log(s) + torch.log(d1 * xi**2 + 2 * s * one + d0 * (1 - xi) ** 2) - 2 * torch.log(denom)
    if inverse:
        logdet = -logdet
    return torch.where(inside, out, x), torch.where(inside, logdet, 0.0)
