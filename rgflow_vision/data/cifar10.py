"""CIFAR-10 through torchvision: 32x32 RGB, horizontal flips on the training split only."""

from __future__ import annotations

from typing import ClassVar

from torchvision import datasets
from torchvision import transforms as T

from .base import TorchvisionDataModule, TransformedImages, carve_val, smooth_resize


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10: train/val carved from the official 50,000 training images by ``seed``; test is the official 10,000.

    ``flip`` mirrors training images at random (val and test never). Another ``image_size`` than 32 is a bicubic
    resize. Reads ``<root>/cifar-10-batches-py/`` (the unpacked ``cifar-10-python.tar.gz``), as torchvision does;
    torchvision checks every file's MD5.
    """

    name = "cifar10"
    title = "CIFAR-10"
    dataset_class = datasets.CIFAR10
    folder = "cifar-10-batches-py"
    required = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
    download_kwargs: ClassVar[dict] = {"train": True}
    advice = (
        "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html elsewhere and unpack it "
        "into the root folder, or set dataset.root=<the folder that holds cifar-10-batches-py/>"
    )

    def __init__(self, *, root: str, image_size: int = 32, batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 download: bool = True, val_size: int = 5000, flip: bool = True):
        super().__init__(root=root, image_size=image_size, channels=3, batch_size=batch_size,
                         num_workers=num_workers, seed=seed, download=download)
        self.val_size = int(val_size)
        self.flip = bool(flip)

    def transform(self, train: bool) -> T.Compose:
        steps = [T.RandomHorizontalFlip()] if train and self.flip else []
        if self.image_size != 32:
            steps.append(smooth_resize((self.image_size, self.image_size)))
        return T.Compose([*steps, T.PILToTensor()])

    def _build(self, splits: tuple[str, ...]) -> None:
        if "train" in splits or "val" in splits:
            source = self.open(train=True)
            train, val = carve_val(len(source), self.val_size, self.seed, "CIFAR-10")
            self.train_set = TransformedImages(source, train, self.transform(train=True))
            self.val_set = TransformedImages(source, val, self.transform(train=False))
        if "test" in splits:
            self.test_set = TransformedImages(self.open(train=False), None, self.transform(train=False))
