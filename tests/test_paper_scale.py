"""The paper configuration at full size, and the benchmark script that measures it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rgflow_vision.flows import RGFlow

ROOT = Path(__file__).resolve().parents[1]
PAPER = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "paper.yaml"))


@pytest.mark.slow
def test_paper_flow_is_invertible_and_reversible_gradients_match():
    torch.manual_seed(0)
    flow = RGFlow(3, 32, **PAPER)
    with torch.no_grad():
        for name, p in flow.named_parameters():
            if name.endswith("out_scale"):
                p.normal_(0.0, 0.05)
    x = torch.randn(2, 3, 32, 32)
    z, logdet = flow.encode(x)
    x_back, logdet_inv = flow.decode(z)
    assert (z - x).abs().max() > 0.1
    assert (x_back - x).abs().max() < 1e-4
    assert (logdet + logdet_inv).abs().max() < 1e-3

    weight = torch.randn_like(x)
    grads = {}
    for reversible in (False, True):
        flow.reversible = reversible
        flow.zero_grad()
        out, ld = flow.encode(x)
        ((out * weight).sum() + ld.sum()).backward()
        grads[reversible] = torch.cat([p.grad.flatten() for p in flow.parameters()])
    err = (grads[True] - grads[False]).norm() / grads[False].norm()
    assert err < 1e-4, err


@pytest.mark.slow
def test_bench_script_reports_a_training_step():
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--one", "--model", "small", "--batch", "2",
           "--size", "16", "--steps", "1", "--sample-batch", "2", "--mode", "reversible"]

    def bench(*extra: str) -> dict:
        out = subprocess.run([*cmd, *extra], check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    result = bench()
    assert result["params"] > 0 and result["step_s"] > 0 and result["peak_rss_gib"] > 0
    assert result["mode"] == "reversible" and result["sample_img_per_s"] > 0
    # --set overrides model keys: one network for s and t has fewer parameters than two
    assert 0.5 * result["params"] < bench("--set", "conditioner=shared")["params"] < 0.75 * result["params"]
