"""Pictures: integer pixels to PNG grids, saved in the run folder and sent to the logger."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image
from torchvision.utils import make_grid


def image_grid(pixels: torch.Tensor, bits: int = 8, nrow: int | None = None, padding: int = 2) -> Image.Image:
    """``(N, C, L, L)`` integer pixels in ``0 .. 2**bits - 1`` as one PIL image (grey or RGB)."""
    images = pixels.detach().float().cpu() / (2**bits - 1)
    grid = make_grid(images, nrow=nrow or max(1, round(len(images) ** 0.5)), padding=padding, pad_value=1.0)
    array = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if pixels.shape[1] == 1 else array)


def save_and_log(trainer: L.Trainer | None, image: Image.Image, path: str | Path, key: str) -> Path:
    """Write ``image`` as PNG (atomically) and send it to every image-capable logger of ``trainer``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    image.save(partial, format="PNG")
    partial.replace(path)
    for logger in trainer.loggers if trainer is not None else []:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[image], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            array = np.asarray(image.convert("RGB"))
            logger.experiment.add_image(key, array, trainer.global_step, dataformats="HWC")
        # CSVLogger has no images: the PNG in the run folder is the record.
    return path
