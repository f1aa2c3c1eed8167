"""train.py and evaluate.py: fit a module built from the config, test it, report where everything went."""

from __future__ import annotations

import copy
import functools
import signal
import tempfile
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EMAWeightAveraging, LearningRateMonitor, ModelCheckpoint, WeightAveraging
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from ..errors import Interrupted, UserError
from ..lightning_base import check_optim
from ..training import HierarchyPictures, SampleGrid
from ..training.checkpoint import (AtomicCheckpointIO, InterruptCheckpoint, read_checkpoint, resolve_checkpoint,
                                   to_dict)
from .common import config_errors, datamodule_for, load_checkpoint


def build_callbacks(cfg: DictConfig, has_logger: bool = True) -> list[L.Callback]:
    with config_errors("callbacks"):
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if not has_logger:  # the learning-rate monitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if cfg.get("ema"):
        with config_errors("ema"):
            callbacks.append(EMAWeightAveraging(decay=cfg.ema))
    # Weight averaging swaps the EMA weights out again at the end of each validation epoch: it
    # must come after the callbacks that draw with them.
    return sorted(callbacks, key=lambda c: isinstance(c, WeightAveraging))


def build_loggers(cfg: DictConfig) -> list:
    with config_errors("logger"):
        return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]


def build_module(cfg: DictConfig, datamodule) -> L.LightningModule:
    """The LightningModule of ``cfg.module`` (module=image, or module=lattice which the lattice experiments
    select); a partial one (``_partial_: true``) is completed with the data's shape. Its arguments arrive
    as plain values, which the checkpoint saves as they are."""
    if cfg.get("action") and not cfg.module._target_.startswith("rgflow_vision.lattice."):
        raise UserError(f"action={to_dict(cfg.action)} is a lattice action but module={cfg.module._target_} trains "
                        "on images: add module=lattice dataset=lattice, or use experiment=lattice_free")
    if cfg.module._target_.startswith("rgflow_vision.lattice.") and cfg.get("lattice") is None:
        raise UserError("module=lattice needs the lattice sizes: add dataset=lattice, or use experiment=lattice_free")
    with config_errors("model"):
        module = instantiate(cfg.module)
        if isinstance(module, functools.partial):
            module = module(channels=datamodule.channels, image_size=datamodule.image_size, bits=datamodule.bits)
    return module


# Lightning checks the values of these but not their types: a word for a number would fail deep in the loop.
TRAINER_INTEGERS = ("max_epochs", "min_epochs", "max_steps", "min_steps", "accumulate_grad_batches",
                    "check_val_every_n_epoch", "log_every_n_steps", "num_sanity_val_steps")
TRAINER_NUMBERS = ("gradient_clip_val", "limit_train_batches", "limit_val_batches", "limit_test_batches",
                   "val_check_interval")


def check_trainer_types(trainer: DictConfig) -> None:
    for key in (*TRAINER_INTEGERS, *TRAINER_NUMBERS):
        value = trainer.get(key)
        integer = key in TRAINER_INTEGERS
        if value is not None and (isinstance(value, bool) or not isinstance(value, int if integer else (int, float))):
            raise UserError(f"trainer.{key}={value} is not {'an integer' if integer else 'a number'}: pass e.g. "
                            f"trainer.{key}={'10' if integer else '1.0'}")


def check_values(cfg: DictConfig) -> None:
    """The values that would otherwise fail inside Lightning (AdamW, the DataLoader, the EMA callback),
    each checked against its range before anything is built."""
    check_optim(to_dict(cfg.get("optim")))
    for key in ("dataset.batch_size", "lattice.batch_size"):
        group, name = key.split(".")
        value = (cfg.get(group) or {}).get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{key}={value} is not a batch size: it must be an integer >= 1, e.g. {key}=64")
    workers = (cfg.get("dataset") or {}).get("num_workers", 0)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UserError(f"dataset.num_workers={workers} must be an integer >= 0 (0: load in the training process)")
    ema = cfg.get("ema")
    if ema is not None and ema is not False:  # null or false: no averaging
        if isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0 < ema < 1:  # NaN fails too
            raise UserError(f"ema={ema} is not a decay: it must be a number in (0, 1), e.g. ema=0.999, "
                            "or ema=null for no weight averaging")


