"""What lattice.py reports for a trained lattice flow: observables with error bars next to the known
values (a table on stdout and ``lattice_report.json`` in the run folder), optionally the bulk view."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..errors import UserError
from ..progress import progress
from .bulk import BulkCorrelations, bulk_correlations, effective_action, hmc
from .estimators import (
    chain_mean,
    ess,
    independence_metropolis,
    integrated_autocorrelation_time,
    log_weights,
    log_z,
    reweight,
)
from .module import LatticeFlowModule
from .observables import magnetization, phi2, susceptibility, two_point_axis
from .reference import Reference, lookup


@dataclass
class Row:
    """One line of the table: a flow estimate ``(value, error)`` and the reference ``(value, error)`` if known."""

    name: str
    flow: tuple[float, float] | None
    reference: tuple[float, float] | None = None
    note: str = ""
    compare: bool = True  # False for a bound, which is expected to lie below its reference

    def pull(self) -> float | None:
        """``(flow - reference) / combined error``: how many sigma apart (``None`` when not comparable)."""
        if not self.compare or self.flow is None or self.reference is None:
            return None
        error = math.hypot(self.flow[1], self.reference[1])
        return (self.flow[0] - self.reference[0]) / error if error > 0 else None


@dataclass
class LatticeReport:
    """Everything the app prints, kept for tests and scripts."""

    action: str
    size: int
    n: int
    rows: list[Row]
    reference: Reference | None
    notes: list[str] = field(default_factory=list)
    levels: int = 0
    block_size: int = 0
    depth: int = 1

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)

    def summary(self) -> dict:
        """The report as plain numbers (what ``lattice_report.json`` holds); ``_err`` keys are one sigma."""

        def value(name: str) -> float:
            return self.row(name).flow[0]

        def error(name: str) -> float:
            return self.row(name).flow[1]

        ref = self.reference
        g = [r for r in self.rows if r.name.startswith("G(")]
        return {
            "action": self.action, "size": self.size, "levels": self.levels, "block_size": self.block_size,
            "depth": self.depth, "n": self.n,
            "ess": value("ESS / N"),
            "log_z": value("ln Z (estimate)"), "log_z_err": error("ln Z (estimate)"),
            "log_z_bound": value("ln Z (bound)"), "log_z_bound_err": error("ln Z (bound)"),
            "chi": value("chi (reweighted)"), "chi_err": error("chi (reweighted)"),
            "chi_imh": value("chi (IMH chain)"), "chi_imh_err": error("chi (IMH chain)"),
            "acceptance": value("IMH acceptance"), "tau_imh": value("tau |M|^2 (IMH)"),
            "phi2": value("<phi^2> (reweighted)"), "phi2_err": error("<phi^2> (reweighted)"),
            "absm": value("<|M|>/V (reweighted)"), "absm_err": error("<|M|>/V (reweighted)"),
            "two_point": [r.flow[0] for r in g], "two_point_err": [r.flow[1] for r in g],
            "reference": None if ref is None else {
                "source": ref.source, "exact": ref.exact, "log_z": ref.log_z, "chi": ref.chi, "phi2": ref.phi2,
                "two_point": ref.two_point, "notes": ref.notes,
            },
            "pulls": {r.name: r.pull() for r in self.rows if r.pull() is not None},
            "notes": self.notes,
        }

    def write_json(self, path: str | Path, **extra) -> Path:
        """:meth:`summary` (plus ``extra`` keys) as JSON; NaN becomes ``null``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_finite({**self.summary(), **extra}), indent=2) + "\n")
        return path


    def table(self) -> str:
        source = self.reference.source if self.reference else "none known"
        lines = [f"{self.action} on {self.size}x{self.size}, {self.n} flow samples; reference: {source}",
                 f"{'observable':<24}{'flow':>22}{'reference':>22}{'pull':>8}  note"]
        for r in self.rows:
            pull = r.pull()
            lines.append(f"{r.name:<24}{_fmt(r.flow):>22}{_fmt(r.reference):>22}"
                         f"{'' if pull is None else f'{pull:+.1f}':>8}  {r.note}".rstrip())
        lines += [f"note: {n}" for n in [*(self.reference.notes if self.reference else []), *self.notes]]
        return "\n".join(lines)


