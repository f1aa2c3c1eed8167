"""The four physics figures of docs/lattice.md (issue 21), one command each, drawn from JSON reports:

    python scripts/lattice_figures.py phase flow='runs/phase/*/lattice_report.json' mc='docs/lattice/mc_k*.json' \\
        out=docs/lattice/phase_diagram.png
    python scripts/lattice_figures.py two_point flow=docs/lattice/critical16.json mc=docs/lattice/mc_critical16.json \\
        out=docs/lattice/two_point_critical16.png
    python scripts/lattice_figures.py bulk massive=docs/lattice/massive16_bulk.json \\
        critical=docs/lattice/critical16_bulk.json out=docs/lattice/bulk_geometry.png
    python scripts/lattice_figures.py hmc reports=docs/lattice/critical16_bulk.json,docs/lattice/critical32_bulk.json \\
        labels=L=16,L=32 out=docs/lattice/hmc_tau.png

The inputs: a flow report is the ``lattice_report.json`` that ``lattice.py`` writes (for ``bulk`` and ``hmc``, run with
``bulk.enabled=true``: the figures read its ``bulk`` entry); a Metropolis report is what
``scripts/lattice_mc.py ... out=<path>`` writes. Every figure takes ``title=`` and ``out=`` (default
``docs/lattice/<figure>.png``, figure as named below).

- ``phase`` (phase_diagram.png): ``flow=`` and ``mc=`` are comma-separated lists of files or globs (quote the globs so
  that the shell leaves them alone); each file's ``kappa`` is read from its ``action``
  (``complex_phi4(kappa=0.3, lam=1.145)``), and the flow's and Metropolis's points are paired by it. A kappa may have
  only one of the two. All files must share ``lam`` and ``L``. chi is the reweighted ``chi``, ``<|M|>/V`` the report's
  ``absm`` (its Metropolis value; the flow's where its report has an ``absm`` entry).
- ``two_point`` (two_point.png): the reweighted ``G(r)`` of one flow report against one Metropolis report at the same L.
- ``bulk`` (bulk_geometry.png): every other ``label=report`` pair is a curve, from ``bulk.correlations`` of the report;
  ``correlation=abs`` (default: the mean ``|corr|``, as the bulk picture's left panel) or ``signed``.
- ``hmc`` (hmc_tau.png): ``reports=`` a comma list of flow reports with a bulk entry, ``labels=`` one label each
  (default: the file names).
"""

from __future__ import annotations

import glob
import json
import math
import re
import sys
from pathlib import Path

from rgflow_vision import plots

FIGURES = {"phase": "phase_diagram.png", "two_point": "two_point.png", "bulk": "bulk_geometry.png",
           "hmc": "hmc_tau.png"}


