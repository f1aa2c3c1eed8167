"""Lightning training of RG-Flow: the image LightningModule, its callbacks, checkpoint I/O.

The apps that drive it live in :mod:`rgflow_vision.apps`."""

from .callbacks import HierarchyPictures, SampleGrid, save_and_log
from .checkpoint import load_module
from .module import FlowLitModule, NonFiniteLossError

__all__ = ["FlowLitModule", "HierarchyPictures", "NonFiniteLossError", "SampleGrid", "load_module", "save_and_log"]
