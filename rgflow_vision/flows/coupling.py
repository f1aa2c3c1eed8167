"""The bijection shared by all blocks of a layer: a stack of RealNVP couplings.

A block is a vector of ``C*K*K`` values laid out as ``(C, K, K)``. Each coupling (affine, the
paper's, or a rational-quadratic spline) owns the networks that compute its parameters and is
applied twice: first the sites of the checkerboard mask condition the others, then the
complement does. Optionally the
backward pass rebuilds each coupling's input from its output instead of storing
activations (reversible backpropagation), so memory no longer grows with depth.
"""

from __future__ import annotations

import torch
from torch import nn

from .conditioner import ResidualMLP, autocast_dtype
from .spline import rational_quadratic


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
TRANSFORMS = ("affine", "spline")


class Coupling(nn.Module):
    """An elementwise bijection of the sites outside the conditioning mask ``m``, whose parameters are computed
    from the sites of ``m``.

    ``transform="affine"`` (the paper's) is ``y = x * exp(s(x_m)) + t(x_m)``; ``"spline"`` is a monotone
    rational-quadratic spline of ``bins`` bins on ``[-tail_bound, tail_bound]``, the identity outside (see
    :mod:`.spline`), whose bin widths, heights and knot slopes are computed. ``conditioner="separate"`` (the
    paper's) gives each kind of parameter a network (``s`` and ``t``; widths, heights and slopes); ``"shared"``
    computes them all with one network as wide at its ends as they are together (its hidden layers shared):
    about 0.6x the matrix work of the affine pair.
    """

    def __init__(self, channels: int, block_size: int, hidden: int, num_res_blocks: int, mlp_depth: int,
                 mask: str = "sites", conditioner: str = "separate", transform: str = "affine", bins: int = 8,
                 tail_bound: float = 4.0):
        super().__init__()
        if conditioner not in CONDITIONERS:
            raise ValueError(f"conditioner must be one of {', '.join(CONDITIONERS)}, got {conditioner!r}")
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
        if transform == "spline" and (bins < 2 or not tail_bound > 0):
            raise ValueError(f"a spline needs bins >= 2 and tail_bound > 0, got bins={bins}, tail_bound={tail_bound}")
        self.features = channels * block_size**2
        mask = checkerboard(channels, block_size, mask)
        self.register_buffer("masks", torch.stack([mask, 1 - mask]), persistent=False)
        # the indices of the free values per parity: a checkerboard frees half of them either way, so the zeros of
        # the mask (free at parity 0), sorted first, fill the first row (argsort, unlike nonzero, runs on meta)
        self.register_buffer("free_sites", torch.argsort(mask, stable=True).view(2, -1), persistent=False)
        self.transform, self.tail_bound = transform, float(tail_bound)
        # Parameters per free value, by kind. Every network's output starts at zero: every coupling starts as the
        # identity. The affine networks' residual streams carry (s, t) (the shared one starts as the input twice);
        # the spline's parameters (3 * bins - 1 per value) come from a linear head on a features-wide stream.
        self.kinds = {"s": 1, "t": 1} if transform == "affine" else {"w": bins, "h": bins, "d": bins - 1}
        groups = list(self.kinds.items()) if conditioner == "separate" else \
            [("".join(self.kinds), sum(self.kinds.values()))]
        for name, n in groups:  # (affine: s and t, or st, the names of the paper's checkpoints)
            net = ResidualMLP(self.features * n, hidden, num_res_blocks, mlp_depth) if transform == "affine" else \
                ResidualMLP(self.features, hidden, num_res_blocks, mlp_depth, out_features=self.features * n)
            self.add_module(name, net)
        self.groups = [name for name, _ in groups]

    def network_tensors(self, device_type: str) -> dict:
        """Each network's tensors (:meth:`ResidualMLP.tensors`) in the precision it runs in: the autocast dtype
        where autocast is on, else its own. Cast once and passed to both parities' :meth:`parameters_of`."""
        dtype = autocast_dtype(device_type)
        return {name: getattr(self, name).tensors(dtype) for name in self.groups}

    def parameters_of(self, x_cond: torch.Tensor, parity: int, tensors: dict | None = None) -> list[torch.Tensor]:
        """The transform's parameters per kind, from the conditioning sites: affine ``(N, 1, features)``, zero on
        the conditioning sites; spline ``(N, n, features / 2)``, for the free sites only (``free_sites``).
        ``tensors`` are :meth:`network_tensors` (computed here if not given)."""
        # The networks run in their own precision (bf16 under autocast, float32 weights on float64 data) and keep
        # their residual stream in float32; the transform and its log-det keep the data's, at least float32.
        # Invertibility is unaffected: the inverse sees the same conditioning bits.
        dtype = torch.promote_types(x_cond.dtype, torch.float32)
        tensors = tensors or self.network_tensors(x_cond.device.type)
        free = self.masks[1 - parity]
        width = self.features if self.transform == "affine" else self.features // 2
        out = []
        for name in self.groups:
            net = getattr(self, name)
            h = x_cond.to(net.dtype)
            if self.transform == "affine":
                n = net.out_scale.numel() // self.features
                p = net(h.repeat(1, n), free.to(net.dtype).repeat(n), tensors=tensors[name])
            else:  # the head's outputs are the parameters of parity 0's free values, then parity 1's
                p = net(h, part=(parity, 2), tensors=tensors[name])
            out.append(p.to(dtype).unflatten(1, (-1, width)))
        return out if len(out) > 1 else list(out[0].split(list(self.kinds.values()), dim=1))

    def apply_transform(self, x: torch.Tensor, params: list[torch.Tensor], parity: int,
                        inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The elementwise map of the free sites given their parameters, and its per-vector log|det|."""
        if self.transform == "affine":
            # s = t = 0 on the conditioning sites, which therefore pass through bit for bit.
            s, t = torch.tanh(params[0][:, 0]), params[1][:, 0]
            if inverse:
                return (x - t) * torch.exp(-s), -s.sum(dim=1)
            return x * torch.exp(s) + t, s.sum(dim=1)
        # Only the free sites are splined; the conditioning sites pass through bit for bit.
        free = self.free_sites[parity]
        y, logdet = rational_quadratic(x.index_select(1, free), *params, self.tail_bound, inverse)
        return x.index_copy(1, free, y), logdet.sum(dim=1)

    def forward(self, x: torch.Tensor, parity: int, inverse: bool = False, tensors: dict | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """One half of the coupling: ``parity`` 0 conditions on the mask, 1 on its complement; ``tensors`` as
        for :meth:`parameters_of`.

        Returns the new vectors and the per-vector log|det| of the map that was applied.
        """
        return self.apply_transform(x, self.parameters_of(x * self.masks[parity], parity, tensors), parity, inverse)


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
        transform: str = "affine",
        bins: int = 8,
        tail_bound: float = 4.0,
    ):
        super().__init__()
        self.couplings = nn.ModuleList(
            Coupling(channels, block_size, hidden, num_res_blocks, mlp_depth, mask, conditioner, transform, bins, tail_bound)
            for _ in range(num_couplings)
        )
        self.reversible = reversible

    def steps(self, inverse: bool) -> list[tuple[Coupling, int]]:
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
    tensors = {}  # each coupling's network tensors, cast once for both of its parities
    for coupling, parity in steps:
        if coupling not in tensors:
            tensors[coupling] = coupling.network_tensors(x.device.type)
        x, ld = coupling(x, parity, inverse, tensors[coupling])
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
            with torch.enable_grad():
                with torch.autocast(device, dtype=dtype, enabled=enabled):
                    # The conditioning sites of the input equal those of the output, so one pass
                    # of the networks both rebuilds the input and records the graph for its gradient.
                    x_cond = (y * cond).detach().requires_grad_(True)
                    params = coupling.parameters_of(x_cond, parity)
                    with torch.no_grad():
                        x = coupling.apply_transform(y, params, parity, not inverse)[0]
                    x = x.detach().requires_grad_(True)
                    y_again, logdet = coupling.apply_transform(x, params, parity, inverse)
                # Differentiated outside autocast, as the stored graph is: autocast would recast the float32
                # products' gradients to bf16.
                g = torch.autograd.grad(
                    (y_again, logdet), [x, x_cond, *step_params], (grad_y, grad_logdet), allow_unused=True
                )
            grad_y, y = g[0] + g[1] * cond, x.detach()
            for p, gp in zip(step_params, g[2:]):
                if gp is not None:
                    grads[p] = gp if grads[p] is None else grads[p] + gp
        return (grad_y, None, None, *(grads[p] for p in ctx.params))


class StoredBackward(nn.Module):
    """The ``reversible`` flag of the flows without a reversible backward (the ODE blocks, the flat flow):
    only the coupling stack of RGFlow rebuilds its inputs in the backward pass."""

    @property
    def reversible(self) -> bool:
        return False

    @reversible.setter
    def reversible(self, value: bool) -> None:
        if value:
            raise ValueError("reversible backpropagation is implemented for RGFlow's coupling blocks (bijection "
                             "'rnvp') only: use reversible=false")
