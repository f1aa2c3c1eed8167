"""Where a hierarchical flow loses KL on the free field (t = 1, mu = 4.5), one thread:

    python scripts/lattice_floor.py size=8 block_size=4 depth=1 steps=3000     # exact Gaussian floor of a structure
    python scripts/lattice_floor.py ckpt=path/to/last.ckpt n=20000             # per-level split of a trained flow

The floor is the best exact KL of the RGFlow structure with general linear block maps; the split is the Gaussian
part of KL(f#p || N(0,1)) of exact samples encoded by the trained flow (rgflow_vision.lattice.diagnostics).
"""

from __future__ import annotations

import sys
import time

import torch

from rgflow_vision.lattice import FreeComplexField, LatticeFlowModule
from rgflow_vision.lattice.diagnostics import gaussian_floor, latent_kl_by_level
from rgflow_vision.training.checkpoint import load_module


def main(argv: list[str]) -> None:
    opts = {"size": 8, "block_size": 4, "depth": 1, "steps": 3000, "lr": 3e-3, "ckpt": "", "n": 20000}
    for arg in argv:
        key, value = arg.split("=", 1)
        opts[key] = type(opts[key])(value)
    torch.set_num_threads(1)
    start = time.perf_counter()
    if opts["ckpt"]:
        module, _ = load_module(opts["ckpt"], LatticeFlowModule)  # weights only, like the apps
        field = FreeComplexField(module.target.t, module.target.mu)
        x, _ = field.sample(opts["n"], module.size, torch.Generator().manual_seed(0))
        split = latent_kl_by_level(module.flow, x)
        print(f"{opts['ckpt']}: L = {module.size}, depth {module.flow.depth}, Gaussian KL(f#p || N(0,1)) = "
              f"{split.total:.4f}")
        for h in range(len(split.scale)):
            print(f"  level {h}: variance {split.scale[h]:.4f}, correlations within {split.within[h]:.4f}")
        print(f"  shared between levels {split.between:.4f}, mean {split.mean:.4f}")
    else:
        floor = gaussian_floor(FreeComplexField(1.0, 4.5), opts["size"], opts["block_size"], opts["depth"],
                               opts["steps"], opts["lr"])
        print(f"L = {opts['size']}, {opts['block_size']}x{opts['block_size']} blocks, depth {opts['depth']}: "
              f"best exact KL {floor.kl:.5f} after {opts['steps']} steps; last: {floor.history[-3:]}")
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
