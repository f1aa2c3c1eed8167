"""The holographic view of a trained flow: bulk effective action, HMC and bulk correlations.

A flow ``x = decode(z)`` (``z ~ prior``, :class:`~rgflow_vision.flows.RGFlow`) maps the bulk
latents ``z`` to the boundary field ``x``. Pulled back to the latents, the target
``p(x) = exp(-S(x))/Z`` becomes ``p(z) = exp(-S_eff(z))/Z`` with the bulk effective action

    S_eff(z) = S(x(z)) - log|det dx/dz|,

with no prior term: the prior is only the flow's proposal, ``exp(-S_eff)`` is the target in
latent space. A well-trained flow makes ``S_eff`` close to the prior's ``-log p(z)``, i.e. the
bulk field nearly free and short-ranged (massive), whatever the correlations on the boundary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


def effective_action(
    flow, action: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S_eff(z), x(z))`` with ``S_eff(z) = S(x(z)) - log|det dx/dz|`` per configuration, ``(B,)``."""
    x, logdet = flow.decode(z)
    return action(x) - logdet, x


@dataclass
class HMCResult:
    """``samples``: ``(n_traj, B, ...)`` the state after every trajectory (``None`` unless kept);
    ``potential``: ``(n_traj, B)`` the potential after every trajectory; ``accepted``: ``(n_traj, B)``;
    ``delta_h``: ``(n_traj, B)`` the energy violation ``H_end - H_start`` of every proposal
    (``<exp(-delta_h)> = 1`` in equilibrium is a check of the integrator); ``acceptance``: overall rate;
    ``state``: the final ``(B, ...)`` configurations."""

    samples: torch.Tensor | None
    potential: torch.Tensor
    accepted: torch.Tensor
    delta_h: torch.Tensor
    acceptance: float
    state: torch.Tensor


def _potential_and_force(potential_fn, x):
    with torch.enable_grad():
        y = x.detach().requires_grad_(True)
        u = potential_fn(y)
        (grad,) = torch.autograd.grad(u.sum(), y)  # chains are independent: one backward for all
    return u.detach(), grad.detach()


def hmc(
    potential_fn: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    n_traj: int,
    step_size: float,
    n_leapfrog: int,
    generator: torch.Generator | None = None,
    keep_samples: bool = True,
    bar=None,
) -> HMCResult:
    """Hybrid Monte Carlo for the density ``exp(-U(x))`` with ``U = potential_fn``, one chain per batch entry.

    ``potential_fn`` maps a batch ``(B, ...)`` to ``(B,)``; forces come from autograd. Each
    trajectory draws momenta ``p ~ N(0, 1)``, integrates ``H = U(x) + |p|^2/2`` with ``n_leapfrog``
    leapfrog steps of ``step_size``, and accepts per chain with probability ``min(1, exp(-dH))``.
    Field space: ``potential_fn = action``. Latent space: ``potential_fn = S_eff`` (see
    :func:`latent_hmc`), with no prior term. ``bar``: a progress bar (tqdm) advanced by one per trajectory.
    """
    x = x0.detach().clone()
    u, grad = _potential_and_force(potential_fn, x)
    batch_shape = (-1,) + (1,) * (x.dim() - 1)
    samples, potentials, accepted_all, delta_hs = [], [], [], []
    for _ in range(n_traj):
        p = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        h_start = u + 0.5 * (p * p).flatten(1).sum(dim=1)
        x_new, u_new, grad_new = x, u, grad
        p = p - 0.5 * step_size * grad_new
        for step in range(n_leapfrog):
            x_new = x_new + step_size * p
            u_new, grad_new = _potential_and_force(potential_fn, x_new)
            p = p - (step_size if step < n_leapfrog - 1 else 0.5 * step_size) * grad_new
        delta_h = u_new + 0.5 * (p * p).flatten(1).sum(dim=1) - h_start
        log_u = torch.log(torch.rand(delta_h.shape, generator=generator, dtype=delta_h.dtype, device=x.device))
        accept = log_u < -delta_h  # NaN energies compare False: rejected
        x = torch.where(accept.view(batch_shape), x_new, x)
        u = torch.where(accept, u_new, u)
        grad = torch.where(accept.view(batch_shape), grad_new, grad)
        if keep_samples:
            samples.append(x)
        potentials.append(u)
        accepted_all.append(accept)
        delta_hs.append(delta_h)
        if bar is not None:
            bar.update()
    accepted = torch.stack(accepted_all)
    return HMCResult(
        samples=torch.stack(samples) if keep_samples else None,
        potential=torch.stack(potentials),
        accepted=accepted,
        delta_h=torch.stack(delta_hs),
        acceptance=accepted.double().mean().item(),
        state=x,
    )


