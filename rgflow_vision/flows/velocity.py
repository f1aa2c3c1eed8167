"""Velocity fields ``v(x, t)`` of the neural-ODE block, each with its exact Jacobian.

The ODE block needs the exact Jacobian of every solver step for its log-det. A block holds only
``C*K*K`` values (16 to 48), so each network carries a whole set of tangent directions next to
its value, forward mode by hand: ``dx`` of shape ``(N, P, D)`` holds ``P`` tangents of the
``(N, D)`` input and comes back as the ``P`` tangents of ``v``. With ``dx`` the identity that is
the transposed Jacobian, in one batched pass that autograd can differentiate for training.

Each field is Lipschitz in ``x`` with a constant of at most ``lipschitz``, by construction:
every weight matrix is divided by its exact spectral norm where that exceeds 1, every
activation is 1-Lipschitz and the output scale is ``lipschitz * tanh(out_scale)``. The ODE
block sets ``lipschitz = rate / h`` with ``rate < ln 2``, which makes each solver step a
contraction plus the identity: a bijection of the whole space, whatever the weights.

The networks run in the data's precision (float32 or wider, never under autocast): the block's
exact inverse and log-det need every evaluation to be the same smooth function.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize


class _AtMostOne(nn.Module):
    """Weight parametrisation: divide by the exact spectral norm where it exceeds 1 (cached per flow call)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # linalg.svd, not svdvals or matrix_norm: those switch LAPACK paths with grad mode, and a
        # float32 weight that differs by one ulp between encode and decode spoils the exact inverse.
        return weight / torch.linalg.svd(weight, full_matrices=False).S[0].clamp(min=1)


def _linear(fan_in: int, fan_out: int, bias: bool = True) -> nn.Linear:
    # Variance-preserving uniform init for tanh, zero biases, spectral norm at most 1.
    linear = nn.Linear(fan_in, fan_out, bias=bias)
    bound = math.sqrt(3 / fan_in)
    nn.init.uniform_(linear.weight, -bound, bound)
    if bias:
        nn.init.zeros_(linear.bias)
    parametrize.register_parametrization(linear, "weight", _AtMostOne())
    return linear


def _output_scale(raw: torch.Tensor, lipschitz: float, dtype: torch.dtype) -> torch.Tensor:
    # Zero at initialisation (the flow starts as the identity), never above the Lipschitz bound.
    return lipschitz * torch.tanh(raw.to(dtype))


def _apply(linear: nn.Linear, x: torch.Tensor, dx: torch.Tensor | None):
    """``linear`` on a value and (without the bias) on its tangents, in the value's dtype."""
    weight = linear.weight.to(x.dtype)
    bias = None if linear.bias is None else linear.bias.to(x.dtype)
    return F.linear(x, weight, bias), None if dx is None else F.linear(dx, weight)


class TangentMLP(nn.Module):
    """``features_in -> [hidden, tanh] * depth -> features_out``; time adds to the first pre-activation."""

    def __init__(self, features_in: int, hidden: int, depth: int, features_out: int):
        super().__init__()
        widths = [features_in] + [hidden] * depth
        self.layers = nn.ModuleList(_linear(a, b) for a, b in zip(widths, widths[1:]))
        self.time = nn.Parameter(torch.zeros(hidden))
        self.out = _linear(hidden, features_out)

    def forward(self, x: torch.Tensor, t: float, dx: torch.Tensor | None = None):
        for i, layer in enumerate(self.layers):
            a, dx = _apply(layer, x, dx)
            if i == 0:
                a = a + t * self.time.to(x.dtype)
            x = torch.tanh(a)
            if dx is not None:
                dx = (1 - x.square()).unsqueeze(1) * dx
        return _apply(self.out, x, dx)


