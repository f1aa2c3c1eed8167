"""MNIST through torchvision: 28x28 digits padded with zeros to 32x32, one channel."""

from __future__ import annotations

from typing import ClassVar

from torchvision import datasets
from torchvision import transforms as T

from .base import TorchvisionDataModule, TransformedImages, carve_val, smooth_resize


class MNISTDataModule(TorchvisionDataModule):
    """MNIST: train/val carved from the official 60,000 training images by ``seed``; test is the official 10,000.

    Images are padded to 32x32 (the flow needs a power of two); another ``image_size`` is a bicubic resize of that.
    Reads ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (uncompressed), as torchvision does.
    """

    name = "mnist"
    title = "MNIST"
    dataset_class = datasets.MNIST
    folder = "MNIST/raw"
    required = (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
    )
    download_kwargs: ClassVar[dict] = {"train": True}
    advice = (
        "download the four .gz files from the MNIST mirrors elsewhere, gunzip them into that folder, "
        "or set dataset.root=<the folder that holds MNIST/>"
    )

    def __init__(self, *, root: str, image_size: int = 32, batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 download: bool = True, val_size: int = 5000):
        super().__init__(root=root, image_size=image_size, channels=1, batch_size=batch_size,
                         num_workers=num_workers, seed=seed, download=download)
        self.val_size = int(val_size)

    def transform(self) -> T.Compose:
        steps = [T.Pad(2)]  # 28 + 2 + 2 = 32, zeros like MNIST's own background
        if self.image_size != 32:
            steps.append(smooth_resize((self.image_size, self.image_size)))
        return T.Compose([*steps, T.PILToTensor()])

    def _build(self, splits: tuple[str, ...]) -> None:
        transform = self.transform()
        if "train" in splits or "val" in splits:
            source = self.open(train=True)
            train, val = carve_val(len(source), self.val_size, self.seed, "MNIST")
            self.train_set = TransformedImages(source, train, transform)
            self.val_set = TransformedImages(source, val, transform)
        if "test" in splits:
            self.test_set = TransformedImages(self.open(train=False), None, transform)
