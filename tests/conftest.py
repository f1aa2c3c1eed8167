"""Shared helpers: small flows whose weights are moved well away from the identity."""

from __future__ import annotations

import pytest
import torch

from rgflow_vision.flows import RGFlow

TINY = dict(hidden=16, num_res_blocks=1, couplings=(2, 1))


def perturbed_flow(channels: int, size: int, dtype=torch.float32, seed: int = 0, **architecture) -> RGFlow:
    """An RGFlow with random weights: every coupling does something (not the zero-init identity)."""
    torch.manual_seed(seed)
    flow = RGFlow(channels, size, **{**TINY, **architecture}).to(dtype)
    with torch.no_grad():
        for name, p in flow.named_parameters():
            if name.endswith("out_scale"):
                p.normal_(0.0, 0.2)
            else:
                p.add_(0.1 * torch.randn_like(p))
    return flow


def site_mask(size: int, i: int, j: int) -> torch.Tensor:
    """Boolean ``(size, size)`` mask of the single site ``(i, j)``."""
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[i, j] = True
    return mask


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
