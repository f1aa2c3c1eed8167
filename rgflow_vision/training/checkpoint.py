"""Loading image modules from checkpoints and writing checkpoints safely (atomically; on SIGTERM or Ctrl-C),
with one clear sentence for each way it can go wrong. Finding and reading a checkpoint (weights only) is
:mod:`rgflow_vision.lightning_base`'s, shared with the lattice slice."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io import TorchCheckpointIO
from lightning.pytorch.callbacks import OnExceptionCheckpoint, WeightAveraging
from lightning.pytorch.trainer.states import RunningStage, TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf

from ..errors import UserError
from ..lightning_base import read_checkpoint, resolve_checkpoint  # noqa: F401  (their home; re-exported)
from .module import FlowLitModule, TrainingBase


def to_dict(node) -> dict:
    """A config node as a plain, resolved dict (what modules save as hyperparameters); ``{}`` for None."""
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, with the file written next to its final name and renamed into place.

    Lightning writes a local checkpoint to the system's temporary folder and then moves it; where that
    folder is another file system (a node's local /tmp, the run on a shared disk), the move is a copy, and
    a job killed during it leaves a truncated last.ckpt. A rename in the same folder is atomic: the old
    checkpoint or the new one, never half of one. Remote paths (``s3://...``) keep Lightning's writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.part")
        try:
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())  # on disk before the rename makes it the checkpoint
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


class InterruptCheckpoint(OnExceptionCheckpoint):
    """On SIGTERM (a cluster scheduler's notice) or a first Ctrl-C: finish the step in progress, write
    ``<dirpath>/interrupted.ckpt``, and stop; ``python train.py ... ckpt_path=<it>`` resumes from it.

    Lightning 2.6 already stops on SIGTERM at the next batch boundary, by raising ``SIGTERMException``, but
    outside SLURM saves nothing; ``OnExceptionCheckpoint`` saves on any exception, also one in the middle of
    a step. This one saves only on that orderly stop, so the checkpoint holds a whole number of steps, and
    turns the first Ctrl-C into the same stop. A second Ctrl-C stops at once and saves nothing new (the
    epoch's last.ckpt stays). The file is removed when a run finishes normally: last.ckpt is then newer.
    """

    def __init__(self, dirpath: str | Path, filename: str = "interrupted") -> None:
        super().__init__(dirpath, filename)
        self.signal: signal.Signals | None = None  # what stopped the run, for train.py's message

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's own SIGTERM handler is in place by now, and its teardown restores every handler,
        # this one included.
        self.signal = None
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._first_ctrl_c)

    def _first_ctrl_c(self, signum: int, frame: Any) -> None:
        self.signal = signal.SIGINT
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the second Ctrl-C interrupts at once
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's orderly stop, at the end of this step

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        self.signal = self.signal or signal.SIGTERM
        if trainer.state.stage in (RunningStage.VALIDATING, RunningStage.SANITY_CHECKING):
            # Stopped inside validation: weight averaging has swapped the averaged weights into the model
            # for it. Swap them back, as the end of validation would, so the checkpoint is what it saves.
            for callback in trainer.callbacks:
                if isinstance(callback, WeightAveraging):
                    callback.on_validation_epoch_end(trainer, pl_module)
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)  # the whole training state, to resume


def load_module(
    ckpt: str | None, module_class: type[TrainingBase] = FlowLitModule, map_location: str = "cpu"
) -> tuple[TrainingBase, Path]:
    """The trained module (EMA weights if the run used EMA) in eval mode, and its path."""
    path = resolve_checkpoint(ckpt)
    checkpoint = read_checkpoint(path, module_class)
    try:
        module = module_class(**checkpoint["hyper_parameters"])
        module.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, TypeError, ValueError) as error:
        first = str(error).strip().splitlines()[0]
        raise UserError(f"checkpoint {path} does not match this version of the model ({first}): "
                        "retrain, or check out the code version that wrote it") from None
    return module.to(map_location).eval(), path
