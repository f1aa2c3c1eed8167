"""A learned momentum-space scaling: the Gaussian part of a lattice field's correlations, exactly and for free.

    x = F^-1 diag(s_k) F x',    s_k = exp(a_k),    log|det dx/dx'| = C sum_k a_k,

a translation-invariant linear map of the ``L x L`` torus, diagonal in momentum. ``a_k`` is tied across the
lattice's rotations and reflections (D4 orbits of momenta, which include ``k -> -k``, so the map is real and
symmetric) and is the same for every channel, so the map commutes with translations, D4, ``phi -> -phi`` and
the O(2) rotations of a complex field's two components.

Why: near a critical point the zero mode's amplitude is about ``sqrt(chi)`` times a site's (at kappa = 0.6,
L = 16: 16x). A coupling flow reaches that through many saturating layers, and the neural-ODE block cannot
reach it at all, since its Lipschitz cap bounds every stretch by ``e^lipschitz``. This layer holds that
stretch in one number per momentum orbit; the flow learns the non-Gaussian rest. It sits on the field side
(last when decoding, first when encoding: a preconditioner of the RG step).
"""

from __future__ import annotations


import torch
from torch import nn

from .features import displacement_orbits


class MomentumScale(nn.Module):
    """``(B, C, L, L) -> (B, C, L, L)``: ``x' -> x`` scales every momentum mode by ``exp(a_k)`` (decode);
    ``inverse=True`` divides (encode). Starts as the identity. ``speed`` multiplies the parameters: Adam moves
    each by about the learning rate per step, and the zero mode needs ``ln sqrt(chi)`` (2.8 at kappa = 0.6,
    L = 16), which at ``lr = 1e-3`` and speed 1 would take thousands of steps."""

    def __init__(self, channels: int, size: int, speed: float = 10.0):
        super().__init__()
        orbit, count = displacement_orbits(size)  # momenta k = 2 pi n / L share the displacements' D4 orbits
        self.register_buffer("orbit", orbit, persistent=False)
        self.channels, self.size, self.speed = channels, size, speed
        self.log_scale = nn.Parameter(torch.zeros(count))

    def log_scales(self) -> torch.Tensor:
        """``a_k`` on the ``(L, L)`` grid of momenta ``2 pi (i, j) / L``."""
        return self.speed * self.log_scale[self.orbit]

    def forward(self, x: torch.Tensor, inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            a = self.log_scales().to(dtype)
            a = -a if inverse else a
            half = torch.exp(a[:, : self.size // 2 + 1])  # the rfft's half plane; a_k = a_-k keeps the map real
            y = torch.fft.irfft2(torch.fft.rfft2(x.to(dtype)) * half, s=(self.size, self.size))
            return y, (self.channels * a.sum()).expand(x.shape[0])

    @torch.no_grad()
    def grow_from(self, small: "MomentumScale") -> None:
        """Take the scales of the same layer on a smaller torus (``L / 2^n``): the momenta both tori have keep
        their scales, those in between get the periodic bilinear interpolation (which commutes with D4)."""
        a = small.log_scale[small.orbit].detach().double()  # unscaled: at the same L the copy is exact
        while a.shape[-1] < self.size:  # momentum 2 pi n / L is 2 pi (2n) / (2L): even indices copy, odd average
            m = a.shape[-1]
            rows = torch.stack([a, (a + a.roll(-1, 0)) / 2], 1).reshape(2 * m, m)
            a = torch.stack([rows, (rows + rows.roll(-1, 1)) / 2], 2).reshape(2 * m, 2 * m)
        if a.shape[-1] != self.size:
            raise ValueError(f"cannot grow a momentum scaling from L = {small.size} to L = {self.size}")
        values = torch.zeros_like(self.log_scale, dtype=torch.float64)
        values[self.orbit.flatten()] = a.flatten()  # equal on every member of an orbit
        self.log_scale.copy_(values * (small.speed / self.speed))
