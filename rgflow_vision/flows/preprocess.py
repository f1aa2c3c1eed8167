"""From integer pixels to the real line and back: dequantise, squash, logit."""

from __future__ import annotations

import math

import torch
from torch import nn


class PixelTransform(nn.Module):
    """``b``-bit integer pixels ``->`` logits, with the exact log-det of every step.

    1. dequantise: ``u = (x + noise) / 2**b`` in ``[0, 1)``, noise uniform (log-det ``-b ln 2``
       per dimension, the density change from integer bins to the unit interval);
    2. squash: ``s = alpha + (1 - 2 alpha) u`` in ``[alpha, 1 - alpha]``;
    3. logit: ``y = log s - log(1 - s)``.

    With all three log-dets, ``-(log p(z) + logdet_flow + logdet_pixels) / (D ln 2)`` is the
    discrete-data bits/dim, i.e. ``-(log p(u) + logdet_squash_logit) / (D ln 2) + b``.
    """

    def __init__(self, bits: int = 8, alpha: float = 0.05):
        super().__init__()
        if not 1 <= bits <= 16:
            raise ValueError(f"bits must be between 1 and 16, got {bits}")
        if not 0 < alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
        self.bits, self.alpha = bits, alpha

    @property
    def levels(self) -> int:
        return 2**self.bits

    def forward(self, x_int: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, logdet)``; ``noise`` in ``[0, 1)`` like ``x_int`` (drawn uniformly if omitted)."""
        x = x_int.to(torch.get_default_dtype()) if not x_int.is_floating_point() else x_int
        if noise is None:
            noise = torch.rand_like(x)
        u = (x + noise) / self.levels
        s = self.alpha + (1 - 2 * self.alpha) * u
        log_s, log_1ms = torch.log(s), torch.log1p(-s)
        dims = x[0].numel()
        logdet = dims * (math.log(1 - 2 * self.alpha) - self.bits * math.log(2)) - (log_s + log_1ms).flatten(1).sum(1)
        return log_s - log_1ms, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Logits to integer pixel values in ``{0, ..., 2**b - 1}`` (as ``torch.long``)."""
        u = (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)
        return torch.floor(u * self.levels).clamp_(0, self.levels - 1).long()
