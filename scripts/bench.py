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
combine with either), ``compiled`` (``torch.compile`` of the loss, as ``compile=true`` trains; combine with any:
the warm-up step, first in ``steps_s``, includes the compilation), ``fused`` (``torch.compile`` of the conditioners'
residual blocks and feature ODE velocities only, as ``compile=conditioners`` trains: their elementwise work fused
between the matrix products). With bf16 the bits/dim of a fixed batch is compared with float32, and the torch
profiler counts the dtype casts of one step (aten::_to_copy, forward and backward) per matrix product.

``--limit`` sets the step against what this CPU's matrix products allow: one step runs under
``torch.utils.flop_counter.FlopCounterMode`` (forward, backward and, in reversible mode, the
recomputation the backward does), and every matrix product of it is recorded with its shape, layout
and dtype. After each timed step, those products alone are replayed back to back (``torch.mm`` /
``addmm`` on operands of the same shapes, in this process, at its thread count): the least time a step
that does these products can take here. ``step / limit`` is taken step by step, so that both sides of
each ratio saw the same load on a shared machine.

``--reference PATH`` measures the reference implementation (hongyehu/RG-Flow; PATH is its checkout or its
``code/`` folder, imported from there, never copied) the same way: the model its ``main.py`` builds from its
default arguments (CelebA 32x32x3, the paper configuration, gradient checkpointing as it ships), and the step
of its training loop (logit transform, ``log_prob``, backward, clipping at 1, its AdamW) on random 8-bit
images; ``--set KEY=VALUE`` are then arguments of its own parser (``--set nhidden=64 nlayers=1,1,1,1``).

glibc's malloc fragments badly under this allocation pattern (the README's "Speed and memory"
has the numbers). The runs preload tcmalloc when it is installed (Debian: ``apt-get install
libtcmalloc-minimal4``); ``--allocator system`` turns that off.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from rgflow_vision import RGFlowModel
from rgflow_vision.allocator import with_tcmalloc
from rgflow_vision.flows.conditioner import fuse_conditioners
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
    if arch.pop("flow", "rgflow") != "rgflow":  # lattice configs name their flow; the bench builds RGFlowModel
        raise SystemExit(f"bench.py measures RGFlow models; conf/model/{name}.yaml names another flow")
    return arch


def reference(path: str, argv: list[str] = ()) -> tuple[torch.nn.Module, torch.optim.Optimizer, callable, dict]:
    """The reference's flow, optimizer and per-image loss as its ``main.py`` sets them up, from its own code at
    ``path``, with ``argv`` given to its own parser (empty: its defaults, the paper configuration)."""
    code = Path(path) / "code" if (Path(path) / "code" / "main.py").exists() else Path(path)
    if not (code / "main.py").exists():
        raise SystemExit(f"--reference: no main.py in {path} or {path}/code")
    sys.path.insert(0, str(code))
    if importlib.util.find_spec("h5py") is None:  # imported by its data loaders only, which the bench does not use
        sys.modules["h5py"] = types.ModuleType("h5py")
    saved_argv, sys.argv = sys.argv, [str(code / "main.py"), *argv]  # its args.py parses sys.argv on import
    try:
        import main as ref_main
        from args import args
    finally:
        sys.argv = saved_argv
    if args.clip_grad != 1:
        raise SystemExit("--reference: train_step clips gradients at 1, main.py's default clip_grad")
    flow = ref_main.build_mera().train(True)
    params = [p for p in flow.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)

    def loss(x: torch.Tensor) -> torch.Tensor:
        """main.py's loss; x / 255 is what its DataLoader hands it. Its NaN check and logging are left out."""
        y, ldj_logit = ref_main.utils.logit_transform(x / 255)
        return -(flow.log_prob(y) + ldj_logit) / (args.nchannels * args.L**2)

    return flow, opt, loss, vars(args)


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


PROFILED_PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm")