class MLPVelocity(nn.Module):
    """No symmetry: a dense MLP on the whole block vector, output scale starting at zero."""

    def __init__(self, features: int, hidden: int, depth: int, lipschitz: float):
        super().__init__()
        self.net = TangentMLP(features, hidden, depth, features)
        self.out_scale = nn.Parameter(torch.zeros(features))
        self.lipschitz = lipschitz

    def forward(self, x: torch.Tensor, t: float, dx: torch.Tensor | None = None):
        v, dv = self.net(x, t, dx)
        scale = _output_scale(self.out_scale, self.lipschitz, x.dtype)
        return v * scale, None if dv is None else dv * scale


class RadialVelocity(nn.Module):
    """Equivariant under ``O(c)`` acting on the ``c`` components of every one of ``n`` sites.

    The block vector is read as ``c`` components of ``n`` sites. Linear maps mix sites (or
    hidden units) and never components, so they commute with any ``R`` in ``O(c)``; the
    nonlinearity shrinks each hidden ``c``-vector along itself, ``y = h / sqrt(1 + beta |h|^2)``
    (1-Lipschitz, odd), with ``beta = softplus(a + b t) >= 0`` carrying the time. Hence
    ``v(R x) = R v(x)`` for every rotation and reflection of the two channels at every site
    (``c = 2``, ``n = K*K``: O(2)) or ``v(-x) = -v(x)`` (``c = 1``, ``n = C*K*K``: Z2), exactly
    up to rounding, and no bias can break it because there is none.
    """

    def __init__(self, components: int, sites: int, hidden: int, depth: int, lipschitz: float):
        super().__init__()
        self.components = components
        widths = [sites] + [hidden] * depth
        self.layers = nn.ModuleList(_linear(a, b, bias=False) for a, b in zip(widths, widths[1:]))
        self.beta = nn.Parameter(torch.zeros(depth, 2, hidden))  # softplus(a + b t) per layer and unit
        self.out = _linear(hidden, sites, bias=False)
        self.out_scale = nn.Parameter(torch.zeros(sites))  # per site, shared by its components
        self.lipschitz = lipschitz

    def forward(self, x: torch.Tensor, t: float, dx: torch.Tensor | None = None):
        n, c = x.shape[0], self.components
        x = x.view(n, c, -1)
        dx = None if dx is None else dx.view(n, dx.shape[1], c, -1)
        for layer, (a, b) in zip(self.layers, self.beta.to(x.dtype)):
            h, dh = _apply(layer, x, dx)
            beta = F.softplus(a + b * t)
            shrink = torch.rsqrt(1 + beta * h.square().sum(1, keepdim=True))  # (N, 1, m), invariant
            x = h * shrink
            if dh is not None:  # d shrink = -beta shrink^3 (h . dh)
                dshrink = -beta * shrink.unsqueeze(1).pow(3) * (h.unsqueeze(1) * dh).sum(2, keepdim=True)
                dx = dh * shrink.unsqueeze(1) + h.unsqueeze(1) * dshrink
        v, dv = _apply(self.out, x, dx)
        scale = _output_scale(self.out_scale, self.lipschitz, x.dtype)
        v = (v * scale).reshape(n, -1)
        return v, None if dv is None else (dv * scale).reshape(n, dv.shape[1], -1)


def velocity_field(channels: int, block_size: int, hidden: int, depth: int, symmetry: str | None,
                   lipschitz: float) -> nn.Module:
    """The velocity network for one layer's blocks; ``symmetry`` is ``None``, ``"z2"`` or ``"o2"``."""
    if depth < 1 or hidden < 1:
        raise ValueError(f"the velocity network needs depth >= 1 and hidden >= 1, got {depth} and {hidden}")
    features = channels * block_size**2
    if symmetry is None:
        return MLPVelocity(features, hidden, depth, lipschitz)
    if symmetry == "z2":
        return RadialVelocity(1, features, hidden, depth, lipschitz)
    if symmetry == "o2":
        if channels != 2:
            raise ValueError(f"symmetry 'o2' rotates two channels at every site; this flow has {channels}")
        return RadialVelocity(2, block_size**2, hidden, depth, lipschitz)
    raise ValueError(f"unknown symmetry {symmetry!r}: use None, 'z2' or 'o2'")
