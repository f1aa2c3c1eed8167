"""Training as users run it: real configs composed by Hydra, tiny limits, the CPU."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

from rgflow_vision.apps import pictures
from rgflow_vision.apps import train as train_app
from rgflow_vision.data import CelebADataModule, CIFAR10DataModule
from rgflow_vision.errors import UserError
from rgflow_vision.training import FlowLitModule, NonFiniteLossError
from rgflow_vision.training.checkpoint import load_module
from rgflow_vision.training.module import content_seeded_noise, warmup_cosine

from . import data_fixtures

from .apps import QUICK, TINY_MODEL, compose_cfg, run_app, run_script


def flat_parameters(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.state_dict().values() if p.is_floating_point()])


# -- configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("experiment", ["celeba32_paper", "mnist32", "cifar10_paper"])
def test_experiment_configs_compose_into_their_dataset_and_model(tmp_path, experiment):
    cfg = compose_cfg(tmp_path, f"experiment={experiment}")
    assert cfg.dataset._target_.startswith("rgflow_vision.data.")
    assert cfg.task_name == experiment and cfg.model.hidden in (128, 512)


def test_ddp_configs_pass_straight_to_the_lightning_trainer(tmp_path):
    cfg = compose_cfg(tmp_path, "trainer=ddp", "trainer.devices=8")
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.accelerator) == ("ddp", 8, "gpu")
    cfg = compose_cfg(tmp_path, "trainer=ddp_cpu")
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.accelerator) == ("ddp", 2, "cpu")


def test_the_multi_gpu_wandb_command_composes_with_wandb_offline_unless_logged_in(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in
    cfg = compose_cfg(tmp_path, "dataset=celeba", "trainer=ddp", "trainer.devices=8", "logger=wandb")
    assert cfg.logger.wandb.offline is True and cfg.trainer.devices == 8
    assert cfg.logger.wandb.id == compose_cfg(tmp_path, "logger=wandb").logger.wandb.id  # same run folder, same run
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert compose_cfg(tmp_path, "logger=wandb").logger.wandb.offline is False


def test_precision_is_float32_on_cpu(tmp_path):
    assert compose_cfg(tmp_path).trainer.precision == "32-true"


def test_learning_rate_warms_up_then_decays_to_its_floor():
    factor = warmup_cosine(10, 110, 0.1)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.55) and factor(110) == pytest.approx(0.1) and factor(500) == pytest.approx(0.1)
    assert warmup_cosine(0, None)(1000) == 1.0


def test_under_a_time_budget_the_decay_follows_the_clock_or_the_steps_whichever_is_further():
    clock = {"used": 0.5}
    factor = warmup_cosine(10, 1_000_010, 0.1, lambda: clock["used"])
    assert factor(5) == pytest.approx(0.6)  # warm-up is in steps
    assert factor(20) == pytest.approx(0.55)  # half the budget spent: half way down the cosine
    clock["used"] = 1.0
    assert factor(21) == pytest.approx(0.1)
    clock["used"] = None  # no time limit: the steps decide
    assert factor(500_010) == pytest.approx(0.55)
    assert warmup_cosine(0, None, 0.1, lambda: 0.5)(7) == pytest.approx(0.55)


# -- evaluation noise --------------------------------------------------------------------------


def test_evaluation_noise_depends_on_the_image_not_its_batch():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    whole = content_seeded_noise(images)
    parts = torch.cat([content_seeded_noise(images[:2]), content_seeded_noise(images[2:])])
    assert torch.equal(whole, parts) and whole.min() >= 0 and whole.max() < 1
    assert not torch.equal(whole[0], whole[1])
    many = content_seeded_noise(torch.randint(0, 256, (64, 3, 8, 8)))
    assert abs(float(many.mean()) - 0.5) < 0.01 and abs(float(many.var()) - 1 / 12) < 0.003  # uniform


# -- every dataset config trains on files in its real format ---------------------------------


DATASETS = {
    "digits": lambda root: None,
    "mnist": lambda root: data_fixtures.write_mnist(root),
    "cifar10": lambda root: data_fixtures.write_cifar10(root),
    "celeba": lambda root: data_fixtures.write_celeba(root),
    "folder": lambda root: data_fixtures.write_image_folder(root / "my_images"),
}


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_fast_dev_run_on_every_dataset(tmp_path, dataset, monkeypatch):
    DATASETS[dataset](tmp_path / "data")
    # Small fixture files cannot match the real MD5s: only torchvision's checksum tables are swapped.
    fixture_class = {"cifar10": (CIFAR10DataModule, data_fixtures.cifar10_class),
                     "celeba": (CelebADataModule, data_fixtures.celeba_class)}
    if dataset in fixture_class:
        module_class, make_class = fixture_class[dataset]
        monkeypatch.setattr(module_class, "dataset_class", make_class(tmp_path / "data"))
    extra = [f"dataset.path={tmp_path / 'data' / 'my_images'}"] if dataset == "folder" else []
    extra += ["dataset.download=false"] if dataset not in ("digits", "folder") else []
    extra += ["dataset.val_size=8"] if dataset in ("mnist", "cifar10") else []
    cfg = compose_cfg(tmp_path, f"dataset={dataset}", "trainer.fast_dev_run=true", "dataset.batch_size=4",
                      "dataset.num_workers=0", *TINY_MODEL, *extra)
    results = train_app.train(cfg)
    assert math.isfinite(results["test/bpd"]) and 0 < results["test/bpd"] < 16


# -- the whole run ----------------------------------------------------------------------------


def test_training_leaves_checkpoints_bpd_and_sample_grids(trained_run):
    tmp_path, results = trained_run
    run = tmp_path / "run"
    assert results["last_ckpt"] == run / "checkpoints" / "last.ckpt" and results["last_ckpt"].is_file()
    assert Path(results["best_ckpt"]).is_file()
    assert 0 < results["test/bpd"] < 16
    assert sorted(p.name for p in results["samples"]) == ["epoch001_T0.7.png", "epoch001_T1.png"]
    assert all(p.is_file() for p in results["samples"])
    assert (run / "csv" / "version_0" / "metrics.csv").is_file()
    assert sorted(p.name for p in (run / "hierarchy").iterdir()) == [
        "epoch001_inpainting.png", "epoch001_mixing.png", "epoch001_receptive_fields.png"]
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))


def test_evaluate_reproduces_the_test_bpd_of_training(trained_run):
    tmp_path, results = trained_run
    cfg = compose_cfg(tmp_path, f"ckpt={results['last_ckpt']}", "trainer.enable_progress_bar=false",
                      config="evaluate")
    assert train_app.evaluate(cfg) == pytest.approx(results["test/bpd"], abs=1e-6)


def test_model_small_shares_one_conditioner_and_checkpoints_written_with_separate_ones_stay_separate(tmp_path):
    assert compose_cfg(tmp_path).model.conditioner == "shared"  # the faster learner per hour (docs/speed.md)
    results = train_app.train(compose_cfg(tmp_path, *TINY_MODEL, *QUICK, "model.conditioner=separate", "logger=none"))
    module, _ = load_module(results["last_ckpt"])
    assert module.hparams.architecture["conditioner"] == "separate"
    cfg = compose_cfg(tmp_path, f"ckpt={results['last_ckpt']}", "trainer.enable_progress_bar=false", config="evaluate")
    assert train_app.evaluate(cfg) == pytest.approx(results["test/bpd"], abs=1e-6)
    # A checkpoint from before model.conditioner existed has no such key, and had the separate networks.
    checkpoint = torch.load(results["last_ckpt"], weights_only=True)
    del checkpoint["hyper_parameters"]["architecture"]["conditioner"]
    torch.save(checkpoint, older := tmp_path / "before_the_option.ckpt")
    assert load_module(str(older))[0].hparams.architecture["conditioner"] == "separate"
    cfg = compose_cfg(tmp_path, f"ckpt={older}", "trainer.enable_progress_bar=false", config="evaluate")
    assert train_app.evaluate(cfg) == pytest.approx(results["test/bpd"], abs=1e-6)


@pytest.mark.parametrize("reversible", [False, True])
def test_bf16_mixed_training_runs_on_the_cpu_and_its_checkpoint_evaluates_and_samples(tmp_path, reversible):
    """The GPU's precision path, run where CI can: finite loss, a checkpoint that evaluates, samples that decode."""
    cfg = compose_cfg(tmp_path, *TINY_MODEL, *QUICK, "trainer.precision=bf16-mixed", f"model.reversible={reversible}",
                      "~callbacks.hierarchy")
    results = train_app.train(cfg)
    assert math.isfinite(results["test/bpd"]) and 0 < results["test/bpd"] < 16
    evaluated = train_app.evaluate(compose_cfg(tmp_path, f"ckpt={results['last_ckpt']}", "trainer.enable_progress_bar=false",
                                               "trainer.precision=bf16-mixed", config="evaluate"))
    assert evaluated == pytest.approx(results["test/bpd"], abs=1e-6)
    module, _ = load_module(str(results["last_ckpt"]), FlowLitModule)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        images = module.model.sample(4)
    assert images.shape == (4, 1, 16, 16) and images.dtype == torch.long
    assert 0 <= int(images.min()) and int(images.max()) <= 255


