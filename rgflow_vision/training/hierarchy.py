"""The hierarchy pictures (receptive fields, mixing, inpainting) as the apps and callbacks draw them."""

from __future__ import annotations


import torch
from PIL import Image

from .. import analysis
from ..analysis import plots
from ..model import RGFlowModel
from .images import image_grid


INPAINT_COLUMNS = ("corrupted", "harmonic", "cone", "all", "original")


def inpainting_picture(evaluation: analysis.InpaintEvaluation, count: int = 8, columns=INPAINT_COLUMNS) -> Image.Image:
    """The first ``count`` images of an inpainting evaluation, one row each, the mask last."""
    names = {"all": "all latents"}
    return plots.inpainting_panel([(names.get(c, c), evaluation.images[c][:count]) for c in columns],
                                  evaluation.masks[:count])


def inpainting_table(metrics: dict) -> str:
    """The evaluation as the app prints it."""
    rows = [f"{'':<13}{'masked error':>13}{'latents/image':>15}{'seconds/image':>15}"]
    for name, label in (("corrupted", "corrupted"), ("harmonic", "harmonic fill")):
        rows.append(f"{label:<13}{metrics[name]:>13.2f}")
    for name, label in (("cone", "cone"), ("all", "all latents")):
        rows.append(f"{label:<13}{metrics[name]:>13.2f}{metrics[name + '_latents']:>15.0f}"
                    f"{metrics['seconds_' + name]:>15.2f}")
    where = metrics["at"] if isinstance(metrics["at"], str) else f"at {metrics['at']}"
    rows.append(f"({metrics['n']} image(s), {metrics['size']}x{metrics['size']} noise box {where}, seed "
                f"{metrics['seed']}; masked error: mean |restored - original| over the box, in pixel levels)")
    return "\n".join(rows)


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