def op_profile(model, opt, x: torch.Tensor, bf16: bool, loss_fn=None, top: int = 12) -> list[dict]:
    """Where one training step's time goes: the ``top`` operators by self time (torch.profiler), each with its
    calls and share of the step's total self time."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(model, opt, x, bf16, loss_fn)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "calls": e.count, "self_s": e.self_cpu_time_total / 1e6,
             "share": e.self_cpu_time_total / total} for e in events[:top]]


def cast_counts(model: RGFlowModel, x: torch.Tensor) -> dict:
    """The dtype casts (``aten::_to_copy``) and matrix products of one bf16 training step's forward and
    backward, by the torch profiler. Casts of 0-dim tensors (CPU kernels wrap Python numbers so) are also
    counted apart: they move one number each."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as forward:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            loss = model.bpd(x).mean()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as backward:
        loss.backward()
    model.zero_grad(set_to_none=True)
    counts = {}
    for phase, prof in (("forward", forward), ("backward", backward)):
        events = prof.events()
        casts = [e for e in events if e.name == "aten::_to_copy"]
        counts[phase] = {"casts": len(casts),
                         "scalar_casts": sum(1 for e in casts if e.input_shapes and e.input_shapes[0] == []),
                         "products": sum(e.name in PROFILED_PRODUCTS for e in events)}
    counts["casts_per_product"] = (counts["forward"]["casts"] + counts["backward"]["casts"]) / counts["forward"]["products"]
    return counts


class ModuleCalls:
    """How deep in ``nn.Module`` calls the code runs now. In a backward, module calls are the rebuilt
    activations (gradient checkpointing, the reversible backward): the gradient kernels run outside them."""

    def __init__(self):
        self.depth = 0

    def __enter__(self):
        self.hooks = [register_module_forward_pre_hook(lambda *_: setattr(self, "depth", self.depth + 1)),
                      register_module_forward_hook(lambda *_: setattr(self, "depth", self.depth - 1),
                                                   always_call=True)]  # also when a recomputation stops early
        return self

    def __exit__(self, *args):
        for hook in self.hooks:
            hook.remove()


class MatrixProducts(TorchDispatchMode):
    """Records every ``mm``/``addmm`` that runs under it: ``(op, a's shape, b's shape, a transposed,
    b transposed, dtype) -> count``; those run inside a module call of ``inside`` also in ``recomputed``."""

    OPS = {torch.ops.aten.mm.default: "mm", torch.ops.aten.addmm.default: "addmm"}

    def __init__(self, inside: ModuleCalls | None = None):
        super().__init__()
        self.calls, self.recomputed, self.inside = collections.Counter(), collections.Counter(), inside

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.OPS:
            a, b = args[-2:] if func is torch.ops.aten.addmm.default else args[:2]
            key = (self.OPS[func], tuple(a.shape), tuple(b.shape), _transposed(a), _transposed(b),
                   str(a.dtype).removeprefix("torch."))
            self.calls[key] += 1
            if self.inside is not None and self.inside.depth > 0:
                self.recomputed[key] += 1
        return func(*args, **(kwargs or {}))


def _transposed(t: torch.Tensor) -> bool:
    return t.dim() == 2 and t.stride(0) == 1 and t.stride(1) != 1


def gemm_seconds(op: str, a_shape: tuple, b_shape: tuple, a_t: bool, b_t: bool, dtype: str,
                 rounds: int = 5, min_round_s: float = 0.05) -> float:
    """Seconds of one such product run alone: the best of ``rounds`` rounds of repeated calls."""
    dt = getattr(torch, dtype)

    def operand(shape, transposed):
        return torch.randn(shape[::-1], dtype=dt).t() if transposed else torch.randn(shape, dtype=dt)

    a, b = operand(a_shape, a_t), operand(b_shape, b_t)
    bias = torch.randn(b_shape[1], dtype=dt)
    run = (lambda: torch.addmm(bias, a, b)) if op == "addmm" else (lambda: torch.mm(a, b))
    run()
    calls, best = 1, float("inf")
    while True:  # enough calls per round to be timed
        start = time.perf_counter()
        for _ in range(calls):
            run()
        if time.perf_counter() - start >= min_round_s:
            break
        calls *= 4
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker: that one's backward hooks make the
    ``torch.autograd.grad`` of the reversible backward fail, and only the global total is needed."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode that counts the whole step, reversible backward included, without per-module tables."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    return counter


