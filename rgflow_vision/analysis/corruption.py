"""Local corruptions to restore: a box mask and uniform noise inside it."""

from __future__ import annotations

import torch

from ..errors import UserError


def box_mask(image_size: int, size: int, at: tuple[int, int] | None = None) -> torch.Tensor:
    """Boolean ``(L, L)`` mask of a ``size x size`` box with its top-left corner at ``at`` (default: centred)."""
    if not 1 <= size <= image_size:
        raise UserError(f"a mask of size {size} does not fit the {image_size}x{image_size} image: "
                        f"choose size between 1 and {image_size}")
    top, left = at if at is not None else ((image_size - size) // 2, (image_size - size) // 2)
    if not (0 <= top <= image_size - size and 0 <= left <= image_size - size):
        raise UserError(f"a {size}x{size} box at {(top, left)} leaves the {image_size}x{image_size} image: "
                        f"keep its top-left corner within 0..{image_size - size}")
    mask = torch.zeros(image_size, image_size, dtype=torch.bool)
    mask[top : top + size, left : left + size] = True
    return mask


def corrupt(x: torch.Tensor, mask: torch.Tensor, levels: int, seed: int = 0) -> torch.Tensor:
    """``x`` with the masked pixels replaced by uniform noise (a local corruption, seeded)."""
    noise = torch.randint(0, levels, x.shape, generator=torch.Generator().manual_seed(seed)).to(x)
    return torch.where(mask.to(x.device), noise, x)
