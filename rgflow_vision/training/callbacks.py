"""Lightning callbacks that draw what the model has learned while it trains, and the one helper
that writes a picture and sends it to the loggers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image

from .. import analysis, plots


def save_and_log(trainer: L.Trainer | None, image: Image.Image, path: str | Path, key: str) -> Path:
    """Write ``image`` as PNG (atomically) and send it to every image-capable logger of ``trainer``."""
    path = plots.save(image, path)
    for logger in trainer.loggers if trainer is not None else []:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[image], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            array = np.asarray(image.convert("RGB"))
            logger.experiment.add_image(key, array, trainer.global_step, dataformats="HWC")
        # CSVLogger has no images: the PNG in the run folder is the record.
    return path


class SampleGrid(Callback):
    """Every ``every_n_epochs`` validation epochs, decode the same fixed latents at each temperature.

    Fixed noise makes the grids of successive epochs comparable. Under DDP each rank decodes a
    share of the latents, the shares are gathered, and rank zero writes
    ``<run>/samples/epoch{E}_T{t}.png`` (at display size) with the integer samples beside it
    (``epoch{E}_T{t}.npz``, key ``samples``) and logs the picture as ``samples/T{t}``.
    """

    # No defaults here: conf/callbacks/default.yaml holds them.
    def __init__(self, n: int, temperatures: Sequence[float], every_n_epochs: int, seed: int):
        self.n, self.temperatures, self.every_n_epochs, self.seed = n, tuple(temperatures), every_n_epochs, seed
        self.last_paths: list[Path] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self.last_paths = self.draw(trainer, pl_module, f"epoch{trainer.current_epoch:03d}")

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str) -> list[Path]:
        model = pl_module.model
        world, rank = trainer.world_size, trainer.global_rank
        per_rank = -(-self.n // world)
        paths = []
        for t in self.temperatures:
            # The same base noise on every rank and every epoch, scaled by the temperature.
            generator = torch.Generator().manual_seed(self.seed)
            z = model.prior.sample(per_rank * world, t, generator).to(pl_module.device)
            mine = model.decode(z[rank * per_rank : (rank + 1) * per_rank])
            pixels = pl_module.all_gather(mine).reshape(-1, *mine.shape[1:])[: self.n] if world > 1 else mine
            if trainer.is_global_zero:
                path = Path(trainer.default_root_dir) / "samples" / f"{tag}_T{t:g}.png"
                paths.append(save_and_log(trainer, plots.image_grid(pixels, model.pixels.bits), path, f"samples/T{t:g}"))
                plots.save_pixels(path, model.pixels.bits, samples=pixels)
        return paths


class HierarchyPictures(Callback):
    """Every ``every_n_epochs`` validation epochs: receptive fields per level, a mixing grid of two
    validation images at every cut, and an inpainting demo (a centred noise box in
    ``inpaint_images`` validation images: corrupted | harmonic fill | cone restoration | original).

    Drawn on rank zero with the weights being validated (the EMA weights when EMA is on), saved
    as ``<run>/hierarchy/epoch{E}_{name}.png`` and logged as ``hierarchy/{name}``. Kept cheap:
    one prior sample and a few sites per level for the receptive fields, few inpainting steps.
    """

    def __init__(self, every_n_epochs: int, rf_samples: int, rf_max_sites: int, inpaint_steps: int, inpaint_images: int,
                 box: int | None):
        self.every_n_epochs, self.rf_samples, self.rf_max_sites = every_n_epochs, rf_samples, rf_max_sites
        self.inpaint_steps, self.inpaint_images, self.box = inpaint_steps, inpaint_images, box
        self.last_paths: list[Path] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        images = next(iter(trainer.val_dataloaders))[: max(2, self.inpaint_images)]
        # Validation runs in inference mode; inpainting needs gradients with respect to latents.
        with torch.inference_mode(False), torch.enable_grad():
            pictures = self.draw(pl_module.model, images.clone().to(pl_module.device))
        root = Path(trainer.default_root_dir) / "hierarchy"
        tag = f"epoch{trainer.current_epoch:03d}"
        self.last_paths = [save_and_log(trainer, image, root / f"{tag}_{name}.png", f"hierarchy/{name}")
                           for name, image in pictures.items()]

    def draw(self, model, images: torch.Tensor) -> dict:
        size = model.flow.image_size
        _, fields = plots.receptive_field_picture(model, self.rf_samples, self.rf_max_sites)
        pictures = {"receptive_fields": fields}
        if len(images) >= 2:
            pictures["mixing"] = plots.mixing_picture(model, images[:1], images[1:2])
        evaluation = analysis.evaluate_inpainting(model, images[: self.inpaint_images], self.box or max(1, size // 4),
                                                  at="centre", steps=self.inpaint_steps, compare_all=False)
        columns = ("corrupted", "harmonic", "cone", "original")
        pictures["inpainting"] = plots.inpainting_picture(evaluation, columns=columns)
        return pictures
