"""Error correction against the classical fills, and by posterior samples of the cone latents (issue 23)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from rgflow_vision import RGFlowModel
from rgflow_vision.analysis import (
    ConeEncoder,
    biharmonic_fill,
    box_masks,
    classical_fills,
    corrupt,
    evaluate_inpainting,
    harmonic_fill,
    inpaint,
    posterior_inpaint,
    telea_available,
    telea_fill,
)
from rgflow_vision.analysis._common import encode_midbin
from rgflow_vision.apps import pictures
from rgflow_vision.errors import UserError
from rgflow_vision.flows import PixelTransform
from rgflow_vision.priors import build_prior

from .apps import compose_cfg
from .conftest import perturbed_flow


pytestmark = pytest.mark.usefixtures("one_thread")

needs_opencv = pytest.mark.skipif(not telea_available(), reason="OpenCV (the [classical] extra) is not installed")


def ramp(channels: int = 1, size: int = 16) -> torch.Tensor:
    """A linear ramp in the column, 10 .. 235: smooth enough that a fill should get it back."""
    return (10 + torch.arange(size) * 15).expand(1, channels, size, size).clone()


@pytest.fixture(scope="module")
def model():
    flow = perturbed_flow(1, 16, seed=0)
    return RGFlowModel(flow, build_prior("laplace", 1, 16), PixelTransform(8)).eval()


@pytest.fixture(scope="module")
def corruption(model):
    generator = torch.Generator().manual_seed(1)
    original = model.sample(2, temperature=0.7, generator=generator)
    masks = box_masks(16, 4, 2, "random", generator)
    return original, corrupt(original, masks, 256, generator), masks


@pytest.fixture(scope="module")
def posterior(model, corruption):
    original, corrupted, masks = corruption
    return posterior_inpaint(model, corrupted, masks, samples=3, steps=6, burn_in=3, map_steps=10,
                             original=original, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------------
# The classical fills


@pytest.mark.parametrize("channels", [1, 3])
def test_every_classical_fill_keeps_the_observed_pixels_and_fills_the_hole(channels):
    original = torch.randint(0, 256, (2, channels, 16, 16), generator=torch.Generator().manual_seed(0))
    masks = box_masks(16, 5, 2, "random", torch.Generator().manual_seed(2))
    corrupted = corrupt(original, masks, 256, torch.Generator().manual_seed(3))
    fills = classical_fills(corrupted, masks)
    assert {"harmonic", "biharmonic"} <= set(fills) and ("telea" in fills) == telea_available()
    keep = (~masks)[:, None].expand_as(original)
    for name, filled in fills.items():
        assert filled.dtype == original.dtype and filled.shape == original.shape, name
        assert torch.equal(filled[keep], corrupted[keep]), name  # the observed pixels, bit for bit
        assert not torch.equal(filled[~keep], corrupted[~keep]), name
        assert 0 <= filled.min() and filled.max() <= 255, name


def test_harmonic_and_biharmonic_fills_give_back_a_linear_ramp():
    original = ramp(channels=2)
    mask = box_masks(16, 6, 1, (3, 5))
    corrupted = corrupt(original, mask, 256, torch.Generator().manual_seed(0))
    assert torch.equal(harmonic_fill(corrupted, mask), original)
    assert (biharmonic_fill(corrupted, mask) - original).abs().max() <= 1  # rounding to integer levels


@needs_opencv
def test_every_fill_gets_back_an_image_with_nothing_to_guess():
    flat = torch.full((1, 3, 16, 16), 97)
    mask = box_masks(16, 4, 1, "centre")
    fills = {seed: classical_fills(corrupt(flat, mask, 256, torch.Generator().manual_seed(seed)), mask)
             for seed in (0, 1)}
    for name in ("harmonic", "biharmonic"):
        assert torch.equal(fills[0][name], flat), name
    # OpenCV's Telea misses a flat image by a level or two (its gradient term), but never looks at the noise
    assert (fills[0]["telea"] - flat).abs().max() <= 3 and torch.equal(fills[0]["telea"], fills[1]["telea"])


@needs_opencv
def test_telea_takes_8_bit_images_only():
    x = torch.zeros(1, 1, 16, 16, dtype=torch.long)
    with pytest.raises(UserError, match="8-bit"):
        telea_fill(x, box_masks(16, 4, 1), levels=32)


# ---------------------------------------------------------------------------------------------
# Posterior samples of the cone latents


def test_a_repeated_cone_encoder_is_the_encoder_of_the_repeated_images():
    flow = perturbed_flow(1, 16, dtype=torch.float64).eval()
    reference = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    masks = box_masks(16, 5, 2, "random", torch.Generator().manual_seed(3))
    x = torch.where(masks[:, None], torch.randn_like(reference), reference).repeat_interleave(3, 0)
    x[1::3] += masks[:, None] * 0.5  # the copies of an image differ inside its hole
    twin = ConeEncoder(flow, reference, masks).repeat(3)
    direct = ConeEncoder(flow, reference.repeat_interleave(3, 0), masks.repeat_interleave(3, 0))
    (z, logdet), (z_direct, logdet_direct) = twin(x), direct(x)
    # equal up to rounding: the matrix products of batches of 2 and 6 may take different BLAS kernels (AMD)
    assert torch.allclose(z, z_direct, rtol=0, atol=1e-12) and torch.allclose(logdet, logdet_direct)
    assert torch.allclose(twin.logdet_rest, direct.logdet_rest)


def test_posterior_samples_move_only_the_cone_latents(model, corruption, posterior):
    _, corrupted, masks = corruption
    _, z0 = encode_midbin(model, corrupted)
    cone = posterior.latent_mask[:, None].expand_as(posterior.z)  # (B, K, C, L, L)
    z0 = z0[:, None].expand_as(posterior.z)
    assert torch.equal(posterior.z[~cone], z0[~cone])  # bit for bit: encode(corrupted) outside the cone
    assert not torch.equal(posterior.z[cone], z0[cone])


def test_every_sample_and_the_median_keep_the_observed_pixels_bit_for_bit(corruption, posterior):
    _, corrupted, masks = corruption
    keep = (~masks)[:, None].expand_as(corrupted)
    assert torch.equal(posterior.restored[keep], corrupted[keep])
    for k in range(posterior.samples.shape[1]):
        assert torch.equal(posterior.samples[:, k][keep], corrupted[keep])
    assert posterior.restored.dtype == torch.long and posterior.samples.shape == (2, 3, 1, 16, 16)


def test_the_samples_differ_from_each_other_inside_the_hole_and_nowhere_else(corruption, posterior):
    _, _, masks = corruption
    for b in range(2):
        samples = posterior.samples[b]  # (K, C, L, L)
        differs = (samples != samples[:1]).any(0).any(0)  # (L, L): pixels where some sample differs
        assert not differs[~masks[b]].any() and differs[masks[b]].any()


def test_the_posterior_reports_its_map_its_acceptance_and_errors(corruption, posterior):
    original, corrupted, masks = corruption
    assert 0 < posterior.acceptance <= 1 and posterior.step_size.shape == (2,) and (posterior.step_size > 0).all()
    assert posterior.error is not None and posterior.error_map == posterior.map.error
    assert posterior.latents_updated == posterior.map.latents_updated and posterior.seconds > 0


def test_the_sampler_is_reproducible_with_a_generator(model, corruption, posterior):
    original, corrupted, masks = corruption
    again = posterior_inpaint(model, corrupted, masks, samples=3, steps=6, burn_in=3, map_steps=10,
                              original=original, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.samples, posterior.samples) and torch.equal(again.restored, posterior.restored)


def test_chains_from_their_own_maps_still_move_only_the_hole(model, corruption):
    original, corrupted, masks = corruption
    spread = posterior_inpaint(model, corrupted, masks, samples=3, steps=4, burn_in=2, map_steps=5, spread=40.0,
                               generator=torch.Generator().manual_seed(0))
    keep = (~masks)[:, None, None].expand_as(spread.samples)
    assert torch.equal(spread.samples[keep], corrupted[:, None].expand_as(spread.samples)[keep])
    _, z0 = encode_midbin(model, corrupted)
    outside = ~spread.latent_mask[:, None].expand_as(spread.z)
    assert torch.equal(spread.z[outside], z0[:, None].expand_as(spread.z)[outside])


@pytest.mark.parametrize(("options", "message"), [({"samples": 0}, "samples >= 1"),
                                                  ({"steps": 5, "burn_in": 5}, "burn_in < steps")])
def test_a_sampler_without_samples_is_a_clear_error(model, corruption, options, message):
    _, corrupted, masks = corruption
    with pytest.raises(UserError, match=message):
        posterior_inpaint(model, corrupted, masks, **options)


def test_holes_of_different_sizes_in_one_batch_are_a_clear_error(model, corruption):
    _, corrupted, masks = corruption
    uneven = masks.clone()
    uneven[1] = box_masks(16, 3, 1, "centre")[0]
    with pytest.raises(UserError, match="same number of corrupted pixels"):
        posterior_inpaint(model, corrupted, uneven, map_steps=1)


def test_the_ascent_starts_from_the_named_classical_fill(model, corruption):
    _, corrupted, masks = corruption
    for name in ("harmonic", "biharmonic"):
        result = inpaint(model, corrupted, masks, steps=0, start=name)
        assert torch.equal(result.restored, classical_fills(corrupted, masks)[name])  # no step: the fill itself
    with pytest.raises(UserError, match="start must be one of"):
        inpaint(model, corrupted, masks, start="median")


# ---------------------------------------------------------------------------------------------
# The evaluation


def test_the_evaluation_compares_the_posterior_median_with_every_classical_fill(model, corruption):
    original, _, _ = corruption
    evaluation = evaluate_inpainting(model, original, 4, "random", seed=1, compare_all=False, samples=2,
                                     sampler={"steps": 3, "burn_in": 1}, steps=5)
    m = evaluation.metrics
    classical = ["harmonic", "biharmonic"] + (["telea"] if telea_available() else [])
    assert {*classical, "cone", "posterior", "seconds_posterior", "best_classical"} <= set(m)
    assert m["best_classical"] in classical and m["start"] == "biharmonic" and "all" not in m
    best = m["best_classical"]
    assert m[best] == min(m[name] for name in classical)
    assert 0 <= m[f"posterior_beats_{best}"] + m[f"posterior_ties_{best}"] <= 1
    assert m["observed_changed_posterior"] == 0.0 and evaluation.samples.shape == (2, 2, 1, 16, 16)
    with pytest.raises(UserError, match="start must be one of the classical fills"):
        evaluate_inpainting(model, original, 4, start="noise")


# ---------------------------------------------------------------------------------------------
# The app


def inpaint_cfg(tmp_path, trained_run, *overrides):
    _, results = trained_run
    return compose_cfg(tmp_path, f"ckpt={results['last_ckpt']}", f"out={tmp_path / 'inpaint.png'}", *overrides,
                       config="inpaint")


def test_inpaint_app_draws_completions_of_one_corruption(tmp_path, trained_run):
    metrics = pictures.inpaint(inpaint_cfg(tmp_path, trained_run, "image=0", "size=4", "samples=3",
                                       "steps=2", "sampler_steps=3", "burn_in=1", "compare_all=false"))
    assert {"biharmonic", "posterior", "seconds_posterior"} <= set(metrics) and metrics["samples"] == 3
    samples = Image.open(tmp_path / "inpaint_samples.png")
    assert samples.width > 3 * samples.height  # one row: corrupted, 3 samples, median, original, mask


@pytest.mark.parametrize(("overrides", "message"), [(["sampler_steps=5", "burn_in=5"], "leaves no samples"),
                                                   (["start=noise"], "not a classical fill"),
                                                   (["samples=-1"], "posterior chains")])
def test_inpaint_app_rejects_a_bad_sampler(tmp_path, trained_run, overrides, message):
    with pytest.raises(UserError, match=message):
        pictures.inpaint(inpaint_cfg(tmp_path, trained_run, *overrides))