def _finite(obj):
    """NaN and infinities as ``None`` (JSON has neither), recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _fmt(value: tuple[float, float] | None) -> str:
    if value is None:
        return "-"
    v, e = value
    if not math.isfinite(v):
        return f"{v}"
    if e == 0:
        return f"{v:.6f} (exact)"
    if not math.isfinite(e):  # a number without an error bar
        return f"{v:.4f}"
    digits = max(0, min(6, 1 - math.floor(math.log10(e)))) if e > 0 and math.isfinite(e) else 4
    return f"{v:.{digits}f} +- {e:.{digits}f}"


def chain_estimate(series: torch.Tensor) -> tuple[tuple[float, float], float]:
    """Mean of a Markov-chain series with the error ``sqrt(tau var / N)``, and ``tau``."""
    tau = integrated_autocorrelation_time(series)
    error = math.sqrt(max(tau.tau, 1.0) * series.double().var().item() / series.numel())
    return (series.double().mean().item(), error), tau.tau


DRAW_CHUNK = 4096  # configurations decoded at once by the report


def lattice_report(module: LatticeFlowModule, n: int, seed: int = 0, show_progress: bool = False) -> LatticeReport:
    """Draw ``n`` configurations and estimate ln Z, ESS, chi, <phi^2> and G(r) (reweighted and by
    independence Metropolis), with the reference values of :func:`~rgflow_vision.lattice.reference.lookup`.
    ``show_progress``: a bar on stderr over the draws (one step per chunk), the IMH chain and the estimates."""
    if n < 2:
        raise UserError(f"n={n}: the estimates need at least 2 samples, e.g. n=16384")
    hp = module.hparams
    generator = torch.Generator(device=module.device).manual_seed(seed)
    chunks = [min(DRAW_CHUNK, n - start) for start in range(0, n, DRAW_CHUNK)]
    bar = progress(desc="lattice report: flow draws", total=len(chunks) + 2, unit="step", enabled=show_progress)
    parts = []
    with torch.no_grad():
        for size in chunks:  # one random stream, drawn in order: the configurations of draw(n, chunk=DRAW_CHUNK)
            parts.append(module.draw(size, generator)[:3])
            bar.update()
    x, log_q, action = (torch.cat(p) for p in zip(*parts))
    log_w = log_weights(log_q, action).cpu()
    x = x.double().cpu()
    params = {k: v for k, v in hp.action.items() if k != "name"}
    ref = lookup(hp.action["name"], params, module.size)

    lz = log_z(log_w)
    bar.set_description("lattice report: IMH chain")
    imh = independence_metropolis(log_w, torch.Generator().manual_seed(seed))
    bar.update()
    bar.set_description("lattice report: estimates")
    chi = susceptibility(x)
    chi_chain = chi[imh.indices]
    chi_imh, tau = chain_estimate(chi_chain)
    chi_rw = reweight(chi, log_w)
    phi2_rw = reweight(phi2(x), log_w)
    absm_rw = reweight(magnetization(x).norm(dim=1) / (module.size * module.size), log_w)  # the order parameter
    g_rw = reweight(two_point_axis(x)[:, : module.size // 2 + 1], log_w)

    ref_log_z = ref.log_z if ref else None
    rows = [
        Row("ln Z (bound)", (lz.bound, log_w.std().item() / math.sqrt(n)), ref_log_z, "E_q[log w] <= ln Z", False),
        Row("ln Z (estimate)", (lz.estimate, lz.error), ref_log_z, "ln mean w"),
        Row("ESS / N", (ess(log_w), math.nan)),
        Row("IMH acceptance", (imh.acceptance, math.nan)),
        Row("tau |M|^2 (IMH)", (tau, math.nan), None, "1 + 2 sum rho(t): variance factor, 1 for a perfect flow"),
        Row("chi (reweighted)", (chi_rw[0].item(), chi_rw[1].item()), ref.chi if ref else None),
        Row("chi (IMH chain)", chi_imh, ref.chi if ref else None),
        Row("<phi^2> (reweighted)", (phi2_rw[0].item(), phi2_rw[1].item()), ref.phi2 if ref else None),
        Row("<|M|>/V (reweighted)", (absm_rw[0].item(), absm_rw[1].item())),
    ]
    for r in range(module.size // 2 + 1):
        known = ref.two_point[r] if ref and ref.two_point and r < len(ref.two_point) else None
        rows.append(Row(f"G({r}) (reweighted)", (g_rw[0][r].item(), g_rw[1][r].item()), known))
    bar.update()
    bar.close()
    flow = module.flow
    return LatticeReport(action=module.target.name, size=module.size, n=n, rows=rows, reference=ref,
                         levels=flow.num_levels, block_size=flow.block_size, depth=getattr(flow, "depth", 1))


TUNE_TRAJECTORIES = 10  # per tuning round


def tune_step_size(potential, x: torch.Tensor, step_size: float, n_leapfrog: int, target: float,
                   rounds: int, generator: torch.Generator, bar=None) -> tuple[float, torch.Tensor]:
    """Adapt an HMC step size towards the acceptance ``target`` over ``rounds`` short runs of 10
    trajectories (which also thermalise): ``(step size, last state)``. The production run keeps it fixed.
    ``bar``: a progress bar advanced by one per trajectory."""
    for _ in range(rounds):
        run = hmc(potential, x, TUNE_TRAJECTORIES, step_size, n_leapfrog, generator=generator, keep_samples=False,
                  bar=bar)
        x = run.state
        step_size *= math.exp(min(max(2 * (run.acceptance - target), -0.7), 0.7))
    return step_size, x


def bulk(module: LatticeFlowModule, cfg: DictConfig, show_progress: bool = False
         ) -> tuple[list[str], dict, BulkCorrelations]:
    """HMC in latent space (on ``S_eff``) against HMC in field space (on ``S``), each with its step size
    tuned to the acceptance ``bulk.target_acceptance``, the same number of trajectories and leapfrog steps
    (equal gradient evaluations); integrated autocorrelation times of ``|M|^2``, ``<phi^2>`` and ``S`` in
    trajectories; and the latent correlations of the latent chains against the tree distance (the bulk picture).
    ``show_progress``: a bar on stderr per space, one step per trajectory (tuning and production)."""
    b = cfg.bulk
    generator = torch.Generator().manual_seed(cfg.seed)
    z0 = module.prior.sample(b.chains, generator=generator)
    with torch.no_grad():
        x0, _ = module.flow.decode(z0)

    def s_eff(z):
        return effective_action(module.flow, module.target, z)[0]

    runs, lines, summary = {}, [], {"chains": int(b.chains), "trajectories": int(b.trajectories),
                                    "leapfrog": int(b.leapfrog)}
    for name, potential, start in (("latent", s_eff, z0), ("field", module.target, x0)):
        total = int(b.tune_rounds) * TUNE_TRAJECTORIES + int(b.trajectories)
        with torch.enable_grad(), progress(desc=f"HMC in {name} space", total=total, unit="traj",
                                           enabled=show_progress) as bar:
            step, state = tune_step_size(potential, start, float(b.step_size), int(b.leapfrog),
                                         float(b.target_acceptance), int(b.tune_rounds), generator, bar)
            began = time.perf_counter()  # the production run only: the cost per trajectory of each space
            run = hmc(potential, state, int(b.trajectories), step, int(b.leapfrog), generator=generator, bar=bar)
            runs[name] = (run, step, time.perf_counter() - began)
    with torch.no_grad():
        x_latent = torch.stack([module.flow.decode(z)[0] for z in runs["latent"][0].samples])
    for name, fields in (("latent", x_latent), ("field", runs["field"][0].samples)):
        run, step, seconds = runs[name]
        flat = fields.flatten(0, 1).double()
        series = {"|M|^2/V": susceptibility(flat), "phi2": phi2(flat), "S": module.target(flat)}
        entry = {"step_size": step, "acceptance": run.acceptance, "seconds": seconds,
                 "seconds_per_trajectory": seconds / max(int(b.trajectories), 1)}
        taus = []
        for key, values in series.items():
            tau = integrated_autocorrelation_time(values.reshape(fields.shape[:2]))
            entry[f"tau {key}"] = (tau.tau, tau.error)
            taus.append(f"{key} {tau.tau:.2f} +- {tau.error:.2f}")
        chi = series["|M|^2/V"].reshape(fields.shape[:2])
        entry["chi"] = tuple(v.item() for v in chain_mean(chi))  # error: spread of the chain means
        summary[name] = entry
        lines.append(f"HMC in {name} space: step {step:.4f}, acceptance {run.acceptance:.3f}, tau (trajectories): "
                     f"{', '.join(taus)}; chi = {chi.mean():.4f}; {seconds:.1f} s "
                     f"({1000 * entry['seconds_per_trajectory']:.1f} ms per trajectory)")
    ratio = summary["field"]["tau |M|^2/V"][0] / summary["latent"]["tau |M|^2/V"][0]
    summary["tau_ratio_field_over_latent"] = ratio
    lines.append(f"tau(|M|^2) field / latent = {ratio:.2f} at {b.leapfrog} gradient evaluations per trajectory")
    correlations = bulk_correlations(runs["latent"][0].samples.flatten(0, 1), module.flow.level_map())
    summary["correlations"] = {  # the curve of the bulk picture, as plain lists for lattice_report.json
        "metric": correlations.metric, "distance": correlations.distance.tolist(),
        "correlation": correlations.correlation.tolist(), "abs_correlation": correlations.abs_correlation.tolist(),
        "pairs": correlations.pairs.tolist(), "noise": float(correlations.noise)}
    return lines, summary, correlations
