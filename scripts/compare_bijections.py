#!/usr/bin/env python
"""The block bijections against each other at equal wall clock: RealNVP (affine, spline), the neural-ODE
block in RGFlow, and the neural ODE as one global layer.

    OMP_NUM_THREADS=1 python scripts/compare_bijections.py free 8 rnvp --minutes 10
    OMP_NUM_THREADS=1 python scripts/compare_bijections.py kappa 8 ode --minutes 10
    OMP_NUM_THREADS=1 python scripts/compare_bijections.py real 32 global --minutes 10 --set steps=[8]
    OMP_NUM_THREADS=1 python scripts/compare_bijections.py digits 16 ode --minutes 4

Targets (the shipped experiments' actions and priors):
  ``free``   the free complex field, t = 1, mu = 4.5, Gaussian prior (experiment=lattice_free);
  ``kappa``  complex phi^4, kappa = 0.2, lam = 1.145, on-site prior (experiment=lattice_phi4_massive);
  ``real``   real phi^4, m^2 = -4, lam = 4.572 (arXiv 2207.00283's point), on-site prior;
  ``digits`` the bundled 16x16 digits, batch 64, test bits/dim (images: L must be 16).
Variants, each the shipped model config (conf/model) with ``--set`` overrides: ``rnvp`` (lattice.yaml,
affine), ``spline`` (lattice.yaml, transform=spline), ``ode`` (ode_lattice.yaml: the feature-velocity ODE
in every block), ``global`` (ode_global.yaml: one level of two full-lattice ODE layers), ``ode-mlp`` (the
earlier MLP velocity, exact log-det). The ODE variants use symmetry o2 (complex) or z2 (real).
Training: reverse KL on 256 fresh draws per step (lattice) with AdamW, the experiment's learning rate
following a cosine over the wall-clock budget (a slower model gets the same schedule in fewer steps),
gradient clipping at 10, one thread, seed 0. Reported: ESS/N and ln Z from 8192 draws in float64 in eval
mode (the ODE at its eval_steps; exact ln Z for the free field), ESS/N of 2048 draws at the training
steps, steps, seconds per step, parameters. One JSON line is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from rgflow_vision import RGFlowModel
from rgflow_vision.data import DigitsDataModule
from rgflow_vision.flows import RGFlow
from rgflow_vision.lattice import build_action, ess, log_weights, log_z, reverse_kl
from rgflow_vision.lattice.onsite import OnsitePrior
from rgflow_vision.model import sample_and_log_prob
from rgflow_vision.priors import GaussianPrior

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
TARGETS = {  # action, prior, learning rate (the experiments' own)
    "free": (dict(name="free_complex", t=1.0, mu=4.5), "gaussian", 5e-3),
    "kappa": (dict(name="complex_phi4", kappa=0.2, lam=1.145), "onsite", 3e-3),
    "real": (dict(name="real_phi4", m2=-4.0, lam=4.572), "onsite", 3e-3),
}
VARIANTS = {"rnvp": ("lattice", {}), "spline": ("lattice", {"transform": "spline"}),
            "ode": ("ode_lattice", {}), "global": ("ode_global", {}),
            "ode-mlp": ("ode_lattice", {"velocity": "mlp", "hidden": 32, "steps": [2], "explicit": "decode"})}


def architecture(variant: str, channels: int, overrides: list[str]) -> dict:
    name, changes = VARIANTS[variant]
    arch = OmegaConf.to_container(OmegaConf.merge(OmegaConf.load(CONF / f"{name}.yaml"), changes,
                                                  OmegaConf.from_dotlist(overrides)))
    if arch.pop("flow", "rgflow") != "rgflow":
        raise SystemExit(f"{name}.yaml names a flow other than RGFlow")
    if arch.get("bijection") == "ode" and arch.get("symmetry") and "symmetry=" not in " ".join(overrides):
        arch["symmetry"] = "o2" if channels == 2 else "z2"
    return arch


def cosine_lr(opt, base_lr: float, fraction: float) -> None:
    for group in opt.param_groups:
        group["lr"] = base_lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0))))


def train(params, loss_fn, seconds: float, base_lr: float) -> tuple[int, float]:
    opt = torch.optim.AdamW(params, lr=base_lr)
    start, steps = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - start) < seconds:
        cosine_lr(opt, base_lr, elapsed / seconds)
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        steps += 1
    return steps, time.perf_counter() - start


def lattice(target: str, size: int, arch: dict, seconds: float, save: str | None = None) -> dict:
    spec, prior_name, lr = TARGETS[target]
    action = build_action(**spec)
    flow = RGFlow(action.channels, size, **arch)
    prior = OnsitePrior(action, size) if prior_name == "onsite" else GaussianPrior(action.channels, size)

    def loss():
        x, log_q, _ = sample_and_log_prob(flow, prior, 256)
        return reverse_kl(log_q, action(x))

    steps, elapsed = train(list(flow.parameters()), loss, seconds, lr)
    if save:
        torch.save({"arch": arch, "target": target, "size": size, "flow": flow.state_dict()}, save)

    def weights(n: int = 8192) -> torch.Tensor:
        torch.manual_seed(1)
        with torch.no_grad():
            return torch.cat([log_weights(log_q, action(x))
                              for x, log_q, _ in (sample_and_log_prob(flow, prior, 1024, dtype=torch.float64)
                                                  for _ in range(n // 1024))])

    # The ODE trains at `steps` and samples at `eval_steps` (eval mode): the same field, finer. A gap
    # between the two ESS would show that training exploited the solver's error.
    ess_train_mode = ess(weights(2048))
    flow.eval()
    log_w = weights()
    estimate = log_z(log_w)
    exact = action.log_z(size) if spec["name"] == "free_complex" else None
    return {"steps": steps, "s_per_step": elapsed / max(steps, 1), "params": sum(p.numel() for p in flow.parameters()),
            "ess": ess(log_w), "ess_at_training_steps": ess_train_mode, "log_z": estimate.estimate,
            "log_z_error": estimate.error, "log_z_bound": estimate.bound, "log_z_exact": exact}


def digits(size: int, arch: dict, seconds: float) -> dict:
    data = DigitsDataModule(image_size=size, batch_size=64, seed=0)
    data.setup("fit")
    data.setup("test")
    model = RGFlowModel.build(1, size, **arch)
    batches = iter(())

    def loss():
        nonlocal batches
        batch = next(batches, None)
        if batch is None:
            batches = iter(data.train_dataloader())
            batch = next(batches)
        return model.bpd(batch).mean()

    steps, elapsed = train(list(model.parameters()), loss, seconds, 1e-3)
    total, count = 0.0, 0
    noise = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for batch in data.test_dataloader():
            total += model.bpd(batch, torch.rand(batch.shape, generator=noise)).sum().item()
            count += len(batch)
    return {"steps": steps, "s_per_step": elapsed / max(steps, 1), "params": sum(p.numel() for p in model.parameters()),
            "test_bpd": total / count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=[*TARGETS, "digits"])
    parser.add_argument("size", type=int)
    parser.add_argument("variant", choices=sorted(VARIANTS))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="model keys over the yaml's")
    parser.add_argument("--save", help="write the trained flow's state_dict here")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    channels = 1 if args.target in ("real", "digits") else 2
    arch = architecture(args.variant, channels, args.set)
    if args.target == "digits":
        result = digits(args.size, {**arch, "symmetry": None} if arch["bijection"] == "ode" else arch, args.minutes * 60)
    else:
        result = lattice(args.target, args.size, arch, args.minutes * 60, args.save)
    print(json.dumps({"target": args.target, "size": args.size, "variant": args.variant, "minutes": args.minutes,
                      "set": args.set, **result}))


if __name__ == "__main__":
    main()