def latent_hmc(
    flow, action, z0: torch.Tensor, n_traj: int, step_size: float, n_leapfrog: int, **kwargs
) -> HMCResult:
    """HMC in the bulk: :func:`hmc` on ``S_eff(z)`` of :func:`effective_action`. Decode the samples
    to get boundary fields; they sample ``exp(-S(x))/Z`` exactly whatever the flow (a poor flow
    only mixes worse). Put the flow in ``eval()`` mode first."""
    return hmc(lambda z: effective_action(flow, action, z)[0], z0, n_traj, step_size, n_leapfrog, **kwargs)


# ---------------------------------------------------------------------------------------------
# bulk geometry and correlations


def site_coordinates(size: int) -> torch.Tensor:
    """``(L*L, 2)`` row and column of every site, in row-major order (the order of ``z.flatten(-2)``)."""
    i = torch.arange(size)
    return torch.stack(torch.meshgrid(i, i, indexing="ij"), dim=-1).reshape(-1, 2)


def lattice_distance(size: int) -> torch.Tensor:
    """``(V, V)`` Euclidean distance between sites on the periodic lattice (minimum image), float64."""
    xy = site_coordinates(size)
    d = (xy[:, None, :] - xy[None, :, :]).abs()
    d = torch.minimum(d, size - d).double()
    return d.pow(2).sum(dim=-1).sqrt()


def tree_distance(level_map: torch.Tensor) -> torch.Tensor:
    """``(V, V)`` geodesic distance between latent sites on the RG tree, float64.

    The tree is the dyadic quadtree of the hierarchy: its nodes at level ``k`` are the aligned
    ``2^k x 2^k`` cells ``(i >> k, j >> k)``, each the child of the level-``k+1`` cell containing
    it, continued above the top RG level up to the root ``k = log2 L``. A latent at site ``(i, j)``
    of level ``h`` sits at the node ``(h, i >> h, j >> h)``. The distance between latents
    ``s`` and ``t`` is the number of tree edges between their nodes,

        d(s, t) = 2 k* - h_s - h_t,   k* = min { k >= max(h_s, h_t) : s and t share the level-k cell },

    i.e. up from each to their lowest common ancestor. Boundary neighbours split at a coarse cell
    edge (or across the periodic wrap) are far apart on the tree: the tree does not see the
    disentanglers' shifted blocks nor the periodicity; :func:`hyperbolic_distance` does.
    """
    size = level_map.shape[-1]
    xy = site_coordinates(size)
    h = level_map.reshape(-1).long()
    h_max = torch.maximum(h[:, None], h[None, :])
    lca = torch.full_like(h_max, int(math.log2(size)))
    for k in reversed(range(int(math.log2(size)))):
        cell = xy >> k
        same = (cell[:, None, :] == cell[None, :, :]).all(dim=-1)
        lca = torch.where(same & (k >= h_max), torch.full_like(lca, k), lca)
    return (2 * lca - h[:, None] - h[None, :]).double()


def hyperbolic_distance(level_map: torch.Tensor) -> torch.Tensor:
    """``(V, V)`` geodesic distance in the hyperbolic half-space, in units of RG levels, float64.

    A latent of level ``h`` at site ``x`` is the point ``(x, a = 2^h)`` of the half-space with metric
    ``ds^2 = (|dx|^2 + da^2) / (a ln 2)^2`` (one level up = distance 1). The geodesic distance is

        d = arccosh(1 + (r^2 + (a_s - a_t)^2) / (2 a_s a_t)) / ln 2,

    ``r`` the periodic (minimum-image) lattice distance; for ``r >> a``, ``d ~ 2 log2 r - h_s - h_t``,
    the continuum version of :func:`tree_distance`.
    """
    size = level_map.shape[-1]
    r = lattice_distance(size)
    a = (2.0 ** level_map.reshape(-1).double())
    arg = 1 + (r**2 + (a[:, None] - a[None, :]) ** 2) / (2 * a[:, None] * a[None, :])
    return torch.acosh(arg) / math.log(2)


