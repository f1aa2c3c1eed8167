"""The bijection shared by all blocks of a layer: a stack of RealNVP affine couplings.

A block is a vector of ``C*K*K`` values laid out as ``(C, K, K)``. Each coupling owns a
log-scale network ``s`` and a shift network ``t`` and is applied twice: first the sites of
the checkerboard mask condition the others, then the complement does. Optionally the
backward pass rebuilds each coupling's input from its output instead of storing
activations (reversible backpropagation), so memory no longer grows with depth.
"""

from __future__ import annotations

import torch
from torch import nn

from .conditioner import ResidualMLP


MASKS = ("sites", "channels")


def checkerboard(channels: int, block_size: int, mask: str = "sites") -> torch.Tensor:
    """Flattened ``(C, K, K)`` mask: ``"sites"`` (the paper's) is 1 where ``i + j`` is even, the same for
    every channel, so the channels of a site are never conditioned on each other; ``"channels"`` is 1
    where ``i + j + c`` is even, so each half-coupling updates one channel of a site given the other
    (a complex field's phase and modulus, e.g. the ring of phi^4, need that)."""
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {', '.join(MASKS)}, got {mask!r}")
    i = torch.arange(block_size)
    c = torch.arange(channels) if mask == "channels" else torch.zeros(channels, dtype=torch.long)
    return ((c[:, None, None] + i[:, None] + i[None, :]) % 2 == 0).float().reshape(-1)


CONDITIONERS = ("separate", "shared")


class AffineCoupling(nn.Module):
    """``y = x * exp(s(x_m)) + t(x_m)`` on the sites outside the conditioning mask ``m``.

    ``conditioner="separate"`` (the paper's) gives ``s`` and ``t`` a network each; ``"shared"`` computes both
    with one network twice as wide at its ends (its hidden layers shared), about 0.6x the matrix work."""

    def __init__(self, channels: int, block_size: int, hidden: int, num_res_blocks: int, mlp_depth: int,
                 mask: str = "sites", conditioner: str = "separate"):
        super().__init__()
        if conditioner not in CONDITIONERS:
            raise ValueError(f"conditioner must be one of {', '.join(CONDITIONERS)}, got {conditioner!r}")
        features = channels * block_size**2
        mask = checkerboard(channels, block_size, mask)
        self.register_buffer("masks", torch.stack([mask, 1 - mask]), persistent=False)
        if conditioner == "shared":
            self.st = ResidualMLP(2 * features, hidden, num_res_blocks, mlp_depth, tanh=False)
        else:
            self.s = ResidualMLP(features, hidden, num_res_blocks, mlp_depth, tanh=True)
            self.t = ResidualMLP(features, hidden, num_res_blocks, mlp_depth, tanh=False)

    def scale_shift(self, x_cond: torch.Tensor, parity: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``s`` and ``t`` from the conditioning sites; both vanish on those sites."""
        free = self.masks[1 - parity]
        # The networks run in their own precision (bf16 under autocast, float32 weights on
        # float64 data); the affine map and the log-det keep the data's, at least float32.
        # Invertibility is unaffected: the inverse sees the same conditioning bits.
        dtype = torch.promote_types(x_cond.dtype, torch.float32)
        if hasattr(self, "st"):  # the residual stream carries (s, t): it starts as the input twice
            h, free = x_cond.to(self.st.out_scale.dtype), free.to(self.st.out_scale.dtype)
            s, t = self.st(h.repeat(1, 2), free.repeat(2)).chunk(2, dim=1)
            return torch.tanh(s).to(dtype), t.to(dtype)
        h, free = x_cond.to(self.s.out_scale.dtype), free.to(self.s.out_scale.dtype)
        return self.s(h, free).to(dtype), self.t(h, free).to(dtype)

    def forward(self, x: torch.Tensor, parity: int, inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One half of the coupling: ``parity`` 0 conditions on the mask, 1 on its complement.

        Returns the new vectors and the per-vector log|det| of the map that was applied.
        """
        s, t = self.scale_shift(x * self.masks[parity], parity)
        return affine(x, s, t, inverse)


def affine(x, s, t, inverse):
    # s = t = 0 on the conditioning sites, which therefore pass through bit for bit.
    if inverse:
        return (x - t) * torch.exp(-s), -s.sum(dim=1)
    return x * torch.exp(s) + t, s.sum(dim=1)


class BlockFlow(nn.Module):
    """A stack of couplings acting on ``(N, C*K*K)``; one per disentangler or decimator layer."""

    def __init__(
        self,
        channels: int,
        block_size: int,
        num_couplings: int,
        hidden: int,
        num_res_blocks: int,
        mlp_depth: int,
        reversible: bool = False,
        mask: str = "sites",
        conditioner: str = "separate",
    ):
        super().__init__()
        self.couplings = nn.ModuleList(
            AffineCoupling(channels, block_size, hidden, num_res_blocks, mlp_depth, mask, conditioner)
            for _ in range(num_couplings)
        )
        self.reversible = reversible

    def steps(self, inverse: bool) -> list[tuple[AffineCoupling, int]]:
        """The half-couplings in the order they are applied."""
        order = [(c, parity) for c in self.couplings for parity in (0, 1)]
        return order[::-1] if inverse else order

    def forward(self, x: torch.Tensor, inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        # Only training needs the memory; in eval mode plain autograd (and forward-mode AD,
        # which the reversible Function does not implement) is used.
        if self.reversible and self.training and torch.is_grad_enabled():
            params = [p for p in self.parameters() if p.requires_grad]
            if x.requires_grad or params:
                return _ReversibleSteps.apply(x, self, inverse, *params)
        return _run(self.steps(inverse), x, inverse)


def _run(steps, x, inverse):
    logdet = x.new_zeros(x.shape[0])
    for coupling, parity in steps:
        x, ld = coupling(x, parity, inverse)
        logdet = logdet + ld
    return x, logdet


class _ReversibleSteps(torch.autograd.Function):
    """Runs a :class:`BlockFlow` storing only its output; backward inverts step by step."""

    @staticmethod
    def forward(ctx, x, flow, inverse, *params):
        ctx.flow, ctx.inverse, ctx.params = flow, inverse, params
        device = x.device.type
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        with torch.no_grad():
            y, logdet = _run(flow.steps(inverse), x, inverse)
        ctx.save_for_backward(y)
        return y, logdet

    @staticmethod
    def backward(ctx, grad_y, grad_logdet):
        (y,) = ctx.saved_tensors
        grads = {p: None for p in ctx.params}
        device, enabled, dtype = ctx.autocast
        inverse = ctx.inverse
        for coupling, parity in reversed(ctx.flow.steps(inverse)):
            cond = coupling.masks[parity]
            step_params = [p for p in coupling.parameters() if p.requires_grad]
            with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
                # The conditioning sites of the input equal those of the output, so one pass
                # of the networks both rebuilds the input and records the graph for its gradient.
                x_cond = (y * cond).detach().requires_grad_(True)
                s, t = coupling.scale_shift(x_cond, parity)
                with torch.no_grad():
                    x = affine(y, s, t, not inverse)[0]
                x = x.detach().requires_grad_(True)
                y_again, logdet = affine(x, s, t, inverse)
                g = torch.autograd.grad(
                    (y_again, logdet), [x, x_cond, *step_params], (grad_y, grad_logdet), allow_unused=True
                )
            grad_y, y = g[0] + g[1] * cond, x.detach()
            for p, gp in zip(step_params, g[2:]):
                if gp is not None:
                    grads[p] = gp if grads[p] is None else grads[p] + gp
        return (grad_y, None, None, *(grads[p] for p in ctx.params))
