"""The image data modules, run on tiny files in each source's real format (tests/data_fixtures.py)."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from rgflow_vision.data import (
    CelebADataModule,
    CIFAR10DataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)
from rgflow_vision.errors import UserError

from .data_fixtures import (
    celeba_class,
    celeba_partition,
    cifar10_class,
    write_celeba,
    write_cifar10,
    write_image_folder,
    write_mnist,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "dataset"
MNIST_TRAIN, MNIST_TEST = 40, 12
CIFAR_PER_BATCH, CIFAR_TEST = 8, 10
CELEBA_N = 15


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("mnist"), n_train=MNIST_TRAIN, n_test=MNIST_TEST)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("cifar"), n_per_batch=CIFAR_PER_BATCH, n_test=CIFAR_TEST)


@pytest.fixture(scope="module")
def celeba_root(tmp_path_factory) -> Path:
    return write_celeba(tmp_path_factory.mktemp("celeba"), n=CELEBA_N)


@pytest.fixture
def fixture_checksums(monkeypatch, cifar_root, celeba_root):
    """Let torchvision's CIFAR10/CelebA accept the fixture files (their MD5s cannot match the real downloads)."""
    monkeypatch.setattr(CIFAR10DataModule, "dataset_class", cifar10_class(cifar_root))
    monkeypatch.setattr(CelebADataModule, "dataset_class", celeba_class(celeba_root))


def check_split(dm, total: int, seed_twin, other_seed_twin=None) -> None:
    """Train/val/test indices are disjoint, cover ``range(total)`` and repeat for the same seed."""
    parts = [dm.train_set.indices, dm.val_set.indices, dm.test_set.indices]
    assert sum(map(len, parts)) == total
    assert set().union(*parts) == set(range(total))
    seed_twin.setup()
    assert [seed_twin.train_set.indices, seed_twin.val_set.indices, seed_twin.test_set.indices] == parts
    if other_seed_twin is not None:
        other_seed_twin.setup()
        assert other_seed_twin.val_set.indices != dm.val_set.indices


def loader_counts(loader) -> list[int]:
    return [len(batch) for batch in loader]


def assert_images(batch, channels: int, size: int) -> None:
    """A plain uint8 image tensor (no label tuple) of the given layout."""
    assert isinstance(batch, torch.Tensor)
    assert batch.dtype == torch.uint8
    assert batch.shape[1:] == (channels, size, size)


# ---------------------------------------------------------------- digits


def test_digits_batches_are_uint8_images_spanning_0_to_255():
    """Default digits: 16x16 single-channel uint8 batches with the full 8-bit range."""
    dm = DigitsDataModule(seed=0)
    assert (dm.channels, dm.image_size, dm.bits, dm.name) == (1, 16, 8, "digits")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert_images(batch, 1, 16)
    assert len(batch) == 64
    assert batch.min() == 0 and batch.max() == 255


def test_digits_split_covers_all_1797_images_disjointly_and_is_fixed_by_seed():
    """80/10/10 of the 1797 digits; the same seed gives the same split, another seed another."""
    dm = DigitsDataModule(seed=0)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (1437, 180, 180)
    check_split(dm, 1797, DigitsDataModule(seed=0), DigitsDataModule(seed=1))


def test_digits_at_native_size_are_the_scaled_sklearn_values():
    """At 8x8 no resize happens: each pixel is round(v * 255 / 16)."""
    from sklearn.datasets import load_digits

    dm = DigitsDataModule(image_size=8)
    dm.setup("test")
    expected = np.rint(load_digits().images[dm.test_set.indices] * 255 / 16).astype(np.uint8)
    assert torch.equal(dm.test_set.images[:, 0], torch.from_numpy(expected))


def test_digits_shrink_to_4():
    """The smallest allowed size (one 4x4 block) works."""
    dm = DigitsDataModule(image_size=4)
    dm.setup("validate")
    assert_images(next(iter(dm.val_dataloader())), 1, 4)