def latent_correlation_matrix(z: torch.Tensor) -> torch.Tensor:
    """``(V, V)`` connected correlation coefficients of latent sites from samples ``z`` ``(N, C, L, L)``:

        corr(s, t) = <dz_s . dz_t> / sqrt(<|dz_s|^2> <|dz_t|^2>),   dz = z - <z>,

    ``.`` the dot product over channels, ``< >`` the sample mean. Normalising per site makes levels
    with different latent scales comparable. Float64.
    """
    zc = z.double().flatten(2)  # (N, C, V)
    zc = zc - zc.mean(dim=0)
    cov = torch.einsum("ncs,nct->st", zc, zc) / zc.shape[0]
    std = cov.diagonal().sqrt()
    return cov / (std[:, None] * std[None, :])


@dataclass
class BulkCorrelations:
    """Correlations of pairs of distinct latent sites grouped by distance.

    ``distance``: ``(D,)`` the distinct distances; ``correlation``: ``(D,)`` the mean correlation
    coefficient over the pairs at that distance; ``abs_correlation``: ``(D,)`` the mean of its
    absolute value; ``pairs``: ``(D,)`` the number of pairs; ``noise``: ``1/sqrt(N C)``, the standard
    deviation of the sample correlation of two independent sites (the floor ``abs_correlation``
    cannot go below, about ``0.8 noise``); ``metric``: ``"tree"``, ``"hyperbolic"`` or ``"lattice"``;
    ``levels``: the level pair the pairs were restricted to, or ``None`` for all pairs.
    """

    distance: torch.Tensor
    correlation: torch.Tensor
    abs_correlation: torch.Tensor
    pairs: torch.Tensor
    noise: float
    metric: str
    levels: tuple[int, int] | None = None


DISTANCES = {
    "tree": tree_distance,
    "hyperbolic": hyperbolic_distance,
    "lattice": lambda level_map: lattice_distance(level_map.shape[-1]),
}


def bulk_correlations(
    z: torch.Tensor, level_map: torch.Tensor, metric: str = "tree", levels: tuple[int, int] | None = None
) -> BulkCorrelations:
    """Latent correlations ``<z_s z_t>`` (:func:`latent_correlation_matrix`) against the distance
    between the sites, averaged over all pairs ``s != t`` at the same distance.

    ``z``: ``(N, C, L, L)`` latent samples (e.g. :func:`latent_hmc` samples, or ``flow.encode`` of
    field samples); ``level_map``: ``flow.level_map()``; ``metric``: ``"tree"``
    (:func:`tree_distance`), ``"hyperbolic"`` (:func:`hyperbolic_distance`) or ``"lattice"`` (the
    periodic distance on the boundary); ``levels=(h1, h2)`` keeps only pairs of a level-``h1`` and a
    level-``h2`` latent (either order): correlation against (level, distance).
    """
    if metric not in DISTANCES:
        raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(DISTANCES)}")
    if tuple(level_map.shape) != tuple(z.shape[-2:]):
        raise ValueError(f"level_map has shape {tuple(level_map.shape)}, latents have sites {tuple(z.shape[-2:])}")
    corr = latent_correlation_matrix(z)
    dist = DISTANCES[metric](level_map)
    s, t = torch.triu_indices(corr.shape[0], corr.shape[0], offset=1)
    if levels is not None:
        h = level_map.reshape(-1)
        hs, ht = h[s], h[t]
        keep = ((hs == levels[0]) & (ht == levels[1])) | ((hs == levels[1]) & (ht == levels[0]))
        s, t = s[keep], t[keep]
    c, d = corr[s, t], dist[s, t]
    distance, group = torch.unique(torch.round(d, decimals=9), return_inverse=True)
    pairs = torch.zeros_like(distance).scatter_add_(0, group, torch.ones_like(d))
    mean = torch.zeros_like(distance).scatter_add_(0, group, c) / pairs
    mean_abs = torch.zeros_like(distance).scatter_add_(0, group, c.abs()) / pairs
    return BulkCorrelations(
        distance=distance,
        correlation=mean,
        abs_correlation=mean_abs,
        pairs=pairs.long(),
        noise=1 / math.sqrt(z.shape[0] * z.shape[1]),
        metric=metric,
        levels=None if levels is None else (int(levels[0]), int(levels[1])),
    )


def correlation_by_level(
    z: torch.Tensor, level_map: torch.Tensor, metric: str = "lattice"
) -> dict[tuple[int, int], BulkCorrelations]:
    """:func:`bulk_correlations` for every pair of levels ``h1 <= h2``, keyed ``(h1, h2)``; by default
    against the lattice distance on the boundary: correlation against (level, distance)."""
    top = int(level_map.max())
    out = {}
    for h1 in range(top + 1):
        for h2 in range(h1, top + 1):
            result = bulk_correlations(z, level_map, metric, levels=(h1, h2))
            if result.pairs.numel():
                out[(h1, h2)] = result
    return out
