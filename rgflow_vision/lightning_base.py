"""What every RG-Flow LightningModule shares (images and lattice): AdamW with warm-up and cosine
decay, a clear stop on a non-finite loss, random streams saved in checkpoints. Below both
``training`` and ``lattice``, so that neither imports the other."""

from __future__ import annotations

import math
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states

from .errors import UserError


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; training stops before the bad step reaches a checkpoint."""


class TrainingBase(L.LightningModule):
    """What every RG-Flow training shares: AdamW with warm-up and cosine decay, a clear stop on a
    non-finite loss, and the random streams saved in checkpoints so that resuming is exact.

    Subclasses set ``self.optim`` (the ``optim`` block of conf/train.yaml, where its defaults live) and
    list in ``REQUIRED_HPARAMS`` the constructor arguments a checkpoint must hold to rebuild them.
    """

    REQUIRED_HPARAMS: tuple[str, ...] = ()
    KIND = "a training"  # for messages: "pass a checkpoint of <KIND> run"

    def _stop_if_not_finite(self, loss: torch.Tensor) -> None:
        finite = bool(torch.isfinite(loss))
        if self.trainer is not None and self.trainer.world_size > 1:  # every rank must stop together
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            raise NonFiniteLossError(
                f"the loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}); "
                "the checkpoints written before it are intact: resume from the last one with a lower optim.lr "
                "or stronger trainer.gradient_clip_val"
            )

    def configure_optimizers(self):
        o = self.optim
        check_optim(o)
        params = [p for p in self.parameters() if p.requires_grad]
        # The fused kernel exists for CPU and CUDA float tensors; it is one kernel per step instead of many.
        # Under mixed precision it unscales gradients itself, so Lightning could not clip them first.
        mixed = self._trainer is not None and "mixed" in str(self.trainer.precision)
        fused = not mixed and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
        try:  # what check_optim does not foresee is still the optim block's fault, and one sentence
            optimizer = torch.optim.AdamW(
                params, lr=o["lr"], betas=tuple(o["betas"]), weight_decay=o["weight_decay"], fused=fused
            )
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(
                o["warmup_steps"], total if o["cosine"] else None, o["min_lr_ratio"],
                self._time_used if o["cosine"] else None))
        except (TypeError, ValueError) as error:
            raise UserError(f"the optim config is invalid: {error}") from None
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def _time_used(self) -> float | None:
        """The fraction of ``trainer.max_time`` spent training so far, None without a time limit: under a
        wall-clock budget the cosine ends with the budget, whichever of steps or time runs out first."""
        timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None) if self._trainer else None
        remaining = timer.time_remaining("train") if timer is not None else None
        if remaining is None:
            return None
        elapsed = timer.time_elapsed("train")
        used = elapsed / max(elapsed + remaining, 1e-9)
        # Every DDP rank must step with the same learning rate, or their replicas drift apart: rank 0's clock.
        return self.trainer.strategy.broadcast(used) if self.trainer.world_size > 1 else used

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning restores model, optimizer, schedule, step and callbacks, but not the random
        # streams (dequantisation noise, shuffling, flow draws): keep them so a resumed run is the same run.
        states = _collect_rng_states(include_cuda=torch.cuda.is_available())
        kind, keys, *rest = states["numpy"]  # as a tensor, so checkpoints load with weights_only=True
        checkpoint["rng_states"] = {**states, "numpy": (kind, torch.from_numpy(keys.copy()), *rest)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint and self._trainer is not None and self.trainer.state.fn == "fit":
            states = dict(checkpoint["rng_states"])
            kind, keys, *rest = states["numpy"]
            _set_rng_states({**states, "numpy": (kind, keys.numpy(), *rest)})
            if self.global_rank > 0:  # the checkpoint holds rank 0's streams; other ranks must differ
                torch.manual_seed(int(torch.randint(2**62, ())) + self.global_rank)


# What configure_optimizers reads; the values are in conf/train.yaml (optim), and nowhere else.
OPTIM_KEYS = ("lr", "weight_decay", "betas", "warmup_steps", "cosine", "min_lr_ratio")


def check_optim(optim) -> None:
    """A UserError naming the first key of the optim block (conf/train.yaml) that is missing or out of its
    range. train.py calls it before Lightning starts; AdamW would otherwise fail inside ``Trainer.fit``."""
    missing = [k for k in OPTIM_KEYS if k not in optim]
    if missing:
        raise UserError(f"optim lacks {', '.join(missing)}: pass every key of the optim block in conf/train.yaml")

    def real(value) -> bool:  # NaN and infinity fail every range below
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    lr, decay, betas = optim["lr"], optim["weight_decay"], optim["betas"]
    warmup, ratio = optim["warmup_steps"], optim["min_lr_ratio"]
    if not (real(lr) and lr > 0):
        raise UserError(f"optim.lr={lr} is not a learning rate: it must be a number > 0, e.g. optim.lr=1e-3")
    if not (real(decay) and decay >= 0):
        raise UserError(f"optim.weight_decay={decay} must be a number >= 0, e.g. optim.weight_decay=0")
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(real(b) and 0 <= b < 1 for b in betas)):
        raise UserError(f"optim.betas={list(betas) if isinstance(betas, (list, tuple)) else betas} must be two "
                        "numbers in [0, 1), e.g. optim.betas=[0.9,0.999]")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise UserError(f"optim.warmup_steps={warmup} must be an integer >= 0, e.g. optim.warmup_steps=50")
    if not (real(ratio) and 0 <= ratio <= 1):
        raise UserError(f"optim.min_lr_ratio={ratio} must be a number in [0, 1], e.g. optim.min_lr_ratio=0.05")


def warmup_cosine(warmup_steps: int, total_steps: int | None, min_ratio: float = 0.0,
                  time_used: Callable[[], float | None] | None = None):
    """LR multiplier: linear warm-up over ``warmup_steps``, then cosine decay to ``min_ratio`` at
    ``total_steps`` (constant after warm-up when ``total_steps`` is None). ``time_used``, if given,
    returns the fraction of a wall-clock budget spent (or None): the decay follows whichever of
    steps or time is further along."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = 0.0
        if total_steps is not None and total_steps > warmup_steps:
            progress = (step - warmup_steps) / (total_steps - warmup_steps)
        used = time_used() if time_used is not None else None
        if used is not None:
            progress = max(progress, used)
        elif total_steps is None or total_steps <= warmup_steps:
            return 1.0
        progress = min(1.0, progress)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


