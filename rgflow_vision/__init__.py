"""rgflow-vision: RG-Flow, the hierarchical normalizing flow built from bijective RG steps."""

from .flows import RGFlow
from .model import RGFlowModel
from .priors import GaussianPrior, LaplacePrior

__all__ = ["GaussianPrior", "LaplacePrior", "RGFlow", "RGFlowModel"]
__version__ = "0.1.0"
