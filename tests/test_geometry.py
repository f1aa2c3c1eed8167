"""The lattice of the hierarchy: sizes, levels, blocks and causal cones."""

import pytest
import torch

from rgflow_vision.flows import causal_cone, cone_width, geometry, level_map, num_levels

from .conftest import site_mask


@pytest.mark.parametrize("size, levels", [(4, 1), (8, 2), (16, 3), (32, 4), (64, 5), (128, 6)])
def test_number_of_levels_is_log2_L_over_K_plus_one(size, levels):
    assert num_levels(size) == levels


@pytest.mark.parametrize("size", [0, 2, 3, 6, 12, 24, 48, 100])
def test_sizes_that_cannot_be_tiled_are_rejected_with_the_size_named(size):
    with pytest.raises(ValueError, match=rf"image size {size} is not allowed.*power of two"):
        num_levels(size)


def trailing_zeros_level(i: int, j: int, top: int) -> int:
    h = 0
    while h < top and i % 2 ** (h + 1) == 0 and j % 2 ** (h + 1) == 0:
        h += 1
    return h


@pytest.mark.parametrize("size", [8, 16, 32])
def test_level_is_the_number_of_common_trailing_zero_bits_capped_at_H_minus_1(size):
    top = num_levels(size) - 1
    expected = torch.tensor([[trailing_zeros_level(i, j, top) for j in range(size)] for i in range(size)])
    assert torch.equal(level_map(size), expected)


def test_latent_counts_per_level_for_32x32_rgb():
    counts = [3 * int((level_map(32) == h).sum()) for h in range(4)]
    assert counts == [2304, 576, 144, 48]
    assert sum(counts) == 3 * 32 * 32


def test_every_level_keeps_a_quarter_of_its_sublattice_and_the_top_keeps_one_block():
    for size in (16, 32, 64):
        levels = level_map(size)
        for h in range(num_levels(size) - 1):
            active = (size // 2**h) ** 2
            assert int((levels == h).sum()) == active * 3 // 4
        assert int((levels == num_levels(size) - 1).sum()) == 16


def test_aligned_and_shifted_blocks_are_the_expected_pixels():
    x = torch.randn(2, 3, 16, 16)
    aligned = geometry.to_blocks(x, 4, 0).view(2, 4, 4, 3, 4, 4)
    assert torch.equal(aligned[1, 2, 3], x[1, :, 8:12, 12:16])
    shifted = geometry.to_blocks(x, 4, 2).view(2, 4, 4, 3, 4, 4)
    assert torch.equal(shifted[0, 1, 0], x[0, :, 6:10, 2:6])
    wrapped = torch.cat([x[0, :, 14:, :], x[0, :, :2, :]], dim=1)  # periodic wrap-around
    assert torch.equal(shifted[0, 3, 0], wrapped[:, :, 2:6])


@pytest.mark.parametrize("shift", [0, 2])
def test_blocks_round_trip(shift):
    x = torch.randn(3, 2, 16, 16)
    blocks = geometry.to_blocks(x, 4, shift)
    assert blocks.shape == (3 * 16, 2 * 16)
    assert torch.equal(geometry.from_blocks(blocks, 3, 2, 16, 4, shift), x)


def bounding_box(mask):
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    return rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()


@pytest.mark.parametrize("h, width", [(0, 8), (1, 20), (2, 44)])
def test_decode_cone_of_a_level_h_latent_is_a_square_of_side_12_2h_minus_4(h, width):
    assert cone_width(h) == width
    size = 128
    site = (2**h * 13, 2**h * 21)  # odd multiples of 2^h: a level-h site
    assert level_map(size)[site] == h
    cone = causal_cone(site_mask(size, *site), direction="decode")
    top, bottom, left, right = bounding_box(cone)
    assert (bottom - top + 1, right - left + 1) == (width, width)
    assert int(cone.sum()) == width * width  # a full square: every pixel in it can move
    # The square sits around the aligned level-h block holding the latent.
    block = 4 * 2**h
    assert top == site[0] // block * block - 2 ** (h + 2) + 2


def test_encode_cone_of_one_pixel_holds_O_log_N_latents():
    counts = []
    for size in (16, 32, 64, 128):
        cone = causal_cone(site_mask(size, size // 2 + 1, size // 2 + 1), direction="encode")
        counts.append(int(cone.sum()))
    steps = [b - a for a, b in zip(counts, counts[1:])]
    assert counts[0] < 16 * 16 and all(0 < s <= counts[0] for s in steps), counts
    # doubling L adds a bounded number of latents (one more level), it does not quadruple
    assert counts[-1] < 4 * counts[0]


def test_encode_and_decode_cones_are_dual():
    # latent l is in the encode cone of pixel p iff p is in the decode cone of l
    size = 16
    for p in [(0, 0), (5, 9), (15, 2)]:
        enc = causal_cone(site_mask(size, *p), direction="encode")
        for l in [(0, 0), (4, 8), (6, 9), (8, 0), (1, 1)]:
            dec = causal_cone(site_mask(size, *l), direction="decode")
            assert bool(enc[l]) == bool(dec[p])
