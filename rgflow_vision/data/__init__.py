"""Lightning data modules for images: batches are ``uint8`` tensors ``(B, C, L, L)``, no labels.

Every module takes ``root``, ``image_size`` (a power of two >= 4), ``batch_size``, ``num_workers``, ``seed`` and
``download``, and exposes ``channels``, ``image_size``, ``bits`` and ``name`` from construction on. Missing data
raises ``rgflow_vision.errors.UserError``. The expected on-disk layouts are in ``data/README.md``.
"""

from .base import ImageDataModule
from .celeba import CelebADataModule
from .cifar10 import CIFAR10DataModule
from .digits import DigitsDataModule
from .folder import ImageFolderDataModule
from .mnist import MNISTDataModule

__all__ = [
    "CIFAR10DataModule",
    "CelebADataModule",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
]