def check_writable(folder: Path) -> None:
    """A folder the run cannot write fails here, in one sentence, rather than at its first checkpoint."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(f"the output folder {folder} cannot be written ({error.strerror or error}): pass a "
                        "folder you can write, e.g. hydra.run.dir=$HOME/rgflow-runs/run1") from None


def pretrain(cfg: DictConfig) -> None:
    """``lattice.pretrain`` (``{size, max_time, optim}``): train the same flow on a smaller torus first, in
    ``<run>/pretrain_L<size>``, and start this run from it (``lattice.grow_from``): the local couplings are
    learned where steps are cheap (real phi^4, L = 16 then 32: docs/lattice.md). ``optim`` overrides this run's
    keys for that stage. Skipped when this run resumes (its checkpoint has the weights) or names its own
    ``grow_from``; a ``ckpt_path`` inside the pretraining folder resumes the pretraining, then goes on."""
    stage = (cfg.get("lattice") or {}).get("pretrain")
    if not stage or cfg.lattice.get("grow_from"):
        return
    size = stage.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size >= cfg.lattice.size:
        raise UserError(f"lattice.pretrain.size={size} must be a lattice size below lattice.size={cfg.lattice.size}: "
                        "pass a smaller one, or lattice.pretrain=null to train at this size from the start")
    check_values(cfg)  # this run's own mistakes (a lattice size, a learning rate) now, not after the pretraining
    build_module(cfg, None)
    folder, resume = f"pretrain_L{size}", None
    if cfg.get("ckpt_path"):
        path = resolve_checkpoint(cfg.ckpt_path, key="ckpt_path")
        if path.parent.name != "checkpoints" or path.parent.parent.name != folder:
            return  # this run's own checkpoint: the pretraining is done
        resume = str(path)
        with open_dict(cfg):
            cfg.ckpt_path, cfg.paths.output_dir = None, str(path.parent.parent.parent.resolve())
    small = copy.deepcopy(cfg)
    with open_dict(small):
        small.lattice.size, small.lattice.pretrain, small.test, small.ckpt_path = size, None, False, resume
        small.paths.output_dir = str(Path(cfg.paths.output_dir) / folder)
        small.trainer.max_time = stage.get("max_time", cfg.trainer.get("max_time"))
        small.optim = OmegaConf.merge(cfg.optim, stage.get("optim") or {})
    print(f"pretraining at L = {size} in {small.paths.output_dir}, then L = {cfg.lattice.size} grown from it")
    done = train(small)
    if not done.get("last_ckpt"):
        raise UserError(f"the pretraining at L = {size} wrote no checkpoint (callbacks without one, or fast_dev_run): "
                        "use the lattice callbacks, or lattice.pretrain=null")
    with open_dict(cfg):
        cfg.lattice.grow_from = str(done["last_ckpt"])


def train(cfg: DictConfig) -> dict:
    """Fit, test, and report where everything went. Returns the metrics and paths."""
    pretrain(cfg)
    ckpt_path = None
    if cfg.get("ckpt_path"):
        ckpt_path = resolve_checkpoint(cfg.ckpt_path, key="ckpt_path")
        if ckpt_path.parent.name == "checkpoints":  # continue in the run folder that wrote it
            with open_dict(cfg):
                cfg.paths.output_dir = str(ckpt_path.parent.parent.resolve())
    check_values(cfg)
    check_writable(Path(cfg.paths.output_dir))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    with config_errors("dataset"):
        datamodule = instantiate(cfg.dataset)
    module = build_module(cfg, datamodule)
    if ckpt_path is not None:  # fail with one sentence now (weights only, this model) rather than inside Lightning
        _check_resumable(ckpt_path, module)
    loggers = build_loggers(cfg)
    callbacks = build_callbacks(cfg, bool(loggers))
    check_trainer_types(cfg.trainer)
    with config_errors("trainer"):
        trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                         plugins=[AtomicCheckpointIO()])
    start = time.perf_counter()
    try:
        # weights_only: Lightning's own read of the checkpoint is as safe as read_checkpoint's above.
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        # Steps and fit time (validation included) are what scripts/budget.py reports per second.
        results = {"run_dir": Path(trainer.default_root_dir), "global_step": trainer.global_step,
                   "fit_seconds": time.perf_counter() - start,
                   "final_lr": trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None}
        if cfg.get("test"):
            results.update(trainer.test(module, datamodule=datamodule, verbose=False)[0])
    except SIGTERMException:  # Lightning's orderly stop on SIGTERM, and on Ctrl-C through InterruptCheckpoint
        raise _interrupted(trainer) from None
    for checkpoint in trainer.checkpoint_callbacks:  # none is written under fast_dev_run
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.dirpath and checkpoint.best_model_path:
            key = "best_ckpt" if checkpoint.monitor else "last_ckpt"
            results[key] = Path(checkpoint.best_model_path)
    results["samples"] = [p for cb in trainer.callbacks if isinstance(cb, SampleGrid) for p in cb.last_paths]
    results["pictures"] = [p for cb in trainer.callbacks if isinstance(cb, HierarchyPictures) for p in cb.last_paths]
    if trainer.is_global_zero:
        _report(results, trainer)
    return results


def _interrupted(trainer: L.Trainer) -> Interrupted:
    saver = next((c for c in trainer.callbacks if isinstance(c, InterruptCheckpoint)), None)
    signum = (saver.signal if saver else None) or signal.SIGTERM
    where = f"at step {trainer.global_step} (epoch {trainer.current_epoch})"
    if trainer.state.fn != "fit":
        message = (f"stopped by {signum.name} during the test, after the training finished: its checkpoints are "
                   f"in {Path(trainer.default_root_dir) / 'checkpoints'} (evaluate.py ckpt=... tests one)")
    elif saver is not None and Path(saver.ckpt_path).is_file():
        message = (f"stopped by {signum.name} {where} and saved {saver.ckpt_path}: resume with the same "
                   f"options plus ckpt_path={saver.ckpt_path}")
    else:
        message = (f"stopped by {signum.name} {where}; the callbacks have no InterruptCheckpoint, so the newest "
                   "checkpoint is the last one written at the end of an epoch")
    return Interrupted(message, 128 + signum)


def _check_resumable(path: Path, module) -> None:
    saved = read_checkpoint(path, type(module))["hyper_parameters"]
    changed = [k for k in module.REQUIRED_HPARAMS if saved.get(k) != module.hparams.get(k)]
    if changed:
        raise UserError(f"checkpoint {path} was trained with other {', '.join(changed)} than this config: resume "
                        "with the run's own config (its .hydra/overrides.yaml) plus ckpt_path=...")


def _report(results: dict, trainer: L.Trainer) -> None:
    lines = [f"run folder   {results['run_dir'].resolve()}"]
    if results.get("last_ckpt"):
        lines.append(f"checkpoint   {results['last_ckpt']}")
    if results.get("best_ckpt"):
        lines.append(f"best         {results['best_ckpt']}")
    for key, value in results.items():
        if key.startswith("test/"):
            lines.append(f"{key.replace('/', ' '):<12} {value:.4f}")
    lines += [f"samples      {path}" for path in results["samples"]]
    lines += [f"hierarchy    {path}" for path in results["pictures"]]
    for logger in trainer.loggers:
        where = getattr(logger, "log_dir", None) or logger.save_dir
        if where:  # fast_dev_run replaces the loggers with a DummyLogger that writes nowhere
            lines.append(f"logs         {where} ({type(logger).__name__})")
    print("\n".join(lines))


def evaluate(cfg: DictConfig) -> float:
    """Bits per dimension of a checkpoint on the test split (the same number training reported)."""
    module, path = load_checkpoint(cfg)
    datamodule = datamodule_for(module, cfg)
    check_trainer_types(cfg.trainer)
    with config_errors("trainer"):
        trainer = L.Trainer(**to_dict(cfg.trainer), logger=False)
    bpd = trainer.test(module, datamodule=datamodule, verbose=False)[0]["test/bpd"]
    print(f"test bpd {bpd:.4f}  ({path})")
    return bpd
