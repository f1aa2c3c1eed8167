"""The hierarchy pictures (receptive fields, mixing, inpainting) as the apps and callbacks draw them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from .. import analysis
from ..analysis import plots
from ..errors import UserError
from ..model import RGFlowModel
from .images import image_grid


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


@dataclass
class InpaintComparison:
    """Inpainting by the causal cone against all latents, on the same corruption."""

    cone: analysis.InpaintResult
    full: analysis.InpaintResult
    picture: Image.Image

    def summary(self) -> str:
        rows = [f"{'':<12}{'latents':>9}{'masked error':>14}{'seconds':>9}",
                f"{'corrupted':<12}{'':>9}{self.cone.error_before:>14.2f}{'':>9}"]
        for name, r in (("cone", self.cone), ("all latents", self.full)):
            rows.append(f"{name:<12}{r.latents_updated:>9}{r.error:>14.2f}{r.seconds:>9.2f}")
        return "\n".join(rows) + "\n(masked error: mean |restored - original| over the masked pixels, in pixel levels)"


def compare_inpainting(
    model: RGFlowModel, original: torch.Tensor, mask: torch.Tensor, steps: int = 100, lr: float = 0.05, seed: int = 0
) -> InpaintComparison:
    """Corrupt ``original`` (integer images) inside ``mask``, restore it twice, and draw the four columns."""
    corrupted = corrupt(original, mask, model.pixels.levels, seed)
    results = [analysis.inpaint(model, corrupted, mask, cone=cone, steps=steps, lr=lr, original=original)
               for cone in (True, False)]
    picture = plots.inpainting_panel(corrupted, results[0].restored, results[1].restored, original, mask,
                                     bits=model.pixels.bits)
    return InpaintComparison(results[0], results[1], picture)


def receptive_field_picture(
    model: RGFlowModel, num_samples: int = 4, max_sites: int | None = 16, seed: int = 0
) -> tuple[analysis.ReceptiveFields, Image.Image]:
    fields = analysis.receptive_fields(model.flow, model.prior, num_samples=num_samples, max_sites=max_sites,
                                       generator=torch.Generator().manual_seed(seed))
    title = f"receptive fields (mean over sites, {int(100 * fields.mass)}% mass radius)"
    return fields, plots.receptive_field_figure(fields.mean_maps, fields.radius, fields.centre, title=title)


def mixing_picture(model: RGFlowModel, x_a: torch.Tensor, x_b: torch.Tensor, hc: int | str = "all") -> Image.Image:
    """Sources and mixes: every cut with ``hc="all"``, else the one cut ``hc``."""
    mixes = analysis.mix_all(model, x_a, x_b, None if hc == "all" else [hc])
    if hc == "all":
        return plots.mixing_grid(x_a, x_b, mixes, bits=model.pixels.bits)
    return image_grid(torch.cat([x_a, x_b, mixes[0]]), model.pixels.bits, nrow=len(x_a))