# -- reading checkpoints, for the image and the lattice slices alike -----------------------------------
# Checkpoints load as weights only (torch.load(weights_only=True)): tensors, numbers, strings and containers
# of them. Researchers pass checkpoints around, and a full pickle can run any code while it loads, so a file
# that needs more than that is refused before anything in it runs.


def resolve_checkpoint(ckpt: str | None, outputs: str | Path = "outputs", key: str = "ckpt") -> Path:
    """``ckpt`` as a path; ``latest`` is the ``last.ckpt`` of the newest run under ``outputs``. ``key`` is the
    option the user set (``ckpt``, or ``ckpt_path`` for train.py), for the messages."""
    if ckpt is None or str(ckpt) == "":
        raise UserError(f"no checkpoint given: pass {key}=path/to/last.ckpt (train.py prints where it wrote one)")
    if str(ckpt) == "latest":
        found = sorted(Path(outputs).glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise UserError(f"ckpt=latest found no checkpoints/last.ckpt under {Path(outputs).resolve()}: "
                            "train a model first (python train.py) or pass ckpt=path/to/last.ckpt")
        return found[-1]
    path = Path(ckpt)
    if path.is_dir():
        inside = next((p for p in (path / "last.ckpt", path / "checkpoints" / "last.ckpt") if p.is_file()), None)
        advice = (f"pass {key}={inside}" if inside else
                  "it holds no last.ckpt or checkpoints/last.ckpt: pass the last.ckpt that train.py printed at the end")
        raise UserError(f"{key}={path} is a folder, not a checkpoint file: {advice}")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: pass the last.ckpt that train.py printed at the end")
    return path


def read_checkpoint(path: Path, module_class: type[TrainingBase] = TrainingBase) -> dict:
    """The checkpoint dictionary, or a UserError saying why ``module_class`` cannot be rebuilt from it."""
    try:
        # mmap: resuming reads the checkpoint here and again in Lightning; map it rather than load it twice.
        # No class is allow-listed: what train.py saves (EMA, loggers, callbacks, the numpy random stream as a
        # tensor, see lightning_base) is tensors and plain values, measured on every checkpoint the tests write.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower():  # the weights-only unpickler met a class or function
            found = re.search(r"GLOBAL ([\w.]+)", str(error))
            raise UserError(f"checkpoint {path} holds code or objects that are not plain weights"
                            f"{f' ({found[1]})' if found else ''}, and checkpoints load as weights only so that a "
                            "file from someone else cannot run code here: use a checkpoint written by train.py"
                            ) from None
        raise _corrupt(path, error) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise _corrupt(path, error) from None
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    missing = [k for k in module_class.REQUIRED_HPARAMS if k not in hparams]
    if missing or "state_dict" not in checkpoint:
        raise UserError(f"checkpoint {path} was not written by rgflow-vision's train.py for this app (it lacks "
                        f"{', '.join(missing) or 'state_dict'}): pass a checkpoint of {module_class.KIND} run")
    architecture = hparams.get("architecture")
    if isinstance(architecture, dict) and architecture.get("flow", "rgflow") == "rgflow" \
            and architecture.get("bijection", "rnvp") == "rnvp" and "conditioner" not in architecture:
        # Written before model.conditioner existed (1 Dec 2026), when every coupling had the paper's separate
        # networks; the default has since become shared.
        hparams["architecture"] = {**architecture, "conditioner": "separate"}
    return checkpoint


def _corrupt(path: Path, error: Exception) -> UserError:
    return UserError(f"checkpoint {path} is corrupt or truncated ({type(error).__name__}): "
                     "use another one, e.g. the best checkpoint in the same folder")
