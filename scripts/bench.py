#!/usr/bin/env python
"""Benchmark RG-Flow: training step, sampling throughput, peak memory, per configuration and size.

    python scripts/bench.py                          # the default matrix (about 10 minutes on 2 cores)
    python scripts/bench.py --model paper --batch 64 --mode reversible
    python scripts/bench.py --model small --size 64 --batch 16 --mode stored bf16
    python scripts/bench.py --model ode --batch 8    # the neural-ODE block (any conf/model/*.yaml)
    python scripts/bench.py --model paper --batch 8 --set conditioner=shared   # model keys overridden

Each measurement runs in its own process so that its peak resident memory (ru_maxrss) is its
own. A training step is forward, backward, gradient clipping and an AdamW update on random
8-bit images; the median of ``--steps`` steps after one warm-up is reported. Sampling is
``--sample-batch`` images drawn and decoded without gradients. The header names the CPU and
whether it has bf16 matrix units (avx512_bf16 / amx_bf16): without them bf16 is emulated. Modes: ``stored`` (plain
autograd), ``reversible`` (activations rebuilt from outputs in backward), ``bf16`` (autocast;
combine with either). With bf16 the bits/dim of a fixed batch is compared with float32.

glibc's malloc fragments badly under this allocation pattern (the README's "Speed and memory"
has the numbers). The runs preload tcmalloc when it is installed (Debian: ``apt-get install
libtcmalloc-minimal4``); ``--allocator system`` turns that off.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from rgflow_vision import RGFlowModel
from rgflow_vision.allocator import with_tcmalloc
from rgflow_vision.hardware import cpu_info, describe_cpu

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"

# (model, batch, mode): what `python scripts/bench.py` runs
DEFAULT_MATRIX = [
    ("small", 8, "stored"),
    ("small", 64, "stored"),
    ("small", 64, "reversible"),
    ("paper", 8, "stored"),
    ("paper", 8, "reversible"),
    ("paper", 64, "reversible"),
]


def architecture(name: str, mode: str, overrides: list[str] = ()) -> dict:
    arch = OmegaConf.to_container(OmegaConf.merge(OmegaConf.load(CONF / f"{name}.yaml"),
                                                  OmegaConf.from_dotlist(list(overrides))))
    arch["reversible"] = "reversible" in mode
    return arch


def train_step(model: RGFlowModel, opt: torch.optim.Optimizer, x: torch.Tensor, bf16: bool, loss_fn=None) -> float:
    """Seconds of one training step on ``x``'s device (CUDA waited for); ``loss_fn`` replaces
    ``model.bpd``, e.g. by a compiled one. scripts/gpu_check.sh times its steps with this too."""
    start = time.perf_counter()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = (loss_fn or model.bpd)(x).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(model_name: str, size: int, channels: int, batch: int, mode: str, steps: int, sample_batch: int,
            overrides: list[str] = ()) -> dict:
    torch.manual_seed(0)
    model = RGFlowModel.build(channels, size, **architecture(model_name, mode, overrides))
    model.train()
    bf16 = "bf16" in mode
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, 256, (batch, channels, size, size))
    times = [train_step(model, opt, x, bf16) for _ in range(steps + 1)]
    result = {
        "model": model_name,
        "size": size,
        "channels": channels,
        "batch": batch,
        "mode": mode,
        "params": sum(p.numel() for p in model.parameters()),
        "step_s": statistics.median(times[1:]),
        "steps_s": [round(t, 3) for t in times],
    }
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        start = time.perf_counter()
        model.sample(sample_batch)
        result["sample_img_per_s"] = sample_batch / (time.perf_counter() - start)
        if bf16:
            noise = torch.rand(x.shape)
            low = model.bpd(x, noise).mean().item()
            with torch.autocast("cpu", enabled=False):
                result["bpd_f32_minus_bf16"] = model.bpd(x, noise).mean().item() - low
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(p.stem for p in CONF.glob("*.yaml")))
    parser.add_argument("--batch", type=int)
    parser.add_argument("--mode", nargs="+", default=["stored"], help="stored | reversible, optionally with bf16")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--sample-batch", type=int, default=64)
    parser.add_argument("--allocator", choices=["tcmalloc", "system"], default="tcmalloc")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="model keys over the yaml's, e.g. conditioner=shared hidden=256")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    mode = "+".join(sorted(args.mode))
    if args.one:
        print(json.dumps(measure(args.model, args.size, args.channels, args.batch, mode, args.steps, args.sample_batch,
                                 args.set)))
        return

    runs = [(args.model, args.batch, mode)] if args.model and args.batch else DEFAULT_MATRIX
    env = with_tcmalloc(dict(os.environ)) if args.allocator == "tcmalloc" else dict(os.environ)
    preload = env.get("LD_PRELOAD")
    print(f"torch {torch.__version__}, {describe_cpu(cpu_info())}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, allocator {preload or 'system malloc'}, "
          f"{args.channels}x{args.size}x{args.size} images" + (f", model keys {' '.join(args.set)}" if args.set else ""))
    header = (f"{'model':>6} {'batch':>5} {'mode':>16} {'params':>12} {'step s':>8} {'(min)':>7} "
              f"{'sample img/s':>13} {'peak GiB':>9}")
    print(header, flush=True)
    for model_name, batch, run_mode in runs:
        cmd = [sys.executable, __file__, "--one", "--model", model_name, "--batch", str(batch),
               "--size", str(args.size), "--channels", str(args.channels), "--steps", str(args.steps),
               "--sample-batch", str(args.sample_batch), "--mode", *run_mode.split("+"), "--set", *args.set]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"{model_name:>6} {batch:>5} {run_mode:>16}  failed (exit {proc.returncode}): "
                  f"{proc.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        line = (f"{model_name:>6} {batch:>5} {run_mode:>16} {r['params']:>12,} {r['step_s']:>8.2f} "
                f"{min(r['steps_s'][1:]):>7.2f} "
                f"{r['sample_img_per_s']:>13.1f} {r['peak_rss_gib']:>9.2f}")
        if "bpd_f32_minus_bf16" in r:
            line += f"  bpd(f32) - bpd(bf16) = {r['bpd_f32_minus_bf16']:+.4f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
