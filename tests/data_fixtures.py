"""Tiny data sets in each source's real on-disk format, so the real torchvision readers load them in tests.

Plain functions, not pytest fixtures: each writes under the folder it is given and returns it.

CIFAR-10 and CelebA: torchvision checks the MD5 of every CIFAR batch file and of CelebA's five txt files against
the real downloads, which a fixture cannot match. ``cifar10_class`` and ``celeba_class`` therefore return subclasses
of torchvision's classes that change only the checksum tables (to the fixture files' MD5s); the data modules'
``dataset_class`` is swapped for them, and all reading, parsing and splitting is still torchvision's own code.
MNIST only checks that its four files exist, so the real class reads the fixture as is.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision import datasets

CELEBA_SIZE = (178, 218)  # width, height of the real aligned images
CELEBA_CROP = 148
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair "
    "Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones "
    "Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline "
    "Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young"
).split()


def md5(path: str | Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX file as on the MNIST site: magic (0, 0, type 0x08 = ubyte, ndim), big-endian int32 dims, raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: str | Path, n_train: int = 40, n_test: int = 12, seed: int = 0) -> Path:
    """``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, uncompressed, random 28x28 digits.

    torchvision's ``MNIST._check_exists`` only needs these four uncompressed files (no checksum on them)."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return Path(root)


def write_cifar10(root: str | Path, n_per_batch: int = 8, n_test: int = 10, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py/``: pickled ``data_batch_1..5``, ``test_batch`` and ``batches.meta``.

    Each batch is a dict with ``data`` (``uint8`` rows of 3072 = 3 planes of 32x32) and ``labels``, like the real
    ones; load it with ``cifar10_class(root)`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_per_batch
        batch = {
            "batch_label": name,
            "labels": rng.integers(0, 10, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"{name}_{i}.png" for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
            "num_cases_per_batch": n_per_batch, "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f)
    return Path(root)


def cifar10_class(root: str | Path) -> type[datasets.CIFAR10]:
    """torchvision's CIFAR10 with the MD5s of the fixture files under ``root`` in place of the real ones."""
    folder = Path(root) / datasets.CIFAR10.base_folder
    return type("FixtureCIFAR10", (datasets.CIFAR10,), {
        "train_list": [[name, md5(folder / name)] for name, _ in datasets.CIFAR10.train_list],
        "test_list": [[name, md5(folder / name)] for name, _ in datasets.CIFAR10.test_list],
        "meta": {**datasets.CIFAR10.meta, "md5": md5(folder / datasets.CIFAR10.meta["filename"])},
    })


def celeba_partition(i: int, n: int) -> int:
    """The fixture's official partition of image ``i``: 0 train (first 60%), 1 valid (next 20%), 2 test."""
    return 0 if i < 0.6 * n else 1 if i < 0.8 * n else 2


def write_celeba(root: str | Path, n: int = 15) -> Path:
    """``root/celeba/``: ``img_align_celeba/000001.jpg ...`` (178x218 JPEG) and the five txt files torchvision reads.

    Every image is red outside the central 148x148 square and, inside it, green on the left half and blue on the
    right, so tests can see the crop and the flips. Partitions follow ``celeba_partition``."""
    folder = Path(root) / "celeba"
    images = folder / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    width, height = CELEBA_SIZE
    left, top = (width - CELEBA_CROP) // 2, (height - CELEBA_CROP) // 2
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[..., 0] = 255
    pixels[top : top + CELEBA_CROP, left : left + CELEBA_CROP // 2] = (0, 255, 0)
    pixels[top : top + CELEBA_CROP, left + CELEBA_CROP // 2 : left + CELEBA_CROP] = (0, 0, 255)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    for name in names:
        # No chroma subsampling: keeps colours from bleeding across the crop edge.
        Image.fromarray(pixels).save(images / name, quality=95, subsampling=0)

    def write(filename: str, header: list[str] | None, rows: list[list[int]]) -> None:
        # The real files: space-separated, count and column names on top where torchvision reads header=1.
        lines = [] if header is None else [str(n), " ".join(header)]
        lines += [" ".join([name, *map(str, row)]) for name, row in zip(names, rows, strict=True)]
        (folder / filename).write_text("\n".join(lines) + "\n")

    write("list_eval_partition.txt", None, [[celeba_partition(i, n)] for i in range(n)])
    write("identity_CelebA.txt", None, [[1 + i % 4] for i in range(n)])
    write("list_attr_celeba.txt", CELEBA_ATTRIBUTES, [[1 if (i + a) % 3 == 0 else -1 for a in range(40)]
                                                      for i in range(n)])
    write("list_bbox_celeba.txt", ["image_id", "x_1", "y_1", "width", "height"], [[95, 71, 226, 313]] * n)
    landmarks = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x " \
                "rightmouth_y"
    write("list_landmarks_align_celeba.txt", landmarks.split(), [[69, 109, 106, 113, 77, 142, 73, 152, 108, 154]] * n)
    return Path(root)


def celeba_class(root: str | Path) -> type[datasets.CelebA]:
    """torchvision's CelebA with the MD5s of the fixture's txt files under ``root`` in place of the real ones."""
    folder = Path(root) / datasets.CelebA.base_folder
    file_list = [(file_id, md5(folder / name) if os.path.exists(folder / name) else digest, name)
                 for file_id, digest, name in datasets.CelebA.file_list]
    return type("FixtureCelebA", (datasets.CelebA,), {"file_list": file_list})


def write_image_folder(path: str | Path, n: int = 10, size: int | tuple[int, int] = 24, mode: str = "RGB",
                       ext: str = ".png", seed: int = 0) -> Path:
    """``n`` random images ``img_000<ext> ...`` of ``size`` (an int, or width and height) and PIL ``mode``."""
    rng = np.random.default_rng(seed)
    width, height = (size, size) if isinstance(size, int) else size
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    bands = len(Image.new(mode, (1, 1)).getbands())
    for i in range(n):
        pixels = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
        image = Image.fromarray(pixels.squeeze(-1) if bands == 1 else pixels)  # uint8: L, RGB or RGBA
        (image if image.mode == mode else image.convert(mode)).save(folder / f"img_{i:03d}{ext}")
    return folder
