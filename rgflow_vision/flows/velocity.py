"""Velocity fields ``v(x, t)`` of the neural-ODE block, each with its exact Jacobian.

The ODE block needs the exact Jacobian of every solver step for its log-det. A block holds only
``C*K*K`` values (16 to 48), so each network carries a whole set of tangent directions next to
its value, forward mode by hand: ``dx`` of shape ``(N, P, D)`` holds ``P`` tangents of the
``(N, D)`` input and comes back as the ``P`` tangents of ``v``. With ``dx`` the identity that is
the transposed Jacobian, in one batched pass that autograd can differentiate for training.

The networks run in the data's precision (float32 or wider, never under autocast): the block's
exact inverse and log-det need every evaluation to be the same smooth function.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _linear(fan_in: int, fan_out: int, bias: bool = True) -> nn.Linear:
    # Variance-preserving uniform init for tanh, zero biases.
    linear = nn.Linear(fan_in, fan_out, bias=bias)
    bound = math.sqrt(3 / fan_in)
    nn.init.uniform_(linear.weight, -bound, bound)
    if bias:
        nn.init.zeros_(linear.bias)
    return linear


def _apply(linear: nn.Linear, x: torch.Tensor, dx: torch.Tensor | None):
    """``linear`` on a value and (without the bias) on its tangents, in the value's dtype."""
    weight = linear.weight.to(x.dtype)
    bias = None if linear.bias is None else linear.bias.to(x.dtype)
    return F.linear(x, weight, bias), None if dx is None else F.linear(dx, weight)


class TangentMLP(nn.Module):
    """``features_in -> [hidden, tanh] * depth -> features_out``; time adds to the first pre-activation."""

    def __init__(self, features_in: int, hidden: int, depth: int, features_out: int):
        super().__init__()
        if depth < 1 or hidden < 1:
            raise ValueError(f"the velocity network needs depth >= 1 and hidden >= 1, got {depth} and {hidden}")
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

    def __init__(self, features: int, hidden: int, depth: int):
        super().__init__()
        self.net = TangentMLP(features, hidden, depth, features)
        self.out_scale = nn.Parameter(torch.zeros(features))

    def forward(self, x: torch.Tensor, t: float, dx: torch.Tensor | None = None):
        v, dv = self.net(x, t, dx)
        scale = self.out_scale.to(x.dtype)
        return v * scale, None if dv is None else dv * scale


class GatedVelocity(nn.Module):
    """Equivariant under ``O(c)`` acting on the ``c`` components of every one of ``n`` sites.

    The block vector is read as ``(c, n)``. ``h = W1 x`` mixes sites into ``m`` hidden vectors
    (each with ``c`` components, so ``h`` turns with ``x``); their squared lengths ``q`` are
    invariant; a scalar MLP of ``(q, t)`` gives one gate per hidden vector; ``v = W2 (gate * h)``
    turns with ``x`` again. ``c = 2``, ``n = K*K``: ``v(R x) = R v(x)`` for every rotation and
    reflection ``R`` of the two channels at every site (O(2)). ``c = 1``, ``n = C*K*K``:
    ``v(-x) = -v(x)`` (Z2). Both hold by construction, up to rounding.
    """

    def __init__(self, components: int, sites: int, hidden: int, depth: int):
        super().__init__()
        self.components, self.sites = components, sites
        self.mix_in = _linear(sites, hidden, bias=False)
        self.gate = TangentMLP(hidden, hidden, depth, hidden)
        self.mix_out = _linear(hidden, sites, bias=False)
        self.out_scale = nn.Parameter(torch.zeros(sites))  # per site, shared by its components

    def forward(self, x: torch.Tensor, t: float, dx: torch.Tensor | None = None):
        n, c, s = x.shape[0], self.components, self.sites
        h, dh = _apply(self.mix_in, x.view(n, c, s), None if dx is None else dx.view(n, -1, c, s))
        q = h.square().sum(1)  # (N, m): invariant lengths
        dq = None if dh is None else 2 * (h.unsqueeze(1) * dh).sum(2)
        g, dg = self.gate(q, t, dq)
        u = g.unsqueeze(1) * h
        du = None if dh is None else dg.unsqueeze(2) * h.unsqueeze(1) + g[:, None, None] * dh
        v, dv = _apply(self.mix_out, u, du)
        scale = self.out_scale.to(x.dtype)
        v = (v * scale).reshape(n, c * s)
        return v, None if dv is None else (dv * scale).reshape(n, -1, c * s)


def velocity_field(channels: int, block_size: int, hidden: int, depth: int, symmetry: str | None) -> nn.Module:
    """The velocity network for one layer's blocks; ``symmetry`` is ``None``, ``"z2"`` or ``"o2"``."""
    features = channels * block_size**2
    if symmetry is None:
        return MLPVelocity(features, hidden, depth)
    if symmetry == "z2":
        return GatedVelocity(1, features, hidden, depth)
    if symmetry == "o2":
        if channels != 2:
            raise ValueError(f"symmetry 'o2' rotates two channels at every site; this flow has {channels}")
        return GatedVelocity(2, block_size**2, hidden, depth)
    raise ValueError(f"unknown symmetry {symmetry!r}: use None, 'z2' or 'o2'")
