"""The seam between the RG geometry and the bijection inside each block.

:class:`~rgflow_vision.flows.RGFlow` asks a registered builder for the bijection of each layer:
``build(channels, block_size, level, symmetry=..., **options)`` returns a module that maps
``(N, C*K*K)`` block vectors with ``forward(x, inverse=False) -> (y, logdet)``, exact in both
directions, and has a ``reversible`` attribute. The options are the builder's own keyword
arguments (the Hydra ``model`` keys). Register another bijection by adding it to ``BIJECTIONS``,
or pass its builder itself: ``RGFlow(C, L, bijection=build)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .coupling import BlockFlow
from .features import FeatureODEBlock
from .ode import ODEBlock


def at_level(per_level: Sequence[int] | int, level: int, what: str) -> int:
    """The entry of a per-level list for ``level``; deeper levels reuse the last entry."""
    per_level = [per_level] if isinstance(per_level, int) else list(per_level)
    if not per_level or min(per_level) < 1:
        raise ValueError(f"{what} per level must be positive integers, got {per_level}")
    return per_level[min(level, len(per_level) - 1)]


def realnvp(channels: int, block_size: int, level: int, *, symmetry: str | None = None, hidden: int = 128,
            num_res_blocks: int = 2, mlp_depth: int = 2, couplings: Sequence[int] | int = (4, 3, 2),
            reversible: bool = False, mask: str = "sites", conditioner: str = "shared", transform: str = "affine",
            bins: int = 8, tail_bound: float = 4.0) -> nn.Module:
    """The RealNVP coupling stack (the paper's block; see :mod:`.coupling`); ``mask`` ``"sites"`` (the paper's
    checkerboard) or ``"channels"`` (alternating with the channel too, see :func:`.coupling.checkerboard`);
    ``conditioner`` ``"separate"`` (the paper's s and t networks) or ``"shared"`` (one network for both);
    ``transform`` ``"affine"`` (the paper's) or ``"spline"`` (``bins`` rational-quadratic bins on
    ``[-tail_bound, tail_bound]``)."""
    if symmetry is not None:
        raise ValueError(f"bijection 'rnvp' has no built-in symmetry (got {symmetry!r}); use bijection='ode'")
    n = at_level(couplings, level, "couplings")
    return BlockFlow(channels, block_size, n, hidden, num_res_blocks, mlp_depth, reversible, mask, conditioner,
                     transform, bins, tail_bound)


def neural_ode(channels: int, block_size: int, level: int, *, symmetry: str | None = None,
               velocity: str = "mlp", steps: Sequence[int] | int = 4, features: int = 8, time_basis: int = 4,
               kernel: str = "block", lipschitz: float | None = 2.0, eval_steps: int | None = None, hidden: int = 64,
               mlp_depth: int = 2, scheme: str = "rk4", rate: float = 0.5, explicit: str = "encode",
               reversible: bool = False, **coupling_keys) -> nn.Module:
    """The neural-ODE block; ``symmetry`` ``"z2"`` or ``"o2"`` is built into its velocity.

    ``velocity="features"`` (see :mod:`.features`): linear in site-local features, divergence in closed
    form, ``features`` frequencies, ``time_basis`` Legendre polynomials in t, ``kernel`` ``"block"`` (dense, D4-tied)
    or ``"periodic"`` (a D4-tied convolution by FFT: the global layer when the block is the lattice),
    ``lipschitz`` a bound on Lip(v) (``None``: none; with ``steps`` it sets h Lip(v), RK4's accuracy),
    ``eval_steps`` the steps in eval mode (default ``steps``);
    log-det and inverse accurate to RK4's order. ``velocity="mlp"`` (see :mod:`.ode`): an MLP with its
    Jacobian carried in forward mode, ``hidden``, ``mlp_depth``, ``scheme``, ``rate``, ``explicit``;
    log-det and inverse exact to rounding, about ``C*K*K`` times the cost per step."""
    if coupling_keys:  # e.g. an experiment's model.transform=spline under model=ode_lattice
        keys = sorted(coupling_keys)
        raise ValueError(f"bijection 'ode' takes no {', '.join(keys)} (RealNVP keys, e.g. set by an experiment): "
                         f"remove them with {' '.join(repr(f'~model.{k}') for k in keys)}")
    steps = at_level(steps, level, "ODE steps")
    if velocity == "features":
        block = FeatureODEBlock(channels, block_size, steps, symmetry, features, time_basis, kernel, lipschitz,
                                eval_steps)
    elif velocity == "mlp":
        block = ODEBlock(channels, block_size, steps, hidden, mlp_depth, symmetry, scheme, rate, explicit)
    else:
        raise ValueError(f"unknown ODE velocity {velocity!r}: use 'features' or 'mlp'")
    block.reversible = reversible  # raises for True
    return block


BIJECTIONS = {"rnvp": realnvp, "ode": neural_ode}
