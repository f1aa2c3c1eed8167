"""scikit-learn's bundled 8x8 digits: no download, the default dataset for quick CPU runs."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .base import ImageDataModule, fraction_sizes, seeded_split


class TensorImages(Dataset):
    """The rows ``indices`` of a ``uint8`` tensor ``(N, C, L, L)``, one image per item."""

    def __init__(self, images: torch.Tensor, indices: torch.Tensor):
        self.images = images[indices]
        self.indices = indices.tolist()  # positions in the full set, like TransformedImages.indices

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def digits_images(image_size: int) -> torch.Tensor:
    """All 1797 digits as ``uint8`` ``(1797, 1, L, L)``: values 0..16 scaled to 0..255, bicubic resize to ``L``."""
    from sklearn.datasets import load_digits  # deferred: scikit-learn is slow to import and only digits needs it

    pixels = np.rint(load_digits().images * (255.0 / 16.0)).astype(np.uint8)
    if image_size != pixels.shape[-1]:
        # PIL's bicubic antialiases when shrinking and clips to 0..255.
        pixels = np.stack(
            [np.asarray(Image.fromarray(p).resize((image_size, image_size), Image.BICUBIC)) for p in pixels]
        )
    return torch.from_numpy(pixels).unsqueeze(1).contiguous()


class DigitsDataModule(ImageDataModule):
    """The 1797 8x8 handwritten digits bundled with scikit-learn, upsampled to ``image_size`` (16: three levels).

    The train/val/test split (80/10/10 by default) is drawn once from ``seed``. ``root`` and ``download`` are
    accepted so every data module takes the same arguments; the data ships with scikit-learn.
    """

    name = "digits"
    total = 1797

    def __init__(self, *, root: str | None = None, image_size: int = 16, batch_size: int = 64, num_workers: int = 0,
                 seed: int = 0, download: bool = True, val_fraction: float = 0.1, test_fraction: float = 0.1):
        super().__init__(root=root, image_size=image_size, channels=1, batch_size=batch_size,
                         num_workers=num_workers, seed=seed, download=download)
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)

    def _build(self, splits: tuple[str, ...]) -> None:
        images = digits_images(self.image_size)
        sizes = fraction_sizes(len(images), self.val_fraction, self.test_fraction, "the digits data set")
        for split, indices in zip(("train", "val", "test"), seeded_split(len(images), sizes, self.seed), strict=True):
            setattr(self, f"{split}_set", TensorImages(images, indices))