def read(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SystemExit(f"{path}: no such file") from None


def paths(spec: str) -> list[Path]:
    """A comma-separated list of files or globs, each glob expanded in sorted order."""
    found = []
    for part in filter(None, spec.split(",")):
        matches = sorted(glob.glob(part)) if glob.has_magic(part) else [part]
        if not matches:
            raise SystemExit(f"{part}: matches no file")
        found += [Path(m) for m in matches]
    return found


def action_params(report: dict, path: Path) -> dict[str, float]:
    """The couplings in a report's ``action`` name, e.g. ``{"kappa": 0.3, "lam": 1.145}``."""
    params = {k: float(v) for k, v in re.findall(r"(\w+)=([^,)\s]+)", report.get("action", ""))}
    if "kappa" not in params:
        raise SystemExit(f"{path}: action {report.get('action')!r} names no kappa (train with the kappa form)")
    return params


def pair(report: dict, key: str) -> tuple[float, float] | None:
    """``(report[key], report[key_err])``, or ``None`` where the report has no such value."""
    if report.get(key) is None:
        return None
    error = report.get(f"{key}_err")
    return float(report[key]), math.nan if error is None else float(error)


def series(report: dict, key: str) -> tuple[list[float], list[float]]:
    """A list of values and its errors (JSON's null as NaN)."""
    return tuple([math.nan if v is None else float(v) for v in report[k]] for k in (key, f"{key}_err"))


def phase(opts: dict):
    by_kappa, setting = {}, {}
    for source in ("flow", "mc"):
        for path in paths(opts.pop(source, "")):
            report = read(path)
            params = action_params(report, path)
            for name, value in (("lam", params.get("lam")), ("L", report.get("size"))):
                if setting.setdefault(name, (value, path))[0] != value:
                    raise SystemExit(f"{path}: {name} = {value}, but {setting[name][1]} has {setting[name][0]}")
            point = by_kappa.setdefault(round(params["kappa"], 9), {"kappa": params["kappa"]})
            if source in point:
                raise SystemExit(f"{path}: a second {source} report at kappa = {params['kappa']:g} "
                                 f"(the first: {point[source]})")
            point[source] = path
            point.update({f"chi_{source}": pair(report, "chi"), f"absm_{source}": pair(report, "absm")})
            if source == "flow":
                point["ess"] = report.get("ess")
    if not by_kappa:
        raise SystemExit("phase: give flow=<reports> and/or mc=<reports>")
    if not any(p.get("absm_flow") for p in by_kappa.values() if "flow" in p):
        print("note: the flow reports have no <|M|>/V (absm): Metropolis only in that panel")
    lam, size = setting["lam"][0], setting["L"][0]
    title = opts.pop("title", f"complex phi^4, lam = {lam:g}, L = {size}")
    return plots.phase_diagram_picture(list(by_kappa.values()), title)


def two_point(opts: dict):
    flow_path, mc_path = (Path(opts.pop(k)) for k in ("flow", "mc"))
    flow, mc = read(flow_path), read(mc_path)
    if flow["size"] != mc["size"]:
        raise SystemExit(f"{flow_path} is L = {flow['size']}, {mc_path} L = {mc['size']}")
    title = opts.pop("title", f"{flow['action']}, L = {flow['size']}: G(r)")
    return plots.two_point_picture(series(flow, "two_point"), series(mc, "two_point"), flow["size"], title)


def bulk_entry(path: Path) -> dict:
    entry = read(path).get("bulk")
    if not entry:
        raise SystemExit(f"{path}: no bulk entry (run lattice.py with bulk.enabled=true)")
    return entry


def bulk(opts: dict):
    which = {"abs": "abs_correlation", "signed": "correlation"}[opts.pop("correlation", "abs")]
    title = opts.pop("title", None)
    curves = {}
    for label, path in list(opts.items()):
        opts.pop(label)
        correlations = bulk_entry(Path(path)).get("correlations")
        if correlations is None:
            raise SystemExit(f"{path}: its bulk entry has no correlations (a report from before issue 21)")
        curves[label] = (correlations["distance"], correlations[which], correlations["noise"])
    if not curves:
        raise SystemExit("bulk: give label=<report> pairs, e.g. massive=a.json critical=b.json")
    return plots.bulk_geometry_picture(curves, title)


def hmc(opts: dict):
    reports = paths(opts.pop("reports", ""))
    labels = opts.pop("labels", ",".join(p.stem for p in reports)).split(",")
    if len(labels) != len(reports):
        raise SystemExit(f"{len(labels)} labels for {len(reports)} reports")
    rows = []
    for label, path in zip(labels, reports):
        entry = bulk_entry(path)
        if "seconds_per_trajectory" not in entry["latent"]:
            print(f"note: {path} has no HMC timing (a report from before issue 21): no seconds bars for {label}")
        rows.append({"label": label, "latent": entry["latent"], "field": entry["field"]})
    return plots.hmc_tau_picture(rows, opts.pop("title", "HMC: latent space (S_eff) against field space (S)"))


def main(argv: list[str]) -> Path:
    if not argv or argv[0] not in FIGURES or not all("=" in arg for arg in argv[1:]):
        raise SystemExit(f"usage: lattice_figures.py {{{'|'.join(FIGURES)}}} key=value ... (see the docstring)")
    figure, opts = argv[0], dict(arg.split("=", 1) for arg in argv[1:])
    out = opts.pop("out", f"docs/lattice/{FIGURES[figure]}")
    picture = globals()[figure](opts)
    if opts:
        raise SystemExit(f"{figure}: unknown option(s) {', '.join(opts)}")
    written = plots.save(picture, out)
    print(f"wrote {written}")
    return written


if __name__ == "__main__":
    main(sys.argv[1:])
