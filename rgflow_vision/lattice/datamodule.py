"""Step counters for lattice training: the configurations are flow draws, so a batch is only a tick."""

from __future__ import annotations

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset


class _Ticks(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor(index)


class FlowDrawsDataModule(LightningDataModule):
    """``steps_per_epoch`` training steps, ``val_steps`` validation and ``test_steps`` test steps per epoch.

    The batches carry nothing but their index: the module draws its configurations from the flow.
    With DDP the training ticks are split over the ranks like any dataset (each rank draws its own
    batch, so one step sees ``world_size x batch_size`` configurations).
    """

    def __init__(self, steps_per_epoch: int, val_steps: int, test_steps: int):
        super().__init__()
        for name, value in (("steps_per_epoch", steps_per_epoch), ("val_steps", val_steps), ("test_steps", test_steps)):
            if int(value) < (1 if name == "steps_per_epoch" else 0):
                raise ValueError(f"{name} must be a positive number of steps, got {value}")
        self.steps_per_epoch, self.val_steps, self.test_steps = int(steps_per_epoch), int(val_steps), int(test_steps)
        self.name = "lattice"

    def _loader(self, n: int) -> DataLoader:
        return DataLoader(_Ticks(n), batch_size=1, shuffle=False, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.steps_per_epoch)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_steps)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_steps)
