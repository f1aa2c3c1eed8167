"""Estimators: importance weights, ESS, ln Z, reweighting, independence Metropolis, error bars."""

from __future__ import annotations

import math

import pytest
import torch

from rgflow_vision.lattice import (
    FreeComplexField,
    autocorrelation,
    binned_error,
    chain_mean,
    ess,
    independence_metropolis,
    integrated_autocorrelation_time,
    jackknife,
    log_weights,
    log_z,
    phi2,
    reverse_kl,
    reweight,
    susceptibility,
)

FREE = FreeComplexField(1.0, 4.5)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_exact_proposals_have_ess_one_and_give_ln_z_exactly():
    """The exact free-field sampler is a perfect flow: log q = -S - ln Z, so every weight is Z."""
    x, log_q = FREE.sample(1000, 8, generator=torch.Generator().manual_seed(0))
    log_w = log_weights(log_q, FREE(x))
    assert ess(log_w) == pytest.approx(1.0, abs=1e-12)
    estimate = log_z(log_w)
    assert estimate.estimate == pytest.approx(-14.21720, abs=1e-5)
    assert estimate.estimate == pytest.approx(FREE.log_z(8), abs=1e-10)
    assert estimate.bound == pytest.approx(FREE.log_z(8), abs=1e-10)
    assert estimate.error < 1e-10
    # the reverse-KL loss of a perfect flow is its minimum, -ln Z
    assert reverse_kl(log_q, FREE(x)).item() == pytest.approx(-FREE.log_z(8), abs=1e-10)


def test_ess_is_one_over_n_when_one_weight_dominates_and_in_between_otherwise():
    assert ess(torch.tensor([0.0, -800.0, -900.0, -1000.0])) == pytest.approx(0.25)
    log_w = torch.randn(10_000, dtype=torch.float64)
    # lognormal weights: (E w)^2 / E w^2 = exp(-sigma^2)
    assert ess(log_w) == pytest.approx(math.exp(-1), rel=0.1)
    assert ess(log_w + 1234.5) == pytest.approx(ess(log_w), rel=1e-12)  # shift-invariant, no overflow


def test_imperfect_proposals_reweight_to_the_exact_values_and_bound_ln_z_from_below():
    """Proposals from a heavier free field (mu = 4.8), target mu = 4.5, L = 4."""
    size, proposal = 4, FreeComplexField(1.0, 4.8)
    x, log_q = proposal.sample(40_000, size, generator=torch.Generator().manual_seed(1))
    log_w = log_weights(log_q, FREE(x))
    assert 0.3 < ess(log_w) < 0.99
    estimate = log_z(log_w)
    assert abs(estimate.estimate - FREE.log_z(size)) < 4 * estimate.error
    assert estimate.bound < FREE.log_z(size) - 10 * estimate.error  # Jensen, strictly for q != p
    for values, exact in [
        (susceptibility(x), FREE.susceptibility()),
        (phi2(x), FREE.two_point(size)[0, 0].item()),
    ]:
        mean, error = reweight(values, log_w)
        assert abs(mean.item() - exact) < 4 * error.item()
        assert abs(values.mean().item() - exact) > 10 * error.item()  # without the weights: wrong


def test_blocked_jackknife_of_a_mean_is_the_standard_error_of_block_means():
    values = torch.randn(1000, 3, dtype=torch.float64)
    mean, error = jackknife(lambda v: v.mean(0), values, n_blocks=50)
    block_means = values.view(50, 20, 3).mean(1)
    assert torch.allclose(mean, values.mean(0))
    assert torch.allclose(error, block_means.std(0) / math.sqrt(50))
    plain_mean, plain_error = reweight(values, n_blocks=50)
    assert torch.allclose(plain_mean, mean) and torch.allclose(plain_error, error)


def test_independence_metropolis_accepts_every_exact_proposal():
    x, log_q = FREE.sample(500, 4, generator=torch.Generator().manual_seed(2))
    chain = independence_metropolis(log_weights(log_q, FREE(x)), generator=torch.Generator().manual_seed(3))
    assert chain.acceptance == 1.0
    assert torch.equal(chain.indices, torch.arange(500))


def test_independence_metropolis_has_the_target_as_stationary_distribution():
    """1-D toy: target N(0, 1) (S = x^2/2), proposals N(0.7, 1.6^2)."""
    g = torch.Generator().manual_seed(4)
    n, loc, scale = 200_000, 0.7, 1.6
    x = loc + scale * torch.randn(n, dtype=torch.float64, generator=g)
    log_q = -0.5 * ((x - loc) / scale) ** 2 - math.log(scale * math.sqrt(2 * math.pi))
    chain = independence_metropolis(log_weights(log_q, 0.5 * x**2), generator=g)
    samples = x[chain.indices]
    assert 0.5 < chain.acceptance < 0.95
    assert chain.accepted[1:].double().mean().item() == chain.acceptance
    assert samples.mean().item() == pytest.approx(0.0, abs=0.015)
    assert samples.var().item() == pytest.approx(1.0, abs=0.025)
    assert ((samples > 1.0).double().mean().item()) == pytest.approx(0.158655, abs=0.006)
    assert x.mean().item() == pytest.approx(loc, abs=0.02)  # the proposals themselves are not the target


def ar1(rho, n_steps, n_chains, seed):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n_steps, n_chains, dtype=torch.float64, generator=g) * math.sqrt(1 - rho**2)
    out = torch.empty_like(noise)
    out[0] = torch.randn(n_chains, dtype=torch.float64, generator=g)  # stationary start
    for t in range(1, n_steps):
        out[t] = rho * out[t - 1] + noise[t]
    return out


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.8])
def test_autocorrelation_time_of_ar1_is_one_plus_rho_over_one_minus_rho(rho):
    series = ar1(rho, 20_000, 32, seed=5)
    tau = integrated_autocorrelation_time(series)
    exact = (1 + rho) / (1 - rho)
    assert abs(tau.tau - exact) < 4 * tau.error, f"tau = {tau.tau:.3f} +- {tau.error:.3f}, exact {exact:.3f}"
    assert tau.error < 0.03 * exact
    rho_t = autocorrelation(series)
    assert rho_t[0].item() == pytest.approx(1.0)
    assert rho_t[2].item() == pytest.approx(rho**2, abs=0.01)
    assert integrated_autocorrelation_time(series[:, 0]).tau == pytest.approx(exact, rel=0.25)  # (T,) works too


def test_binned_error_grows_to_sqrt_tau_times_the_naive_error_and_chain_mean_uses_chain_spread():
    rho = 0.8
    series = ar1(rho, 20_000, 16, seed=6)
    naive = series.std() / math.sqrt(series.numel())
    _, err = binned_error(series.flatten(), bin_size=16 * 200)  # time-major flatten: bins hold whole time slices
    _, err_chains = chain_mean(series)
    for e in (err, err_chains):
        assert (e / naive).item() == pytest.approx(math.sqrt((1 + rho) / (1 - rho)), rel=0.25)
    with pytest.raises(ValueError, match="fewer than 2 bins"):
        binned_error(series[:10], 10)
