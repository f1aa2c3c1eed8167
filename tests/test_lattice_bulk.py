"""The bulk view: S_eff, HMC in field and latent space, tree and hyperbolic distances, bulk correlations."""

from __future__ import annotations

import math

import pytest
import torch

from rgflow_vision import plots
from rgflow_vision.flows import RGFlow, level_map
from rgflow_vision.lattice import (
    FreeComplexField,
    RealPhi4,
    bulk_correlations,
    chain_mean,
    correlation_by_level,
    effective_action,
    hmc,
    hyperbolic_distance,
    latent_correlation_matrix,
    latent_hmc,
    lattice_distance,
    phi2,
    tree_distance,
)
from rgflow_vision.model import sample_and_log_prob
from rgflow_vision.priors import GaussianPrior

from .conftest import perturbed_flow

FREE = FreeComplexField(1.0, 4.5)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_effective_action_of_the_identity_flow_is_the_action():
    flow = RGFlow(2, 8).double()  # zero-initialised output scales: the identity
    z = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    s_eff, x = effective_action(flow, FREE, z)
    assert torch.equal(x, z)
    assert torch.allclose(s_eff, FREE(z), atol=1e-12)


def test_effective_action_is_the_action_minus_the_decoding_log_det():
    flow = perturbed_flow(1, 8, dtype=torch.float64)
    action = RealPhi4(-4, 8)
    x = 0.5 * torch.randn(3, 1, 8, 8, dtype=torch.float64)
    z, logdet_encode = flow.encode(x)
    s_eff, x_back = effective_action(flow, action, z)
    assert torch.allclose(x_back, x, atol=1e-10)
    # log|det dx/dz| = -log|det dz/dx|, so exp(-S_eff) is the target's density pulled back to z
    assert torch.allclose(s_eff, action(x) + logdet_encode, atol=1e-8)
    assert not torch.allclose(s_eff, action(x), atol=1e-3)


def test_sample_and_log_prob_returns_the_flow_density_of_its_samples_in_chunks_too():
    flow = perturbed_flow(2, 8, dtype=torch.float64)
    prior = GaussianPrior(2, 8)
    with torch.no_grad():
        x, log_q, z = sample_and_log_prob(flow, prior, 5, generator=torch.Generator().manual_seed(0),
                                          dtype=torch.float64, chunk=2)
        z_back, logdet_encode = flow.encode(x)
    assert z.dtype == x.dtype == log_q.dtype == torch.float64 and x.shape[0] == log_q.shape[0] == 5
    assert torch.allclose(z_back, z, atol=1e-8)
    assert torch.allclose(log_q, prior.log_prob(z_back) + logdet_encode, atol=1e-8)


def gaussian_potential(sigma):
    return lambda x: 0.5 * ((x / sigma) ** 2).flatten(1).sum(dim=1)


def test_hmc_preserves_a_gaussian_and_accepts_almost_everything_with_small_steps():
    sigma = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x0 = sigma * torch.randn(4000, 3, dtype=torch.float64, generator=g)
    run = hmc(gaussian_potential(sigma), x0, n_traj=10, step_size=0.05, n_leapfrog=10, generator=g)
    assert run.samples.shape == (10, 4000, 3) and run.accepted.shape == (10, 4000)
    assert run.acceptance > 0.98
    assert torch.exp(-run.delta_h).mean().item() == pytest.approx(1.0, abs=0.01)  # <exp(-dH)> = 1
    final = run.state
    assert torch.allclose(final.std(dim=0), sigma, rtol=0.05)
    assert torch.allclose(final.mean(dim=0), torch.zeros(3, dtype=torch.float64), atol=0.1)
    assert (final - x0).abs().mean().item() > 0.3  # it moved
    big_steps = hmc(gaussian_potential(sigma), x0, n_traj=5, step_size=0.9, n_leapfrog=10, generator=g)
    assert big_steps.acceptance < run.acceptance - 0.2


def test_hmc_in_field_space_samples_the_free_field():
    size = 4
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(512, 2, size, size, dtype=torch.float64, generator=g)  # out of equilibrium
    burn = hmc(FREE, x0, n_traj=20, step_size=0.2, n_leapfrog=8, generator=g, keep_samples=False)
    run = hmc(FREE, burn.state, n_traj=30, step_size=0.2, n_leapfrog=8, generator=g)
    measured, error = chain_mean(torch.stack([phi2(x) for x in run.samples]))
    assert abs(measured.item() - FREE.two_point(size)[0, 0].item()) < 4 * error.item()
    assert run.acceptance > 0.8


