"""lattice.py: a trained lattice flow's observables next to the known values, and optionally the bulk view."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from .. import plots
from ..lattice import LatticeFlowModule
from ..lattice.report import LatticeReport, bulk, lattice_report
from .common import load_checkpoint, save_picture


def report(cfg: DictConfig) -> LatticeReport:
    """Print the table, write ``lattice_report.json`` to the run folder and, with ``bulk.enabled``, the
    latent-against-field HMC comparison and ``bulk_correlations.png``. The work shows a progress bar on stderr
    (``progress=false``: none); the table goes to stdout."""
    module, path = load_checkpoint(cfg, LatticeFlowModule)
    torch.manual_seed(cfg.seed)
    result = lattice_report(module, int(cfg.n), int(cfg.seed), show_progress=cfg.progress)
    print(f"checkpoint {path}")
    print(result.table())
    extra = {"checkpoint": str(path), "seed": int(cfg.seed)}
    if cfg.bulk.enabled:
        lines, extra["bulk"], correlations = bulk(module, cfg, show_progress=cfg.progress)
        print("\n".join(lines))
        title = f"{module.target.name}: latent correlations from latent HMC"
        picture = plots.bulk_correlation_picture(correlations, title)
        extra["bulk"]["picture"] = str(save_picture(cfg, picture, "bulk_correlations.png"))
    written = result.write_json(Path(cfg.paths.output_dir) / "lattice_report.json", **extra)
    print(f"wrote {written.resolve()}")
    return result