def test_checkpoint_holds_the_ema_weights_for_evaluation_and_the_live_ones_for_resuming(trained_run):
    _, results = trained_run
    checkpoint = torch.load(results["last_ckpt"], weights_only=True)
    ema, live = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert any(not torch.equal(ema[k], live[k]) for k in ema if ema[k].is_floating_point())
    assert "rng_states" in checkpoint and checkpoint["global_step"] == 4


def test_sample_app_writes_a_grid(trained_run, tmp_path):
    _, results = trained_run
    out = tmp_path / "grid.png"
    cfg = compose_cfg(tmp_path, f"ckpt={results['last_ckpt']}", "n=9", "temperature=0.8", f"out={out}",
                      config="sample")
    assert pictures.sample(cfg) == out
    from PIL import Image

    assert Image.open(out).size == (10 * (3 * 16 + 4 * 2),) * 2  # 56 pixels enlarged 10x: 512 or more
    mixed = compose_cfg(tmp_path, f"ckpt={results['last_ckpt']}", "n=4", "temperature=0", "split_level=1",
                        "coarse_temperature=1.0", config="sample")
    assert pictures.sample(mixed).name == "samples_T0_split1_T1.png"


def test_last_checkpoint_is_rewritten_every_epoch_even_without_improvement(tmp_path):
    frozen = train_app.train(compose_cfg(tmp_path, *TINY_MODEL, *QUICK, "trainer.max_epochs=3", "optim.lr=1e-30",  # moves no float32 weight
                                     "test=false", "logger=none", "~callbacks.sample_grid"))
    assert torch.load(frozen["last_ckpt"], weights_only=True)["global_step"] == 6
    assert torch.load(frozen["best_ckpt"], weights_only=True)["global_step"] == 2  # val/bpd never improved


