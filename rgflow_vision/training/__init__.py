"""Lightning training of RG-Flow: the module, callbacks, checkpoints and the apps' tasks."""

from . import config  # registers the OmegaConf resolvers the configs use
from .callbacks import SampleGrid
from .module import FlowLitModule, NonFiniteLossError

__all__ = ["FlowLitModule", "NonFiniteLossError", "SampleGrid"]