def product_flops(products: collections.Counter) -> int:
    return sum(2 * a[0] * a[1] * b[1] * n for (_, a, b, *_), n in products.items())


def step_products(model: torch.nn.Module, x: torch.Tensor, bf16: bool, loss_fn=None) -> tuple[dict, collections.Counter]:
    """FLOPs of one training step (FlopCounterMode; forward and backward apart, and of the backward the
    recomputation, counted as the matrix products inside module calls) and its matrix products
    (:class:`MatrixProducts`); ``loss_fn`` replaces ``model.bpd`` as in :func:`train_step`."""
    flops, products = {}, collections.Counter()
    with flop_counter() as counter, MatrixProducts() as recorder:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = (loss_fn or model.bpd)(x).mean()
    flops["forward"], products = counter.get_total_flops(), products + recorder.calls
    with flop_counter() as counter, ModuleCalls() as calls, MatrixProducts(calls) as recorder:
        loss.backward()
    flops["backward"], products = counter.get_total_flops(), products + recorder.calls
    flops["recomputation"] = product_flops(recorder.recomputed)
    model.zero_grad(set_to_none=True)
    return flops, products


class ProductReplay:
    """The matrix products of a step, each as often as the step runs it, back to back on operands of the
    same shapes, layouts and dtypes: the time the step's matrix products take alone, its limit here.

    Timed between the steps themselves, each replay sees the same load on the machine as its neighbours."""

    def __init__(self, products: collections.Counter):
        self.calls = []
        for (op, a_shape, b_shape, a_t, b_t, dtype), count in products.items():
            dt = getattr(torch, dtype)
            a, b = (torch.randn(s[::-1], dtype=dt).t() if t else torch.randn(s, dtype=dt)
                    for s, t in ((a_shape, a_t), (b_shape, b_t)))
            bias = torch.randn(b_shape[1], dtype=dt)
            run = (lambda a=a, b=b, bias=bias: torch.addmm(bias, a, b)) if op == "addmm" else \
                (lambda a=a, b=b: torch.mm(a, b))
            self.calls.append(((op, a_shape, b_shape, a_t, b_t, dtype), count, run))

    def __call__(self) -> dict:
        """Seconds per product kind, all of them run once."""
        seconds = {}
        for key, count, run in self.calls:
            run()  # each kind once untimed: the step itself has it in cache from the product before
            start = time.perf_counter()
            for _ in range(count):
                run()
            seconds[key] = time.perf_counter() - start
        return seconds


def describe_products(products: collections.Counter, seconds: dict) -> list[dict]:
    rows = []
    for key, count in products.items():
        op, (m, k), (_, n) = key[0], key[1], key[2]
        rows.append({"op": op, "m": m, "k": k, "n": n, "a_t": key[3], "b_t": key[4], "dtype": key[5], "count": count,
                     "seconds": seconds[key], "gflop_per_s": 2 * m * k * n * count / seconds[key] / 1e9})
    return sorted(rows, key=lambda r: -r["seconds"])


def square_gemm_rates(size: tuple[int, int, int] = (4096, 512, 512)) -> dict:
    """GFLOP/s of one ``m x k @ k x n`` product in float32 and bf16 (the figure the design brief quotes)."""
    m, k, n = size
    return {dtype: 2 * m * k * n / gemm_seconds("mm", (m, k), (k, n), False, False, dtype) / 1e9
            for dtype in ("float32", "bfloat16")}


