"""The priors are normalised densities of unit variance, scaled by temperature and level."""

import math

import pytest
import torch

from rgflow_vision.flows import level_map
from rgflow_vision.priors import GaussianPrior, LaplacePrior, build_prior

PRIORS = [LaplacePrior, GaussianPrior]


def density_on_a_grid(prior, temperature=1.0):
    grid = torch.linspace(-40, 40, 400_001, dtype=torch.float64)
    return grid, prior.log_prob(grid.view(-1, 1, 1, 1), temperature).exp()


@pytest.mark.parametrize("cls", PRIORS)
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_density_integrates_to_one_with_variance_temperature_squared(cls, temperature):
    grid, p = density_on_a_grid(cls(1, 1), temperature)
    assert torch.trapezoid(p, grid).item() == pytest.approx(1.0, abs=1e-6)
    assert torch.trapezoid(p * grid**2, grid).item() == pytest.approx(temperature**2, rel=1e-5)


def test_laplace_and_gaussian_match_torch_distributions():
    z = torch.randn(6, 2, 4, 4) * 3
    laplace = torch.distributions.Laplace(0.0, 1 / math.sqrt(2)).log_prob(z).flatten(1).sum(1)
    normal = torch.distributions.Normal(0.0, 0.7).log_prob(z).flatten(1).sum(1)
    assert torch.allclose(LaplacePrior(2, 4).log_prob(z), laplace, atol=1e-4)
    assert torch.allclose(GaussianPrior(2, 4).log_prob(z, temperature=0.7), normal, atol=1e-4)


@pytest.mark.parametrize("cls", PRIORS)
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_samples_have_zero_mean_and_variance_temperature_squared(cls, temperature):
    z = cls(3, 32).sample(100, temperature=temperature)
    assert z.shape == (100, 3, 32, 32)
    assert z.mean().item() == pytest.approx(0.0, abs=0.01)
    assert z.var().item() == pytest.approx(temperature**2, rel=0.03)


def test_laplace_samples_are_sparse_compared_to_gaussian():
    # excess kurtosis: 3 for Laplace, 0 for a Gaussian
    for cls, kurtosis in [(LaplacePrior, 3.0), (GaussianPrior, 0.0)]:
        z = cls(1, 64).sample(100).flatten().double()
        assert ((z**4).mean() / (z**2).mean() ** 2 - 3).item() == pytest.approx(kurtosis, abs=0.3)


def test_a_generator_makes_sampling_reproducible():
    prior = LaplacePrior(1, 8)
    a = prior.sample(4, generator=torch.Generator().manual_seed(7))
    b = prior.sample(4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize("cls", PRIORS)
def test_learnable_scale_per_level(cls):
    levels = level_map(16)
    prior = cls(2, 16, level_map=levels, learn_scale=True)
    assert prior.log_scale.shape == (3,) and prior.log_scale.requires_grad
    with torch.no_grad():
        prior.log_scale.copy_(torch.tensor([0.0, math.log(2.0), math.log(0.5)]))
    z = prior.sample(2000)
    for h, sigma in enumerate([1.0, 2.0, 0.5]):
        assert z[:, :, levels == h].std().item() == pytest.approx(sigma, rel=0.05)
    # still normalised: its log-density is the unit density with each site rescaled
    unit = cls(2, 16)
    scale = torch.tensor([1.0, 2.0, 0.5])[levels]
    expected = unit.log_prob(z / scale) - 2 * torch.log(scale).sum()
    assert torch.allclose(prior.log_prob(z), expected, rtol=1e-5, atol=1e-3)


def test_learnable_scale_needs_the_level_map():
    with pytest.raises(ValueError, match="level_map"):
        LaplacePrior(1, 8, learn_scale=True)


def test_build_prior_by_name():
    assert isinstance(build_prior("laplace", 1, 8), LaplacePrior)
    with pytest.raises(ValueError, match="unknown prior 'cauchy'"):
        build_prior("cauchy", 1, 8)
