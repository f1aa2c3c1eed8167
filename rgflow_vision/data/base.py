"""What every image data module shares: argument checks, seeded splits, loaders, download handling."""

from __future__ import annotations

import numbers
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar

import torch
import torch.distributed as dist
from lightning import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from rgflow_vision.errors import UserError
from rgflow_vision.sizes import is_power_of_two

# A failed download must fail fast: torchvision's urllib calls have no timeout of their own.
DOWNLOAD_TIMEOUT_S = 10.0


def check_image_size(image_size: int) -> int:
    """``image_size`` as an int, or ``ValueError`` unless it is a power of two >= 4."""
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral):
        raise ValueError(f"image_size must be an integer power of two >= 4, got {image_size!r}.")
    size = int(image_size)
    if size < 4 or not is_power_of_two(size):
        raise ValueError(
            f"image_size must be a power of two >= 4 (the flow halves the image down to 4x4 blocks), got {size}."
        )
    return size


def smooth_resize(size: int | tuple[int, int]) -> T.Resize:
    """Bicubic, antialiased resize of a PIL image (an int resizes the shorter side)."""
    return T.Resize(size, interpolation=T.InterpolationMode.BICUBIC, antialias=True)


def seeded_split(n: int, sizes: Sequence[int], seed: int) -> list[torch.Tensor]:
    """Disjoint index sets of the given ``sizes`` drawn from ``range(n)``; the same ``seed`` gives the same split."""
    if sum(sizes) > n:
        raise ValueError(f"cannot split {n} items into parts of sizes {list(sizes)}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts, start = [], 0
    for size in sizes:
        parts.append(order[start : start + size].sort().values)
        start += size
    return parts


def carve_val(n: int, val_size: int, seed: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, val)`` indices: ``val_size`` of the ``n`` training items held out by ``seed``."""
    if not 0 <= val_size < n:
        raise UserError(f"val_size={val_size} must be at least 0 and below the {n} training images of {what}.")
    val, train = seeded_split(n, (val_size, n - val_size), seed)
    return train, val


def fraction_sizes(n: int, val_fraction: float, test_fraction: float, what: str) -> tuple[int, int, int]:
    """``(train, val, test)`` counts for ``n`` items; ``UserError`` if the fractions leave no training items."""
    for label, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise UserError(f"{label} must lie in [0, 1), got {fraction}.")
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n - n_val - n_test < 1:
        raise UserError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} leave no training images out of the "
            f"{n} in {what}; lower them or add images."
        )
    return n - n_val - n_test, n_val, n_test


class TransformedImages(Dataset):
    """``transform(source[i][0])`` for ``i`` in ``indices``: one view of a labelled dataset, images only.

    Several views (train with flips, val without) share one loaded source."""

    def __init__(self, source: Dataset, indices: Sequence[int] | torch.Tensor | None, transform: Callable):
        self.source = source
        self.indices = list(range(len(source))) if indices is None else [int(i) for i in indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.source[self.indices[i]][0])


class ConvertMode:
    """PIL image to ``mode`` ("L" or "RGB"); a class, not a lambda, so loader workers can pickle it."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, image):
        return image if image.mode == self.mode else image.convert(self.mode)


class ImageDataModule(LightningDataModule):
    """Base of the image data modules: batches are ``uint8`` tensors ``(B, C, L, L)`` with values ``0 .. 2**bits - 1``.

    Subclasses set ``name`` and ``channels`` and fill ``train_set``/``val_set``/``test_set`` in ``_build(splits)``.
    """

    name: str = "images"

    def __init__(self, *, root: str | None, image_size: int, channels: int, batch_size: int, num_workers: int,
                 seed: int, download: bool):
        super().__init__()
        self.root = None if root is None else os.path.abspath(os.path.expanduser(str(root)))
        self.image_size = check_image_size(image_size)
        self.channels = int(channels)
        self.bits = 8
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.download = bool(download)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Build the splits ``stage`` needs ("fit": train and val, "validate": val, "test": test, else all)."""
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ("train", "val", "test"))
        missing = tuple(split for split in wanted if getattr(self, f"{split}_set") is None)
        if missing:
            self._build(missing)

    def _build(self, splits: tuple[str, ...]) -> None:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        train_set = self._split("train", "fit")
        # Training drops the last incomplete batch (one odd-sized batch would skew its step); a split
        # smaller than one batch would train nothing at all.
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if len(train_set) // world < self.batch_size:
            per = f" per process ({world} processes)" if world > 1 else ""
            raise UserError(
                f"the training split holds {len(train_set) // world} images{per}, fewer than one batch of "
                f"dataset.batch_size={self.batch_size}: lower dataset.batch_size to {max(1, len(train_set) // world)} "
                "or less, or add images."
            )
        return self._loader(train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._split("val", "validate"), train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._split("test", "test"), train=False)

    def _split(self, split: str, stage: str) -> Dataset:
        # Scripts may ask for a loader without calling setup(); build the split then.
        if getattr(self, f"{split}_set") is None:
            self.setup(stage)
        return getattr(self, f"{split}_set")

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        # Train: shuffled, whole batches only. Eval: in order and complete, so bits/dim covers the whole split;
        # under DDP each image goes to exactly one rank (Lightning's default sampler pads with repeats).
        sampler = None
        if not train and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            sampler=sampler,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


@contextmanager
def short_socket_timeout(seconds: float = DOWNLOAD_TIMEOUT_S) -> Iterator[None]:
    """Give sockets opened inside a default timeout, restoring the previous one afterwards."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def one_line(error: BaseException, limit: int = 160) -> str:
    """``error`` as ``Type: message`` on one short line, for quoting inside a one-sentence UserError."""
    text = " ".join(str(error).split()) or "no message"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}"