def test_latent_hmc_samples_the_target_through_a_nontrivial_flow():
    """The target in latent space is exp(-S_eff(z)), no prior term: decoded samples follow exp(-S(x)).

    Started from exact samples pulled back to z; with a prior term added to the potential the same
    run drifts to <phi^2> = 0.27 (measured), far outside the tolerance.
    """
    size = 4
    flow = perturbed_flow(2, size, dtype=torch.float64).eval()
    g = torch.Generator().manual_seed(3)
    x0, _ = FREE.sample(128, size, generator=g)
    with torch.no_grad():
        z0, _ = flow.encode(x0)
    run = latent_hmc(flow, FREE, z0, n_traj=20, step_size=0.15, n_leapfrog=6, generator=g)
    with torch.no_grad():
        values = torch.stack([phi2(flow.decode(z)[0]) for z in run.samples])
    measured, error = chain_mean(values)
    assert abs(measured.item() - FREE.two_point(size)[0, 0].item()) < 4 * error.item(), (measured, error)
    assert run.acceptance > 0.8
    assert (run.state - z0).abs().mean() > 0.3 * z0.abs().mean()  # the chains moved


def test_tree_distance_counts_edges_to_the_lowest_common_ancestor():
    levels = level_map(8)  # H = 2: level 1 on the even-even sites
    d = tree_distance(levels)

    def site(i, j):
        return 8 * i + j

    assert torch.equal(d, d.T) and (d.diagonal() == 0).all()
    assert d[site(0, 0), site(0, 1)] == 1  # a level-0 latent and the level-1 latent of its cell
    assert d[site(0, 1), site(1, 0)] == 2  # two level-0 latents of one cell
    assert d[site(0, 0), site(0, 2)] == 2  # neighbouring level-1 latents: common 4x4 cell
    assert d[site(0, 0), site(0, 4)] == 4  # common ancestor: the 8x8 root
    assert d[site(0, 1), site(1, 6)] == 6  # level 0 to level 0 through the root
    assert d[site(0, 1), site(0, 6)] == 5  # (0, 6) is a level-1 latent
    # a tree metric: the triangle inequality holds for every triple
    assert (d[:, None, :] <= d[:, :, None] + d[None, :, :] + 1e-12).all()


def test_hyperbolic_distance_is_a_continuum_tree_distance():
    size = 32
    levels = level_map(size)  # H = 4, top level 3
    d = hyperbolic_distance(levels)
    assert torch.allclose(d, d.T) and torch.allclose(d.diagonal(), torch.zeros(size * size, dtype=torch.float64))
    # far apart on the boundary: d ~ 2 log2 r - h_s - h_t
    s, t = 1 * size + 1, 1 * size + 17  # level-0 sites 16 apart (periodic minimum image: 16)
    assert d[s, t].item() == pytest.approx(2 * math.log2(16), abs=0.05)
    # the level-3 site (0, 0) (height 8) to the level-0 site (0, 1) (height 1): arccosh(1 + (1 + 7^2) / (2 * 8)) / ln 2
    assert levels[0, 0] == 3 and levels[0, 1] == 0
    assert d[0, 1].item() == pytest.approx(math.acosh(1 + 50 / 16) / math.log(2))
    assert lattice_distance(size)[0, size - 1].item() == 1.0  # periodic


def test_bulk_correlations_of_independent_latents_are_zero_within_noise():
    z = torch.randn(2000, 2, 8, 8, dtype=torch.float64)
    levels = level_map(8)
    for metric in ("tree", "hyperbolic", "lattice"):
        res = bulk_correlations(z, levels, metric=metric)
        assert res.pairs.sum().item() == 64 * 63 // 2
        # a mean over n pairs of correlations of spread `noise`
        assert (res.correlation.abs() < 5 * res.noise / res.pairs.sqrt() + 1e-3).all(), metric
        floor = torch.full_like(res.abs_correlation, math.sqrt(2 / math.pi) * res.noise)  # E|N(0, noise^2)|
        assert torch.allclose(res.abs_correlation, floor, rtol=0.35), metric


def test_boundary_correlations_of_the_free_field_are_g_r_over_g_0():
    size = 8
    x, _ = FREE.sample(20_000, size, generator=torch.Generator().manual_seed(4))
    corr = latent_correlation_matrix(x)
    g = FREE.two_point(size)
    assert torch.allclose(corr[0].view(size, size), g / g[0, 0], atol=0.02)
    res = bulk_correlations(x, level_map(size), metric="lattice")
    assert res.distance[0].item() == 1.0
    assert res.correlation[0].item() == pytest.approx((g[1, 0] / g[0, 0]).item(), abs=0.01)
    assert (res.correlation[:-1] >= res.correlation[1:] - 0.01).all()  # decays with distance (up to L/2)


def test_correlation_by_level_and_plot():
    z = torch.randn(300, 2, 16, 16, dtype=torch.float64)
    levels = level_map(16)  # H = 3
    by_level = correlation_by_level(z, levels)
    assert set(by_level) == {(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)}
    counts = torch.bincount(levels.flatten())
    assert by_level[(0, 1)].pairs.sum().item() == counts[0] * counts[1]
    assert by_level[(2, 2)].pairs.sum().item() == counts[2] * (counts[2] - 1) // 2
    for results in (bulk_correlations(z, levels), by_level):
        picture = plots.bulk_correlation_picture(results, title="iid latents")
        assert picture.mode == "RGB" and picture.size == (1000, 400)
    with pytest.raises(ValueError, match="unknown metric"):
        bulk_correlations(z, levels, metric="manhattan")
