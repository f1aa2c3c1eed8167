"""Inpainting / error correction restricted to the causal cone of the corruption.

A corruption of ``k x k`` pixels reaches only the latents in its causal cone, ``O(k^2 + log N)``
of them (see ``scripts/cone_table.py``). Those latents are re-optimised to maximise the image
likelihood while the uncorrupted pixels stay near the observation; every other latent stays at
``encode(corrupted)`` bit for bit, so pixels outside the decode footprint of the freed latents do
not move. The full cone always holds top-level latents, whose footprint is the whole image; the
footprint is local when only the finer levels are freed (``max_level``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..flows.geometry import causal_cone
from ._common import AnalysisError, check_images, check_level, encode_midbin, evaluating


@dataclass
class InpaintResult:
    """Outcome of :func:`inpaint`.

    ``restored``: integer images ``(B, C, L, L)``, the decoded optimum (not pasted back into the
    observation). ``latent_mask``: the latents that were optimised, ``(B, C, L, L)`` bool;
    ``latents_updated`` counts them over channels, sites and the batch. ``footprint``: the pixels
    that those latents can move (their decode causal cone), ``(B, L, L)``; ``z``: the final latents.
    ``error`` / ``error_before``: mean absolute error
    in pixel units (integer levels) over the corrupted pixels and all channels, of the restored /
    corrupted image against ``original`` (``None`` without it). ``loss`` / ``initial_loss``: the
    objective averaged over the batch after / before the optimisation, ``history`` every step's.
    ``seconds``: wall time of the whole call.
    """

    restored: torch.Tensor
    latents_updated: int
    latent_mask: torch.Tensor
    footprint: torch.Tensor
    error: float | None
    error_before: float | None
    loss: float
    initial_loss: float
    seconds: float
    z: torch.Tensor
    history: list[float] = field(default_factory=list)


def corruption_cone(mask: torch.Tensor, block_size: int = 4) -> torch.Tensor:
    """Latent sites whose decode Jacobian touches the pixels in ``mask`` (``(L, L)`` or ``(B, L, L)``).

    Latent ``l`` moves pixel ``p`` iff ``p`` is in the decode cone of ``l`` iff ``l`` is in the
    encode cone of ``p``: the encode-direction causal cone of the mask.
    """
    if mask.dim() == 2:
        return causal_cone(mask, block_size, direction="encode")
    return torch.stack([causal_cone(m, block_size, direction="encode") for m in mask])


def inpaint(
    model,
    x_corrupted: torch.Tensor,
    mask: torch.Tensor,
    *,
    cone: bool = True,
    steps: int = 100,
    lr: float = 0.05,
    weight: float = 300.0,
    max_level: int | None = None,
    original: torch.Tensor | None = None,
) -> InpaintResult:
    """Restore the pixels in ``mask`` (bool ``(L, L)`` or ``(B, L, L)``, True = corrupted).

    Starting from ``z0 = encode(x_corrupted)`` (mid-bin dequantisation), Adam minimises, per image,
    ``-log p(y) + weight * sum_unmasked (y - y_obs)^2`` in the flow's logit space ``y``, where
    ``log p(y) = log p_z(z) - log|det dy/dz|`` and ``y = decode(z)``. With ``cone=True`` only
    the latents in :func:`corruption_cone` of the mask are free; ``cone=False`` frees all of them.
    ``max_level`` frees only latents of level ``<= max_level``: the cone always holds top-level
    latents, whose decode cone is the whole image, so only then is the footprint local.
    One pixel level is 0.015 to 0.06 in logits; with the default ``weight`` the observed pixels
    stayed within their bins in our runs, lower it to let them move for a likelier image.
    """
    start = time.perf_counter()
    check_images(model, x_corrupted, "x_corrupted")
    batch, channels, size, _ = x_corrupted.shape
    mask = _check_mask(mask, batch, size)
    if original is not None:
        check_images(model, original, "original")
        if original.shape != x_corrupted.shape:
            raise AnalysisError(
                f"original must have the shape of x_corrupted {tuple(x_corrupted.shape)}; got {tuple(original.shape)}"
            )
    if steps < 0:
        raise AnalysisError(f"steps must be a non-negative number of Adam steps; got {steps}")
    flow, prior = model.flow, model.prior
    with evaluating(model):
        with torch.no_grad():
            y_obs, z0 = encode_midbin(model, x_corrupted)
        sites = corruption_cone(mask, flow.block_size) if cone else torch.ones_like(mask)
        if max_level is not None:
            top = flow.num_levels - 1
            max_level = check_level(max_level, top, "max_level", "the coarsest level whose latents are freed")
            sites = sites & (flow.level_map().cpu() <= max_level)
        latent_mask = sites[:, None].expand(-1, channels, -1, -1).to(z0.device)
        footprint = torch.stack([causal_cone(s, flow.block_size, direction="decode") for s in sites])
        keep = (~mask)[:, None].to(device=z0.device, dtype=z0.dtype)  # the observed pixels
        free = z0[latent_mask].clone().requires_grad_(True)
        optimizer = torch.optim.Adam([free], lr=lr)

        def objective():
            # z is z0 outside the cone by construction: only `free` is ever written to.
            z = z0.masked_scatter(latent_mask, free)
            y, logdet = flow.decode(z)
            nll = logdet - prior.log_prob(z)
            penalty = weight * ((y - y_obs) * keep).square().flatten(1).sum(1)
            return (nll + penalty).mean(), z, y

        history = []
        with torch.enable_grad():
            for _ in range(steps):
                loss, _, _ = objective()
                history.append(loss.item())
                optimizer.zero_grad()
                (free.grad,) = torch.autograd.grad(loss, free)
                optimizer.step()
        with torch.no_grad():
            loss, z, y = objective()
        history.append(loss.item())
        restored = model.pixels.inverse(y)
    return InpaintResult(
        restored=restored,
        latents_updated=int(latent_mask.sum()),
        latent_mask=latent_mask.clone(),
        footprint=footprint,
        error=_masked_error(restored, original, mask),
        error_before=_masked_error(x_corrupted, original, mask),
        loss=history[-1],
        initial_loss=history[0],
        seconds=time.perf_counter() - start,
        z=z.detach(),
        history=history,
    )


def _check_mask(mask, batch, size) -> torch.Tensor:
    """``(B, L, L)`` bool from a ``(L, L)`` or ``(B, L, L)`` boolean (or 0/1 integer) mask."""
    ok_dtype = torch.is_tensor(mask) and (mask.dtype == torch.bool or not mask.is_floating_point())
    shape = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
    if not ok_dtype or tuple(mask.shape) not in ((size, size), (batch, size, size)):
        raise AnalysisError(
            f"mask must be a boolean tensor of the corrupted pixels with shape ({size}, {size}) or "
            f"({batch}, {size}, {size}); got {shape}" + (f" of dtype {mask.dtype}" if torch.is_tensor(mask) else "")
        )
    mask = mask.bool().cpu()
    if not mask.any():
        raise AnalysisError("mask marks no corrupted pixel: set True where the image is corrupted")
    return mask.expand(batch, size, size).clone() if mask.dim() == 2 else mask.clone()


def _masked_error(x, original, mask):
    if original is None:
        return None
    diff = (x.long() - original.long()).abs().double()
    m = mask[:, None].to(diff.device).expand_as(diff)
    return float(diff[m].mean())
