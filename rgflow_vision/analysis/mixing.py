"""Multi-scale mixing and mixed-temperature sampling: the RG levels used one at a time.

At cut ``hc`` the latents of level ``>= hc`` (the coarse, large-scale content) come from image
A and those below ``hc`` (the fine detail) from image B: ``hc = 0`` gives A, ``hc = H`` gives B.
"""

from __future__ import annotations

import torch

from ..flows.rgflow import RGFlow
from ..priors.factorized import FactorizedPrior
from ._common import AnalysisError, check_images, check_level, encode_midbin, evaluating

_CUT = "0 keeps image A, H keeps image B"
_SPLIT = "levels below it take the fine temperature, the others the coarse one"


def mix_latents(z_a: torch.Tensor, z_b: torch.Tensor, hc: int, level_map: torch.Tensor) -> torch.Tensor:
    """Latents of level ``>= hc`` from ``z_a``, the others from ``z_b`` (``level_map``: ``(L, L)``)."""
    if z_a.shape != z_b.shape:
        shapes = f"{tuple(z_a.shape)} and {tuple(z_b.shape)}"
        raise AnalysisError(f"the two latents to mix must have the same shape; got {shapes}")
    hc = check_level(hc, int(level_map.max()) + 1, "hc", _CUT)
    return torch.where(level_map.to(z_a.device) >= hc, z_a, z_b)


@torch.no_grad()
def mix_flow(flow: RGFlow, y_a: torch.Tensor, y_b: torch.Tensor, hc: int) -> torch.Tensor:
    """Mix two batches in the flow's data space (logits): encode both, :func:`mix_latents`, decode."""
    with evaluating(flow):
        z_a, _ = flow.encode(y_a)
        z_b, _ = flow.encode(y_b)
        y, _ = flow.decode(mix_latents(z_a, z_b, hc, flow.level_map()))
    return y


@torch.no_grad()
def mix(model, x_a: torch.Tensor, x_b: torch.Tensor, hc: int) -> torch.Tensor:
    """Mix two batches of integer images ``(B, C, L, L)``: coarse levels (``>= hc``) of ``x_a``, fine
    levels of ``x_b``. Returns integer pixels (``torch.long``); ``hc=0`` gives ``x_a`` and
    ``hc=H`` gives ``x_b`` exactly (the images are dequantised at the middle of their bins)."""
    return mix_all(model, x_a, x_b, cuts=[hc])[0]


@torch.no_grad()
def mix_all(model, x_a: torch.Tensor, x_b: torch.Tensor, cuts=None) -> torch.Tensor:
    """Every cut ``hc = 0 .. H`` (or those in ``cuts``) at once: ``(len(cuts), B, C, L, L)`` long,
    encoding each image once."""
    check_images(model, x_a, "x_a")
    check_images(model, x_b, "x_b")
    if x_a.shape != x_b.shape:
        raise AnalysisError(f"x_a and x_b must have the same shape; got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
    flow = model.flow
    cuts = range(flow.num_levels + 1) if cuts is None else [check_level(hc, flow.num_levels, "hc", _CUT) for hc in cuts]
    with evaluating(model):
        _, z_a = encode_midbin(model, x_a)
        _, z_b = encode_midbin(model, x_b)
        level_map = flow.level_map()
        out = [model.pixels.inverse(flow.decode(mix_latents(z_a, z_b, hc, level_map))[0]) for hc in cuts]
    return torch.stack(out)


def mixed_temperature_latents(
    prior: FactorizedPrior,
    level_map: torch.Tensor,
    n: int,
    fine_temperature: float,
    coarse_temperature: float,
    split_level: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` latents from ``prior`` with levels ``< split_level`` at ``fine_temperature`` and the
    others at ``coarse_temperature``. One draw at temperature 1, scaled per site, so a
    temperature of 0 gives exact zeros and the same generator state gives the same noise."""
    split_level = check_level(split_level, int(level_map.max()) + 1, "split_level", _SPLIT)
    for name, t in (("fine_temperature", fine_temperature), ("coarse_temperature", coarse_temperature)):
        if not t >= 0:
            raise AnalysisError(f"{name} must be a non-negative number; got {t}")
    unit = prior.sample(n, 1.0, generator)
    fine = level_map.to(unit.device) < split_level
    temperature = torch.where(fine, unit.new_tensor(fine_temperature), unit.new_tensor(coarse_temperature))
    return unit * temperature


@torch.no_grad()
def sample_mixed_temperature(
    model,
    n: int,
    fine_temperature: float,
    coarse_temperature: float,
    split_level: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` integer images (``torch.long``) whose fine levels (``< split_level``) are drawn at
    ``fine_temperature`` and coarse levels at ``coarse_temperature``."""
    flow = model.flow
    z = mixed_temperature_latents(
        model.prior, flow.level_map(), n, fine_temperature, coarse_temperature, split_level, generator
    )
    with evaluating(model):
        y, _ = flow.decode(z.to(next(flow.parameters()).dtype))
    return model.pixels.inverse(y)
