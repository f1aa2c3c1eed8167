"""Receptive fields of the latents, level by level, from forward-mode Jacobian columns.

The receptive field of latent site ``l`` (of level ``h``) is the mean absolute Jacobian column

    RF_l(p) = E_{z ~ prior} (1/C) sum_{c_in} sum_{c_out} |d x[c_out, p] / d z[c_in, l]|,

summed over the output colour channels and averaged over the ``C`` latents that share the site
(one per input channel), so that it is one ``(L, L)`` map per site; ``x`` is the flow's data
space (the logits of images, the fields of a lattice). Each column is one JVP of
``decode``. Latents whose decode causal cones do not overlap are probed in the same JVP (their
columns have disjoint supports, so the cone masks split them exactly): the ``3/4 L^2`` level-0
sites of a 64x64 image need 48 JVPs per channel, not 3072.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.autograd.forward_ad as fwAD

from ..flows.geometry import causal_cone, cone_width
from ..flows.rgflow import RGFlow
from ..priors.factorized import FactorizedPrior
from ..progress import progress
from ._common import AnalysisError, evaluating, flow_dtype


@dataclass
class ReceptiveFields:
    """Receptive-field maps per level, each rolled (periodically) so its latent sits at ``centre``.

    ``centre_maps[h]``: the RF of the level-``h`` site closest to the image centre, ``sites[h]``;
    ``mean_maps[h]``: the mean RF over ``num_sites[h]`` sites of level ``h`` (all of them unless
    ``max_sites`` was set). ``radius[h]`` / ``radius_centre[h]``: the periodic distance from the
    latent within which a fraction ``mass`` of the mean / centre map lies.
    """

    centre_maps: torch.Tensor  # (H, L, L)
    mean_maps: torch.Tensor  # (H, L, L)
    sites: list[tuple[int, int]]
    radius: list[float]
    radius_centre: list[float]
    num_sites: list[int]
    centre: tuple[int, int]
    mass: float
    num_samples: int

    @property
    def levels(self) -> int:
        return self.mean_maps.shape[0]


def receptive_fields(
    flow: RGFlow,
    prior: FactorizedPrior | None = None,
    *,
    z: torch.Tensor | None = None,
    num_samples: int = 4,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    max_sites: int | None = 16,
    mass: float = 0.9,
    mode: str = "forward",
    chunk_size: int | None = None,
    show_progress: bool = False,
) -> ReceptiveFields:
    """Receptive field of every level of ``flow``, averaged over latents drawn from ``prior``.

    Pass either ``prior`` (``num_samples`` draws at ``temperature``) or the samples ``z``
    themselves, ``(S, C, L, L)``. ``max_sites`` caps the sites averaged per level (a random
    subset drawn with ``generator``, always holding the centre site; ``None``: every site): the
    mean map is then an unbiased estimate of the all-site mean, and the cost stays bounded. It is
    ``S * C`` JVPs per group of sites with disjoint cones: 48 groups hold all level-0 sites of
    any image, but from level 1 at ``L = 32`` (level 2 at ``L = 64``) every site is its own group.

    ``mode="forward"`` computes the JVPs with forward-mode AD; ``mode="reverse"`` with the
    double-VJP trick (two reverse passes, the same numbers). Forward mode is the definition, but
    PyTorch (CPU) runs forward-mode products with a constant through Python reference kernels, so
    reverse mode can be faster (timings: README, "The hierarchy at work"); ``num_samples=1`` and a
    smaller ``max_sites`` scale the cost down. ``chunk_size`` JVP directions run as one batch
    (default: about 2^18 latents). ``show_progress``: a bar on stderr counting the JVPs, level by level.
    """
    if mode not in ("forward", "reverse"):
        raise AnalysisError(f"mode must be 'forward' (forward-mode AD) or 'reverse' (double VJP); got {mode!r}")
    if not 0 < mass <= 1:
        raise AnalysisError(f"mass must be in (0, 1], the share of the receptive field within the radius; got {mass}")
    if max_sites is not None and max_sites < 1:
        raise AnalysisError(f"max_sites must be a positive number of sites per level or None (all); got {max_sites}")
    size, channels, block = flow.image_size, flow.channels, flow.block_size
    dtype = flow_dtype(flow)
    device = next(flow.parameters()).device
    if z is None:
        if prior is None:
            raise AnalysisError("receptive_fields needs a prior to sample latents from, or the latents z themselves")
        z = prior.sample(num_samples, temperature, generator)
    if z.dim() != 4 or tuple(z.shape[1:]) != (channels, size, size):
        raise AnalysisError(f"z must have shape (S, {channels}, {size}, {size}); got {tuple(z.shape)}")
    z = z.to(device=device, dtype=dtype)

    levels = flow.level_map().cpu()
    c = size // 2
    plan = []  # per level: its sites (the representative first), their cones, and the groups with disjoint cones
    for h in range(flow.num_levels):
        sites = [tuple(s) for s in (levels == h).nonzero().tolist()]
        rep = min(sites, key=lambda s: (_periodic_sq(s, (c, c), size), s))
        if max_sites is not None and len(sites) > max_sites:
            others = [s for s in sites if s != rep]
            pick = torch.randperm(len(others), generator=generator)[: max_sites - 1].tolist()
            sites = [rep] + [others[i] for i in sorted(pick)]
        cones = _site_cones(sites, h, size, block)
        plan.append((sites, rep, cones, _disjoint_groups(sites, cones, h, size, block)))
    jvps = sum(len(groups) for *_, groups in plan) * z.shape[0] * channels
    centre_maps, mean_maps, sites_out, counts = [], [], [], []
    with evaluating(flow), progress(desc="receptive fields", total=jvps, unit="JVP", enabled=show_progress) as bar:
        for h, (sites, rep, cones, groups) in enumerate(plan):
            bar.set_postfix_str(f"level {h}")
            columns = _group_columns(flow, z, sites, groups, mode, chunk_size, bar)  # (groups, L, L)
            mean_map = torch.zeros(size, size, dtype=dtype, device=device)
            for g, members in enumerate(groups):
                for k in members:
                    i, j = sites[k]
                    site_map = torch.roll(columns[g] * cones[k].to(device), (c - i, c - j), dims=(0, 1))
                    mean_map += site_map
                    if sites[k] == rep:
                        centre_maps.append(site_map)
            mean_maps.append(mean_map / len(sites))
            sites_out.append(rep)
            counts.append(len(sites))
    centre_maps, mean_maps = torch.stack(centre_maps), torch.stack(mean_maps)
    return ReceptiveFields(
        centre_maps=centre_maps,
        mean_maps=mean_maps,
        sites=sites_out,
        radius=[radius_of_mass(m, (c, c), mass) for m in mean_maps],
        radius_centre=[radius_of_mass(m, (c, c), mass) for m in centre_maps],
        num_sites=counts,
        centre=(c, c),
        mass=mass,
        num_samples=z.shape[0],
    )


def periodic_distance(size: int, centre: tuple[int, int]) -> torch.Tensor:
    """``(L, L)`` Euclidean distance from ``centre`` on the periodic ``L x L`` lattice."""
    idx = torch.arange(size)
    di = (idx - centre[0]).abs()
    dj = (idx - centre[1]).abs()
    di, dj = torch.minimum(di, size - di), torch.minimum(dj, size - dj)
    return (di[:, None] ** 2 + dj[None, :] ** 2).double().sqrt()


def radius_of_mass(rf_map: torch.Tensor, centre: tuple[int, int], mass: float = 0.9) -> float:
    """Smallest periodic distance ``r`` from ``centre`` such that the disc ``d <= r`` holds at
    least ``mass`` of the map's total; 0 for an all-zero map."""
    weights = rf_map.detach().double().cpu().flatten()
    total = weights.sum()
    if total <= 0:
        return 0.0
    dist = periodic_distance(rf_map.shape[-1], centre).flatten()
    radii, inverse = torch.unique(dist, return_inverse=True)  # sorted distances; ties count together
    inside = torch.zeros_like(radii).index_add_(0, inverse, weights).cumsum(0)
    k = int((inside < mass * total * (1 - 1e-12)).sum())
    return float(radii[min(k, len(radii) - 1)])


