#!/usr/bin/env python
"""Choose the neural-ODE block's scheme by measurement: accuracy, exactness and speed.

    OMP_NUM_THREADS=1 python scripts/ode_solvers.py

For every scheme and step count, on an RGFlow(1, 16, bijection="ode") with the same random
velocity field (weights far from the identity, Lip(v) <= 1.2) (float64 for the accuracy columns, float32 for the times):
  ode error   max |encode(x) - encode_ref(x)|, the reference being RK4 with 64 steps: how far the
              discrete map is from the ODE's time-1 map (the scheme's truncation error);
  naive trip  max |decode(encode(x)) - x| when decode just runs the scheme backwards;
  exact trip  the same with the Newton-exact inverse that the block uses;
  slogdet     |logdet(encode) - slogdet(autograd Jacobian)| for one image;
  enc s/dec s one training step through encode (forward + backward, batch 64) / one decode with gradients.
"""

from __future__ import annotations

import time

import torch

from rgflow_vision.flows import RGFlow
from rgflow_vision.flows.ode import SCHEMES, ODEBlock

SIZE, BATCH = 16, 64
RUNS = [("euler", 8), ("midpoint", 4), ("rk4", 2), ("euler", 32), ("rk4", 4), ("rk4", 8)]
LIPSCHITZ = 1.2  # the same velocity field for every run; rate = 1.2 h stays below ln 2 from 2 steps on


def flow(scheme: str, steps: int, dtype=torch.float64) -> RGFlow:
    torch.manual_seed(0)
    f = RGFlow(1, SIZE, bijection="ode", hidden=32, mlp_depth=2, steps=steps, scheme=scheme).to(dtype)
    with torch.no_grad():
        for name, p in f.named_parameters():
            p.copy_(torch.randn_like(p) if name.endswith("out_scale") else p + 0.1 * torch.randn_like(p))
    for layer in [*f.disentanglers, *f.decimators]:
        layer.velocity.lipschitz = LIPSCHITZ
    return f


def naive_decode(f: RGFlow, z: torch.Tensor) -> torch.Tensor:
    """Decode by running each block's scheme backwards in time (no Newton correction)."""
    original = ODEBlock.invert_step
    ODEBlock.invert_step = lambda self, y, t, h: (lambda x, j: (x, torch.linalg.inv(j)))(*self.step(y, t + h, -h, True))
    try:
        return f.decode(z)[0]
    finally:
        ODEBlock.invert_step = original


def seconds(fn, repeat: int = 2) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    torch.manual_seed(1)
    x = torch.randn(4, 1, SIZE, SIZE, dtype=torch.float64)
    with torch.no_grad():
        reference = flow("rk4", 64).encode(x)[0]
    print(f"{'scheme':>8} {'steps':>5} {'v evals':>7} {'ode error':>10} {'naive trip':>11} {'exact trip':>11} "
          f"{'slogdet':>9} {'enc s':>7} {'dec s':>7}")
    for scheme, steps in RUNS:
        f = flow(scheme, steps)
        with torch.no_grad():
            z = f.encode(x)[0]
            ode_error = (z - reference).abs().max().item()
            naive = (naive_decode(f, z) - x).abs().max().item()
            exact = (f.decode(z)[0] - x).abs().max().item()
        one = x[:1]
        jac = torch.autograd.functional.jacobian(lambda v: f.encode(v.view_as(one))[0].flatten(), one.flatten())
        slogdet_gap = abs(torch.linalg.slogdet(jac)[1].item() - f.encode(one)[1].item())
        f32 = flow(scheme, steps, torch.float32)
        images = torch.randn(BATCH, 1, SIZE, SIZE)

        def train_step():
            z, logdet = f32.encode(images)
            (z.square().sum() - logdet.sum()).backward()

        def decode_step():
            out, logdet = f32.decode(images)
            (out.square().sum() - logdet.sum()).backward()

        evals = steps * len(SCHEMES[scheme][1])
        print(f"{scheme:>8} {steps:>5} {evals:>7} {ode_error:>10.2e} {naive:>11.2e} {exact:>11.2e} {slogdet_gap:>9.1e} "
              f"{seconds(train_step):>7.3f} {seconds(decode_step):>7.3f}", flush=True)


if __name__ == "__main__":
    main()