def measure(model_name: str, size: int, channels: int, batch: int, mode: str, steps: int, sample_batch: int,
            overrides: list[str] = (), limit: bool = False, reference_path: str | None = None,
            profile_ops: int = 0) -> dict:
    torch.manual_seed(0)
    if reference_path:  # its --set items are arguments of its own parser
        argv = [arg for key, value in (kv.split("=", 1) for kv in overrides) for arg in (f"--{key}", value)]
        model, opt, loss_fn, ref_args = reference(reference_path, argv)
        channels, size = ref_args["nchannels"], ref_args["L"]
    else:
        model = RGFlowModel.build(channels, size, **architecture(model_name, mode, overrides))
        model.train()
        opt, loss_fn = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True), None
        if "compiled" in mode:  # what compile=true does in training; the warm-up step compiles (steps_s[0])
            loss_fn = torch.compile(model.bpd)
        if "fused" in mode:  # compile=conditioners: only the conditioners and ODE velocities, compiled
            fuse_conditioners(model)
    bf16 = "bf16" in mode
    x = torch.randint(0, 256, (batch, channels, size, size))
    if limit:  # the step's FLOPs and products, then each step followed by a replay of its products
        flops, products = step_products(model, x, bf16, loss_fn)
        replay = ProductReplay(products)
    times, replays = [], []
    for _ in range(steps + 1):
        times.append(train_step(model, opt, x, bf16, loss_fn))
        if limit:
            replays.append(replay())
    result = {
        "implementation": f"reference ({reference_path})" if reference_path else "ours",
        "model": "main.py" if reference_path else model_name,
        "size": size,
        "channels": channels,
        "batch": batch,
        "mode": mode,
        "params": sum(p.numel() for p in model.parameters()),
        "step_s": statistics.median(times[1:]),
        "steps_s": [round(t, 3) for t in times],
    }
    if profile_ops:  # one more step, under the profiler, after the timed ones
        result["profile"] = op_profile(model, opt, x, bf16, loss_fn, profile_ops)
    if bf16:
        result["casts"] = cast_counts(model, x)
    if limit:
        totals = [sum(r.values()) for r in replays[1:]]
        best = replays[1 + totals.index(min(totals))]
        result["limit"] = {"flops": flops, "recorded_product_flops": product_flops(products),
                           "limit_s": statistics.median(totals), "limit_s_all": [round(t, 3) for t in totals],
                           "step_over_limit": [round(t / r, 3) for t, r in zip(times[1:], totals)],
                           "products": describe_products(products, best),
                           "square_gemm_gflop_per_s": square_gemm_rates()}
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        start = time.perf_counter()
        if sample_batch > 0:
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
    parser.add_argument("--mode", nargs="+", default=["stored"],
                        help="stored | reversible, optionally with bf16 and/or compiled (torch.compile of the loss) or fused "
                             "(of the conditioners' residual blocks and ODE velocities only)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--sample-batch", type=int, default=64, help="0: no sampling")
    parser.add_argument("--limit", action="store_true",
                        help="also count the step's FLOPs and time its matrix products alone (the step's limit)")
    parser.add_argument("--allocator", choices=["tcmalloc", "system"], default="tcmalloc")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="model keys over the yaml's, e.g. conditioner=shared hidden=256 (with --reference: "
                             "arguments of its args.py, e.g. nhidden=64)")
    parser.add_argument("--reference", metavar="PATH",
                        help="measure the reference (hongyehu/RG-Flow checkout or its code/ folder) instead of ours")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile one more step and print its N costliest operators by self time")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    mode = "+".join(sorted(args.mode))
    if args.one:
        print(json.dumps(measure(args.model, args.size, args.channels, args.batch, mode, args.steps, args.sample_batch,
                                 args.set, args.limit, args.reference, args.profile)))
        return

    if args.reference:  # as it ships: float32, gradient checkpointing, its own architecture
        if not args.batch or args.model or mode != "stored":
            parser.error("--reference takes --batch, and neither --model nor --mode")
        runs = [("main.py", args.batch, "checkpointed")]
    else:
        runs = [(args.model, args.batch, mode)] if args.model and args.batch else DEFAULT_MATRIX
    env = with_tcmalloc(dict(os.environ)) if args.allocator == "tcmalloc" else dict(os.environ)
    preload = env.get("LD_PRELOAD")
    print(f"torch {torch.__version__}, {describe_cpu(cpu_info())}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, allocator {preload or 'system malloc'}, "
          f"{args.channels}x{args.size}x{args.size} images" + (f", {'reference arguments' if args.reference else 'model keys'} "
                                                               f"{' '.join(args.set)}" if args.set else ""))
    header = (f"{'impl':>9} {'model':>7} {'batch':>5} {'mode':>16} {'params':>12} {'step s':>8} {'(min)':>7} "
              f"{'sample img/s':>13} {'peak GiB':>9}")
    print(header, flush=True)
    for model_name, batch, run_mode in runs:
        impl = "reference" if args.reference else "ours"
        cmd = [sys.executable, __file__, "--one", "--batch", str(batch),
               "--size", str(args.size), "--channels", str(args.channels), "--steps", str(args.steps),
               "--sample-batch", str(args.sample_batch), "--mode", *run_mode.split("+"), "--set", *args.set,
               *(["--limit"] if args.limit else []), "--profile", str(args.profile),
               *(["--reference", args.reference] if args.reference else ["--model", model_name])]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"{impl:>9} {model_name:>7} {batch:>5} {run_mode:>16}  failed (exit {proc.returncode}): "
                  f"{proc.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        line = (f"{impl:>9} {model_name:>7} {batch:>5} {run_mode:>16} {r['params']:>12,} {r['step_s']:>8.2f} "
                f"{min(r['steps_s'][1:]):>7.2f} "
                f"{r['sample_img_per_s']:>13.1f} {r['peak_rss_gib']:>9.2f}")
        if "bpd_f32_minus_bf16" in r:
            line += f"  bpd(f32) - bpd(bf16) = {r['bpd_f32_minus_bf16']:+.4f}"
        print(line, flush=True)
        if "casts" in r:
            print(describe_casts(r["casts"]), flush=True)
        if "limit" in r:
            print(describe_limit(r), flush=True)
        for p in r.get("profile", []):
            print(f"{'':>14}{p['op']:>36} {p['calls']:>7} calls {p['self_s']:>8.3f} s {p['share']:>6.1%}", flush=True)


