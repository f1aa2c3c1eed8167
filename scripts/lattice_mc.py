"""Long checkerboard Metropolis for a reference chi: python scripts/lattice_mc.py kappa=0.6 lam=1.145 size=8

Runs `runs` independent sets of `chains` chains (`therm` sweeps to thermalise, then `sweeps` measured
sweeps), and prints chi = <|M|^2>/V and <phi^2> per run (error: spread of the chain means), the combined value
(error scaled by sqrt(chi^2/dof) of the runs when above 1) and tau_int(|M|^2) in sweeps. One thread.
A progress bar on stderr counts the sweeps of all runs (progress=0, or TQDM_DISABLE=1: none).
"""

from __future__ import annotations

import math
import sys
import time

import torch

from rgflow_vision.lattice import ComplexPhi4, chain_mean, integrated_autocorrelation_time, metropolis
from rgflow_vision.progress import progress, write

SEGMENT = 100  # sweeps per call of metropolis, so that the bar moves


def segmented_metropolis(action, opts: dict, observables: dict, generator: torch.Generator, bar):
    """``metropolis`` with ``therm`` tuning sweeps then ``sweeps`` measured ones, run ``SEGMENT`` sweeps at a
    time: each call continues the last one's state, step size and random stream, so the chain is the
    one a single call would run. ``(records per observable, acceptance of the measured sweeps)``."""
    state, step, done = None, 1.0, 0
    while done < opts["therm"]:  # thermalise, tuning the step size
        k = min(SEGMENT, opts["therm"] - done)
        run = metropolis(action, opts["chains"], opts["size"], 0, n_therm=k, step_size=step, x0=state,
                         observables=observables, generator=generator)
        state, step, done = run.state, run.step_size, done + k
        bar.update(k)
    records, accepted, done = {name: [] for name in observables}, 0.0, 0
    while done < opts["sweeps"]:  # measure, the step size frozen
        k = min(SEGMENT, opts["sweeps"] - done)
        run = metropolis(action, opts["chains"], opts["size"], k, n_therm=0, step_size=step, tune=False, x0=state,
                         observables=observables, generator=generator)
        for name in observables:
            records[name].append(run.observables[name])
        state, accepted, done = run.state, accepted + run.acceptance * k, done + k
        bar.update(k)
    return {name: torch.cat(parts) for name, parts in records.items()}, accepted / max(opts["sweeps"], 1)


def main(argv: list[str]) -> None:
    opts = {"kappa": 0.6, "lam": 1.145, "size": 8, "chains": 1024, "therm": 2000, "sweeps": 4000, "runs": 3,
            "seed": 0, "progress": 1}
    for arg in argv:
        key, value = arg.split("=", 1)
        opts[key] = type(opts[key])(value)
    torch.set_num_threads(1)
    action = ComplexPhi4.from_kappa(opts["kappa"], opts["lam"])
    observables = {"chi": lambda x: (x.sum(dim=(-2, -1)) ** 2).sum(1) / x[0, 0].numel(),
                   "phi2": lambda x: (x * x).sum(1).mean(dim=(-2, -1))}
    values, errors, taus = [], [], []
    start = time.perf_counter()
    bar = progress(desc="Metropolis", total=opts["runs"] * (opts["therm"] + opts["sweeps"]), unit="sweep",
                   enabled=bool(opts["progress"]))
    for run in range(opts["runs"]):
        records, acceptance = segmented_metropolis(action, opts, observables,
                                                   torch.Generator().manual_seed(opts["seed"] + run), bar)
        chi, chi_err = chain_mean(records["chi"])
        phi2, phi2_err = chain_mean(records["phi2"])
        tau = integrated_autocorrelation_time(records["chi"])
        values.append(chi.item())
        errors.append(chi_err.item())
        taus.append(tau)
        write(f"run {run}: chi = {chi:.4f} +- {chi_err:.4f}, <phi^2> = {phi2:.5f} +- {phi2_err:.5f}, "
              f"tau_int(|M|^2) = {tau.tau / 2:.1f} +- {tau.error / 2:.1f} sweeps (window {tau.window}), "
              f"acceptance {acceptance:.3f}, {time.perf_counter() - start:.0f} s")
    bar.close()
    w = [1 / e**2 for e in errors]
    mean = sum(wi * v for wi, v in zip(w, values)) / sum(w)
    error = 1 / math.sqrt(sum(w))
    chi2 = sum(wi * (v - mean) ** 2 for wi, v in zip(w, values)) / max(len(values) - 1, 1)
    error *= math.sqrt(max(chi2, 1.0))
    print(f"{action.name}, L = {opts['size']}: chi = {mean:.4f} +- {error:.4f} "
          f"({opts['runs']} runs x {opts['chains']} chains x {opts['sweeps']} sweeps, chi2/dof {chi2:.2f}), "
          f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
