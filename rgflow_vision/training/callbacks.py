"""Lightning callbacks that draw what the model has learned while it trains."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from .images import image_grid, save_and_log


class SampleGrid(Callback):
    """Every ``every_n_epochs`` validation epochs, decode the same fixed latents at each temperature.

    Fixed noise makes the grids of successive epochs comparable. Under DDP each rank decodes a
    share of the latents, the shares are gathered, and rank zero writes
    ``<run>/samples/epoch{E}_T{t}.png`` and logs it as ``samples/T{t}``.
    """

    def __init__(self, n: int = 64, temperatures: Sequence[float] = (1.0, 0.7), every_n_epochs: int = 1, seed: int = 0):
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
                paths.append(save_and_log(trainer, image_grid(pixels, model.pixels.bits), path, f"samples/T{t:g}"))
        return paths
