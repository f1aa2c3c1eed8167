"""Per-configuration observables of lattice fields ``(B, C, L, L)`` (a complex field is ``C = 2``).

Each function returns one value per configuration (leading dimension ``B``), so that plain
means, chain means, reweighting and the jackknife in :mod:`.estimators` all apply unchanged.
Ensemble averages are written ``< . >``; ``V = L^2``; ``phi_x . phi_y`` is the dot product over
channels, which for a complex field is ``Re(phi_x^* phi_y)``.
"""

from __future__ import annotations

import torch


def magnetization(x: torch.Tensor) -> torch.Tensor:
    """``M = sum_x phi_x`` per configuration, ``(B, C)`` (a 2-vector for the complex field)."""
    return x.sum(dim=(-2, -1))


def susceptibility(x: torch.Tensor) -> torch.Tensor:
    """``|M|^2 / V`` per configuration, ``(B,)``; its ensemble mean is ``chi = <|M|^2>/V``.

    This is the full (not connected) susceptibility of the reference tables: in a finite volume
    with the ``Z2``/``U(1)`` symmetry ``<M> = 0``, so the two agree in exact averages.
    """
    return (magnetization(x) ** 2).sum(dim=1) / (x.shape[-1] * x.shape[-2])


def phi2(x: torch.Tensor) -> torch.Tensor:
    """Site average of ``|phi_x|^2`` per configuration, ``(B,)``; ``<phi2> = G(0)``."""
    return (x * x).sum(dim=1).mean(dim=(-2, -1))


def two_point(x: torch.Tensor, connected: bool = False) -> torch.Tensor:
    """``G(r) = (1/V) sum_y phi_y . phi_{y+r}`` per configuration for every displacement, ``(B, L, L)``.

    Its ensemble mean is the translation-averaged ``<phi_0^* phi_r>``; ``sum_r G(r) = |M|^2/V``.
    ``connected=True`` subtracts ``|<phi>|^2``, with ``<phi>`` the mean field over the batch and the
    sites (per channel), i.e. the disconnected part estimated from this batch.
    Computed with FFTs (Wiener-Khinchin), exact up to rounding.
    """
    v = x.shape[-1] * x.shape[-2]
    f = torch.fft.fft2(x)
    g = torch.fft.ifft2(f.conj() * f).real.sum(dim=1) / v
    if connected:
        g = g - (x.mean(dim=(0, 2, 3)) ** 2).sum()
    return g


def axis_two_point(g: torch.Tensor) -> torch.Tensor:
    """``G`` along an axis, ``(..., L, L) -> (..., L)``: the mean of ``G(r, 0)`` and ``G(0, r)``, ``r = 0 .. L-1``.

    This is the reference tables' ``G(r)``: averaged over sites and over both axes.
    """
    return 0.5 * (g[..., :, 0] + g[..., 0, :])


def two_point_axis(x: torch.Tensor, connected: bool = False) -> torch.Tensor:
    """``axis_two_point(two_point(x, connected))``: ``G(r)`` along the axes per configuration, ``(B, L)``.

    Computed directly from one-dimensional FFTs along each axis (cheaper than the full ``G``).
    """
    size, v = x.shape[-1], x.shape[-1] * x.shape[-2]
    rows, cols = torch.fft.rfft(x, dim=-2), torch.fft.rfft(x, dim=-1)
    power = (rows.real**2 + rows.imag**2).sum(dim=(1, 3)) + (cols.real**2 + cols.imag**2).sum(dim=(1, 2))
    g = torch.fft.irfft(power, n=size, dim=-1) / (2 * v)
    if connected:
        g = g - (x.mean(dim=(0, 2, 3)) ** 2).sum()
    return g


DEFAULT_OBSERVABLES = {
    "chi": susceptibility,
    "phi2": phi2,
    "M": magnetization,
    "G": two_point_axis,
}
