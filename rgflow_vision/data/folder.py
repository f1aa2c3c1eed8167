"""Any folder of images, searched recursively: resized, center-cropped, split at random by seed."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from rgflow_vision.errors import UserError

from .base import ConvertMode, ImageDataModule, TransformedImages, fraction_sizes, seeded_split, smooth_resize

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def find_images(path: str) -> list[str]:
    """Sorted paths of the image files under ``path`` (any depth, extension case ignored)."""
    found = []
    for folder, _, files in os.walk(path, followlinks=True):
        found.extend(os.path.join(folder, name) for name in files if name.lower().endswith(EXTENSIONS))
    return sorted(found)


class ImageFiles(Dataset):
    """``(PIL image, 0)`` per file, shaped like a torchvision dataset item so ``TransformedImages`` can wrap it."""

    def __init__(self, files: list[str]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        with Image.open(self.files[i]) as image:
            image.load()
            return image, 0


class ImageFolderDataModule(ImageDataModule):
    """Every png/jpg/jpeg/bmp/webp file under ``path`` (sub-folders included; no class layout needed).

    Images are converted to ``channels`` (1: grayscale, 3: RGB), their shorter side resized to ``image_size`` and
    center-cropped square. A random split by ``seed`` holds out ``val_fraction`` and ``test_fraction`` of the files;
    ``flip`` mirrors training images at random. ``root`` and ``download`` are accepted for a uniform interface and
    unused: ``path`` names the folder.
    """

    name = "folder"

    def __init__(self, *, path: str, image_size: int = 32, channels: int = 3, batch_size: int = 64,
                 num_workers: int = 0, seed: int = 0, download: bool = True, root: str | None = None,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, flip: bool = False):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}.")
        super().__init__(root=root, image_size=image_size, channels=channels, batch_size=batch_size,
                         num_workers=num_workers, seed=seed, download=download)
        self.path = os.path.abspath(os.path.expanduser(str(path)))
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.flip = bool(flip)

    def files(self) -> list[str]:
        """The image files, or ``UserError`` if the folder is missing or holds none."""
        if not os.path.isdir(self.path):
            raise UserError(f"Image folder {self.path} does not exist; set dataset.path=<a folder of image files>.")
        files = find_images(self.path)
        if not files:
            raise UserError(
                f"Image folder {self.path} holds no {'/'.join(e[1:] for e in EXTENSIONS)} files (sub-folders "
                f"included); put images there or set dataset.path=<a folder of image files>."
            )
        return files

    def prepare_data(self) -> None:
        self.files()

    def transform(self, train: bool) -> T.Compose:
        steps = [
            ConvertMode("L" if self.channels == 1 else "RGB"),
            smooth_resize(self.image_size),
            T.CenterCrop(self.image_size),
        ]
        if train and self.flip:
            steps.append(T.RandomHorizontalFlip())
        return T.Compose([*steps, T.PILToTensor()])

    def _build(self, splits: tuple[str, ...]) -> None:
        files = self.files()
        source = ImageFiles(files)
        sizes = fraction_sizes(len(files), self.val_fraction, self.test_fraction, Path(self.path).as_posix())
        for split, indices in zip(("train", "val", "test"), seeded_split(len(files), sizes, self.seed), strict=True):
            setattr(self, f"{split}_set", TransformedImages(source, indices, self.transform(train=split == "train")))
