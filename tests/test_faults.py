"""Faults a run meets outside the happy path: a checkpoint from someone else, a signal in the middle of an
epoch, a write that fails, an output folder that cannot be written."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from rgflow_vision.apps import lattice as lattice_app
from rgflow_vision.apps import pictures
from rgflow_vision.apps import train as train_app
from rgflow_vision.errors import Interrupted
from rgflow_vision.lightning_base import warmup_cosine
from rgflow_vision.training.checkpoint import AtomicCheckpointIO, read_checkpoint

from .apps import OPTIM, QUICK, TINY_MODEL, compose_cfg, run_app, run_script
from .test_app_errors import one_sentence


class WritesAFile:
    """Unpickling this calls ``open(path, "w")``: the least a checkpoint that runs code could do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def code_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint that looks like train.py's but creates ``tmp_path/ran`` when fully unpickled."""
    side_effect = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": {}, "state_dict": {}, "x": WritesAFile(side_effect)}, path)
    return path, side_effect


def test_the_crafted_checkpoint_does_run_code_when_fully_unpickled(tmp_path):
    evil, side_effect = code_checkpoint(tmp_path)  # what the tests below refuse is a real attack
    torch.load(evil, weights_only=False)
    assert side_effect.exists()


APPS = {"evaluate": train_app.evaluate, "sample": pictures.sample, "mix": pictures.mix,
        "inpaint": pictures.inpaint, "receptive_fields": pictures.receptive_fields, "lattice": lattice_app.report}


@pytest.mark.parametrize("app", [*APPS, "train"])
def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_in_it_runs(tmp_path, app, capsys):
    evil, side_effect = code_checkpoint(tmp_path)
    if app == "train":  # resuming: read here first, then by Lightning
        task, cfg = train_app.train, compose_cfg(tmp_path, *TINY_MODEL, *QUICK, f"ckpt_path={evil}")
    else:
        task, cfg = APPS[app], compose_cfg(tmp_path, f"ckpt={evil}", config=app)
    line = one_sentence(task, cfg, capsys)
    assert "not plain weights (io.open)" in line and "load as weights only" in line
    assert not side_effect.exists()


def test_lightning_itself_reads_a_resumed_checkpoint_as_weights_only(tmp_path, monkeypatch):
    """Even past train.py's own check, Trainer.fit(ckpt_path=...) unpickles nothing but weights."""
    evil, side_effect = code_checkpoint(tmp_path)
    monkeypatch.setattr(train_app, "_check_resumable", lambda path, module: None)
    with pytest.raises(Exception, match="Weights only load failed"):
        train_app.train(compose_cfg(tmp_path, *TINY_MODEL, *QUICK, f"ckpt_path={evil}"))
    assert not side_effect.exists()


def test_checkpoints_that_train_writes_load_as_weights_only(trained_run):
    _, results = trained_run  # EMA, every logger, every callback of conf/callbacks/default.yaml
    for name in ("last_ckpt", "best_ckpt"):
        checkpoint = read_checkpoint(results[name])
        assert {"state_dict", "current_model_state", "optimizer_states", "lr_schedulers", "rng_states"} <= set(
            checkpoint)


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)
    with pytest.raises(Exception):  # a lambda cannot be pickled: the write fails half-way
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3), "bad": lambda: None}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no partial file left behind


