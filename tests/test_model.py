"""Pixels to bits/dim: the pixel transform, the joined model, sampling and a little training."""

import math

import pytest
import torch

from rgflow_vision import RGFlowModel
from rgflow_vision.flows import PixelTransform

from .conftest import TINY, perturbed_flow


def test_pixel_transform_inverts_for_every_pixel_value():
    pixels = PixelTransform(bits=8)
    x = torch.arange(256).view(1, 1, 16, 16)
    for noise in (torch.full((1, 1, 16, 16), 0.01), torch.full((1, 1, 16, 16), 0.99), None):
        y, _ = pixels(x, noise)
        assert torch.equal(pixels.inverse(y), x)


@pytest.mark.parametrize("bits", [1, 5, 8])
def test_pixel_logdet_is_the_sum_of_log_derivatives_of_each_step(bits):
    pixels = PixelTransform(bits=bits)
    x = torch.randint(0, 2**bits, (3, 2, 4, 4)).double()
    noise = torch.rand(3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    y, logdet = pixels(x, noise)
    # dy/d(x + noise), elementwise, from autograd
    (dy,) = torch.autograd.grad(y.sum(), noise)
    assert torch.allclose(logdet, dy.log().flatten(1).sum(1), atol=1e-9)


def test_bits_per_dim_is_the_discrete_data_bound():
    model = RGFlowModel.build(3, 8, bits=8, **TINY)
    model.flow = perturbed_flow(3, 8)
    x = torch.randint(0, 256, (4, 3, 8, 8))
    noise = torch.rand(4, 3, 8, 8)
    u = (x + noise) / 256
    s = 0.05 + 0.9 * u
    y = torch.log(s / (1 - s))
    logdet_squash_logit = (math.log(0.9) - torch.log(s) - torch.log(1 - s)).flatten(1).sum(1)
    z, logdet_flow = model.flow.encode(y)
    log_p_u = model.prior.log_prob(z) + logdet_flow
    expected = -(log_p_u + logdet_squash_logit) / (3 * 64 * math.log(2)) + 8
    assert torch.allclose(model.bpd(x, noise), expected, atol=1e-4)


def test_untrained_model_on_uniform_noise_gives_the_identity_map_bpd():
    model = RGFlowModel.build(3, 16)
    x = torch.randint(0, 256, (8, 3, 16, 16))
    noise = torch.rand(8, 3, 16, 16)
    bpd = model.bpd(x, noise)
    y, logdet_pixels = model.pixels(x, noise)  # the flow is the identity at initialisation
    identity = -(model.prior.log_prob(y) + logdet_pixels) / (3 * 256 * math.log(2))
    assert torch.isfinite(bpd).all()
    assert torch.allclose(bpd, identity, atol=1e-5)
    assert 8.0 < bpd.mean().item() < 12.0  # logits of uniform pixels under a unit Laplace


def test_a_few_optimisation_steps_on_a_fixed_batch_reduce_bpd():
    torch.manual_seed(0)
    model = RGFlowModel.build(1, 16, hidden=32, num_res_blocks=1, couplings=(2,))
    x = torch.randint(0, 256, (16, 1, 16, 16)) // 64 * 64 + 20  # 4 grey levels: very compressible
    noise = torch.rand(16, 1, 16, 16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    history = []
    for _ in range(20):
        loss = model.bpd(x, noise).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < history[0] - 0.2, history


def test_samples_are_integer_images_in_the_pixel_range():
    model = RGFlowModel.build(3, 8, bits=5, **TINY)
    model.flow = perturbed_flow(3, 8)
    samples = model.sample(6, temperature=0.8)
    assert samples.shape == (6, 3, 8, 8) and samples.dtype == torch.long
    assert samples.min() >= 0 and samples.max() <= 31
    cold = model.sample(200, temperature=0.0)
    assert (cold == cold[0]).all(), "temperature 0 decodes z = 0, one image"


def test_learnable_prior_scale_is_trained_with_the_flow():
    model = RGFlowModel.build(1, 16, learn_prior_scale=True, **TINY)
    names = {n for n, _ in model.named_parameters()}
    assert "prior.log_scale" in names
    model.bpd(torch.randint(0, 256, (2, 1, 16, 16))).mean().backward()
    assert model.prior.log_scale.grad.abs().sum() > 0


def test_bf16_autocast_keeps_logdets_in_float32_and_bpd_in_place():
    model = RGFlowModel.build(3, 8, **TINY)
    model.flow = perturbed_flow(3, 8)
    x = torch.randint(0, 256, (4, 3, 8, 8))
    noise = torch.rand(4, 3, 8, 8)
    exact = model.bpd(x, noise)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = model.pixels(x, noise)
        z, logdet = model.flow.encode(y)
        low = model.bpd(x, noise)
    assert z.dtype == torch.float32 and logdet.dtype == torch.float32 and low.dtype == torch.float32
    assert (low - exact).abs().max().item() < 0.01


def test_prior_and_flow_must_agree_on_the_shape():
    from rgflow_vision.priors import LaplacePrior

    with pytest.raises(ValueError, match="does not match"):
        RGFlowModel(perturbed_flow(1, 8), LaplacePrior(3, 8), PixelTransform())
