"""Long checkerboard Metropolis for a reference chi: python scripts/lattice_mc.py kappa=0.6 lam=1.145 size=8

Runs `runs` independent sets of `chains` chains (`therm` sweeps to thermalise, then `sweeps` measured
sweeps), and prints chi = <|M|^2>/V, <phi^2> and <|M|>/V per run (error: spread of the chain means), the
combined values (error scaled by sqrt(chi^2/dof) of the runs when above 1), tau_int(|M|^2) in sweeps and the
thermalisation in units of it. One thread. A progress bar on stderr counts the sweeps of all runs
(progress=0, or TQDM_DISABLE=1: none).

out=<path>: also write the results as JSON, in the layout of the flow's ``lattice_report.json`` where they
overlap (``action``, ``size``, ``chi``/``chi_err``, ``phi2``/``phi2_err``, ``two_point``/``two_point_err``:
the axis ``G(r)``, ``r = 0 .. L/2``, of ``two_point_axis``), plus ``kappa``, ``lam``, the run settings,
``absm``/``absm_err`` (``<|M|>/V``), ``chi2_dof`` per observable, ``per_run`` (each run's values,
``tau_int`` of ``|M|^2`` in sweeps with its error and window, ``therm_over_tau``, acceptance) and ``seconds``.
scripts/lattice_figures.py draws from it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from rgflow_vision.lattice import ComplexPhi4, chain_mean, integrated_autocorrelation_time, metropolis, two_point_axis
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


def combine(values: list, errors: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse-variance mean of the runs' values (scalars or arrays, elementwise), its error scaled by
    ``sqrt(chi^2/dof)`` where that is above 1 (runs that disagree by more than their errors), and ``chi^2/dof``."""
    v, e = torch.tensor(values, dtype=torch.float64), torch.tensor(errors, dtype=torch.float64)
    w = 1 / e**2
    mean = (w * v).sum(0) / w.sum(0)
    chi2 = (w * (v - mean) ** 2).sum(0) / max(len(values) - 1, 1)
    return mean, w.sum(0).rsqrt() * chi2.clamp_min(1.0).sqrt(), chi2


def main(argv: list[str]) -> None:
    opts = {"kappa": 0.6, "lam": 1.145, "size": 8, "chains": 1024, "therm": 2000, "sweeps": 4000, "runs": 3,
            "seed": 0, "progress": 1, "out": ""}
    for arg in argv:
        key, value = arg.split("=", 1)
        opts[key] = type(opts[key])(value)
    torch.set_num_threads(1)
    action = ComplexPhi4.from_kappa(opts["kappa"], opts["lam"])
    half = opts["size"] // 2 + 1  # G(r) for r = 0 .. L/2, as the flow report gives it
    observables = {"chi": lambda x: (x.sum(dim=(-2, -1)) ** 2).sum(1) / x[0, 0].numel(),
                   "phi2": lambda x: (x * x).sum(1).mean(dim=(-2, -1)),
                   "absm": lambda x: x.sum(dim=(-2, -1)).norm(dim=1) / x[0, 0].numel(),
                   "G": lambda x: two_point_axis(x)[:, :half]}
    values, errors, taus = [], [], []
    measured = {name: ([], []) for name in ("phi2", "absm", "G")}  # per run: (values, errors)
    per_run = []
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
        for name in measured:
            mean, err = chain_mean(records[name])
            measured[name][0].append(mean.tolist())
            measured[name][1].append(err.tolist())
        tau_int = tau.tau / 2  # Wolff's, in sweeps
        per_run.append({"chi": [chi.item(), chi_err.item()], "phi2": [phi2.item(), phi2_err.item()],
                        "absm": [measured["absm"][0][-1], measured["absm"][1][-1]],
                        "tau_int": [tau_int, tau.error / 2], "window": tau.window,
                        "therm_over_tau": opts["therm"] / tau_int, "acceptance": acceptance})
        write(f"run {run}: chi = {chi:.4f} +- {chi_err:.4f}, <phi^2> = {phi2:.5f} +- {phi2_err:.5f}, "
              f"tau_int(|M|^2) = {tau.tau / 2:.1f} +- {tau.error / 2:.1f} sweeps (window {tau.window}), "
              f"acceptance {acceptance:.3f}, {time.perf_counter() - start:.0f} s")
        write(f"run {run}: <|M|>/V = {measured['absm'][0][-1]:.5f} +- {measured['absm'][1][-1]:.5f}, "
              f"thermalisation {opts['therm']} sweeps = {opts['therm'] / tau_int:.0f} tau_int(|M|^2)")
    bar.close()
    mean, error, chi2 = (t.item() for t in combine(values, errors))
    combined = {name: combine(*measured[name]) for name in measured}
    seconds = time.perf_counter() - start
    print(f"{action.name}, L = {opts['size']}: chi = {mean:.4f} +- {error:.4f} "
          f"({opts['runs']} runs x {opts['chains']} chains x {opts['sweeps']} sweeps, chi2/dof {chi2:.2f}), "
          f"{seconds:.0f} s")
    for name, label in (("phi2", "<phi^2>"), ("absm", "<|M|>/V")):
        v, e, c2 = combined[name]
        print(f"{action.name}, L = {opts['size']}: {label} = {v:.5f} +- {e:.5f} (chi2/dof {c2:.2f})")
    g, g_err, _ = combined["G"]
    print(f"{action.name}, L = {opts['size']}: G(r), r = 0 .. {half - 1}: "
          + ", ".join(f"{v:.5f} +- {e:.5f}" for v, e in zip(g.tolist(), g_err.tolist())))
    if opts["out"]:
        result = {"action": action.name, "kappa": opts["kappa"], "lam": opts["lam"], "size": opts["size"],
                  **{k: opts[k] for k in ("chains", "therm", "sweeps", "runs", "seed")},
                  "chi": mean, "chi_err": error, "chi2_dof": {"chi": chi2}}
        for name, key in (("phi2", "phi2"), ("absm", "absm"), ("G", "two_point")):
            v, e, c2 = combined[name]
            result[key], result[f"{key}_err"], result["chi2_dof"][key] = v.tolist(), e.tolist(), c2.tolist()
        result.update(per_run=per_run, seconds=seconds)
        path = Path(opts["out"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
