"""Where a hierarchical flow loses KL on the free field: measurements, not training.

Two tools, both exact for Gaussian fields:

- :func:`gaussian_floor`: the smallest reverse KL that the *structure* of an RGFlow (block size,
  levels, layer pairs per level) allows for a free field, found by training the same flow with
  each block bijection replaced by a general linear map. For a Gaussian target, the linear flow
  ``x = A z`` has ``q = N(0, A A^T)`` and the loss ``E_q[log q + S] = sum_j S(A e_j) - ln|det A|
  - (d/2)(1 + ln 2 pi)`` exactly (``S`` quadratic), so the optimisation has no sampling noise.
  A trained coupling flow that plateaus well above this floor is limited by its bijections or its
  training; one that plateaus at it is limited by the structure.
- :func:`latent_kl_by_level`: exact samples of the target encoded by a trained flow, and the
  Gaussian part of ``KL(f#p || N(0, 1))`` (= the forward ``KL(p || q)`` when the flow is
  near-linear) split into per-level variance miscalibration, correlations within each level and
  the information shared between levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..flows import RGFlow
from .actions import FreeComplexField


class LinearBlock(nn.Module):
    """A general invertible linear map of the block vectors, with the block bijections' interface
    ``(blocks, inverse) -> (blocks, log|det| per block)``; starts at the identity."""

    def __init__(self, features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(features, dtype=torch.float64))

    def forward(self, x: torch.Tensor, inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weight.to(x.dtype)
        logdet = torch.linalg.slogdet(w)[1].expand(x.shape[0])
        if inverse:
            return torch.linalg.solve(w, x.T).T, -logdet
        return x @ w.T, logdet


def linear_rgflow(channels: int, size: int, block_size: int = 4, depth: int = 1) -> RGFlow:
    """An :class:`RGFlow` of this structure whose every layer is a :class:`LinearBlock` (float64)."""
    flow = RGFlow(channels, size, block_size=block_size, hidden=1, num_res_blocks=1, mlp_depth=1, couplings=1,
                  depth=depth)
    features = channels * block_size**2
    for layers in (flow.disentanglers, flow.decimators):
        for i in range(len(layers)):
            layers[i] = LinearBlock(features)
    return flow.double()


def linear_flow_kl(flow: RGFlow, action: FreeComplexField) -> torch.Tensor:
    """Exact ``KL(q || p)`` of a linear flow with standard normal latents, differentiable."""
    size = flow.image_size
    d = flow.channels * size**2
    basis = torch.eye(d, dtype=torch.float64).reshape(d, flow.channels, size, size)
    columns, logdet = flow.decode(basis)  # x = A z: the columns of A, and ln|det A| (the same for every z)
    loss = action(columns).sum() - logdet[0] - 0.5 * d * (1 + math.log(2 * math.pi))
    return loss + action.log_z(size)


@dataclass
class GaussianFloor:
    """``kl``: the lowest exact KL reached; ``history``: ``(step, kl)`` along the optimisation."""

    kl: float
    history: list[tuple[int, float]]


def gaussian_floor(
    action: FreeComplexField, size: int, block_size: int = 4, depth: int = 1, steps: int = 2000, lr: float = 3e-3
) -> GaussianFloor:
    """The best exact KL of a linear RGFlow of this structure towards the free field (Adam on the
    exact loss; an upper bound on the floor that tightens with ``steps``)."""
    flow = linear_rgflow(action.channels, size, block_size, depth)
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    best, history = math.inf, []
    for step in range(steps):
        kl = linear_flow_kl(flow, action)
        optimizer.zero_grad()
        kl.backward()
        optimizer.step()
        best = min(best, kl.item())
        if step % 100 == 0 or step == steps - 1:
            history.append((step, kl.item()))
    return GaussianFloor(kl=best, history=history)


@dataclass
class LevelKL:
    """Gaussian part of ``KL(f#p || N(0, 1))`` in nats, split by RG level.

    ``scale[h]``: ``sum_i (s_ii - 1 - ln s_ii)/2`` over the level-``h`` latents (wrong variances);
    ``within[h]``: ``(sum_i ln s_ii - ln det S_hh)/2`` (correlations inside level ``h``);
    ``between``: ``(sum_h ln det S_hh - ln det S)/2`` (information the levels share);
    ``mean``: ``|<z>|^2/2`` summed (a shifted latent); ``total`` is the sum of all of them.
    """

    scale: list[float]
    within: list[float]
    between: float
    mean: float
    total: float


@torch.no_grad()
def latent_kl_by_level(flow: RGFlow, x: torch.Tensor) -> LevelKL:
    """Encode target samples ``x`` ``(N, C, L, L)`` and split the Gaussian KL of their latents by level."""
    z, _ = flow.encode(x.to(next(flow.parameters()).dtype))
    z = z.double()
    level = flow.level_map().reshape(-1).repeat(z.shape[1])  # channel-major, as z.flatten(1)
    flat = z.flatten(1)
    mean = flat.mean(0)
    cov = torch.cov(flat.T)
    var = cov.diagonal()
    scale, within, logdets = [], [], []
    for h in range(flow.num_levels):
        idx = torch.nonzero(level == h).flatten()
        block = cov[idx][:, idx]
        logdet = torch.linalg.slogdet(block)[1].item()
        logdets.append(logdet)
        v = var[idx]
        scale.append(0.5 * (v - 1 - v.log()).sum().item())
        within.append(0.5 * (v.log().sum().item() - logdet))
    between = 0.5 * (sum(logdets) - torch.linalg.slogdet(cov)[1].item())
    mean_term = 0.5 * (mean**2).sum().item()
    return LevelKL(scale, within, between, mean_term, sum(scale) + sum(within) + between + mean_term)
