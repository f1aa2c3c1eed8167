#!/usr/bin/env bash
# The GPU path in one run of at most about 5 minutes on one GPU, at the paper size on 32x32x3 data:
#   scripts/gpu_check.sh          # on the GPU; the table goes to stdout and to $OUT/gpu_check.md if $OUT is set
#   scripts/gpu_check.sh --cpu    # smoke test of the same steps on the CPU at a tiny size (no compile)
# It reports training images/s for float32 and bf16 autocast, stored and reversible, eager and
# compiled (torch.compile of the loss, as compile=true does), with peak GPU memory; the bpd of bf16
# against float32 after the same 50 steps from the same seed; train.py under DDP with NCCL on one
# device for a few steps; sampling images/s. No network is needed: the data is generated here
# (smooth random images, so that 50 steps learn something), also written as a PNG folder for train.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
BUDGET_S=285   # what the whole check may take; the compiled runs get what is left

if [[ "${1:-}" == "--cpu" ]]; then
  DEVICE=cpu; MODEL=(--model small --arch hidden=16 num_res_blocks=1 "couplings=[2,1]"); BATCH=4; STEPS=2; BPD_STEPS=2
  TRAIN_ARGS=(trainer=ddp_cpu trainer.devices=1 model=small model.hidden=16 model.num_res_blocks=1
              "model.couplings=[2,1]")
  COMPILE=()   # compiling on the CPU takes minutes: the smoke test skips it
else
  DEVICE=cuda; MODEL=(--model paper); BATCH=64; STEPS=5; BPD_STEPS=50
  TRAIN_ARGS=(trainer=ddp trainer.devices=1 model=paper)
  COMPILE=("bf16 stored" "fp32 stored" "bf16 reversible" "fp32 reversible")
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
table="$work/gpu_check.md"
common=(--device "$DEVICE" "${MODEL[@]}" --batch "$BATCH" --steps "$STEPS" --images "$work/images")

# One Python block for every measurement, its phase chosen by the first argument; a file, so that
# timeout can run it.
cat >"$work/measure.py" <<'PY'
import argparse, statistics, sys, time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

sys.path.insert(0, "scripts")
from bench import architecture, train_step  # the benchmark's step: forward, backward, clipping, AdamW

from rgflow_vision import RGFlowModel
from rgflow_vision.hardware import cpu_info, describe_cpu

p = argparse.ArgumentParser()
p.add_argument("phase", choices=["data", "header", "eager", "bpd", "sample", "compiled"])
p.add_argument("--device"); p.add_argument("--model"); p.add_argument("--arch", nargs="*", default=[])
p.add_argument("--batch", type=int); p.add_argument("--steps", type=int); p.add_argument("--images", type=Path)
p.add_argument("--precision", default="fp32"); p.add_argument("--mode", default="stored")
a = p.parse_args()
device = torch.device(a.device)


def images(n, seed):
    """Smooth random 32x32 RGB images (upsampled 4x4 noise plus a little grain), as uint8."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g) * 255
    x = torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False)
    return (x + 8 * torch.randn(x.shape, generator=g)).clamp(0, 255).round().to(torch.uint8)


def build(mode, seed=0):
    torch.manual_seed(seed)
    arch = architecture(a.model, mode)
    arch.update(OmegaConf.to_container(OmegaConf.from_dotlist(a.arch)))
    return RGFlowModel.build(3, 32, **arch).to(device).train()


def train(model, bf16, steps, loss_fn=None):
    """Step times of ``steps`` steps on the fixed generated batches, from a fresh fused AdamW."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    data = images(a.batch * 4, seed=1).long().to(device)
    return [train_step(model, opt, data[(i % 4) * a.batch:(i % 4 + 1) * a.batch], bf16, loss_fn)
            for i in range(steps)]


def row(*cells):
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


def throughput(precision, mode, compiled=False):
    """A table row: images/s of the median timed step after a warm-up (which compiles, if compiled)."""
    if device.type == "cuda":
        torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    model = build(mode)
    loss_fn = torch.compile(model.bpd) if compiled else None  # what compile=true does in training
    times = train(model, precision == "bf16", a.steps + 1, loss_fn)
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f}" if device.type == "cuda" else "(CPU)"
    name = f"train {precision} {mode}" + (" compiled" if compiled else "")
    row(name, f"{a.batch / statistics.median(times[1:]):.1f}", peak, f"first step {times[0]:.1f} s")


