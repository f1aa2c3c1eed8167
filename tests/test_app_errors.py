"""One error path for every app: a bad input is one sentence on stderr and exit status 2, no traceback."""

from __future__ import annotations

import shutil

import pytest

from rgflow_vision.apps import train as train_app
from rgflow_vision.apps.common import entry_point, quote_values_with_equals

from . import data_fixtures
from .apps import TINY_MODEL, compose_cfg, run_app, run_script


def error_line(result) -> str:
    """The app's one sentence: exit 2, no traceback, and its ``error:`` line is the last thing on stderr."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], result.stderr[-2000:]
    return lines[-1]


def one_sentence(task, cfg, capsys) -> str:
    """:func:`error_line` in this process (no interpreter start): the task behind the apps' error path."""
    with pytest.raises(SystemExit) as stop:
        entry_point(task)(cfg)
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and "Traceback" not in "\n".join(lines), lines
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], lines
    return lines[-1]


@pytest.mark.parametrize(("override", "message"), [
    ("model.block_size=3", "model config is invalid: block size 3"),
    ("model.couplings=[0]", "model config is invalid: couplings per level must be positive"),
    ("dataset.image_size=24", "dataset config is invalid: image_size must be a power of two"),
    ("trainer.max_epochs=-5", "trainer config is invalid: `max_epochs`"),
    ("trainer.max_epochs=abc", "trainer.max_epochs=abc is not an integer"),
    ("datset=mnist", "Could not override 'datset'"),  # Hydra's own errors take the same path
    ("dataset=folder", "dataset.path has no value: pass dataset.path="),
])
def test_a_bad_training_config_is_one_sentence(tmp_path, override, message):
    # In this process (the same script, Hydra and error path, without an interpreter start); one real process
    # checks the exit status and stderr of Hydra's own error.
    run = run_app if override.startswith("datset") else run_script
    result = run("train", override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    line = error_line(result)
    assert message in line and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("override", ["temperature=-1", "n=abc"])
def test_a_negative_temperature_or_a_word_for_a_number_is_refused(tmp_path, override):
    result = run_script("sample", override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert override in error_line(result) and not list((tmp_path / "run").glob("*.png"))


def test_a_folder_smaller_than_one_batch_says_to_lower_the_batch_size(tmp_path):
    data_fixtures.write_image_folder(tmp_path / "images", n=18, size=8)
    result = run_script("train", "dataset=folder", f"dataset.path={tmp_path / 'images'}", "dataset.image_size=8",
                     "dataset.num_workers=0", *TINY_MODEL, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    line = error_line(result)
    assert "holds 14 images" in line and "lower dataset.batch_size to 14" in line
    assert "test bpd" not in result.stdout


def test_values_with_an_equals_sign_are_quoted_for_hydra():
    assert quote_values_with_equals(["ckpt=runs/epoch=3-step=100.ckpt", "n=4", "ckpt='a=b'", "-m"]) == [
        "ckpt='runs/epoch=3-step=100.ckpt'", "n=4", "ckpt='a=b'", "-m"]


def test_a_lightning_checkpoint_name_is_accepted_on_the_command_line(tmp_path, trained_run):
    _, results = trained_run
    named = tmp_path / "epoch=1-step=4.ckpt"  # Lightning's default file name
    shutil.copy(results["last_ckpt"], named)
    result = run_app("sample", f"ckpt={named}", "n=4", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote" in result.stdout
    missing = run_script("evaluate", f"ckpt={tmp_path / 'epoch=9-step=90.ckpt'}", cwd=tmp_path)
    assert "epoch=9-step=90.ckpt does not exist" in error_line(missing)


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lr=0", "optim.lr=0 is not a learning rate: it must be a number > 0"),
    ("optim.lr=-1", "optim.lr=-1 is not a learning rate: it must be a number > 0"),
    ("dataset.batch_size=0", "dataset.batch_size=0 is not a batch size: it must be an integer >= 1"),
    ("ema=1.5", "ema=1.5 is not a decay: it must be a number in (0, 1)"),
])
def test_a_value_out_of_its_range_is_one_sentence_before_lightning_starts(tmp_path, override, message, capsys):
    line = one_sentence(train_app.train, compose_cfg(tmp_path, *TINY_MODEL, override), capsys)
    assert message in line
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before a trainer existed


def test_a_folder_passed_as_the_checkpoint_names_the_last_ckpt_inside(tmp_path, trained_run, capsys):
    _, results = trained_run
    run_dir = results["run_dir"]  # the run folder, which holds checkpoints/last.ckpt
    line = one_sentence(train_app.evaluate, compose_cfg(tmp_path, f"ckpt={run_dir}", config="evaluate"), capsys)
    assert line == (f"error: ckpt={run_dir} is a folder, not a checkpoint file: "
                    f"pass ckpt={run_dir / 'checkpoints' / 'last.ckpt'}")
    resume = compose_cfg(tmp_path, *TINY_MODEL, f"ckpt_path={run_dir / 'checkpoints'}")
    assert f"pass ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}" in one_sentence(train_app.train, resume, capsys)
    (tmp_path / "empty").mkdir()
    line = one_sentence(train_app.evaluate, compose_cfg(tmp_path, f"ckpt={tmp_path / 'empty'}", config="evaluate"),
                        capsys)
    assert "is a folder, not a checkpoint file: it holds no last.ckpt" in line


def test_an_experiments_coupling_key_under_an_ode_model_says_how_to_drop_it(tmp_path, capsys):
    cfg = compose_cfg(tmp_path, "experiment=lattice_phi4_critical", "+model.transform=spline")  # on model=ode_global
    line = one_sentence(train_app.train, cfg, capsys)
    assert "bijection 'ode' takes no transform" in line and "'~model.transform'" in line