def test_an_output_folder_that_cannot_be_written_is_one_sentence(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    cfg = compose_cfg(tmp_path, *TINY_MODEL, *QUICK, f"paths.output_dir={tmp_path / 'a_file' / 'run'}")
    line = one_sentence(train_app.train, cfg, capsys)
    assert f"output folder {tmp_path / 'a_file' / 'run'} cannot be written" in line
    result = run_script("train", f"hydra.run.dir={tmp_path / 'a_file' / 'run'}", cwd=tmp_path)  # Hydra's own
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: the run folder cannot be written")


# -- signals --------------------------------------------------------------------------------------


class StepLog(Callback):
    """Appends "epoch step lr" after each training step to ``path`` (the lr the schedule set for the next
    step); sends ``signal`` to its own process
    after step ``at`` (as a scheduler or a Ctrl-C would, only at a known moment), or after validation batch
    ``at_validation`` of the first epoch."""

    def __init__(self, path: str, at: int | None = None, at_validation: int | None = None,
                 signal: str = "SIGTERM") -> None:
        self.path, self.at, self.at_validation, self.signal = Path(path), at, at_validation, signal

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        with self.path.open("a") as log:
            log.write(f"{trainer.current_epoch} {trainer.global_step} {lr!r}\n")
        if trainer.global_step == self.at:
            os.kill(os.getpid(), getattr(signal, self.signal))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == self.at_validation and trainer.current_epoch == 0:
            os.kill(os.getpid(), getattr(signal, self.signal))


def step_log(path: Path) -> list[tuple[int, int, float]]:
    return [(int(e), int(s), float(lr)) for e, s, lr in (line.split() for line in path.read_text().splitlines())]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "status"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_mid_epoch_leaves_a_checkpoint_that_resumes_from_its_step(tmp_path, name, status):
    log = tmp_path / "steps.txt"
    run = [*TINY_MODEL, *QUICK, "trainer.max_epochs=2", "trainer.limit_train_batches=5", "test=false",
           f"+callbacks.steps._target_={__name__}.StepLog", f"+callbacks.steps.path={log}",
           f"hydra.run.dir={tmp_path / 'run'}"]
    stopped = run_app("train", *run, "+callbacks.steps.at=3", f"+callbacks.steps.signal={name}", cwd=tmp_path)
    saved = tmp_path / "run" / "checkpoints" / "interrupted.ckpt"
    assert stopped.returncode == status, stopped.stderr[-3000:]
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"interrupted: stopped by {name} at step 3 (epoch 0) and saved {saved}: resume with the same options "
        f"plus ckpt_path={saved}")
    checkpoint = read_checkpoint(saved)
    assert (checkpoint["global_step"], checkpoint["epoch"]) == (3, 0)
    assert checkpoint["lr_schedulers"][0]["last_epoch"] == 3
    assert all(s["step"] == 3 for s in checkpoint["optimizer_states"][0]["state"].values())

    resumed = run_app("train", *run, f"ckpt_path={saved}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Each step once, in order: steps 4 and 5 finish epoch 0 (its loader starts over), 6 to 10 are epoch 1;
    # the learning rate (set for the next step) follows the schedule through the stop, as without one.
    schedule = warmup_cosine(OPTIM["warmup_steps"], 10, OPTIM["min_lr_ratio"])
    assert step_log(log) == [(int(step > 5), step, OPTIM["lr"] * schedule(step)) for step in range(1, 11)]
    last = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 10 and all(s["step"] == 10 for s in last["optimizer_states"][0]["state"].values())
    assert not saved.exists()  # the run finished: last.ckpt is newer


def test_a_sigterm_during_validation_saves_the_live_weights_not_the_averaged_ones(tmp_path):
    """Weight averaging swaps its average into the model for validation: stopped there, the checkpoint must
    be the one validation would have ended with (the average as state_dict, the live weights beside it)."""
    common = [*TINY_MODEL, *QUICK, "trainer.limit_val_batches=2", "ema=0.5", "logger=none", "test=false",
              "~callbacks.sample_grid", "~callbacks.model_checkpoint"]
    whole = train_app.train(compose_cfg(tmp_path / "whole", *common))
    with pytest.raises(Interrupted, match="stopped by SIGTERM at step 2 .epoch 0. and saved") as stop:
        train_app.train(compose_cfg(tmp_path / "stopped", *common, f"+callbacks.steps._target_={__name__}.StepLog",
                                    f"+callbacks.steps.path={tmp_path / 'steps.txt'}",
                                    "+callbacks.steps.at_validation=0"))
    assert stop.value.status == 143
    ended, stopped = (read_checkpoint(p) for p in (whole["last_ckpt"],
                                                     tmp_path / "stopped" / "run" / "checkpoints" / "interrupted.ckpt"))
    for key in ("state_dict", "current_model_state"):
        for name, value in ended[key].items():
            torch.testing.assert_close(stopped[key][name], value, msg=f"{key}.{name}")