if a.phase == "data":  # a PNG folder for train.py's dataset=folder
    a.images.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images(512, seed=2).permute(0, 2, 3, 1).numpy()):
        Image.fromarray(np.ascontiguousarray(img)).save(a.images / f"{i:04d}.png")
elif a.phase == "header":
    name = torch.cuda.get_device_name() if device.type == "cuda" else describe_cpu(cpu_info())
    print(f"# GPU check: {name}, torch {torch.__version__}, model {a.model} "
          f"({sum(p.numel() for p in build('stored').parameters()):,} parameters), 32x32x3, batch {a.batch}\n")
    row("measurement", "images/s", "peak GiB", "notes"); row("---", "---", "---", "---")
elif a.phase == "eager":
    for precision in ("fp32", "bf16"):
        for mode in ("stored", "reversible"):
            throughput(precision, mode)
elif a.phase == "compiled":
    throughput(a.precision, a.mode, compiled=True)
elif a.phase == "bpd":  # the same seed, the same batches, the same number of steps; one fixed evaluation
    x = images(a.batch, seed=3).long().to(device)
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(4)).to(device)
    bpd = {}
    for name in ("fp32", "bf16"):
        model = build("stored")
        train(model, name == "bf16", a.steps)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=name == "bf16"):
            bpd[name] = model.eval().bpd(x, noise).mean().item()
    row(f"bpd after {a.steps} steps", "", "", f"fp32 {bpd['fp32']:.4f}, bf16 {bpd['bf16']:.4f}, "
        f"bf16 - fp32 {bpd['bf16'] - bpd['fp32']:+.4f}")
elif a.phase == "sample":
    model = build("stored").eval()
    for name in ("fp32", "bf16"):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=name == "bf16"):
            model.sample(8)  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = model.sample(a.batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
        ok = bool(((out >= 0) & (out <= 255)).all())
        row(f"sample {name}", f"{a.batch / (time.perf_counter() - start):.1f}", "", f"{a.batch} images, in range: {ok}")
PY
measure() { "$PY" "$work/measure.py" "$@"; }

# A measurement phase that fails or runs out of time is a row saying so; the rest still runs.
step() {
  local name=$1 limit=$2; shift 2
  if ! timeout "$limit" "$PY" "$work/measure.py" "$@" >>"$table" 2>"$work/last.err"; then
    echo "| $name | | | failed or over $limit s: $(tail -n 1 "$work/last.err" | cut -c1-200) |" >>"$table"
  fi
}

measure data "${common[@]}"
measure header "${common[@]}" >"$table"
step "train, eager" 75 eager "${common[@]}"
step "bpd, bf16 vs fp32" 75 bpd "${common[@]}" --steps "$BPD_STEPS"  # the later --steps wins
step "sampling" 30 sample "${common[@]}"

start=$SECONDS
label="train.py ${TRAIN_ARGS[*]:0:2}, 5 steps"
if timeout 90 "$PY" train.py "${TRAIN_ARGS[@]}" dataset=folder dataset.path="$work/images" dataset.batch_size=16 \
    dataset.num_workers=2 trainer.max_epochs=1 trainer.limit_train_batches=5 trainer.limit_val_batches=1 \
    trainer.limit_test_batches=1 trainer.enable_progress_bar=false "~callbacks.hierarchy" callbacks.sample_grid.n=4 \
    paths.output_dir="$work/train" >"$work/train.log" 2>&1; then
  echo "| $label | | | ok in $((SECONDS - start)) s, $(grep -m1 'test bpd' "$work/train.log") |" >>"$table"
else
  echo "| $label | | | failed: $(grep -v '^\s*$' "$work/train.log" | tail -n 1 | cut -c1-200) |" >>"$table"
fi

for config in "${COMPILE[@]}"; do
  left=$((BUDGET_S - SECONDS))
  if ((left < 20)); then
    echo "| train ${config} compiled | | | skipped: the ${BUDGET_S} s budget is spent |" >>"$table"
    continue
  fi
  read -r precision mode <<<"$config"
  step "train $config compiled" "$left" compiled "${common[@]}" --precision "$precision" --mode "$mode"
done

echo "" >>"$table"
echo "Total $SECONDS s. Images/s: the median of $STEPS timed steps after one warm-up step (forward, backward," \
     "clipping, fused AdamW); the first step of a compiled run includes compiling." >>"$table"
cat "$table"
if [[ -n "${OUT:-}" ]]; then
  cp "$table" "$OUT/gpu_check.md"
fi
