"""CelebA through torchvision: aligned faces, center crop 148, resize, flips on the training split only."""

from __future__ import annotations

from typing import ClassVar

from torchvision import datasets
from torchvision import transforms as T

from .base import ConvertMode, TorchvisionDataModule, TransformedImages, smooth_resize

# The aligned images are 178x218; the central 148x148 square keeps the face and drops most background.
CROP = 148


class CelebADataModule(TorchvisionDataModule):
    """CelebA on its official train/valid/test partitions (``list_eval_partition.txt``), RGB.

    Each image is center-cropped to 148x148 and resized (bicubic, antialiased) to ``image_size`` (32 or 64 are the
    usual choices); ``flip`` mirrors training images at random. Reads ``<root>/celeba/`` as torchvision does:
    ``img_align_celeba/`` and the five txt files, whose MD5s torchvision checks.
    """

    name = "celeba"
    title = "CelebA"
    dataset_class = datasets.CelebA
    folder = "celeba"
    # torchvision's CelebA reads and MD5-checks all five txt files whatever target_type is; the zip may be deleted.
    required = (
        "img_align_celeba/",
        "list_eval_partition.txt",
        "identity_CelebA.txt",
        "list_attr_celeba.txt",
        "list_bbox_celeba.txt",
        "list_landmarks_align_celeba.txt",
    )
    download_kwargs: ClassVar[dict] = {"split": "all", "target_type": []}
    advice = (
        "torchvision's Google-Drive download usually fails (quota limits, and it needs the gdown package), so fetch "
        "img_align_celeba.zip and the five txt files from the CelebA website elsewhere, unzip the images to "
        "img_align_celeba/ in that folder with the txt files beside it, or set dataset.root=<the folder that holds "
        "celeba/>"
    )

    def __init__(self, *, root: str, image_size: int = 32, batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 download: bool = True, flip: bool = True):
        super().__init__(root=root, image_size=image_size, channels=3, batch_size=batch_size,
                         num_workers=num_workers, seed=seed, download=download)
        self.flip = bool(flip)

    def transform(self, train: bool) -> T.Compose:
        steps = [ConvertMode("RGB"), T.CenterCrop(CROP), smooth_resize((self.image_size, self.image_size))]
        if train and self.flip:
            steps.append(T.RandomHorizontalFlip())
        return T.Compose([*steps, T.PILToTensor()])

    def _build(self, splits: tuple[str, ...]) -> None:
        # The partitions are official, so seed plays no part here.
        for split, official in (("train", "train"), ("val", "valid"), ("test", "test")):
            if split in splits:
                source = self.open(split=official, target_type=[])
                setattr(self, f"{split}_set", TransformedImages(source, None, self.transform(train=split == "train")))

