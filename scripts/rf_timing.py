#!/usr/bin/env python
"""Time receptive_fields() in both modes on the small configuration (defaults), as the README reports.

    OMP_NUM_THREADS=1 python scripts/rf_timing.py [--size 32]
"""

from __future__ import annotations

import argparse
import time

import torch

from rgflow_vision import RGFlow
from rgflow_vision.analysis import receptive_fields
from rgflow_vision.priors import build_prior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=32)
    size = parser.parse_args().size
    for mode in ("forward", "reverse"):
        torch.manual_seed(0)
        start = time.perf_counter()
        receptive_fields(RGFlow(3, size), build_prior("laplace", 3, size), mode=mode)
        print(f"L={size} {mode}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
