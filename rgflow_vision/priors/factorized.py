"""Factorised priors over the latents, optionally with a learnable scale per RG level."""

from __future__ import annotations

import math

import torch
from torch import nn


class FactorizedPrior(nn.Module):
    """Independent zero-mean latents of unit variance at temperature 1.

    ``temperature`` multiplies the standard deviation. With ``level_map`` (the level of
    every site, ``(L, L)``) and ``learn_scale=True`` every RG level gets its own learnable
    log-scale, initialised to 0; the reference code has one fixed scale for all latents.
    """

    def __init__(self, channels: int, image_size: int, level_map: torch.Tensor | None = None, learn_scale: bool = False):
        super().__init__()
        self.shape = (channels, image_size, image_size)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # follows .to(device)
        if learn_scale:
            if level_map is None:
                raise ValueError("learn_scale=True needs the level_map of the flow (RGFlow.level_map())")
            if tuple(level_map.shape) != (image_size, image_size):
                raise ValueError(f"level_map has shape {tuple(level_map.shape)}, expected ({image_size}, {image_size})")
            self.register_buffer("level_map", level_map.long().clone(), persistent=False)
            self.log_scale = nn.Parameter(torch.zeros(int(level_map.max()) + 1))
        else:
            self.log_scale = None

    def scale(self, temperature: float = 1.0) -> torch.Tensor | float:
        """Standard deviation per site, ``(L, L)``, or a number when it is the same everywhere."""
        if self.log_scale is None:
            return temperature
        return temperature * torch.exp(self.log_scale)[self.level_map]

    def log_prob(self, z: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Log density per sample, ``(B,)``, in ``z``'s dtype (float32 at least)."""
        z = z.to(torch.promote_types(z.dtype, torch.float32))
        sigma = self.scale(temperature)
        log_sigma = torch.log(sigma) if torch.is_tensor(sigma) else math.log(sigma)
        return (self._log_unit(z / sigma) - log_sigma).flatten(1).sum(dim=1)

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        unit = self._sample_unit((n, *self.shape), generator, self._anchor.device)
        return unit * self.scale(temperature)

    def _log_unit(self, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _sample_unit(self, shape, generator, device) -> torch.Tensor:
        raise NotImplementedError


class LaplacePrior(FactorizedPrior):
    """Sparse prior of the paper: Laplace with scale ``1/sqrt(2)`` (unit variance)."""

    _b = 1 / math.sqrt(2)

    def _log_unit(self, u):
        return -u.abs() / self._b - math.log(2 * self._b)

    def _sample_unit(self, shape, generator, device):
        # difference of two exponentials drawn by inverse CDF: finite for every r in [0, 1),
        # and reproducible with a generator (torch.distributions takes none)
        r = torch.rand((2, *shape), generator=generator, device=device)
        return self._b * (torch.log1p(-r[0]) - torch.log1p(-r[1]))


class GaussianPrior(FactorizedPrior):
    """Standard normal latents."""

    def _log_unit(self, u):
        return -0.5 * u**2 - 0.5 * math.log(2 * math.pi)

    def _sample_unit(self, shape, generator, device):
        return torch.randn(shape, generator=generator, device=device)


PRIORS = {"laplace": LaplacePrior, "gaussian": GaussianPrior}


def build_prior(name: str, channels: int, image_size: int, **kwargs) -> FactorizedPrior:
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; choose one of {sorted(PRIORS)}")
    return PRIORS[name](channels, image_size, **kwargs)