def _periodic_sq(a, b, size):
    di, dj = abs(a[0] - b[0]), abs(a[1] - b[1])
    return min(di, size - di) ** 2 + min(dj, size - dj) ** 2


def _site_cones(sites, h, size, block):
    """Decode causal cone of each site, ``(n, L, L)`` bool.

    The cone of a level-``h`` latent only passes through levels ``<= h``, whose blocks repeat
    every ``K 2^h`` sites, so it is a roll of the cone of the site's representative in the first
    ``K 2^h`` period: at most ``K^2`` calls to :func:`causal_cone` per level.
    """
    period = min(block * 2**h, size)
    reference = {}
    cones = []
    for i, j in sites:
        key = (i % period, j % period)
        if key not in reference:
            mask = torch.zeros(size, size, dtype=torch.bool)
            mask[key] = True
            reference[key] = causal_cone(mask, block, direction="decode")
        cones.append(torch.roll(reference[key], (i - key[0], j - key[1]), dims=(0, 1)))
    return torch.stack(cones)


def _disjoint_groups(sites, cones, h, size, block):
    """First-fit colouring of the sites into groups whose cones do not overlap.

    Sites are visited sorted by their position modulo the smallest power of two that holds a
    cone (``cone_width``), so that with all sites of a level the groups are the lattice classes
    that tile the image (48 groups for the level-0 sites, whose 8x8 cones tile any ``L``).
    """
    stride = min(size, 2 ** math.ceil(math.log2(cone_width(h, block))))
    order = sorted(range(len(sites)), key=lambda k: (sites[k][0] % stride, sites[k][1] % stride, sites[k]))
    unions = torch.zeros(len(sites), size, size, dtype=torch.bool)
    groups: list[list[int]] = []
    for k in order:
        overlap = (unions[: len(groups)] & cones[k]).flatten(1).any(1)
        free = (~overlap).nonzero()
        g = int(free[0]) if free.numel() else len(groups)
        if g == len(groups):
            groups.append([])
        groups[g].append(k)
        unions[g] |= cones[k]
    return groups


