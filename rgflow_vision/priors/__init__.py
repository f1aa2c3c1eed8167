"""Priors over RG-Flow latents; they import only torch."""

from .factorized import PRIORS, FactorizedPrior, GaussianPrior, LaplacePrior, build_prior

__all__ = ["PRIORS", "FactorizedPrior", "GaussianPrior", "LaplacePrior", "build_prior"]
