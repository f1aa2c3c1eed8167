"""The paper configuration at full size, and the benchmark script that measures it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rgflow_vision.flows import RGFlow

from .apps import run_script

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
    x = torch.randn(1, 3, 32, 32)  # one image: the property does not depend on the batch
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
def test_bench_script_reports_a_training_step(tmp_path):
    args = ["--one", "--model", "small", "--batch", "2", "--size", "16", "--steps", "1", "--sample-batch", "2",
            "--mode", "reversible"]
    # One measurement as the benchmark makes it, in a process of its own (its peak memory is its own).
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), *args], check=True,
                         capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["params"] > 0 and result["step_s"] > 0 and result["peak_rss_gib"] > 0
    assert result["mode"] == "reversible" and result["sample_img_per_s"] > 0
    # --set overrides model keys: two networks for s and t (the paper's) have more parameters than model=small's one
    # (the script in this process: only the parameter count is read)
    separate = run_script("scripts/bench", *args, "--set", "conditioner=separate", cwd=tmp_path)
    assert separate.returncode == 0, separate.stderr[-2000:]
    assert 0.5 < result["params"] / json.loads(separate.stdout.strip().splitlines()[-1])["params"] < 0.75
