"""Shared helpers: small flows whose weights are moved well away from the identity."""

from __future__ import annotations

import pytest
import torch

from rgflow_vision.flows import RGFlow
from rgflow_vision.apps import train as train_app

from .apps import QUICK, TINY_MODEL, compose_cfg

TINY = dict(hidden=16, num_res_blocks=1, couplings=(2, 1))
# Every registered bijection, and each variant of one that computes differently (RealNVP's shared s/t network).
TINY_BY_BIJECTION = {"rnvp": dict(TINY, conditioner="separate"), "rnvp_shared": dict(TINY, conditioner="shared"),
                     "rnvp_spline": dict(TINY, conditioner="separate", transform="spline", bins=4, tail_bound=5.0),
                     "ode": dict(bijection="ode", hidden=16, depth=1, steps=(3, 2), rate=0.69)}
BIJECTIONS = sorted(TINY_BY_BIJECTION)
OUT_SCALE = {"rnvp": 0.2, "rnvp_shared": 0.2, "rnvp_spline": 0.15, "ode": 2.0}  # spread of the zero-initialised output scales: far from the identity


def perturbed_flow(channels: int, size: int, dtype=torch.float32, seed: int = 0, bijection: str = "rnvp",
                   **architecture) -> RGFlow:
    """An RGFlow with random weights: every block bijection does something (not the zero-init identity)."""
    torch.manual_seed(seed)
    flow = RGFlow(channels, size, **{**TINY_BY_BIJECTION[bijection], **architecture}).to(dtype)
    with torch.no_grad():
        for name, p in flow.named_parameters():
            if name.endswith("out_scale"):
                p.normal_(0.0, OUT_SCALE[bijection])
            elif name.endswith("head.weight"):  # the spline's zero-initialised parameter head
                p.normal_(0.0, OUT_SCALE[bijection] / p.shape[1] ** 0.5)
            else:
                p.add_(0.1 * torch.randn_like(p))
    return flow


def site_mask(size: int, i: int, j: int) -> torch.Tensor:
    """Boolean ``(size, size)`` mask of the single site ``(i, j)``."""
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[i, j] = True
    return mask


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for modules of many small-tensor ops: on shared cores, OpenMP barriers
    cost far more than they gain (measured 10-25x slower with two threads on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """Two short epochs of ``python train.py`` on digits with EMA and every logger: shared by the app tests."""
    tmp_path = tmp_path_factory.mktemp("trained")
    cfg = compose_cfg(tmp_path, *TINY_MODEL, *QUICK, "trainer.max_epochs=2", "ema=0.9", "logger=many",
                      "logger.wandb.offline=true", "callbacks.hierarchy.every_n_epochs=2")
    return tmp_path, train_app.train(cfg)
