"""scripts/bench.py's counters: the dtype casts of a bf16 step, its FLOPs and its matrix products; and
``--reference``, which measures the reference implementation (hongyehu/RG-Flow) from a local checkout."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from rgflow_vision import RGFlowModel

from .conftest import TINY

SPEC = importlib.util.spec_from_file_location("bench", Path(__file__).resolve().parents[1] / "scripts" / "bench.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)

X = torch.randint(0, 256, (4, 3, 16, 16), generator=torch.Generator().manual_seed(0))


def tiny_model(**architecture) -> RGFlowModel:
    torch.manual_seed(0)
    return RGFlowModel.build(3, 16, **{**TINY, **architecture}).train()


@pytest.mark.parametrize("conditioner", ["separate", "shared"])
def test_a_bf16_step_casts_each_weight_once_per_layer_call(one_thread, conditioner):
    # Each weight-normalised matrix and bias is cast once per layer call and serves both parities, and each
    # product's input once; left to autocast (a weight-normalised matrix recast at every product, a swish's
    # input cast twice) a step made about 10 casts per product, now under 5.
    counts = bench.cast_counts(tiny_model(conditioner=conditioner), X)
    assert counts["forward"]["products"] > 0 and counts["backward"]["products"] == 2 * counts["forward"]["products"]
    assert counts["casts_per_product"] < 6


def test_the_recorded_matrix_products_are_the_flops_that_flop_counter_counts(one_thread):
    model = tiny_model()
    with bench.flop_counter() as counter, bench.MatrixProducts() as recorder:
        model.bpd(X).mean().backward()
    recorded = sum(2 * a[0] * a[1] * b[1] * n for (_, a, b, *_), n in recorder.calls.items())
    assert recorded == counter.get_total_flops() > 0


def test_the_reversible_backward_reruns_every_network_once(one_thread):
    flops = {}
    for reversible in (False, True):
        model = tiny_model(reversible=reversible)
        with bench.flop_counter() as forward:
            loss = model.bpd(X).mean()
        with bench.flop_counter() as backward:
            loss.backward()
        flops[reversible] = forward.get_total_flops(), backward.get_total_flops()
        assert bench.step_products(model, X, bf16=False)[0]["recomputation"] == (flops[reversible][0] if reversible
                                                                                 else 0)
    assert flops[True][0] == flops[False][0]
    # The stored backward costs about two forwards (it skips the input gradient where no input needs one);
    # the reversible one adds a rerun of the networks and those input gradients.
    assert 1.8 * flops[False][0] < flops[False][1] <= 2 * flops[False][0]
    assert flops[False][1] + flops[False][0] <= flops[True][1] <= 3 * flops[False][0]


@pytest.mark.parametrize("op", ["mm", "addmm"])
@pytest.mark.parametrize("layout", [(False, False), (True, False), (False, True)])
def test_a_recorded_product_can_be_timed_alone(one_thread, op, layout):
    seconds = bench.gemm_seconds(op, (32, 16), (16, 8), *layout, "float32", rounds=1, min_round_s=0.001)
    assert 0 < seconds < 1


def test_the_replay_runs_every_recorded_product_of_a_step(one_thread):
    flops, products = bench.step_products(tiny_model(), X, bf16=False)
    recorded = sum(2 * a[0] * a[1] * b[1] * n for (_, a, b, *_), n in products.items())
    assert recorded == flops["forward"] + flops["backward"]
    seconds = bench.ProductReplay(products)()
    assert seconds.keys() == products.keys() and all(t > 0 for t in seconds.values())


class Checkpointed(torch.nn.Module):
    """Stands in for the reference: a network whose activations gradient checkpointing rebuilds in the backward."""

    def __init__(self, use_reentrant: bool):
        super().__init__()
        self.net, self.use_reentrant = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(),
                                                           torch.nn.Linear(16, 12)), use_reentrant

    def forward(self, x):
        return checkpoint(self.net, x, use_reentrant=self.use_reentrant)


@pytest.mark.parametrize("use_reentrant", [True, False])  # the reference ships the reentrant one (torch 1.6's only)
def test_a_step_through_a_loss_function_counts_what_checkpointing_recomputes(one_thread, use_reentrant):
    torch.manual_seed(0)
    model = Checkpointed(use_reentrant)
    x = torch.randint(0, 256, (4, 12))

    def loss(x):  # the inputs require a gradient, as the reference's do past its first coupling
        return model((x / 255).requires_grad_()).pow(2).sum(1)

    flops, products = bench.step_products(model, x, bf16=False, loss_fn=loss)
    assert flops["forward"] == 2 * 2 * 4 * 12 * 16
    # The reentrant checkpoint reruns the whole network; the other stops early, once the tanh's output is back.
    assert flops["recomputation"] == (flops["forward"] if use_reentrant else 2 * 4 * 12 * 16)
    assert bench.product_flops(products) == flops["forward"] + flops["backward"]
    before = [p.detach().clone() for p in model.parameters()]
    assert bench.train_step(model, torch.optim.AdamW(model.parameters()), x, bf16=False, loss_fn=loss) > 0
    assert all((p != b).any() for p, b in zip(model.parameters(), before))


def reference_checkout() -> Path | None:
    for path in (os.environ.get("RGFLOW_REFERENCE"), "/tmp/rgflow_ref"):
        if path and ((Path(path) / "code" / "main.py").exists() or (Path(path) / "main.py").exists()):
            return Path(path)
    return None


@pytest.mark.skipif(reference_checkout() is None, reason="no checkout of hongyehu/RG-Flow (set RGFLOW_REFERENCE)")
def test_the_reference_step_is_measured_against_its_limit_in_a_process_of_its_own():
    # Its own parser shrinks its paper architecture to a tiny one; the step is its main.py's, checkpointing included.
    cmd = [sys.executable, str(Path(bench.__file__)), "--one", "--reference", str(reference_checkout()), "--batch", "2",
           "--steps", "1", "--sample-batch", "2", "--mode", "checkpointed", "--limit",
           "--set", "nhidden=32", "nlayers=1,1,1,1", "nresblocks=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["implementation"].startswith("reference") and (r["channels"], r["size"]) == (3, 32)
    flops = r["limit"]["flops"]
    # Every coupling but the first (whose input needs no gradient) is rebuilt once in the backward.
    assert 0.5 * flops["forward"] < flops["recomputation"] < flops["forward"]
    assert r["limit"]["recorded_product_flops"] == flops["forward"] + flops["backward"]
    assert len(r["limit"]["step_over_limit"]) == 1 and r["sample_img_per_s"] > 0


def test_the_profile_names_the_matrix_products_among_a_steps_costliest_operators(one_thread):
    model = tiny_model()
    ops = bench.op_profile(model, torch.optim.AdamW(model.parameters()), X, bf16=False, top=40)
    assert {"aten::mm", "aten::addmm"} & {p["op"] for p in ops}
    shares = [p["share"] for p in ops]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9 and all(p["calls"] > 0 for p in ops)
