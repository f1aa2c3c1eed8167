#!/usr/bin/env python
"""Markdown table: latents in the causal cone of a local corruption against the image size.

    python scripts/cone_table.py                       # 4x4 corruption at the centre, C = 3
    python scripts/cone_table.py --corruption 8 --channels 1 --sizes 16 32 64 128 256
    python scripts/cone_table.py --time 20             # and restoration time: cone against all latents

A ``k x k`` block of corrupted pixels at the image centre reaches only the latents in its
(encode-direction) causal cone: the latents whose decode Jacobian touches the block. Doubling
``L`` adds one level and a bounded number of latents, so the count grows like ``log N`` while
``N = L^2`` quadruples. Pure geometry (``causal_cone``), exact counts.

``--time STEPS`` also restores one image per size with a random-weight flow of the small
configuration (the time does not depend on the weights): seconds per Adam step through the cone
(the networks run only on the blocks the corruption reaches) and through all latents, one thread.
"""

from __future__ import annotations

import argparse
import math

import torch

from rgflow_vision import RGFlowModel
from rgflow_vision.analysis import ConeEncoder, inpaint
from rgflow_vision.flows import causal_cone, level_map


def centred_box(size: int, corruption: int) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    lo = size // 2 - corruption // 2
    mask[lo : lo + corruption, lo : lo + corruption] = True
    return mask


def cone_counts(size: int, corruption: int, block_size: int) -> tuple[int, list[int]]:
    """Sites in the cone of the centred ``corruption x corruption`` block, and their count per level."""
    cone = causal_cone(centred_box(size, corruption), block_size, direction="encode")
    levels = level_map(size, block_size)
    return int(cone.sum()), [int((cone & (levels == h)).sum()) for h in range(int(levels.max()) + 1)]


def restoration_seconds(size: int, corruption: int, channels: int, steps: int) -> tuple[float, float, int, int]:
    """Seconds per step through the cone and through all latents; blocks the networks see per pass."""
    torch.manual_seed(0)
    model = RGFlowModel.build(channels, size, hidden=128, num_res_blocks=2, couplings=[4, 3, 2])
    x = torch.randint(0, 256, (1, channels, size, size))
    mask = centred_box(size, corruption)
    inpaint(model, x, mask, steps=1)  # warm-up: first-call allocations are not the method's cost
    cone, full = (inpaint(model, x, mask, cone=c, steps=steps).seconds / steps for c in (True, False))
    blocks = ConeEncoder(model.flow, x.float(), mask[None]).blocks
    all_blocks = sum(2 * (size >> h) ** 2 // model.flow.block_size**2 for h in range(model.flow.num_levels))
    return cone, full, blocks, all_blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--corruption", type=int, default=4, help="side k of the k x k corrupted block")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--block-size", type=int, default=4)
    parser.add_argument("--time", type=int, default=0, metavar="STEPS", help="also time STEPS restoration steps")
    args = parser.parse_args()
    c = args.channels
    torch.set_num_threads(1)
    print(f"Causal cone of a {args.corruption}x{args.corruption} corruption at the centre, C = {c}\n")
    columns = ["L", "N = L^2", "log2 N", "cone sites", f"cone latents (x{c})", f"all latents (N x{c})", "fraction"]
    if args.time:
        columns += ["blocks (cone / all)", "s/step cone", "s/step all"]
    print("| " + " | ".join(columns) + " | sites per level |")
    print("|" + "---:|" * len(columns) + "---|")
    for size in args.sizes:
        sites, per_level = cone_counts(size, args.corruption, args.block_size)
        n = size * size
        timing = ""
        if args.time:
            cone, full, blocks, all_blocks = restoration_seconds(size, args.corruption, c, args.time)
            timing = f" {blocks} / {all_blocks} | {cone:.4f} | {full:.4f} |"
        print(
            f"| {size} | {n} | {math.log2(n):.0f} | {sites} | {sites * c} | {n * c} | {sites / n:.4f} |{timing}"
            f" {', '.join(map(str, per_level))} |"
        )


if __name__ == "__main__":
    main()