def describe_casts(c: dict) -> str:
    f, b = c["forward"], c["backward"]
    return (f"{'':>14}casts per matrix product of the forward: {c['casts_per_product']:.2f} (forward {f['casts']}, "
            f"backward {b['casts']}, of them 0-dim {f['scalar_casts'] + b['scalar_casts']}; products: forward "
            f"{f['products']}, backward {b['products']})")


def describe_limit(r: dict) -> str:
    """The FLOP count, the matrix-product limit and the step's distance from it, with the costliest products."""
    lim = r["limit"]
    f, b = lim["flops"]["forward"], lim["flops"]["backward"]
    ratios = lim["step_over_limit"]
    rerun = f", of it recomputation {lim['flops']['recomputation'] / 1e9:.2f}" if "recomputation" in lim["flops"] else ""
    lines = [f"{'':>14}GFLOP forward {f / 1e9:.2f}, backward {b / 1e9:.2f} ({b / f:.2f}x forward{rerun}; matrix products "
             f"recorded {lim['recorded_product_flops'] / 1e9:.2f} GFLOP in all); their replay (the limit) "
             f"{lim['limit_s']:.2f} s, {(f + b) / lim['limit_s'] / 1e9:.0f} GFLOP/s (median; all "
             f"{lim['limit_s_all']}); step / limit, step by step: {ratios}, median {statistics.median(ratios):.2f}",
             f"{'':>14}square 4096x512x512 product alone: " + ", ".join(
                 f"{dtype} {rate:.0f} GFLOP/s" for dtype, rate in lim["square_gemm_gflop_per_s"].items()),
             f"{'':>14}{'op':>5} {'m x k x n':>18} {'layout':>6} {'dtype':>8} {'count':>6} {'GFLOP/s':>8} {'share':>6}"]
    total = sum(p["seconds"] for p in lim["products"])
    for p in lim["products"][:6]:
        layout = ("T" if p["a_t"] else "N") + ("T" if p["b_t"] else "N")
        lines.append(f"{'':>14}{p['op']:>5} {p['m']:>6}x{p['k']:>5}x{p['n']:>5} {layout:>6} {p['dtype']:>8} "
                     f"{p['count']:>6} {p['gflop_per_s']:>8.1f} {p['seconds'] / total:>6.1%}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