def _group_columns(flow, z, sites, groups, mode, chunk_size, bar):
    """``sum_{samples, c_in} sum_{c_out} |J|`` of each group's one-hot tangents, divided by
    ``S C``: ``(groups, L, L)``. Each entry of a direction batch is one (sample, group, channel);
    ``bar`` advances by the directions of each batch."""
    samples, channels, size, _ = z.shape
    directions = [(s, g, c) for s in range(samples) for g in range(len(groups)) for c in range(channels)]
    if chunk_size is None:
        chunk_size = max(1, 2**18 // z[0].numel())
    jvp = _jvp_forward if mode == "forward" else _jvp_reverse
    out = z.new_zeros(len(groups), size, size)
    for start in range(0, len(directions), chunk_size):
        chunk = directions[start : start + chunk_size]
        primal = z[[s for s, _, _ in chunk]]
        tangent = torch.zeros_like(primal)
        for n, (_, g, c) in enumerate(chunk):
            rows, cols = zip(*(sites[k] for k in groups[g]))
            tangent[n, c, list(rows), list(cols)] = 1
        column = jvp(flow, primal, tangent).abs().sum(dim=1)
        out.index_add_(0, torch.tensor([g for _, g, _ in chunk], device=out.device), column)
        bar.update(len(chunk))
    return out / (samples * channels)


def _jvp_forward(flow, z, tangent):
    with torch.no_grad(), fwAD.dual_level():
        x, _ = flow.decode(fwAD.make_dual(z, tangent))
        return fwAD.unpack_dual(x).tangent


def _jvp_reverse(flow, z, tangent):
    # J t = d/du <J^T u, t>: the VJP is linear in u, so differentiating it once more gives the JVP.
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        x, _ = flow.decode(z)
        u = torch.zeros_like(x, requires_grad=True)
        (vjp,) = torch.autograd.grad(x, z, u, create_graph=True)
        (column,) = torch.autograd.grad(vjp, u, tangent)
    return column
