"""What the benchmarks report about the machine they measured on."""

from __future__ import annotations

from pathlib import Path

import torch

# The /proc/cpuinfo flags of CPU bf16 matrix units: without them a bf16 matmul is emulated and far
# slower than float32 (README, "Speed and memory").
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The CPU's model name, which bf16 matrix flags it has, and torch's thread count."""
    model, flags = "unknown", set()
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:  # not Linux: report what torch knows
        pass
    return {"cpu": model, **{flag: flag in flags for flag in BF16_FLAGS}, "torch_threads": torch.get_num_threads()}


def describe_cpu(info: dict) -> str:
    """``info`` of :func:`cpu_info` as one phrase for a report's header."""
    units = [flag for flag in BF16_FLAGS if info[flag]]
    bf16 = f"bf16 matrix units ({', '.join(units)})" if units else "no bf16 matrix units (no avx512_bf16/amx_bf16)"
    return f"{info['cpu']}, {bf16}, {info['torch_threads']} torch threads"
