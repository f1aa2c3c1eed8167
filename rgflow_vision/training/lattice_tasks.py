"""What lattice.py does: observables of a trained lattice flow with error bars, next to the known values."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..errors import UserError
from ..lattice import (
    bulk_correlations,
    ess,
    hmc,
    independence_metropolis,
    integrated_autocorrelation_time,
    latent_hmc,
    log_weights,
    log_z,
    plot_bulk_correlations,
    reweight,
    sample_flow,
)
from ..lattice.observables import phi2, susceptibility, two_point_axis
from ..lattice.reference import Reference, lookup
from .checkpoint import load_module
from .lattice_module import LatticeFlowModule


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

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)

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


@torch.no_grad()
def draw(module: LatticeFlowModule, n: int, generator: torch.Generator, chunk: int = 4096):
    """``n`` flow configurations: ``(x, log q, S, z)`` concatenated over chunks (memory stays bounded)."""
    xs, log_qs, actions, zs = [], [], [], []
    for start in range(0, n, chunk):
        x, log_q, z = sample_flow(module.flow, module.prior, min(chunk, n - start), generator=generator)
        xs.append(x.double())
        log_qs.append(log_q)
        actions.append(module.target(x))
        zs.append(z)
    return torch.cat(xs), torch.cat(log_qs), torch.cat(actions), torch.cat(zs)


def chain_estimate(series: torch.Tensor) -> tuple[tuple[float, float], float]:
    """Mean of a Markov-chain series with the error ``sqrt(tau var / N)``, and ``tau``."""
    tau = integrated_autocorrelation_time(series)
    error = math.sqrt(max(tau.tau, 1.0) * series.double().var().item() / series.numel())
    return (series.double().mean().item(), error), tau.tau


def lattice_report(module: LatticeFlowModule, n: int, seed: int = 0) -> LatticeReport:
    """Draw ``n`` configurations and estimate ln Z, ESS, chi, <phi^2> and G(r) (reweighted and by
    independence Metropolis), with the reference values of :func:`~rgflow_vision.lattice.reference.lookup`."""
    if n < 2:
        raise UserError(f"n={n}: the estimates need at least 2 samples, e.g. n=16384")
    hp = module.hparams
    generator = torch.Generator(device=module.device).manual_seed(seed)
    x, log_q, action, _ = draw(module, n, generator)
    log_w = log_weights(log_q, action).cpu()
    x = x.cpu()
    params = {k: v for k, v in hp.action.items() if k != "name"}
    ref = lookup(hp.action["name"], params, module.size)

    lz = log_z(log_w)
    imh = independence_metropolis(log_w, torch.Generator().manual_seed(seed))
    chi = susceptibility(x)
    chi_chain = chi[imh.indices]
    chi_imh, tau = chain_estimate(chi_chain)
    chi_rw = reweight(chi, log_w)
    phi2_rw = reweight(phi2(x), log_w)
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
    ]
    for r in range(module.size // 2 + 1):
        known = ref.two_point[r] if ref and ref.two_point and r < len(ref.two_point) else None
        rows.append(Row(f"G({r}) (reweighted)", (g_rw[0][r].item(), g_rw[1][r].item()), known))
    return LatticeReport(action=module.target.name, size=module.size, n=n, rows=rows, reference=ref)


def bulk(module: LatticeFlowModule, cfg: DictConfig, out_dir: Path) -> list[str]:
    """Latent- vs field-space HMC with the same trajectories (tau_int of |M|^2), and the bulk-correlation PNG."""
    b = cfg.bulk
    generator = torch.Generator().manual_seed(cfg.seed)
    z0 = module.prior.sample(b.chains, generator=generator)
    with torch.no_grad():
        x0, _ = module.flow.decode(z0)
    with torch.enable_grad():
        latent = latent_hmc(module.flow, module.target, z0, b.trajectories, b.step_size, b.leapfrog,
                            generator=generator)
        field_run = hmc(module.target, x0, b.trajectories, b.step_size, b.leapfrog, generator=generator)
    with torch.no_grad():
        x_latent = torch.stack([module.flow.decode(z)[0] for z in latent.samples])
    lines = []
    for name, run, fields in (("latent", latent, x_latent), ("field", field_run, field_run.samples)):
        chi = susceptibility(fields.flatten(0, 1)).reshape(fields.shape[:2])
        tau = integrated_autocorrelation_time(chi[b.trajectories // 5:])
        lines.append(f"HMC in {name} space: acceptance {run.acceptance:.3f}, tau(|M|^2) = {tau.tau:.2f} "
                     f"+- {tau.error:.2f} trajectories, chi = {chi[b.trajectories // 5:].mean():.4f}")
    correlations = bulk_correlations(latent.samples[b.trajectories // 5:].flatten(0, 1), module.flow.level_map())
    path = plot_bulk_correlations(correlations, out_dir / "bulk_correlations.png",
                                  title=f"{module.target.name}: latent correlations from latent HMC")
    lines.append(f"wrote {path.resolve()}")
    return lines


def lattice(cfg: DictConfig) -> LatticeReport:
    """The lattice app: load a lattice checkpoint, print the table (and the bulk comparison with bulk.enabled)."""
    module, path = load_module(cfg.ckpt, LatticeFlowModule)
    torch.manual_seed(cfg.seed)
    report = lattice_report(module, int(cfg.n), int(cfg.seed))
    print(f"checkpoint {path}")
    print(report.table())
    if cfg.get("bulk") and cfg.bulk.get("enabled"):
        for line in bulk(module, cfg, Path(cfg.paths.output_dir)):
            print(line)
    return report
