"""Finding and loading checkpoints, with one clear sentence for each way it can go wrong."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ..errors import UserError
from .module import FlowLitModule, TrainingBase


def to_dict(node) -> dict:
    """A config node as a plain, resolved dict (what modules save as hyperparameters); ``{}`` for None."""
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def resolve_checkpoint(ckpt: str | None, outputs: str | Path = "outputs") -> Path:
    """``ckpt`` as a path; ``latest`` is the ``last.ckpt`` of the newest run under ``outputs``."""
    if ckpt is None or str(ckpt) == "":
        raise UserError("no checkpoint given: pass ckpt=path/to/last.ckpt (train.py prints where it wrote one)")
    if str(ckpt) == "latest":
        found = sorted(Path(outputs).glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise UserError(f"ckpt=latest found no checkpoints/last.ckpt under {Path(outputs).resolve()}: "
                            "train a model first (python train.py) or pass ckpt=path/to/last.ckpt")
        return found[-1]
    path = Path(ckpt)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: pass the last.ckpt that train.py printed at the end")
    return path


def read_checkpoint(path: Path, module_class: type[TrainingBase] = FlowLitModule) -> dict:
    """The checkpoint dictionary, or a UserError saying why ``module_class`` cannot be rebuilt from it."""
    try:
        # mmap: resuming reads the checkpoint here and again in Lightning; map it rather than load it twice.
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise UserError(f"checkpoint {path} is corrupt or truncated ({type(error).__name__}): "
                        "use another one, e.g. the best checkpoint in the same folder") from None
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    missing = [k for k in module_class.REQUIRED_HPARAMS if k not in hparams]
    if missing or "state_dict" not in checkpoint:
        raise UserError(f"checkpoint {path} was not written by rgflow-vision's train.py for this app (it lacks "
                        f"{', '.join(missing) or 'state_dict'}): pass a checkpoint of {module_class.KIND} run")
    return checkpoint


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
