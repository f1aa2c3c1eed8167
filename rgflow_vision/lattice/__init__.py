"""Lattice field theory with RG-Flow, the whole feature in one folder:

- ``actions``: free complex field (exact ln Z, G(r)), complex and real phi^4;
- ``metropolis``: the checkerboard Metropolis reference sampler; ``reference``: known values;
- ``observables`` and ``estimators``: ESS, ln Z, reweighting, independence Metropolis, errors, tau_int;
- ``bulk``: the holographic view (S_eff, latent and field HMC, bulk correlations and their picture);
- ``diagnostics``: where a hierarchical flow loses KL (exact Gaussian floor, per-level latent KL);
- ``onsite``: the prior made of the action's own on-site measure (the flow then learns only the hopping);
- ``module`` and ``datamodule``: the LightningModule trained by reverse KL and its step counter;
- ``report``: what ``lattice.py`` prints and writes (``lattice_report.json``).

Imports torch, Lightning, the flow, the priors and the model's sampler (matplotlib lazily); never
``training`` or ``apps``."""

from .actions import (
    ACTIONS,
    ComplexPhi4,
    FreeComplexField,
    LatticeAction,
    RealPhi4,
    bond_sum,
    build_action,
    neighbour_sum,
)
from .bulk import (
    BulkCorrelations,
    HMCResult,
    bulk_correlations,
    correlation_by_level,
    effective_action,
    hmc,
    hyperbolic_distance,
    latent_correlation_matrix,
    latent_hmc,
    lattice_distance,
    tree_distance,
)
from .datamodule import FlowDrawsDataModule
from .estimators import (
    AutocorrelationTime,
    IndependenceMetropolis,
    LogZ,
    autocorrelation,
    binned_error,
    chain_mean,
    ess,
    independence_metropolis,
    integrated_autocorrelation_time,
    jackknife,
    log_weights,
    log_z,
    reverse_kl,
    reweight,
)
from .module import LatticeFlowModule, evaluation_metrics
from .metropolis import MetropolisResult, checkerboard_masks, metropolis, metropolis_sweep
from .onsite import OnsitePrior
from .observables import (
    DEFAULT_OBSERVABLES,
    axis_two_point,
    magnetization,
    phi2,
    susceptibility,
    two_point,
    two_point_axis,
)

__all__ = [
    "ACTIONS",
    "AutocorrelationTime",
    "BulkCorrelations",
    "ComplexPhi4",
    "DEFAULT_OBSERVABLES",
    "FlowDrawsDataModule",
    "FreeComplexField",
    "HMCResult",
    "IndependenceMetropolis",
    "LatticeAction",
    "LatticeFlowModule",
    "LogZ",
    "MetropolisResult",
    "OnsitePrior",
    "RealPhi4",
    "autocorrelation",
    "axis_two_point",
    "binned_error",
    "bond_sum",
    "build_action",
    "bulk_correlations",
    "chain_mean",
    "checkerboard_masks",
    "correlation_by_level",
    "effective_action",
    "ess",
    "evaluation_metrics",
    "hmc",
    "hyperbolic_distance",
    "independence_metropolis",
    "integrated_autocorrelation_time",
    "jackknife",
    "latent_correlation_matrix",
    "latent_hmc",
    "lattice_distance",
    "log_weights",
    "log_z",
    "magnetization",
    "metropolis",
    "metropolis_sweep",
    "neighbour_sum",
    "phi2",
    "reverse_kl",
    "reweight",
    "susceptibility",
    "tree_distance",
    "two_point",
    "two_point_axis",
]
