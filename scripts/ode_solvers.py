#!/usr/bin/env python
"""Choose the neural-ODE block's scheme and steps by measurement: accuracy, exactness and speed.

    OMP_NUM_THREADS=1 python scripts/ode_solvers.py            # the MLP velocity's schemes (below)
    OMP_NUM_THREADS=1 python scripts/ode_solvers.py adjoint    # feature velocity: backprop against adjoint

``adjoint``: one reverse-KL training step of the shipped feature-velocity lattice flow
(conf/model/ode_lattice.yaml, free field L = 8, batch 256, training steps) with the gradient by
backpropagation through the RK4 solver, and by a hand-written adjoint (the continuous adjoint
``da/dt = -a dv/dx - g d(div v)/dx`` integrated backwards with the same fixed-step RK4, memory
independent of the steps); seconds per step and the adjoint gradient's relative error.

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

import sys
from pathlib import Path

from omegaconf import OmegaConf

from rgflow_vision.flows import RGFlow
from rgflow_vision.flows.features import FeatureODEBlock
from rgflow_vision.flows.ode import SCHEMES, ODEBlock
from rgflow_vision.lattice import build_action, reverse_kl
from rgflow_vision.model import sample_and_log_prob
from rgflow_vision.priors import GaussianPrior

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


class Adjoint(torch.autograd.Function):
    """A :class:`FeatureODEBlock` call whose backward integrates the adjoint system instead of
    backpropagating through the stored solver: forward keeps only its output."""

    @staticmethod
    def forward(ctx, x, block, inverse, *params):
        with torch.no_grad():
            y, logdet = FeatureODEBlock.forward(block, x, inverse)
        ctx.block, ctx.inverse = block, inverse
        ctx.save_for_backward(y)
        return y, logdet

    @staticmethod
    def backward(ctx, grad_y, grad_logdet):
        block, (y,) = ctx.block, ctx.saved_tensors
        params = [block.velocity.weight, block.velocity.omega]
        steps = block.steps
        h = (1.0 if ctx.inverse else -1.0) / steps  # backwards in the direction of the call
        t = 0.0 if ctx.inverse else 1.0
        with torch.enable_grad():
            ops = block.velocity.operators(y.dtype)
            leaves = [o.detach().requires_grad_() for o in ops]

            def rhs(state, time):  # (x, a, grads of the operators and omega): the augmented adjoint system
                x = state[0].detach().requires_grad_()
                v, div = block.velocity(x, time, leaves)
                grads = torch.autograd.grad((v * state[1]).sum() + (div * grad_logdet).sum(),
                                            [x, *leaves, block.velocity.omega], allow_unused=True)
                return [v.detach(), *[-g if g is not None else torch.zeros_like(p)
                                      for g, p in zip(grads, [x, *leaves, block.velocity.omega])]]

            state = [y.detach(), grad_y, *[torch.zeros_like(p) for p in [*leaves, block.velocity.omega]]]
            for i in range(steps):
                k1 = rhs(state, t)
                k2 = rhs([s + (h / 2) * k for s, k in zip(state, k1)], t + h / 2)
                k3 = rhs([s + (h / 2) * k for s, k in zip(state, k2)], t + h / 2)
                k4 = rhs([s + h * k for s, k in zip(state, k3)], t + h)
                state = [s + (h / 6) * (a + 2 * b + 2 * c + d) for s, a, b, c, d in zip(state, k1, k2, k3, k4)]
                t += h
            # state[2:] hold G(t) = int_t^t1 (a dv/dtheta + g d(div)/dtheta) ds: at t0, dL/dtheta.
            grad_ops, grad_omega = state[2:-1], state[-1]
            grad_weight, via_ops = torch.autograd.grad(ops, params, grad_ops, allow_unused=True)
            grad_omega = grad_omega if via_ops is None else grad_omega + via_ops  # omega enters the Lipschitz cap
        return (state[1], None, None, grad_weight, grad_omega)


def adjoint() -> None:
    arch = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[1] / "conf" / "model" / "ode_lattice.yaml"))
    action, prior = build_action("free_complex", t=1.0, mu=4.5), GaussianPrior(2, 8)
    torch.manual_seed(0)
    flow = RGFlow(2, 8, **arch)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.02 * torch.randn_like(p))

    def gradient(use_adjoint: bool):
        original = FeatureODEBlock.__call__
        if use_adjoint:
            FeatureODEBlock.__call__ = lambda self, x, inverse=False: Adjoint.apply(
                x, self, inverse, self.velocity.weight, self.velocity.omega)
        try:
            torch.manual_seed(1)
            flow.zero_grad()
            start = time.perf_counter()
            x, log_q, _ = sample_and_log_prob(flow, prior, 256)
            reverse_kl(log_q, action(x)).backward()
            seconds = time.perf_counter() - start
        finally:
            FeatureODEBlock.__call__ = original
        return torch.cat([p.grad.flatten() for p in flow.parameters()]), seconds

    for _ in range(2):  # the second round is timed warm
        backprop, t_backprop = gradient(False)
        adj, t_adjoint = gradient(True)
    error = ((adj - backprop).norm() / backprop.norm()).item()
    print(f"training step (free field L=8, batch 256, {arch['steps']} RK4 steps): backprop {t_backprop:.3f} s, "
          f"adjoint {t_adjoint:.3f} s ({t_adjoint / t_backprop:.2f}x); adjoint gradient relative error {error:.1e}")


if __name__ == "__main__":
    adjoint() if sys.argv[1:] == ["adjoint"] else main()