# -- resume -----------------------------------------------------------------------------------


def test_resumed_run_reaches_the_same_parameters_as_an_uninterrupted_one(tmp_path):
    common = [*TINY_MODEL, *QUICK, "ema=0.5", "logger=csv", "callbacks.sample_grid.n=2"]
    straight = train_app.train(compose_cfg(tmp_path / "a", *common, "trainer.max_epochs=3", "test=false"))
    first = train_app.train(compose_cfg(tmp_path / "b", *common, "trainer.max_epochs=2", "test=false"))
    resumed = train_app.train(compose_cfg(tmp_path / "c", *common, "trainer.max_epochs=3", "test=false",
                                      f"ckpt_path={first['last_ckpt']}"))
    assert resumed["run_dir"] == first["run_dir"]  # it continued in the run folder that wrote the checkpoint
    a, b = (torch.load(r["last_ckpt"], weights_only=True) for r in (straight, resumed))
    assert a["global_step"] == b["global_step"] == 6
    for key in ("state_dict", "current_model_state"):  # EMA and live weights
        torch.testing.assert_close(flat_parameters_of(a[key]), flat_parameters_of(b[key]), rtol=1e-5, atol=1e-6)
    assert len(list((first["run_dir"] / "csv").iterdir())) == 2  # the resumed part logged beside the first
    with pytest.raises(UserError, match="trained with other architecture"):
        train_app.train(compose_cfg(tmp_path / "d", *common, "model.hidden=8", f"ckpt_path={first['last_ckpt']}"))


def flat_parameters_of(state: dict) -> torch.Tensor:
    return torch.cat([v.flatten() for v in state.values() if v.is_floating_point()])


# -- failures get one sentence, and nothing is lost ------------------------------------------


