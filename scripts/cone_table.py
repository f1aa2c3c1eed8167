#!/usr/bin/env python
"""Markdown table: latents in the causal cone of a local corruption against the image size.

    python scripts/cone_table.py                       # 4x4 corruption at the centre, C = 3
    python scripts/cone_table.py --corruption 8 --channels 1 --sizes 16 32 64 128 256

A ``k x k`` block of corrupted pixels at the image centre reaches only the latents in its
(encode-direction) causal cone: the latents whose decode Jacobian touches the block. Doubling
``L`` adds one level and a bounded number of latents, so the count grows like ``log N`` while
``N = L^2`` quadruples. Pure geometry (``causal_cone``), exact counts.
"""

from __future__ import annotations

import argparse
import math

import torch

from rgflow_vision.flows import causal_cone, level_map


def cone_counts(size: int, corruption: int, block_size: int) -> tuple[int, list[int]]:
    """Sites in the cone of the centred ``corruption x corruption`` block, and their count per level."""
    mask = torch.zeros(size, size, dtype=torch.bool)
    lo = size // 2 - corruption // 2
    mask[lo : lo + corruption, lo : lo + corruption] = True
    cone = causal_cone(mask, block_size, direction="encode")
    levels = level_map(size, block_size)
    return int(cone.sum()), [int((cone & (levels == h)).sum()) for h in range(int(levels.max()) + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--corruption", type=int, default=4, help="side k of the k x k corrupted block")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--block-size", type=int, default=4)
    args = parser.parse_args()
    c = args.channels
    print(f"Causal cone of a {args.corruption}x{args.corruption} corruption at the centre, C = {c}\n")
    columns = ["L", "N = L^2", "log2 N", "cone sites", f"cone latents (x{c})", f"all latents (N x{c})", "fraction"]
    print("| " + " | ".join(columns) + " | sites per level |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for size in args.sizes:
        sites, per_level = cone_counts(size, args.corruption, args.block_size)
        n = size * size
        print(
            f"| {size} | {n} | {math.log2(n):.0f} | {sites} | {sites * c} | {n * c} | {sites / n:.4f} "
            f"| {', '.join(map(str, per_level))} |"
        )


if __name__ == "__main__":
    main()
