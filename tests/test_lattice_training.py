"""Lattice training as users run it: reverse KL on a flow's own draws, train.py experiments, the lattice app."""

from __future__ import annotations

import json
import math

import lightning as L
import pytest
import torch

from rgflow_vision.apps import lattice as lattice_app
from rgflow_vision.apps import train as train_app
from rgflow_vision.errors import UserError
from rgflow_vision.lattice import FlowDrawsDataModule, FreeComplexField, log_weights, reverse_kl
from rgflow_vision.lattice.module import LatticeFlowModule, evaluation_metrics
from rgflow_vision.lattice.onsite import OnsitePrior
from rgflow_vision.lattice.reference import lookup
from rgflow_vision.training.checkpoint import load_module

from .apps import OPTIM, compose_cfg, run_app

TINY_ARCH = {"hidden": 8, "num_res_blocks": 1, "mlp_depth": 1, "couplings": [1, 1]}
GAUSSIAN = {"name": "gaussian", "learn_scale": False}
FREE = {"name": "free_complex", "t": 1.0, "mu": 4.5}
EXACT_LOG_Z = -14.21720  # lattice.md, L = 8, t = 1, mu = 4.5
QUICK_LATTICE = ["experiment=lattice_free", "model.hidden=8", "model.couplings=[1,1]", "lattice.batch_size=32",
                 "lattice.eval_samples=256", "dataset.steps_per_epoch=4", "dataset.test_steps=1",
                 "trainer.max_epochs=1",
                 "trainer.enable_progress_bar=false", "optim.warmup_steps=2"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2-core machines: more threads are slower here
    yield
    torch.set_num_threads(threads)


def free_module(**kwargs) -> LatticeFlowModule:
    return LatticeFlowModule(action=FREE, size=8, architecture=TINY_ARCH, prior=GAUSSIAN,
                             **{"batch_size": 64, "eval_samples": 4096, **kwargs})


# -- the module ---------------------------------------------------------------------------------


def test_loss_is_reverse_kl_and_its_bound_stays_below_the_exact_log_z():
    module = free_module()
    torch.manual_seed(0)
    x, log_q, action, _ = module.draw(4096)
    # log q from the prior and the flow's log-det, S from the action: the loss is their mean
    z, logdet = module.flow.encode(x)
    assert torch.allclose(log_q, module.prior.log_prob(z) - logdet, atol=1e-3)
    assert torch.allclose(action, FreeComplexField(1.0, 4.5)(x))
    bound = -(log_q + action).mean().item()
    error = (log_q + action).std().item() / math.sqrt(4096)
    assert module.exact_log_z == pytest.approx(EXACT_LOG_Z, abs=1e-5)
    assert bound <= EXACT_LOG_Z + 3 * error  # Jensen: E_q[log w] <= ln Z


def test_evaluation_of_exact_samples_reaches_the_exact_log_z_with_full_ess():
    """A perfect flow (the free field's exact sampler) must give ESS = 1 and ln Z = exact, bound included."""
    field = FreeComplexField(1.0, 4.5)
    x, log_p = field.sample(4096, 8, torch.Generator().manual_seed(1))
    log_w = log_weights(log_p, field(x))
    metrics = evaluation_metrics(log_w, (x.sum(dim=(-2, -1)) ** 2).sum(1) / 64, field.log_z(8))
    assert metrics["ess"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["log_z_exact_gap"] == pytest.approx(0.0, abs=1e-9) and metrics["kl"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["chi"] == pytest.approx(2.0, abs=0.15)


def test_the_path_gradient_is_the_total_gradient_without_the_score_term():
    """lattice.gradient=path: on the same draws, the total reverse-KL gradient is the path gradient plus the score
    term, the gradient of mean log q_theta(x) at fixed x (zero in expectation: both estimate the same gradient, the
    path one without that noise). Float64, random weights, an exactly invertible (RealNVP) flow."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        module = free_module(gradient="path")
        torch.manual_seed(0)
        with torch.no_grad():
            for p in module.flow.parameters():
                p.add_(0.05 * torch.randn_like(p))

        def gradient(loss: torch.Tensor) -> torch.Tensor:
            module.zero_grad()
            loss.backward()
            return torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])

        torch.manual_seed(3)
        _, log_q, action, _ = module.draw(256)
        total = gradient(reverse_kl(log_q, action))
        torch.manual_seed(3)
        x, log_q_path, action_path = module.path_draw(256)
        assert torch.allclose(log_q_path, log_q, atol=1e-9) and torch.equal(action_path, action)
        path = gradient(reverse_kl(log_q_path, action_path))
        z, logdet = module.flow.encode(x.detach())
        score = gradient((module.prior.log_prob(z) + logdet).mean())
    finally:
        torch.set_default_dtype(default)
    assert all(p.requires_grad for p in module.parameters())  # held only for the encode
    assert score.abs().max() > 1e-2 and (path - total).abs().max() > 1e-2
    assert torch.allclose(total, path + score, atol=1e-9, rtol=0)
    with pytest.raises(UserError, match="lattice.gradient=score is not an estimator"):
        free_module(gradient="score")


def test_a_few_training_steps_lower_the_loss(tmp_path):
    module = free_module(eval_samples=512, optim={**OPTIM, "lr": 1e-2, "warmup_steps": 0, "cosine": False})

    def loss() -> float:
        torch.manual_seed(5)
        with torch.no_grad():
            _, log_q, action, _ = module.draw(1024)
        return (log_q + action).mean().item()

    before = loss()
    trainer = L.Trainer(max_steps=30, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(module, datamodule=FlowDrawsDataModule(steps_per_epoch=30, val_steps=0, test_steps=0))
    after = loss()
    assert after < before - 50, (before, after)  # from ~400 (identity flow, unit latents) towards -ln Z = 14.2
    logged = set(trainer.logged_metrics)
    assert {"train/loss_step", "train/log_z_bound_step", "train/ess_step"} <= logged, logged


def test_draws_data_module_counts_steps():
    dm = FlowDrawsDataModule(steps_per_epoch=7, val_steps=2, test_steps=0)
    assert (len(dm.train_dataloader()), len(dm.val_dataloader()), len(dm.test_dataloader())) == (7, 2, 0)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        FlowDrawsDataModule(steps_per_epoch=0, val_steps=1, test_steps=1)


# -- configs and train.py ------------------------------------------------------------------------


@pytest.mark.parametrize("experiment,name", [("lattice_free", "free_complex"), ("lattice_phi4_massive", "complex_phi4"),
                                             ("lattice_phi4_critical", "complex_phi4")])
def test_lattice_experiments_compose_into_an_action_and_float32(tmp_path, experiment, name):
    cfg = compose_cfg(tmp_path, f"experiment={experiment}")
    assert cfg.action.name == name and cfg.task_name == experiment
    assert cfg.trainer.precision == "32-true" and cfg.model.get("reversible", False) is False
    assert cfg.callbacks.model_checkpoint.monitor == "val/log_z_bound" and "sample_grid" not in cfg.callbacks
    module = train_app.build_module(cfg, None)
    assert module.size == 8 and module.target.channels == 2
    if experiment != "lattice_free":  # phi^4: one global ODE layer (it won in both phases, docs/lattice.md)
        assert cfg.model.bijection == "ode" and cfg.model.kernel == "periodic" and module.flow.num_levels == 1
        assert cfg.model.lipschitz == 8.0 and module.flow.spectral is not None
        assert cfg.trainer.max_time == ("00:00:15:00" if experiment == "lattice_phi4_massive" else "00:00:25:00")
    else:  # hierarchical, 30 minutes, the cosine on the clock
        assert module.flow.block_size == 4 and module.flow.num_levels == 2 and module.flow.depth == 2
        assert cfg.trainer.max_time == "00:00:30:00" and cfg.model.transform == "affine"
    if experiment == "lattice_phi4_critical":
        assert module.target.kappa == 0.6 and module.target.lam == 1.145
    # phi^4 starts from its on-site measure (a ring), the free field from unit Gaussians
    assert isinstance(module.prior, OnsitePrior) == (name == "complex_phi4")


def test_lattice_size_16_adds_a_level_and_the_prior_is_the_configured_one(tmp_path):
    cfg = compose_cfg(tmp_path, "experiment=lattice_free", "lattice.size=16", "prior.learn_scale=true")
    module = train_app.build_module(cfg, None)
    assert module.size == 16 and module.flow.num_levels == 3 and module.flow.block_size == 4
    assert module.prior.log_scale is not None and module.prior.log_scale.numel() == 3  # one scale per level
    assert module.exact_log_z == pytest.approx(-56.939147, abs=1e-6)
    with pytest.raises(UserError, match="lattice.size=12"):
        train_app.build_module(compose_cfg(tmp_path, "experiment=lattice_free", "lattice.size=12"), None)


def test_compile_conditioners_switches_the_ode_velocities_to_their_compiled_path(tmp_path):
    cfg = compose_cfg(tmp_path, "experiment=lattice_free", "model=ode_lattice", "compile=conditioners")
    velocities = [m for m in train_app.build_module(cfg, None).flow.modules() if hasattr(m, "omega")]
    assert velocities and all(v.fused for v in velocities)
    with pytest.raises(UserError, match="not an option for a lattice training"):
        train_app.build_module(compose_cfg(tmp_path, "experiment=lattice_free", "compile=true"), None)


def test_an_unknown_action_is_a_user_error(tmp_path):
    cfg = compose_cfg(tmp_path, "experiment=lattice_free", "action.name=ising")
    with pytest.raises(UserError, match="not a lattice action"):
        train_app.build_module(cfg, None)


def test_an_action_needs_the_lattice_module_and_the_lattice_module_an_action(tmp_path):
    with pytest.raises(UserError, match="add module=lattice"):
        train_app.build_module(compose_cfg(tmp_path, "experiment=lattice_free", "module=image"), None)
    with pytest.raises(UserError, match="none is given"):
        train_app.build_module(compose_cfg(tmp_path, "experiment=lattice_free", "action=null"), None)
    with pytest.raises(UserError, match="add dataset=lattice"):
        train_app.build_module(compose_cfg(tmp_path, "module=lattice"), None)


@pytest.fixture(scope="module")
def lattice_run(tmp_path_factory):
    """One tiny epoch of ``python train.py experiment=lattice_free``, shared by the app tests."""
    tmp_path = tmp_path_factory.mktemp("lattice")
    torch.set_num_threads(1)
    return tmp_path, train_app.train(compose_cfg(tmp_path, *QUICK_LATTICE))


def test_train_py_lattice_free_reports_and_leaves_a_checkpoint(lattice_run):
    _, results = lattice_run
    assert results["last_ckpt"].is_file()
    for key in ("test/ess", "test/log_z", "test/log_z_bound", "test/log_z_exact_gap", "test/kl"):
        assert math.isfinite(results[key]), key
    assert results["test/log_z_bound"] <= EXACT_LOG_Z + 1.0
    module, _ = load_module(str(results["last_ckpt"]), LatticeFlowModule)
    assert module.hparams.action == FREE and module.size == 8


@pytest.mark.parametrize("reversible", [False, True])
def test_bf16_mixed_lattice_training_runs_on_the_cpu_and_its_checkpoint_draws(tmp_path, reversible):
    """The GPU's precision path for the lattice module: finite estimates, and the checkpoint draws finite fields."""
    results = train_app.train(compose_cfg(tmp_path, *QUICK_LATTICE, "trainer.precision=bf16-mixed",
                                          f"model.reversible={reversible}"))
    for key in ("test/ess", "test/log_z", "test/log_z_bound"):
        assert math.isfinite(results[key]), key
    module, _ = load_module(str(results["last_ckpt"]), LatticeFlowModule)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        x, log_q, action, _ = module.draw(16)
    assert x.shape == (16, 2, 8, 8) and bool(torch.isfinite(log_q).all() and torch.isfinite(action).all())


def test_resuming_a_lattice_run_continues_its_steps(tmp_path):
    first = train_app.train(compose_cfg(tmp_path, *QUICK_LATTICE, "test=false"))
    cfg = compose_cfg(tmp_path / "elsewhere", *QUICK_LATTICE, "trainer.max_epochs=2", f"ckpt_path={first['last_ckpt']}",
                      "test=false")
    resumed = train_app.train(cfg)
    assert resumed["run_dir"].resolve() == first["run_dir"].resolve()  # continues in the run folder that wrote it
    checkpoint = torch.load(resumed["last_ckpt"], map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 8  # 4 steps per epoch, 2 epochs: the second one ran after the resume


def test_lattice_app_prints_observables_next_to_the_exact_values(lattice_run, tmp_path, capsys):
    _, results = lattice_run
    cfg = compose_cfg(tmp_path, f"ckpt={results['last_ckpt']}", "n=512", config="lattice")
    report = lattice_app.report(cfg)
    out = capsys.readouterr().out
    assert "reference: exact (free field)" in out
    for exact in ("-14.217202 (exact)", "2.000000 (exact)", "0.317593 (exact)", "0.014841 (exact)"):
        assert exact in out, exact
    for name in ("ln Z (bound)", "ln Z (estimate)", "ESS / N", "IMH acceptance", "tau |M|^2 (IMH)",
                 "chi (reweighted)", "chi (IMH chain)", "<phi^2> (reweighted)", "<|M|>/V (reweighted)",
                 "G(4) (reweighted)"):
        assert name in out, name
    assert report.row("ln Z (bound)").flow[0] <= EXACT_LOG_Z + 1.0
    written = json.loads((tmp_path / "run" / "lattice_report.json").read_text())
    keys = {"action", "size", "levels", "block_size", "n", "ess", "log_z", "log_z_err", "chi", "chi_err", "chi_imh",
            "chi_imh_err", "acceptance", "tau_imh", "absm", "absm_err", "reference", "checkpoint"}
    assert keys <= set(written), keys - set(written)
    assert (written["size"], written["levels"], written["block_size"], written["n"]) == (8, 2, 4, 512)
    assert written["log_z"] == pytest.approx(report.row("ln Z (estimate)").flow[0])
    assert 0 < written["absm"] ** 2 <= written["chi"] / 64 * (1 + 1e-9)  # <|M|>^2 <= <|M|^2> (same weights), V = 64
    assert written["reference"]["exact"] and written["reference"]["log_z"][0] == pytest.approx(EXACT_LOG_Z, abs=1e-5)


def test_lattice_app_bulk_comparison_writes_the_correlation_plot(lattice_run, tmp_path, capsys):
    _, results = lattice_run
    cfg = compose_cfg(tmp_path, f"ckpt={results['last_ckpt']}", "n=64", "bulk.enabled=true", "bulk.chains=4",
                      "bulk.trajectories=10", "bulk.leapfrog=3", config="lattice")
    lattice_app.report(cfg)
    out = capsys.readouterr().out
    assert "HMC in latent space" in out and "HMC in field space" in out
    assert (tmp_path / "run" / "bulk_correlations.png").is_file()


def test_lattice_app_refuses_an_image_checkpoint(tmp_path):
    image_ckpt = tmp_path / "image.ckpt"
    torch.save({"hyper_parameters": {"channels": 1, "image_size": 16, "bits": 8, "architecture": {}, "prior": {}},
                "state_dict": {}}, image_ckpt)
    with pytest.raises(UserError, match="a lattice training run"):
        load_module(str(image_ckpt), LatticeFlowModule)
    result = run_app("lattice", f"ckpt={image_ckpt}", f"hydra.run.dir={tmp_path / 'app'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and "a lattice training run" in result.stderr and "Traceback" not in result.stderr


# -- reference values ----------------------------------------------------------------------------


def test_reference_lookup_knows_the_exact_free_field_and_the_monte_carlo_table():
    free = lookup("free_complex", {"t": 1, "mu": 4.5}, 8)
    assert free.exact and free.log_z[0] == pytest.approx(EXACT_LOG_Z, abs=1e-5) and free.chi == (2.0, 0.0)
    expected = [0.317593, 0.107292, 0.042180, 0.020259, 0.014841]
    assert [g for g, _ in free.two_point] == pytest.approx(expected, abs=1e-6)
    massive = lookup("complex_phi4", {"kappa": 0.2, "lam": 1.145}, 8)
    assert massive.chi == (1.8481, 0.0024) and len(massive.two_point) == 5
    same = lookup("complex_phi4", {"t": 0.2, "mu": 1 - 2 * 1.145, "lam": 1.145}, 8)  # the (t, mu, lam) form
    assert same is massive
    assert lookup("complex_phi4", {"kappa": 0.6, "lam": 1.145}, 8).chi == (68.62, 0.07)
    assert lookup("real_phi4", {"m2": -4, "lam": 8}, 8).phi2 == (0.14349, 0.00002)
    assert lookup("complex_phi4", {"kappa": 0.2, "lam": 1.145}, 16).chi == (1.8507, 0.0057)  # this repository's MC
    assert lookup("complex_phi4", {"kappa": 0.6, "lam": 1.145}, 16).chi == (251.138, 0.076)
    # the phase-diagram scan at L = 16: chi grows with kappa through the transition, <phi^2> too
    scan = [lookup("complex_phi4", {"kappa": k, "lam": 1.145}, 16) for k in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)]
    chis, phi2s = [ref.chi[0] for ref in scan], [ref.phi2[0] for ref in scan]
    assert chis == sorted(chis) and phi2s == sorted(phi2s) and chis[-1] / chis[0] > 100
    assert lookup("complex_phi4", {"kappa": 0.6, "lam": 1.145}, 32).chi == (922.1, 4.3)  # this repository's MC
    assert lookup("complex_phi4", {"kappa": 0.6, "lam": 1.145}, 64) is None


@pytest.mark.slow
def test_short_free_field_training_gets_close_to_the_exact_log_z():
    """600 steps (about 30 s on one thread): the importance-sampling ln Z is already within 0.05 (+ 3 sigma)."""
    torch.manual_seed(0)
    module = LatticeFlowModule(action=FREE, size=8, batch_size=128, eval_samples=8192, prior=GAUSSIAN,
                               architecture={"block_size": 8, "hidden": 32, "num_res_blocks": 1, "mlp_depth": 2,
                                             "couplings": [2], "conditioner": "separate"},  # one level of 8x8 blocks: the fastest
                               optim={**OPTIM, "lr": 1e-2, "warmup_steps": 50, "cosine": True, "min_lr_ratio": 0.05})
    trainer = L.Trainer(max_steps=600, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", limit_val_batches=0)
    trainer.fit(module, datamodule=FlowDrawsDataModule(steps_per_epoch=600, val_steps=0, test_steps=0))
    module.eval()
    log_w, chi = module.draw_log_weights(16384)
    metrics = evaluation_metrics(log_w, chi, module.exact_log_z)
    assert metrics["ess"] > 0.02 and metrics["log_z_bound"] > -16.0, metrics  # 8x8: ESS 0.91 after 10000
    assert abs(metrics["log_z_exact_gap"]) < 0.05 + 3 * metrics["log_z_error"], metrics
    assert metrics["chi"] == pytest.approx(2.0, abs=0.15)
