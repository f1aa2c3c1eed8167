"""scripts/bench.py's counters: the dtype casts of a bf16 step, its FLOPs and its matrix products."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

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
