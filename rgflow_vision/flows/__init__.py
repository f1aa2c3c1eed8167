"""Bijective pieces of RG-Flow; they import only torch."""

from .bijections import BIJECTIONS
from .conditioner import ResidualMLP, Swish
from .coupling import Coupling, BlockFlow, checkerboard
from .geometry import causal_cone, cone_width, layer_schedule, level_map, num_levels
from .ode import ODEBlock
from .preprocess import PixelTransform
from .rgflow import RGFlow

__all__ = [
    "BIJECTIONS",
    "Coupling",
    "BlockFlow",
    "ODEBlock",
    "PixelTransform",
    "RGFlow",
    "ResidualMLP",
    "Swish",
    "causal_cone",
    "checkerboard",
    "cone_width",
    "layer_schedule",
    "level_map",
    "num_levels",
]
