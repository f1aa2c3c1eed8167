"""The hierarchy in use: causal cones, receptive fields, mixing, mixed temperatures, inpainting, plots."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from rgflow_vision import RGFlowModel
from rgflow_vision.analysis import (
    ConeEncoder,
    box_masks,
    corruption_cone,
    evaluate_inpainting,
    harmonic_fill,
    inpaint,
    mix,
    mix_all,
    mix_flow,
    mix_latents,
    mixed_temperature_latents,
    receptive_fields,
    sample_mixed_temperature,
)
from rgflow_vision.analysis._common import encode_midbin
from rgflow_vision.errors import UserError
from rgflow_vision.flows import PixelTransform, causal_cone, cone_width
from rgflow_vision.priors import build_prior

from .conftest import perturbed_flow


pytestmark = pytest.mark.usefixtures("one_thread")


def perturbed_model(channels: int, size: int, seed: int = 0) -> RGFlowModel:
    flow = perturbed_flow(channels, size, seed=seed)
    return RGFlowModel(flow, build_prior("laplace", channels, size), PixelTransform(8))


def images(batch: int, channels: int, size: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (batch, channels, size, size), generator=torch.Generator().manual_seed(seed))


def square_mask(size: int, top: int, left: int, k: int) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[top : top + k, left : left + k] = True
    return mask


# ---------------------------------------------------------------------------------------------
# Causal cone of a corruption


def test_corruption_cone_holds_exactly_the_latents_whose_decode_jacobian_touches_the_mask():
    size, channels = 16, 2
    flow = perturbed_flow(channels, size, dtype=torch.float64).eval()
    mask = square_mask(size, 5, 9, 3)
    mask[14, 1] = True  # and a lone pixel across the periodic boundary of the blocks
    z = torch.randn(1, channels, size, size, dtype=torch.float64)

    def masked_pixels(v):
        return flow.decode(v.view_as(z))[0][..., mask].flatten()

    jac = torch.autograd.functional.jacobian(masked_pixels, z.flatten(), vectorize=True)
    touches = (jac != 0).any(dim=0).view(channels, size, size).any(dim=0)
    cone = corruption_cone(mask)
    assert torch.equal(touches, cone), f"{int((touches ^ cone).sum())} sites differ"
    assert 0 < int(cone.sum()) < size * size


# ---------------------------------------------------------------------------------------------
# Mixing and mixed temperatures


@pytest.fixture(scope="module")
def model16():
    return perturbed_model(3, 16).eval()


def test_cut_0_returns_image_A_and_cut_H_returns_image_B_exactly(model16):
    x_a, x_b = images(3, 3, 16, seed=1), images(3, 3, 16, seed=2)
    levels = model16.flow.num_levels
    assert torch.equal(mix(model16, x_a, x_b, 0), x_a)
    assert torch.equal(mix(model16, x_a, x_b, levels), x_b)
    every = mix_all(model16, x_a, x_b)
    assert every.shape == (levels + 1, 3, 3, 16, 16) and every.dtype == torch.long
    assert torch.equal(every[0], x_a) and torch.equal(every[-1], x_b)
    assert all(torch.equal(every[hc], mix(model16, x_a, x_b, hc)) for hc in range(1, levels))
    assert not torch.equal(every[1], x_a) and not torch.equal(every[1], x_b)


@pytest.mark.parametrize("hc", [1, 2])
def test_mix_takes_levels_at_or_above_the_cut_from_A_and_the_others_from_B(model16, hc):
    flow = model16.flow
    y_a, y_b = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    z_a, z_b = flow.encode(y_a)[0], flow.encode(y_b)[0]
    z_mix, _ = flow.encode(mix_flow(flow, y_a, y_b, hc))
    coarse = flow.level_map() >= hc
    assert torch.allclose(z_mix[..., coarse], z_a[..., coarse], atol=1e-4)
    assert torch.allclose(z_mix[..., ~coarse], z_b[..., ~coarse], atol=1e-4)
    # the coarse latents are z[..., ::2**hc, ::2**hc]
    coarse_sites = mix_latents(z_a, z_b, hc, flow.level_map())[..., :: 2**hc, :: 2**hc]
    assert torch.equal(coarse_sites, z_a[..., :: 2**hc, :: 2**hc])


def test_integer_mix_decodes_the_mixed_mid_bin_latents(model16):
    x_a, x_b = images(2, 3, 16, seed=3), images(2, 3, 16, seed=4)
    _, z_a = encode_midbin(model16, x_a)
    _, z_b = encode_midbin(model16, x_b)
    expected = model16.pixels.inverse(model16.flow.decode(mix_latents(z_a, z_b, 2, model16.flow.level_map()))[0])
    assert torch.equal(mix(model16, x_a, x_b, 2), expected)


@pytest.mark.parametrize("hc", [-1, 4, 1.5, "2", True])
def test_a_cut_out_of_range_is_a_value_error_that_names_the_range(model16, hc):
    x = images(1, 3, 16, seed=5)
    with pytest.raises(ValueError, match=r"hc must be .*between 0 and 3") as info:
        mix(model16, x, x, hc)
    assert isinstance(info.value, UserError)  # apps show the sentence without a traceback


def test_mixing_images_of_different_shapes_is_a_value_error(model16):
    with pytest.raises(ValueError, match="x_b must be a batch of integer images of shape"):
        mix(model16, images(1, 3, 16, seed=0), images(1, 1, 16, seed=0), 1)
    with pytest.raises(ValueError, match="same shape"):
        mix(model16, images(1, 3, 16, seed=0), images(2, 3, 16, seed=0), 1)


def test_mixed_temperature_draws_each_level_at_its_own_temperature(model16):
    prior, levels = model16.prior, model16.flow.level_map()
    z = mixed_temperature_latents(prior, levels, 4, 0.0, 2.0, 2, torch.Generator().manual_seed(7))
    fine = levels < 2
    assert torch.count_nonzero(z[..., fine]) == 0  # temperature 0 on the fine levels
    reference = prior.sample(4, 2.0, torch.Generator().manual_seed(7))  # the same noise, all at 2.0
    assert torch.equal(z[..., ~fine], reference[..., ~fine])
    hot_fine = mixed_temperature_latents(prior, levels, 4, 1.5, 0.0, 1, torch.Generator().manual_seed(7))
    assert torch.count_nonzero(hot_fine[..., levels >= 1]) == 0
    reference = prior.sample(4, 1.5, torch.Generator().manual_seed(7))
    assert torch.equal(hot_fine[..., levels < 1], reference[..., levels < 1])


def test_mixed_temperature_samples_are_integer_images_and_all_cold_is_the_zero_latent(model16):
    x = sample_mixed_temperature(model16, 3, 0.5, 1.0, 1, torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.long and 0 <= x.min() and x.max() <= 255
    cold = sample_mixed_temperature(model16, 2, 0.0, 0.0, 2)
    assert torch.equal(cold, model16.sample(2, temperature=0.0))
    with pytest.raises(ValueError, match=r"split_level must be between 0 and 3"):
        sample_mixed_temperature(model16, 1, 1.0, 1.0, 4)


# ---------------------------------------------------------------------------------------------
# Receptive fields


@pytest.fixture(scope="module")
def rf16():
    flow = perturbed_flow(2, 16, seed=0)
    prior = build_prior("laplace", 2, 16)
    generator = torch.Generator().manual_seed(0)
    rf = receptive_fields(flow, prior, num_samples=2, max_sites=None, mode="reverse", generator=generator)
    return flow, rf


def test_receptive_fields_are_non_negative_and_centred_on_their_latent(rf16):
    flow, rf = rf16
    assert rf.mean_maps.shape == rf.centre_maps.shape == (3, 16, 16)
    assert rf.centre == (8, 8) and rf.num_sites == [192, 48, 16] and rf.num_samples == 2
    levels = flow.level_map()
    for h in range(3):
        assert levels[rf.sites[h]] == h
        for m in (rf.centre_maps[h], rf.mean_maps[h]):
            assert (m >= 0).all()
            assert divmod(int(m.argmax()), 16) == (8, 8), f"level {h}: the strongest response is not at the latent"


def test_receptive_field_lies_inside_the_decode_cone_of_its_latent(rf16):
    flow, rf = rf16
    for h in range(3):
        site = torch.zeros(16, 16, dtype=torch.bool)
        site[rf.sites[h]] = True
        shift = (8 - rf.sites[h][0], 8 - rf.sites[h][1])
        cone = torch.roll(causal_cone(site, direction="decode"), shift, dims=(0, 1))
        support = rf.centre_maps[h] > 0
        assert not (support & ~cone).any()
        rows, cols = support.any(1).nonzero(), support.any(0).nonzero()
        side = min(cone_width(h), 16)
        assert rows.max() - rows.min() < side and cols.max() - cols.min() < side
    assert int((rf.centre_maps[0] > 0).sum()) == cone_width(0) ** 2  # a level-0 latent moves its whole 8x8 cone


def test_receptive_field_radius_grows_strictly_with_the_level(rf16):
    _, rf = rf16
    assert all(a < b for a, b in zip(rf.radius, rf.radius[1:])), rf.radius
    assert rf.radius[0] <= cone_width(0) / 2 + 1


def test_receptive_fields_by_forward_mode_jvp_equal_the_reverse_mode_jacobian():
    size, channels = 8, 2
    flow = perturbed_flow(channels, size, seed=3)
    z = torch.randn(2, channels, size, size)
    rf = receptive_fields(flow, z=z, max_sites=None)  # the default: forward-mode AD
    jac = torch.stack(
        [torch.autograd.functional.jacobian(lambda v: flow.decode(v[None])[0][0], s, vectorize=True) for s in z]
    )  # (S, C_out, L, L, C_in, L, L)
    per_site = jac.abs().sum(dim=1).mean(dim=0).mean(dim=2)  # (L, L) pixels, (L, L) latent sites
    levels = flow.level_map()
    for h in range(flow.num_levels):
        sites = (levels == h).nonzero().tolist()
        rolled = {tuple(s): torch.roll(per_site[..., s[0], s[1]], (4 - s[0], 4 - s[1]), dims=(0, 1)) for s in sites}
        mean = sum(rolled.values()) / len(sites)
        assert torch.allclose(rf.mean_maps[h], mean, atol=1e-5)
        assert torch.allclose(rf.centre_maps[h], rolled[rf.sites[h]], atol=1e-5)
    reverse = receptive_fields(flow, z=z, max_sites=None, mode="reverse")
    assert torch.allclose(reverse.mean_maps, rf.mean_maps, atol=1e-5)


def test_a_capped_number_of_sites_keeps_the_centre_latent():
    flow = perturbed_flow(1, 16, seed=1)
    z = torch.randn(1, 1, 16, 16)
    full = receptive_fields(flow, z=z, max_sites=None, mode="reverse")
    capped = receptive_fields(flow, z=z, max_sites=5, mode="reverse", generator=torch.Generator().manual_seed(0))
    assert capped.num_sites == [5, 5, 5] and capped.sites == full.sites
    assert torch.allclose(capped.centre_maps, full.centre_maps, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Inpainting


@pytest.fixture(scope="module")
def corrupted16(model16):
    original = model16.sample(2, temperature=0.7, generator=torch.Generator().manual_seed(0))
    mask = square_mask(16, 6, 7, 4)
    corrupted = original.clone()
    corrupted[..., mask] = images(2, 3, 16, seed=9)[..., mask]
    return original, corrupted, mask


@pytest.fixture(scope="module")
def inpainted(model16, corrupted16):
    original, corrupted, mask = corrupted16
    return {cone: inpaint(model16, corrupted, mask, cone=cone, steps=30, original=original) for cone in (True, False)}


def test_inpainting_never_moves_a_latent_outside_the_cone(model16, corrupted16, inpainted):
    _, corrupted, mask = corrupted16
    result = inpainted[True]
    _, z0 = encode_midbin(model16, corrupted)
    outside = ~result.latent_mask
    assert torch.equal(result.z[outside], z0[outside])  # bit for bit
    assert not torch.equal(result.z[~outside], z0[~outside])


def test_inpainting_through_the_cone_keeps_every_observed_pixel(corrupted16, inpainted):
    _, corrupted, mask = corrupted16
    assert torch.equal(inpainted[True].restored[..., ~mask], corrupted[..., ~mask])
    assert not torch.equal(inpainted[True].restored[..., mask], corrupted[..., mask])


def test_inpainting_updates_exactly_the_latents_of_the_geometric_cone(inpainted, corrupted16):
    _, _, mask = corrupted16
    sites = int(causal_cone(mask, direction="encode").sum())
    assert inpainted[True].latents_updated == 2 * 3 * sites  # batch x channels x sites
    assert inpainted[False].latents_updated == 2 * 3 * 16 * 16
    assert inpainted[True].latents_updated < inpainted[False].latents_updated


def test_the_full_cone_reaches_every_pixel_through_its_top_level_latents(inpainted, corrupted16):
    _, _, mask = corrupted16
    result = inpainted[True]
    footprint = causal_cone(causal_cone(mask, direction="encode"), direction="decode")
    assert torch.equal(result.footprint, footprint.expand(2, -1, -1))
    assert footprint.all()


@pytest.mark.parametrize(("channels", "size", "depth"), [(1, 16, 1), (3, 32, 1), (1, 16, 2)])
def test_the_cone_encoder_is_encode_on_the_blocks_the_hole_reaches(channels, size, depth):
    flow = perturbed_flow(channels, size, dtype=torch.float64, depth=depth).eval()
    reference = torch.randn(3, channels, size, size, dtype=torch.float64)
    masks = box_masks(size, 5, 3, "random", torch.Generator().manual_seed(3))
    encoder = ConeEncoder(flow, reference, masks)
    x = torch.where(masks[:, None], torch.randn_like(reference), reference)  # differs only in the holes
    z, logdet = encoder(x)
    z_full, logdet_full = flow.encode(x)
    assert torch.allclose(z, z_full, atol=1e-12) and torch.allclose(logdet + encoder.logdet_rest, logdet_full)
    cone = corruption_cone(masks, depth=depth)[:, None].expand_as(z)
    z_reference = flow.encode(reference)[0]
    assert torch.equal(z[~cone], z_reference[~cone]) and (z[cone] != z_reference[cone]).all()  # the cone, tight
    all_blocks = 3 * depth * sum(2 * (size >> h) ** 2 // 16 for h in range(flow.num_levels))
    assert encoder.blocks < all_blocks  # the networks run on the cone's blocks only


def test_inpainting_lowers_the_objective_and_reports_error_time_and_history(inpainted):
    for result in inpainted.values():
        assert result.loss < result.initial_loss and len(result.history) == 31
        assert result.error is not None and result.error < result.error_before
        assert result.seconds > 0 and result.restored.dtype == torch.long


def test_the_harmonic_fill_solves_laplace_with_the_observed_pixels_as_boundary():
    ramp = (torch.arange(16) * 12).expand(1, 2, 16, 16).clone()  # linear in the column: harmonic already
    corrupted = torch.where(square_mask(16, 3, 4, 6), 0, ramp)
    assert torch.equal(harmonic_fill(corrupted, square_mask(16, 3, 4, 6)), ramp)
    mask = square_mask(16, 3, 0, 6)  # touching the image edge, which reflects
    bumpy = images(1, 1, 16, seed=3)
    filled = harmonic_fill(bumpy, mask).double()
    # At the edge the missing neighbour is dropped, i.e. the pixel is its own 4th neighbour: replicate.
    padded = torch.nn.functional.pad(filled, (1, 1, 1, 1), mode="replicate")
    neighbours = (padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:]) / 4
    assert (filled[..., mask] - neighbours[..., mask]).abs().max() <= 1.0  # rounding to integer levels
    assert torch.equal(filled[..., ~mask], bumpy[..., ~mask].double())


def stripes(n: int, generator: torch.Generator) -> torch.Tensor:
    """8x8 images of period-4 bars, vertical or horizontal, at a random phase."""
    offset = torch.randint(0, 4, (n, 1, 1), generator=generator)
    vertical = torch.rand(n, 1, 1, generator=generator) < 0.5
    i = torch.arange(8)
    bars = torch.where(vertical, (i[None, None, :] + offset) % 4 < 2, (i[None, :, None] + offset) % 4 < 2)
    return bars.long()[:, None] * 255


def test_a_model_that_knows_the_bars_restores_a_box_the_harmonic_fill_cannot():
    generator = torch.Generator().manual_seed(0)
    model = RGFlowModel.build(1, 8, hidden=32, num_res_blocks=1, couplings=[2])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(120):
        loss = model.bpd(stripes(64, generator)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    evaluation = evaluate_inpainting(model, stripes(16, generator), 2, "random", seed=1, steps=100)
    m = evaluation.metrics
    assert m["cone"] < 0.25 * m["harmonic"] and m["cone"] < 0.25 * m["corrupted"], m
    assert m["observed_changed_cone"] == 0.0 and set(evaluation.images) >= {"harmonic", "cone", "all"}


@pytest.mark.parametrize(
    ("args", "message"),
    [((8, 0), "size 0 does not fit"), ((8, 9), "does not fit the 8x8"), ((8, 4, 1, (5, 0)), "leaves the 8x8"),
     ((8, 4, 1, "corner"), "at must be")],
)
def test_a_box_that_does_not_fit_is_a_clear_error(args, message):
    with pytest.raises(UserError, match=message):
        box_masks(*args)


def test_random_boxes_are_seeded_and_inside_the_image():
    a = box_masks(16, 4, 50, "random", torch.Generator().manual_seed(1))
    b = box_masks(16, 4, 50, "random", torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and (a.flatten(1).sum(1) == 16).all()
    assert len({tuple(m.nonzero()[0].tolist()) for m in a}) > 10  # positions vary


@pytest.mark.parametrize(
    "bad", [torch.zeros(16, 15, dtype=torch.bool), torch.zeros(3, 16, 16, dtype=torch.bool), torch.zeros(16, 16)]
)
def test_a_mask_of_the_wrong_shape_or_dtype_is_a_clear_value_error(model16, corrupted16, bad):
    _, corrupted, _ = corrupted16
    with pytest.raises(ValueError, match=r"mask must be a boolean tensor .* shape \(16, 16\) or \(2, 16, 16\)"):
        inpaint(model16, corrupted, bad)


def test_a_per_image_mask_gives_each_image_its_own_cone(model16, corrupted16):
    _, corrupted, _ = corrupted16
    masks = torch.stack([square_mask(16, 0, 0, 2), square_mask(16, 8, 8, 2)])
    result = inpaint(model16, corrupted, masks, steps=1)
    for b in range(2):
        assert torch.equal(result.latent_mask[b, 0], corruption_cone(masks[b]))


# ---------------------------------------------------------------------------------------------
# Figures


def test_figures_are_pil_images(rf16, model16, corrupted16, inpainted):
    from rgflow_vision.plots import inpainting_panel, mixing_grid, receptive_field_figure

    _, rf = rf16
    original, corrupted, mask = corrupted16
    figures = [
        receptive_field_figure(rf.mean_maps, rf.radius, title="receptive fields"),
        mixing_grid(original, corrupted, mix_all(model16, original, corrupted)),
        inpainting_panel([("corrupted", corrupted), ("cone", inpainted[True].restored), ("original", original)], mask),
        inpainting_panel([("corrupted", corrupted[:, :1]), ("cone", corrupted[:, :1])]),  # grey images, no mask
    ]
    for figure in figures:
        assert isinstance(figure, Image.Image) and figure.mode == "RGB"
        assert figure.width > 100 and figure.height > 50
