"""The on-site prior: the action without its hopping term, ``p0(z) = prod_x exp(-U(z_x)) / Z0``.

With a Gaussian prior the flow must first carve each site's marginal out of a bell; for phi^4 at
lam = 1.145 that marginal is a ring (maximum at |phi|^2 = 0.56), and the best per-site Gaussian already
costs 0.21 nats of reverse KL per site (README, Lattice). Starting the flow (the identity at
initialisation) from the product of on-site measures leaves it only the couplings between sites to
learn: at kappa = 0.2 the hopping is a perturbation of that product.

Sampling is exact up to the grid of the inverse CDF (2^16 cells; the sampled density differs from the
formula in ``log_prob`` by a relative ~1e-9, far below float32 weights). An O(2)-symmetric two-channel
potential (complex fields) is sampled as radius and uniform angle, a one-channel potential directly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .actions import LatticeAction

GRID = 2**16  # cells of the inverse-CDF table
TAIL = 60.0   # the table ends where exp(-U) has fallen by e^-60 below its maximum


class OnsitePrior(nn.Module):
    """Independent sites, each drawn from ``exp(-U(phi))`` of ``action`` (its ``onsite`` potential).

    The same interface as :class:`~rgflow_vision.priors.FactorizedPrior` (``shape``, ``log_prob``,
    ``sample``); ``temperature`` scales the field, as it scales the latents there.
    """

    def __init__(self, action: LatticeAction, size: int):
        super().__init__()
        self.action = action
        self.shape = (action.channels, size, size)
        if action.channels not in (1, 2):
            raise ValueError(f"the on-site prior handles one or two channels; {action.name} has {action.channels}")
        radial = action.channels == 2
        if radial and not _is_rotation_invariant(action):
            raise ValueError(f"the on-site prior needs an O(2)-symmetric potential; {action.name} is not")
        reach = _reach(action, radial)
        grid = torch.linspace(0.0 if radial else -reach, reach, GRID + 1, dtype=torch.float64)
        u = _onsite_along(action, grid)
        # The measure on the table's coordinate: r dr (times 2 pi from the angle) for a radius, dphi for a field.
        log_density = -(u - u.min()) + (torch.log(grid.clamp_min(1e-300)) if radial else 0.0)
        density = torch.exp(log_density)
        cells = 0.5 * (density[1:] + density[:-1]) * (grid[1] - grid[0])  # trapezoid
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(cells, 0)])
        self.log_z0 = math.log(float(cdf[-1])) - float(u.min()) + (math.log(2 * math.pi) if radial else 0.0)
        self.radial = radial
        self.register_buffer("_grid", grid, persistent=False)
        self.register_buffer("_cdf", cdf / cdf[-1], persistent=False)

    def log_prob(self, z: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """``sum_x [-U(z_x / T) - ln Z0] - C V ln T`` per sample, ``(B,)``, float32 or wider."""
        z = z.to(torch.promote_types(z.dtype, torch.float32))
        per_site = -self.action.onsite(z / temperature) - self.log_z0 - self.shape[0] * math.log(temperature)
        return per_site.flatten(1).sum(dim=1)

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        channels, size, _ = self.shape
        device = self._grid.device
        u = torch.rand((n, size, size), generator=generator, dtype=torch.float64, device=device)
        coordinate = _interpolate(u, self._cdf, self._grid)
        if self.radial:
            angle = 2 * math.pi * torch.rand((n, size, size), generator=generator, dtype=torch.float64, device=device)
            z = torch.stack([coordinate * torch.cos(angle), coordinate * torch.sin(angle)], dim=1)
        else:
            z = coordinate[:, None]
        return (temperature * z).to(torch.get_default_dtype())

    def extra_repr(self) -> str:
        return f"exp(-U) of {self.action.name}, ln Z0 = {self.log_z0:.6f} per site"


def _interpolate(u: torch.Tensor, cdf: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The inverse CDF at ``u``, linear between the table's points."""
    flat = u.flatten()
    index = torch.searchsorted(cdf, flat).clamp(1, cdf.numel() - 1)
    low, high = cdf[index - 1], cdf[index]
    fraction = ((flat - low) / (high - low).clamp_min(1e-300)).clamp(0, 1)
    return (grid[index - 1] + fraction * (grid[index] - grid[index - 1])).reshape(u.shape)


def _onsite_along(action: LatticeAction, coordinate: torch.Tensor) -> torch.Tensor:
    """``U`` along the first channel's axis (the radius of a symmetric potential, or the field)."""
    field = torch.zeros((1, action.channels, 1, coordinate.numel()), dtype=coordinate.dtype)
    field[0, 0, 0] = coordinate
    return action.onsite(field).flatten()


def _is_rotation_invariant(action: LatticeAction) -> bool:
    r = torch.linspace(0, 3, 31, dtype=torch.float64)
    along = torch.stack([r, torch.zeros_like(r)])[None, :, None]
    diagonal = torch.stack([r, r])[None, :, None] / math.sqrt(2)
    return torch.allclose(action.onsite(along), action.onsite(diagonal), rtol=1e-10, atol=1e-10)


def _reach(action: LatticeAction, radial: bool) -> float:
    """A radius beyond which ``exp(-U)`` is below e^-TAIL of its maximum (doubling until it is)."""
    probe = torch.linspace(0, 1, 4097, dtype=torch.float64)
    reach = 1.0
    for _ in range(20):
        u = _onsite_along(action, reach * probe)
        if not radial:
            u = torch.minimum(u, _onsite_along(action, -reach * probe))
        if u[-1] - u.min() > TAIL and u[-1] >= u[-2]:
            return reach
        reach *= 2
    raise ValueError(f"exp(-U) of {action.name} does not fall off: the on-site measure is not normalisable")


__all__ = ["OnsitePrior"]