class TorchvisionDataModule(ImageDataModule):
    """A data module over a torchvision dataset class: checks files, downloads, and reports missing data clearly.

    ``dataset_class`` is the torchvision class; it is a class attribute so tests can substitute a subclass that
    only changes the checksum tables (their small fixture files cannot match the real MD5s)."""

    dataset_class: type
    title: str  # the dataset's usual spelling, for messages
    folder: str  # the dataset's folder under root, as torchvision names it
    required: tuple[str, ...]  # files (or folders, ending in "/") under root/folder that torchvision needs
    download_kwargs: ClassVar[dict] = {}  # constructor arguments for the download call
    advice = "download it elsewhere and copy it there, or set dataset.root=<the folder that holds it>"

    def prepare_data(self) -> None:
        """Download when files are missing and ``download`` is set; ``UserError`` if they are still missing."""
        if not self.missing_files():
            return
        reason = "download=false"
        if self.download:
            try:
                with short_socket_timeout():
                    self.dataset_class(self.root, download=True, **self.download_kwargs)
            except Exception as error:  # no network, HTTP errors, gdown absent, bad archive: all end the same way
                reason = f"the download failed with {one_line(error)}"
            else:
                reason = "the download did not produce them"
        if self.missing_files():
            raise UserError(self.missing_message(reason))

    def missing_files(self) -> list[str]:
        base = os.path.join(self.root, self.folder)
        return [
            name
            for name in self.required
            if not (os.path.isdir if name.endswith("/") else os.path.isfile)(os.path.join(base, name))
        ]

    def missing_message(self, reason: str) -> str:
        base = os.path.join(self.root, self.folder)
        missing = self.missing_files()
        found = "none is there" if len(missing) == len(self.required) else f"missing: {', '.join(missing)}"
        return (
            f"{self.title} data not found in {self.root}: expected {base}/ to hold {', '.join(self.required)} "
            f"({found}; {reason}); {self.advice}."
        )

    def open(self, **kwargs) -> Dataset:
        """The torchvision dataset (PIL images, no transform), with its 'not found or corrupted' as a UserError."""
        if self.missing_files():
            raise UserError(self.missing_message("prepare_data() did not fetch them"))
        try:
            return self.dataset_class(self.root, download=False, **kwargs)
        except RuntimeError as error:
            raise UserError(
                f"{self.title} files in {os.path.join(self.root, self.folder)} are there but torchvision rejects them "
                f"({one_line(error)}), usually a checksum mismatch from a partial or different copy; delete them and "
                f"download again."
            ) from error
