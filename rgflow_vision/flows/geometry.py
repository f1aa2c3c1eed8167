"""Lattice geometry of the RG hierarchy: levels, block partitions and causal cones.

Level ``h`` acts on the active sublattice ``x[..., ::2**h, ::2**h]``. A layer cuts that
sublattice into ``K x K`` blocks, aligned (decimator) or shifted by ``K/2`` with periodic
wrap-around (disentangler), and hands them to its block bijection as one batch
``(B * blocks, C*K*K)``. Everything here is a strided view, a roll or a reshape: no index
tensors, and no copy larger than the active sublattice.
"""

from __future__ import annotations

import torch

from ..sizes import is_power_of_two


def num_levels(image_size: int, block_size: int = 4) -> int:
    """``H = log2(L / K) + 1``; raises ``ValueError`` for sizes the hierarchy cannot tile."""
    if block_size < 2 or not is_power_of_two(block_size):
        raise ValueError(f"block size {block_size} is not allowed: use an even power of two such as 4")
    if image_size < block_size or not is_power_of_two(image_size):
        raise ValueError(
            f"image size {image_size} is not allowed: RG-Flow needs a power of two no smaller than "
            f"the block size {block_size} (for example 8, 16, 32 or 64); resize or pad the images"
        )
    return (image_size // block_size).bit_length()


def level_map(image_size: int, block_size: int = 4) -> torch.Tensor:
    """Level of every site: the trailing zero bits common to row and column, capped at ``H-1``."""
    levels = torch.zeros(image_size, image_size, dtype=torch.long)
    for h in range(1, num_levels(image_size, block_size)):
        levels[:: 2**h, :: 2**h] = h
    return levels


def layer_schedule(levels: int, block_size: int = 4, depth: int = 1) -> list[tuple[int, int]]:
    """``(level, shift)`` of every layer in the RG (encode) direction: ``depth`` times a
    disentangler, then a decimator, per level."""
    return [(h, shift) for h in range(levels) for _ in range(depth) for shift in (block_size // 2, 0)]


def to_blocks(x: torch.Tensor, block_size: int, shift: int) -> torch.Tensor:
    """``(B, C, M, M) -> (B * (M/K)**2, C*K*K)``: the blocks of one layer as a batch of vectors."""
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(-2, -1))
    b, c, m, _ = x.shape
    n, k = m // block_size, block_size
    return x.reshape(b, c, n, k, n, k).permute(0, 2, 4, 1, 3, 5).reshape(b * n * n, c * k * k)


def from_blocks(y: torch.Tensor, batch: int, channels: int, size: int, block_size: int, shift: int) -> torch.Tensor:
    """Inverse of :func:`to_blocks`."""
    n, k = size // block_size, block_size
    x = y.reshape(batch, n, n, channels, k, k).permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, size, size)
    if shift:
        x = torch.roll(x, shifts=(shift, shift), dims=(-2, -1))
    return x


def interleave(fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """``fine`` with its even sublattice ``[..., ::2, ::2]`` replaced by ``coarse`` (out of place)."""
    out = fine.clone()
    out[..., ::2, ::2] = coarse
    return out


def causal_cone(sites: torch.Tensor, block_size: int = 4, direction: str = "encode", depth: int = 1) -> torch.Tensor:
    """Sites that can depend on ``sites`` (a boolean ``(L, L)`` mask), from the geometry alone.

    ``direction="encode"``: the latents (in ``z``'s layout) that a change of the pixels in
    ``sites`` can reach. ``direction="decode"``: the pixels that a change of the latents in
    ``sites`` can reach. Each layer spreads a change to every site of each block it touches;
    levels a site does not belong to never see it.
    """
    if direction not in ("encode", "decode"):
        raise ValueError(f"direction must be 'encode' or 'decode', got {direction!r}")
    size = sites.shape[-1]
    schedule = layer_schedule(num_levels(size, block_size), block_size, depth)
    if direction == "decode":
        schedule = schedule[::-1]
    cone = sites.bool().clone()
    for h, shift in schedule:
        active = cone[:: 2**h, :: 2**h][None, None].to(torch.uint8)
        m = active.shape[-1]
        touched = to_blocks(active, block_size, shift).amax(dim=1, keepdim=True)
        spread = from_blocks(touched.expand(-1, block_size**2), 1, 1, m, block_size, shift)
        cone[:: 2**h, :: 2**h] = spread[0, 0].bool()
    return cone


def cone_width(level: int, block_size: int = 4) -> int:
    """Side of the square window holding the decode cone of one level-``h`` latent.

    The decimator spreads the latent over its ``K 2^h`` block, the disentangler over the two
    shifted blocks on each side (``2K 2^h``); every finer level ``l`` adds a half block,
    ``(K/2) 2^l``, on each side. Summed: ``2K 2^h + K (2^h - 1)``, which is 8 for ``h = 0``.
    """
    return 2 * block_size * 2**level + block_size * (2**level - 1)
