"""The density model on images: pixel transform, RG-Flow and prior, joined."""

from __future__ import annotations

import math

import torch
from torch import nn

from .flows import PixelTransform, RGFlow
from .priors import FactorizedPrior, build_prior


def sample_and_log_prob(
    flow: RGFlow,
    prior: FactorizedPrior,
    n: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``z ~ prior`` and decode: ``(x, log q(x), z)`` with ``log q(x) = log p(z) - log|det dx/dz|``.

    ``chunk`` decodes at most that many at once and concatenates (memory stays bounded); ``None``
    decodes all ``n`` together. ``dtype`` casts the prior samples (the priors draw in the default
    dtype), e.g. float64 for precise importance weights; at ``temperature=0`` (a point mass) ``log q``
    is ``+inf``. Differentiable through the flow (a reverse-KL loss is ``mean(log q + S(x))``); wrap
    in ``torch.no_grad()`` to evaluate.
    """
    parts = []
    for start in range(0, n, chunk or max(n, 1)):
        z = prior.sample(min(chunk or n, n - start), temperature=temperature, generator=generator)
        z = z if dtype is None else z.to(dtype)
        x, logdet = flow.decode(z)
        if temperature > 0:
            log_q = prior.log_prob(z, temperature) - logdet
        else:  # every draw is the flow's image of z = 0: a point mass, no finite density
            log_q = torch.full_like(logdet, math.inf)
        parts.append((x, log_q, z))
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat(p) for p in zip(*parts))


class RGFlowModel(nn.Module):
    """``log p(x)`` of integer images and samples from it.

    ``log_prob`` is the dequantisation lower bound on the discrete log-likelihood, in nats;
    ``bpd`` is ``-log_prob / (D ln 2)``. The flow may run under autocast; the pixel
    transform, the log-dets and the prior stay in float32 or wider.
    """

    def __init__(self, flow: RGFlow, prior: FactorizedPrior, pixels: PixelTransform):
        super().__init__()
        if prior.shape != (flow.channels, flow.image_size, flow.image_size):
            size = f"{flow.channels}x{flow.image_size}x{flow.image_size}"
            raise ValueError(f"prior shape {prior.shape} does not match the flow's {size}")
        self.flow, self.prior, self.pixels = flow, prior, pixels

    @classmethod
    def build(
        cls,
        channels: int,
        image_size: int,
        bits: int = 8,
        prior: str = "laplace",
        learn_prior_scale: bool = False,
        **architecture,
    ) -> RGFlowModel:
        flow = RGFlow(channels, image_size, **architecture)
        level_map = flow.level_map() if learn_prior_scale else None
        prior_module = build_prior(prior, channels, image_size, level_map=level_map, learn_scale=learn_prior_scale)
        return cls(flow, prior_module, PixelTransform(bits))

    @property
    def dims(self) -> int:
        return self.flow.channels * self.flow.image_size**2

    def log_prob(self, x_int: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Per-image log-likelihood bound in nats, ``(B,)``."""
        y, logdet_pixels = self.pixels(x_int, noise)
        z, logdet_flow = self.flow.encode(y)
        with torch.autocast(z.device.type, enabled=False):  # the prior promotes z to float32 or wider
            return self.prior.log_prob(z) + logdet_flow + logdet_pixels

    def bpd(self, x_int: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Bits per dimension of each image, ``(B,)``."""
        return -self.log_prob(x_int, noise) / (self.dims * math.log(2))

    @torch.no_grad()
    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None, chunk: int | None = None
    ) -> torch.Tensor:
        """``n`` images as integer pixel values in ``{0, ..., 2**bits - 1}`` (``torch.long``), decoded
        ``chunk`` at a time (all at once by default)."""
        y, _, _ = sample_and_log_prob(self.flow, self.prior, n, temperature, generator, chunk=chunk)
        return self.pixels.inverse(y)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents to images as integer pixel values (``torch.long``)."""
        y, _ = self.flow.decode(z)
        return self.pixels.inverse(y)
