"""The conditioner of a coupling: a pre-activation residual MLP on the block vector."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

SWISH_GAIN = 2.81  # variance gain of swish, used like ReLU's 2 in He initialisation


class Swish(nn.Module):
    """``x * sigmoid(beta * x)`` with a learnable ``beta`` per feature."""

    def __init__(self, features: int):
        super().__init__()
        self.beta = nn.Parameter(torch.ones(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)


def _linear(fan_in: int, fan_out: int) -> nn.Module:
    # Variance-preserving uniform init for swish; with PyTorch's default init the flow
    # barely moves in its first steps.
    linear = nn.Linear(fan_in, fan_out)
    bound = math.sqrt(3 * SWISH_GAIN / fan_in)
    nn.init.uniform_(linear.weight, -bound, bound)
    nn.init.zeros_(linear.bias)
    return weight_norm(linear)


class ResidualMLP(nn.Module):
    """``features -> features`` residual network whose output starts at exactly zero.

    Each residual block is ``[swish, linear] * (mlp_depth + 1)`` through ``hidden`` units;
    the residual sum is scaled by ``1/sqrt(2)`` to keep the variance. The output goes
    through a per-feature scale initialised to zero (so the coupling starts as the
    identity) or, with ``out_features``, through a linear head initialised to zero: a
    ``features -> out_features`` network for transforms with many parameters per value.
    """

    def __init__(self, features: int, hidden: int, num_res_blocks: int, mlp_depth: int,
                 out_features: int | None = None):
        super().__init__()
        widths = [features] + [hidden] * mlp_depth + [features]
        self.res_blocks = nn.ModuleList(
            nn.Sequential(*(m for a, b in zip(widths, widths[1:]) for m in (Swish(a), _linear(a, b))))
            for _ in range(num_res_blocks)
        )
        if out_features is None:
            self.out_scale = nn.Parameter(torch.zeros(features))
        else:
            self.head = nn.Linear(features, out_features)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    @property
    def dtype(self) -> torch.dtype:
        return self.res_blocks[0][1].bias.dtype

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None, part: tuple[int, int] | None = None
                ) -> torch.Tensor:
        """``keep`` (0/1 per feature) zeroes the other outputs exactly; folded into the output scale, it
        costs a multiply of ``features`` numbers instead of one of the whole batch. With a head, ``part``
        ``(i, parts)`` computes only the i-th of ``parts`` equal blocks of its outputs."""
        for block in self.res_blocks:
            x = (x + block(x)) * (1 / math.sqrt(2))
        if hasattr(self, "head"):
            (i, parts), n = part or (0, 1), self.head.out_features
            rows = slice(i * n // parts, (i + 1) * n // parts)
            return F.linear(x, self.head.weight[rows], self.head.bias[rows])
        return (self.out_scale if keep is None else self.out_scale * keep) * x
