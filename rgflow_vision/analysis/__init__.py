"""Using the hierarchy: receptive fields, multi-scale mixing, mixed temperatures, inpainting.

Uses the flow, the priors and the model; no Lightning, no matplotlib: the figures of these tools
are drawn by :mod:`rgflow_vision.plots`.
"""

from ._common import AnalysisError
from .inpainting import (
    ConeEncoder,
    InpaintEvaluation,
    InpaintResult,
    PosteriorResult,
    biharmonic_fill,
    box_masks,
    classical_fills,
    corrupt,
    corruption_cone,
    evaluate_inpainting,
    harmonic_fill,
    inpaint,
    masked_errors,
    posterior_inpaint,
    telea_available,
    telea_fill,
)
from .mixing import mix, mix_all, mix_flow, mix_latents, mixed_temperature_latents, sample_mixed_temperature
from .receptive_fields import ReceptiveFields, periodic_distance, radius_of_mass, receptive_fields

__all__ = [
    "AnalysisError",
    "ConeEncoder",
    "InpaintEvaluation",
    "InpaintResult",
    "PosteriorResult",
    "biharmonic_fill",
    "classical_fills",
    "box_masks",
    "corrupt",
    "ReceptiveFields",
    "corruption_cone",
    "evaluate_inpainting",
    "harmonic_fill",
    "inpaint",
    "masked_errors",
    "mix",
    "mix_all",
    "mix_flow",
    "mix_latents",
    "mixed_temperature_latents",
    "periodic_distance",
    "posterior_inpaint",
    "radius_of_mass",
    "receptive_fields",
    "sample_mixed_temperature",
    "telea_available",
    "telea_fill",
]
