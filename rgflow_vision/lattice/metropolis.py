"""Checkerboard Metropolis: the plain local sampler to check a flow against.

One sweep updates the two checkerboard colours in turn. On one colour every site gets the
proposal ``phi_x + delta u`` (``u`` uniform in ``[-1, 1]`` per channel, a symmetric proposal)
and is accepted with probability ``min(1, exp(-dS_x))``, independently of the other sites:
sites of one colour share no bond, so the action change of the whole update is the sum of the
per-site changes of :meth:`LatticeAction.local_action`, and the joint accept/reject factorises.
Chains run in parallel as the batch. Needs ``L`` even (a periodic checkerboard).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .actions import LatticeAction
from .observables import DEFAULT_OBSERVABLES


@dataclass
class MetropolisResult:
    """``observables[name]``: ``(n_measurements, n_chains, ...)``, in measurement order.

    ``acceptance`` is the fraction of accepted site updates over the production sweeps (after
    thermalisation); ``step_size`` the ``delta`` used there; ``state`` the last configurations
    ``(n_chains, C, L, L)``; ``samples`` ``(n_measurements, n_chains, C, L, L)`` when kept.
    """

    observables: dict[str, torch.Tensor]
    acceptance: float
    step_size: float
    state: torch.Tensor
    samples: torch.Tensor | None = None


def checkerboard_masks(size: int, device: torch.device | None = None) -> torch.Tensor:
    """``(2, L, L)`` boolean masks of the even (``i + j`` even) and odd sublattices."""
    _check_even(size)
    i = torch.arange(size, device=device)
    even = (i[:, None] + i[None, :]) % 2 == 0
    return torch.stack([even, ~even])


def split_checkerboard(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C, L, L) -> (even, odd)``, each ``(B, C, L, L/2)``: row ``i`` of ``even`` holds the sites
    ``(i, 2k + i%2)``, row ``i`` of ``odd`` the sites ``(i, 2k + 1 - i%2)``, ``k = 0 .. L/2-1``.

    The sampler works in this layout so that each half-sweep touches only the sites it updates.
    """
    b, c, size, _ = x.shape
    _check_even(size)
    x6 = x.reshape(b, c, size // 2, 2, size // 2, 2)  # (row pair, row parity, column pair, column parity)
    even = torch.stack([x6[:, :, :, 0, :, 0], x6[:, :, :, 1, :, 1]], dim=3)
    odd = torch.stack([x6[:, :, :, 0, :, 1], x6[:, :, :, 1, :, 0]], dim=3)
    return even.reshape(b, c, size, size // 2), odd.reshape(b, c, size, size // 2)


def merge_checkerboard(even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`split_checkerboard`."""
    b, c, size, half = even.shape
    e, o = even.reshape(b, c, half, 2, half), odd.reshape(b, c, half, 2, half)
    row_even = torch.stack([e[:, :, :, 0], o[:, :, :, 0]], dim=-1)  # columns 2k (even site), 2k+1 (odd site)
    row_odd = torch.stack([o[:, :, :, 1], e[:, :, :, 1]], dim=-1)
    return torch.stack([row_even, row_odd], dim=3).reshape(b, c, size, size)


def split_neighbour_sum(other: torch.Tensor, colour: int) -> torch.Tensor:
    """Neighbour sums of the ``colour`` sites (0 even, 1 odd) from the other colour's split array.

    Up and down neighbours share the column index ``k``; left and right are ``k`` and ``k - 1``
    on even rows of the even colour (``k`` and ``k + 1`` on its odd rows), mirrored for odd sites.
    """
    b, c, size, half = other.shape
    vertical = torch.roll(other, 1, dims=-2) + torch.roll(other, -1, dims=-2)
    pairs = other.reshape(b, c, size // 2, 2, half)
    first, second = (1, -1) if colour == 0 else (-1, 1)  # lateral shift on even rows, on odd rows
    lateral = torch.stack(
        [
            pairs[:, :, :, 0] + torch.roll(pairs[:, :, :, 0], first, dims=-1),
            pairs[:, :, :, 1] + torch.roll(pairs[:, :, :, 1], second, dims=-1),
        ],
        dim=3,
    ).reshape(b, c, size, half)
    return vertical + lateral


def _check_even(size: int) -> None:
    if size % 2:
        raise ValueError(f"a periodic checkerboard needs an even lattice size, got L={size}")


def metropolis_sweep(
    action: LatticeAction,
    x: torch.Tensor,
    step_size: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, float]:
    """One checkerboard sweep of every chain in ``x``: ``(new x, fraction of site updates accepted)``."""
    halves, accepted = _sweep(action, list(split_checkerboard(x)), step_size, generator)
    return merge_checkerboard(*halves), accepted


def _sweep(action, halves, step_size, generator):
    """Sweep in the split layout. For a site whose neighbours stay fixed,
    ``dS_x = U(phi'_x) - U(phi_x) - J (phi'_x - phi_x) . n_x`` (``n_x`` the neighbour sum): exactly
    :meth:`LatticeAction.local_action` differenced."""
    b, c, size, half = halves[0].shape
    # one draw per site and sweep, split as the fields are
    r = torch.rand((2, b, c + 1, size, half), generator=generator, dtype=halves[0].dtype, device=halves[0].device)
    accepted = 0
    for colour in (0, 1):
        x, delta, log_u = halves[colour], step_size * (2 * r[colour, :, :c] - 1), torch.log(r[colour, :, c])
        proposal = x + delta
        d_action = (
            action.onsite(proposal)
            - action.onsite(x)
            - action.hopping * (delta * split_neighbour_sum(halves[1 - colour], colour)).sum(dim=1)
        )
        accept = log_u < -d_action
        halves[colour] = torch.where(accept[:, None], proposal, x)
        accepted += accept.sum().item()
    return halves, accepted / (b * size * half * 2)


def metropolis(
    action: LatticeAction,
    n_chains: int,
    size: int,
    n_sweeps: int,
    *,
    n_therm: int = 200,
    step_size: float = 1.0,
    tune: bool = True,
    target_acceptance: float = 0.5,
    measure_every: int = 1,
    observables: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    keep_samples: bool = False,
    x0: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> MetropolisResult:
    """Run ``n_chains`` independent checkerboard Metropolis chains on an ``L = size`` lattice.

    ``n_therm`` thermalisation sweeps come first, without measurements; with ``tune=True`` the
    step size is adapted during them (``delta <- delta exp(acc - target)`` per sweep) towards
    ``target_acceptance``, then frozen so the production chain satisfies detailed balance.
    Then ``n_sweeps`` production sweeps, measuring ``observables`` (name -> function of a batch
    of fields returning ``(n_chains, ...)``; default :data:`DEFAULT_OBSERVABLES`: ``chi``,
    ``phi2``, ``M``, ``G`` along the axes) every ``measure_every`` sweeps. Chains start from
    ``x0`` (and run on its device) or from small uniform noise on the CPU. Error bars: treat
    chains as independent and use :func:`.estimators.chain_mean`. On a few shared CPU cores,
    ``torch.set_num_threads(1)`` is several times faster for these small tensors (measured).
    """
    observables = DEFAULT_OBSERVABLES if observables is None else observables
    shape = (n_chains, action.channels, size, size)
    if x0 is None:
        x = 0.1 * (2 * torch.rand(shape, generator=generator, dtype=dtype) - 1)
    else:
        if tuple(x0.shape) != shape:
            raise ValueError(f"x0 has shape {tuple(x0.shape)}, expected {shape}")
        x = x0.detach().to(dtype).clone()
    halves = list(split_checkerboard(x))
    with torch.no_grad():
        for _ in range(n_therm):
            halves, acc = _sweep(action, halves, step_size, generator)
            if tune:
                step_size *= math.exp(min(max(acc - target_acceptance, -0.5), 0.5))
        records: dict[str, list[torch.Tensor]] = {name: [] for name in observables}
        samples, accepted = [], 0.0
        for sweep in range(1, n_sweeps + 1):
            halves, acc = _sweep(action, halves, step_size, generator)
            accepted += acc
            if sweep % measure_every == 0:
                x = merge_checkerboard(*halves)
                for name, fn in observables.items():
                    records[name].append(fn(x))
                if keep_samples:
                    samples.append(x)
    return MetropolisResult(
        observables={name: torch.stack(values) for name, values in records.items() if values},
        acceptance=accepted / max(n_sweeps, 1),
        step_size=step_size,
        state=merge_checkerboard(*halves),
        samples=torch.stack(samples) if samples else None,
    )