class PoisonWeights(L.Callback):
    """Sets one weight to NaN after ``step`` optimizer steps, as a diverging run would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            next(pl_module.parameters()).data.fill_(float("nan"))


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = compose_cfg(tmp_path, *TINY_MODEL, *QUICK, "trainer.max_epochs=3", "logger=none")
    real = train_app.build_callbacks
    monkeypatch.setattr(train_app, "build_callbacks", lambda *a: [*real(*a), PoisonWeights(step=3)])
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step 3 \(epoch 1\)"):
        train_app.train(cfg)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    module, _ = load_module(str(last))
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_interrupted_checkpoint_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    trainer = L.Trainer(logger=False, enable_checkpointing=False, max_steps=0, enable_progress_bar=False)
    module = FlowLitModule(1, 8, architecture={"hidden": 8, "num_res_blocks": 1, "couplings": [1]})
    trainer.strategy.connect(module)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies in the middle of writing

    import fsspec.implementations.local as local

    monkeypatch.setattr(local.LocalFileOpener, "write", crash)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(path)
    assert path.read_bytes() == before


def test_bad_checkpoints_get_one_clear_sentence(tmp_path, trained_run):
    _, results = trained_run
    with pytest.raises(UserError, match="does not exist"):
        load_module(str(tmp_path / "nowhere.ckpt"))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(results["last_ckpt"].read_bytes()[:5000])
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_module(str(truncated))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "epoch": 3}, foreign)
    with pytest.raises(UserError, match="not written by rgflow-vision.*image training run"):
        load_module(str(foreign))
    mismatched = tmp_path / "mismatched.ckpt"
    checkpoint = torch.load(results["last_ckpt"], weights_only=True)
    checkpoint["hyper_parameters"]["architecture"]["hidden"] = 32
    torch.save(checkpoint, mismatched)
    with pytest.raises(UserError, match="does not match this version of the model"):
        load_module(str(mismatched))


# -- the apps as users type them ---------------------------------------------------------------
# The scripts themselves (their @hydra.main, their error path), run in this process: a new interpreter
# would add only its imports. The DDP test below and tests/test_app_errors.py run them as real processes.


def test_train_py_with_tiny_limits_prints_where_everything_went(tmp_path):
    run = tmp_path / "outputs" / "train" / "first"  # where ckpt=latest looks
    result = run_script("train", *TINY_MODEL, *QUICK, f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for line in ("run folder", "checkpoint", "test bpd", "samples"):
        assert line in result.stdout
    assert (run / "checkpoints" / "last.ckpt").is_file() and any((run / "samples").glob("*.png"))
    evaluated = run_script("evaluate", "ckpt=latest", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    trained_bpd = result.stdout.split("test bpd")[1].split()[0]
    assert f"test bpd {trained_bpd}  (" in evaluated.stdout


def test_missing_dataset_is_one_sentence_and_a_nonzero_exit(tmp_path):
    result = run_script("train", "dataset=mnist", "dataset.download=false", f"paths.data_dir={tmp_path / 'empty'}",
                        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and str(tmp_path / "empty") in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: MNIST")


def test_missing_checkpoint_is_one_sentence(tmp_path):
    result = run_script("sample", f"ckpt={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


# -- DDP on two CPU processes -----------------------------------------------------------------


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_agrees_with_one_process(tmp_path):
    # As users run it: Lightning re-launches the command line for rank 1 (inside pytest, that would be pytest).
    run = tmp_path / "outputs" / "train" / "ddp"
    # 179 test images: an odd split that Lightning's default sampler would pad with a repeated image.
    # A time limit too: the cosine then follows rank 0's clock, broadcast so that both ranks step alike.
    result = run_app("train", "trainer=ddp_cpu", "model.reversible=true", "dataset.test_fraction=0.0995",
                     "trainer.max_time=00:00:30:00", *TINY_MODEL, *QUICK, f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["epoch000_T0.7.png", "epoch000_T1.png"]
    assert [p.name for p in (tmp_path / "outputs" / "train").iterdir()] == ["ddp"]  # one run folder, not one per rank
    evaluated = run_script("evaluate", f"ckpt={run / 'checkpoints' / 'last.ckpt'}", cwd=tmp_path)
    # Every test image counted once across the two ranks, with the noise it gets in one process.
    ddp_bpd = float(result.stdout.split("test bpd")[1].split()[0])
    assert float(evaluated.stdout.split("test bpd")[1].split()[0]) == pytest.approx(ddp_bpd, abs=1e-4)


def test_compile_takes_false_true_or_conditioners():
    """compile=conditioners marks every coupling network to run its residual blocks compiled (the step is
    compiled on its first call: tests/test_reversible.py); another value is one sentence."""
    module = FlowLitModule(1, 8, architecture={"hidden": 8, "num_res_blocks": 1, "couplings": [1]}, compile="conditioners")
    networks = [m for m in module.modules() if hasattr(m, "fused")]
    assert networks and all(m.fused for m in networks)
    with pytest.raises(UserError, match="compile=fast is not an option"):
        FlowLitModule(1, 8, architecture={"hidden": 8, "num_res_blocks": 1, "couplings": [1]}, compile="fast")