def test_eval_loaders_cover_the_whole_split_and_train_drops_the_ragged_batch():
    """val/test: in order, last partial batch kept; train: only full batches."""
    dm = DigitsDataModule(batch_size=64)
    dm.setup()
    assert loader_counts(dm.test_dataloader()) == [64, 64, 52]
    test_images = torch.cat(list(dm.test_dataloader()))
    assert torch.equal(test_images, dm.test_set.images)  # no shuffle
    assert loader_counts(dm.train_dataloader()) == [64] * (1437 // 64)


def test_loaders_keep_workers_alive_between_epochs_when_there_are_workers():
    """persistent_workers follows num_workers > 0."""
    with_workers, without = DigitsDataModule(num_workers=2), DigitsDataModule(num_workers=0)
    for dm in (with_workers, without):
        dm.setup()
    assert with_workers.val_dataloader().persistent_workers and with_workers.train_dataloader().num_workers == 2
    assert not without.val_dataloader().persistent_workers


def test_loader_without_setup_sets_up_on_demand():
    """Scripts may ask for a loader straight away."""
    assert_images(next(iter(DigitsDataModule().test_dataloader())), 1, 16)


# ---------------------------------------------------------------- image size


@pytest.mark.parametrize("size", [0, 2, 3, 6, 12, 48, 16.0, True])
@pytest.mark.parametrize("cls", [DigitsDataModule, MNISTDataModule, CIFAR10DataModule, CelebADataModule,
                                 ImageFolderDataModule])
def test_image_size_must_be_a_power_of_two_at_least_4(cls, size, tmp_path):
    """Anything else raises ValueError at construction, before any file is read."""
    kwargs = {"path": str(tmp_path)} if cls is ImageFolderDataModule else {"root": str(tmp_path)}
    with pytest.raises(ValueError, match="power of two"):
        cls(image_size=size, **kwargs)


# ---------------------------------------------------------------- mnist


def test_mnist_pads_the_real_files_with_zeros_to_32(mnist_root):
    """Fixture read by torchvision's MNIST: 28x28 digits sit unchanged inside a 2-pixel zero frame."""
    dm = MNISTDataModule(root=str(mnist_root), val_size=10, batch_size=8)
    assert (dm.channels, dm.image_size, dm.bits, dm.name) == (1, 32, 8, "mnist")
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert_images(batch, 1, 32)
    assert torch.equal(batch[:, 0, 2:30, 2:30], dm.val_set.source.data[dm.val_set.indices[:8]])
    frame = batch.clone()
    frame[:, :, 2:30, 2:30] = 0
    assert not frame.any()


def test_mnist_val_is_carved_from_train_by_seed_and_test_is_official(mnist_root):
    """val_size images of the official train set form val; the official test file is the test split."""
    dm = MNISTDataModule(root=str(mnist_root), val_size=10, seed=5, batch_size=5)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (MNIST_TRAIN - 10, 10, MNIST_TEST)
    fit = dm.train_set.indices + dm.val_set.indices
    assert sorted(fit) == list(range(MNIST_TRAIN))
    twin = MNISTDataModule(root=str(mnist_root), val_size=10, seed=5)
    twin.setup("fit")
    assert twin.val_set.indices == dm.val_set.indices
    other = MNISTDataModule(root=str(mnist_root), val_size=10, seed=6)
    other.setup("fit")
    assert other.val_set.indices != dm.val_set.indices
    assert loader_counts(dm.test_dataloader()) == [5, 5, 2]


def test_mnist_resizes_after_padding_for_other_sizes(mnist_root):
    """image_size 16: the padded 32x32 digit is shrunk."""
    dm = MNISTDataModule(root=str(mnist_root), image_size=16, val_size=10)
    dm.setup("test")
    assert_images(next(iter(dm.test_dataloader())), 1, 16)


def test_mnist_val_size_beyond_the_training_set_is_a_user_error(mnist_root):
    dm = MNISTDataModule(root=str(mnist_root), val_size=MNIST_TRAIN)
    with pytest.raises(UserError, match="val_size"):
        dm.setup("fit")


# ---------------------------------------------------------------- cifar10


def test_cifar10_reads_the_batches_as_rgb_32(cifar_root, fixture_checksums):
    """Fixture read by torchvision's CIFAR10 code: val images equal the stored pixels (CHW)."""
    dm = CIFAR10DataModule(root=str(cifar_root), val_size=6, batch_size=4)
    assert (dm.channels, dm.image_size, dm.bits, dm.name) == (3, 32, 8, "cifar10")
    dm.prepare_data()
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (5 * CIFAR_PER_BATCH - 6, 6, CIFAR_TEST)
    batch = next(iter(dm.val_dataloader()))
    assert_images(batch, 3, 32)
    stored = torch.from_numpy(dm.val_set.source.data[dm.val_set.indices[:4]]).permute(0, 3, 1, 2)
    assert torch.equal(batch, stored)
    assert sorted(dm.train_set.indices + dm.val_set.indices) == list(range(5 * CIFAR_PER_BATCH))
    assert loader_counts(dm.test_dataloader()) == [4, 4, 2]


def test_cifar10_flips_training_images_only(cifar_root, fixture_checksums):
    """Over many draws a training image appears both as stored and mirrored; val images never change."""
    dm = CIFAR10DataModule(root=str(cifar_root), val_size=6)
    dm.setup("fit")
    stored = torch.from_numpy(dm.train_set.source.data[dm.train_set.indices[0]]).permute(2, 0, 1)
    draws = [dm.train_set[0] for _ in range(20)]
    assert all(torch.equal(d, stored) or torch.equal(d, stored.flip(-1)) for d in draws)
    assert any(torch.equal(d, stored) for d in draws) and any(torch.equal(d, stored.flip(-1)) for d in draws)
    val_stored = torch.from_numpy(dm.val_set.source.data[dm.val_set.indices[0]]).permute(2, 0, 1)
    assert all(torch.equal(dm.val_set[0], val_stored) for _ in range(20))
    assert not CIFAR10DataModule(root=str(cifar_root), val_size=6, flip=False).transform(train=True).transforms[:-1]


def test_cifar10_checksum_mismatch_is_a_user_error(cifar_root):
    """torchvision's real MD5 table rejects files that differ from the download; the message says what to do."""
    dm = CIFAR10DataModule(root=str(cifar_root), val_size=6, download=False)
    dm.prepare_data()  # every file is there
    with pytest.raises(UserError, match="download again") as caught:
        dm.setup("fit")
    assert str(cifar_root) in str(caught.value)


# ---------------------------------------------------------------- celeba


@pytest.mark.parametrize("size", [32, 64])
def test_celeba_center_crops_148_then_resizes(celeba_root, fixture_checksums, size):
    """The red frame outside the central 148x148 is gone; green left half, blue right half remain."""
    dm = CelebADataModule(root=str(celeba_root), image_size=size, batch_size=4)
    assert (dm.channels, dm.image_size, dm.bits, dm.name) == (3, size, 8, "celeba")
    dm.prepare_data()
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert_images(batch, 3, size)
    batch = batch.int()
    assert batch[:, 0].max() < 40  # no red: JPEG leaves a little noise, an uncropped frame would be 255
    half = size // 2
    assert batch[:, 1, :, : half - 2].min() > 200 and batch[:, 2, :, : half - 2].max() < 40
    assert batch[:, 2, :, half + 2 :].min() > 200 and batch[:, 1, :, half + 2 :].max() < 40


def test_celeba_uses_the_official_partitions(celeba_root, fixture_checksums):
    """train/valid/test come from list_eval_partition.txt, whole and in order."""
    dm = CelebADataModule(root=str(celeba_root), batch_size=2)
    dm.setup()
    counts = np.bincount([celeba_partition(i, CELEBA_N) for i in range(CELEBA_N)])
    assert [len(dm.train_set), len(dm.val_set), len(dm.test_set)] == counts.tolist()
    assert dm.test_set.source.filename == [f"{i + 1:06d}.jpg" for i in range(CELEBA_N)
                                           if celeba_partition(i, CELEBA_N) == 2]
    assert sum(loader_counts(dm.test_dataloader())) == counts[2]
    assert loader_counts(dm.train_dataloader()) == [2] * (counts[0] // 2)


def test_celeba_flips_training_images_only(celeba_root, fixture_checksums):
    """Training draws show green on the left or on the right; val and test always on the left."""
    dm = CelebADataModule(root=str(celeba_root))
    dm.setup()
    green_left = [bool(dm.train_set[0][1, :, :8].float().mean() > 128) for _ in range(20)]
    assert any(green_left) and not all(green_left)
    for split in (dm.val_set, dm.test_set):
        assert all(split[0][1, :, :8].float().mean() > 128 for _ in range(10))


# ---------------------------------------------------------------- image folder


def test_folder_reads_nested_mixed_images_as_rgb_or_gray(tmp_path):
    """Sub-folders, several formats and sizes, grayscale and RGBA sources; other files are ignored."""
    write_image_folder(tmp_path / "a", n=4, size=(40, 30), mode="RGB", ext=".png")
    write_image_folder(tmp_path / "a" / "deep", n=3, size=(30, 50), mode="L", ext=".JPG")
    write_image_folder(tmp_path / "b", n=3, size=16, mode="RGBA", ext=".webp")
    write_image_folder(tmp_path / "c", n=2, size=20, mode="RGB", ext=".bmp")
    (tmp_path / "notes.txt").write_text("not an image")
    for channels in (1, 3):
        dm = ImageFolderDataModule(path=str(tmp_path), image_size=16, channels=channels, batch_size=4,
                                   val_fraction=0.2, test_fraction=0.2)
        assert (dm.channels, dm.image_size, dm.bits, dm.name) == (channels, 16, 8, "folder")
        dm.prepare_data()
        dm.setup()
        assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (8, 2, 2)
        images = torch.stack([dm.train_set[i] for i in range(len(dm.train_set))])
        assert_images(images, channels, 16)
        assert_images(next(iter(dm.train_dataloader())), channels, 16)


def test_folder_resizes_the_shorter_side_then_center_crops(tmp_path):
    """A 64x32 image whose outer quarters are red keeps only its blue middle."""
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, :16, 0] = pixels[:, 48:, 0] = 255
    pixels[:, 16:48, 2] = 255
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    dm = ImageFolderDataModule(path=str(tmp_path), image_size=16, val_fraction=0.0, test_fraction=0.0)
    dm.setup("fit")
    image = dm.train_set[0].int()
    assert image.shape == (3, 16, 16)
    # Squashing instead would keep 4 red columns a side; resizing before cropping leaves a faint edge only.
    assert image[0].max() < 32 and image[0, :, 1:-1].max() == 0 and image[2].min() > 224


def test_folder_split_covers_every_file_and_is_fixed_by_seed(tmp_path):
    """Default 80/10/10 by seed; the test loader covers its whole split."""
    write_image_folder(tmp_path, n=30, size=8)
    dm = ImageFolderDataModule(path=str(tmp_path), image_size=8, seed=3, batch_size=2)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (24, 3, 3)
    check_split(dm, 30, ImageFolderDataModule(path=str(tmp_path), image_size=8, seed=3),
                ImageFolderDataModule(path=str(tmp_path), image_size=8, seed=4))
    assert loader_counts(dm.test_dataloader()) == [2, 1]


def test_folder_missing_or_empty_is_a_user_error(tmp_path):
    """A path that does not exist, or holds no images, says so with the path."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    for path in (tmp_path / "nowhere", tmp_path / "empty"):
        dm = ImageFolderDataModule(path=str(path))
        with pytest.raises(UserError, match=str(path)):
            dm.prepare_data()
        with pytest.raises(UserError, match=str(path)):
            dm.setup()


def test_folder_channels_must_be_1_or_3(tmp_path):
    with pytest.raises(ValueError, match="channels"):
        ImageFolderDataModule(path=str(tmp_path), channels=2)


# ---------------------------------------------------------------- missing data


@pytest.mark.parametrize("cls", [MNISTDataModule, CIFAR10DataModule, CelebADataModule])
def test_missing_files_without_download_is_a_user_error_naming_root_and_layout(cls, tmp_path):
    """download=False and nothing there: one sentence with the folder, the expected files and what to do."""
    dm = cls(root=str(tmp_path), download=False)
    for step in (dm.prepare_data, dm.setup):
        with pytest.raises(UserError) as caught:
            step()
        message = str(caught.value)
        assert str(tmp_path) in message and "dataset.root=" in message
        assert all(name in message for name in dm.required)
        assert "\n" not in message


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cls", [MNISTDataModule, CIFAR10DataModule, CelebADataModule])
def test_failed_download_is_a_quick_user_error(cls, tmp_path):
    """download=True with no network (or no gdown for CelebA) fails fast and says the download failed."""
    start = time.monotonic()
    with pytest.raises(UserError, match="download failed") as caught:
        cls(root=str(tmp_path), download=True).prepare_data()
    assert time.monotonic() - start < 20
    assert str(tmp_path) in str(caught.value)
    if cls is CelebADataModule:
        assert "Google-Drive" in str(caught.value)


def test_partial_files_are_listed_as_missing(tmp_path):
    """Only the absent files are named as missing."""
    write_mnist(tmp_path, n_train=4, n_test=2)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match=r"missing: t10k-labels-idx1-ubyte;"):
        MNISTDataModule(root=str(tmp_path), download=False).prepare_data()


# ---------------------------------------------------------------- hydra configs

EXPECTED = {
    "digits": DigitsDataModule,
    "mnist": MNISTDataModule,
    "cifar10": CIFAR10DataModule,
    "celeba": CelebADataModule,
    "folder": ImageFolderDataModule,
}


def test_every_image_dataset_config_is_covered():
    # lattice.yaml is not images: its "batches" count reverse-KL steps (tests/test_lattice_training.py).
    assert {p.stem for p in CONF.glob("*.yaml")} - {"lattice"} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dataset_config_instantiates_against_fixture_files(name, tmp_path, mnist_root, cifar_root, celeba_root,
                                                           fixture_checksums):
    """conf/dataset/<name>.yaml, with paths.data_dir and seed supplied, builds a module that yields images."""
    roots = {"mnist": mnist_root, "cifar10": cifar_root, "celeba": celeba_root}
    data_dir = roots.get(name, tmp_path)
    dataset = OmegaConf.load(CONF / f"{name}.yaml")
    cfg = OmegaConf.merge({"paths": {"data_dir": str(data_dir)}, "seed": 7}, {"dataset": dataset})
    # The fixtures are far smaller than the real sets: shrink only what the real sizes cannot fit.
    overrides = {"mnist": {"val_size": 10}, "cifar10": {"val_size": 6}}.get(name, {})
    if name == "folder":
        overrides = {"path": str(write_image_folder(tmp_path / "images", n=20, size=40))}
    dm = instantiate(cfg.dataset, **overrides)
    assert isinstance(dm, EXPECTED[name])
    assert (dm.name, dm.bits, dm.seed) == (name, 8, 7)
    assert dm.image_size == cfg.dataset.image_size and dm.batch_size == cfg.dataset.batch_size
    assert dm.num_workers == cfg.dataset.num_workers
    dm.prepare_data()
    dm.setup("validate")
    assert_images(dm.val_set[0].unsqueeze(0), dm.channels, dm.image_size)
    assert dm.val_dataloader().persistent_workers == (dm.num_workers > 0)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_data_module_built_in_python_has_the_configs_values(name):
    """One value per default: the constructor's defaults are what conf/dataset/<name>.yaml sets (on this machine)."""
    cfg = OmegaConf.merge({"paths": {"data_dir": "data"}, "seed": 0}, {"dataset": OmegaConf.load(CONF / f"{name}.yaml")})
    params = inspect.signature(EXPECTED[name]).parameters
    for key in cfg.dataset:
        # root: the config's data folder; a module that reads no files (digits, folder) does not need one.
        if key in ("_target_", "root") or OmegaConf.is_missing(cfg.dataset, key):
            continue
        assert params[key].default == cfg.dataset[key], key


def test_folder_config_requires_a_path():
    cfg = OmegaConf.merge({"paths": {"data_dir": "data"}, "seed": 0}, {"dataset": OmegaConf.load(CONF / "folder.yaml")})
    assert OmegaConf.is_missing(cfg.dataset, "path")
