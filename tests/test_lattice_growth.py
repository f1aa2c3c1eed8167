"""Growing the RG flow from L to 2L, weights shared across levels, and the flat comparison flow.

Specification: a grown flow is still an exact bijection (round trip; its log-det is log|det| of its Jacobian,
checked against torch.slogdet in float64); the new, coarsest level starts as the identity, so on a field that
repeats the small lattice the grown flow *is* the small flow, repeated; with shared levels every level runs
the same weights. The flat flow (checkerboard couplings over the whole lattice) passes the same exactness
checks, starts as the identity and commutes with the lattice translations that keep its checkerboard.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from rgflow_vision.apps import train as train_app
from rgflow_vision.errors import UserError
from rgflow_vision.flows import RGFlow
from rgflow_vision.flows.flat import FlatFlow
from rgflow_vision.lattice.module import LatticeFlowModule, build_flow, grow

from rgflow_vision.training.checkpoint import load_module

from .apps import compose_cfg

RG_SPLINE = ["model=lattice", "model.transform=spline"]  # the critical experiment with the hierarchical flow
TINY = {"hidden": 8, "num_res_blocks": 1, "mlp_depth": 1, "couplings": [1], "depth": 2, "mask": "channels"}
FLAT = {"couplings": 2, "hidden": 8, "conv_layers": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


def perturbed(flow: torch.nn.Module, seed: int, scale: float = 0.3) -> torch.nn.Module:
    """``flow`` with noise on every weight: a fresh flow is the identity, which would make the checks vacuous."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return flow


def tile(x: torch.Tensor) -> torch.Tensor:
    """The L x L field repeated twice along each axis: a 2L x 2L field of period L."""
    return x.repeat(1, 1, 2, 2)


def assert_exact(flow: torch.nn.Module, channels: int, size: int, seed: int = 0) -> None:
    """Round trip to float64 precision, and log|det dz/dx| equal to slogdet of the autograd Jacobian."""
    flow = flow.double()
    x = torch.randn(3, channels, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z, logdet = flow.encode(x)
    back, logdet_back = flow.decode(z)
    assert torch.allclose(back, x, atol=1e-9) and torch.allclose(logdet_back, -logdet, atol=1e-9)
    assert not torch.allclose(z, x, atol=1e-3)  # the map is not the identity: the check has something to check
    for i in range(x.shape[0]):
        jacobian = torch.autograd.functional.jacobian(lambda v: flow.encode(v[None])[0][0], x[i])
        dim = channels * size * size
        sign, log_abs = torch.linalg.slogdet(jacobian.reshape(dim, dim))
        assert sign != 0 and log_abs.item() == pytest.approx(logdet[i].item(), abs=1e-8)


# -- growth of the RG flow ------------------------------------------------------------------------


@pytest.mark.parametrize("small_size,channels", [(4, 2), (8, 1)])
def test_the_grown_flow_on_a_repeated_field_is_the_small_flow_repeated(small_size, channels):
    """Levels 0 .. H-1 keep the small flow's weights and act on the same 4x4 blocks; the new top level is the
    identity at the start. So on a field of period L the 2L flow maps it to the small flow's latents, repeated,
    and its log-det is the small one times the four copies."""
    small = perturbed(RGFlow(channels, small_size, **TINY), seed=1).double()
    big = RGFlow(channels, 2 * small_size, **TINY).double()
    fresh = grow(big, small.state_dict())
    assert big.num_levels == small.num_levels + 1
    # what starts fresh is exactly the new (coarsest) level: both of its layer pairs
    top = big.num_levels - 1
    new_layers = {id(m) for m, _ in big.level_layers(top)}
    new_tensors = {t.data_ptr() for m in new_layers for t in _module(big, m).state_dict().values()}
    assert fresh and {big.state_dict()[name].data_ptr() for name in fresh} == new_tensors
    x = torch.randn(4, channels, small_size, small_size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    z_small, logdet_small = small.encode(x)
    z_big, logdet_big = big.encode(tile(x))
    assert torch.allclose(z_big, tile(z_small), atol=1e-10)
    assert torch.allclose(logdet_big, 4 * logdet_small, atol=1e-9)
    block = torch.randn(5, channels * 16, dtype=torch.float64)
    for layer, _ in big.level_layers(top):  # the new level's layers: the identity, log-det 0
        y, logdet = layer(block)
        assert torch.equal(y, block) and torch.equal(logdet, torch.zeros(5, dtype=torch.float64))


def _module(flow: torch.nn.Module, target_id: int) -> torch.nn.Module:
    return next(m for m in flow.modules() if id(m) == target_id)


# (random spline weights much larger than these squeeze the field against the tails: a near-singular map)
@pytest.mark.parametrize("small_size,channels,transform,scale", [(4, 2, "affine", 0.3), (8, 1, "spline", 0.05)])
def test_a_grown_and_trained_flow_stays_exact(small_size, channels, transform, scale):
    small = perturbed(RGFlow(channels, small_size, **TINY, transform=transform), seed=3, scale=scale)
    big = RGFlow(channels, 2 * small_size, **TINY, transform=transform)
    grow(big, small.state_dict())
    assert_exact(perturbed(big, seed=4, scale=scale / 2), channels, 2 * small_size)  # as after fine-tuning at 2L


def test_growth_refuses_a_flow_of_another_architecture():
    small = RGFlow(2, 4, **{**TINY, "hidden": 16})
    with pytest.raises(ValueError, match="has no place here"):
        grow(RGFlow(2, 8, **TINY), small.state_dict())


# -- weights shared across levels ---------------------------------------------------------------


def test_shared_levels_run_one_set_of_weights_at_every_level_and_grow_without_new_ones():
    flow = RGFlow(2, 16, **TINY, share_levels=True)
    assert flow.num_levels == 3
    per_level = [[m for m, _ in flow.level_layers(h)] for h in range(flow.num_levels)]
    assert all(a is b for level in per_level[1:] for a, b in zip(level, per_level[0]))  # the same modules
    assert len(set(map(id, per_level[0]))) == 2 * flow.depth  # depth distinct pairs within a level
    unshared = RGFlow(2, 16, **TINY)
    count = lambda f: sum(p.numel() for p in f.parameters())  # noqa: E731
    assert count(flow) * flow.num_levels == count(unshared)
    assert count(flow) == count(RGFlow(2, 8, **TINY, share_levels=True))  # the size of the lattice adds nothing
    # an optimizer step moves every level together
    perturbed(flow, seed=5)
    loss = flow.encode(torch.randn(2, 2, 16, 16))[0].square().sum()
    loss.backward()
    torch.optim.SGD(flow.parameters(), lr=1e-2).step()
    for h in range(1, flow.num_levels):
        for (a, _), (b, _) in zip(flow.level_layers(h), flow.level_layers(0)):
            assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    # grown from L = 8, nothing starts fresh: the new level is the shared stack
    small = perturbed(RGFlow(2, 8, **TINY, share_levels=True), seed=6)
    assert grow(flow, small.state_dict()) == []
    assert_exact(flow, 2, 16)


# -- the flat flow --------------------------------------------------------------------------------


@pytest.mark.parametrize("transform,mask,scale", [("affine", "channels", 0.2), ("spline", "sites", 0.1)])
def test_the_flat_flow_is_exact(transform, mask, scale):
    assert_exact(perturbed(FlatFlow(2, 8, **FLAT, transform=transform, mask=mask), seed=7, scale=scale), 2, 8)


def test_the_flat_flow_starts_as_the_identity_and_commutes_with_checkerboard_translations():
    flow = FlatFlow(2, 8, **FLAT, transform="spline")
    x = torch.randn(3, 2, 8, 8)
    z, logdet = flow.encode(x)  # zero spline parameters: equal bins, unit slopes (the identity up to rounding)
    assert torch.allclose(z, x, atol=1e-5) and torch.allclose(logdet, torch.zeros(3), atol=1e-4)
    perturbed(flow, seed=8, scale=0.1)
    z, logdet = flow.encode(x)
    for shift in [(2, 0), (1, 1), (0, 4)]:  # shifts that map each colour onto itself; circular padding
        z_shifted, logdet_shifted = flow.encode(torch.roll(x, shift, dims=(-2, -1)))
        assert torch.allclose(z_shifted, torch.roll(z, shift, dims=(-2, -1)), atol=1e-5)
        assert torch.allclose(logdet_shifted, logdet, atol=1e-4)
    with pytest.raises(ValueError, match="expects a batch of shape"):
        flow.encode(torch.randn(3, 2, 16, 16))


def test_the_flat_flows_weights_fit_every_lattice_size():
    small = perturbed(FlatFlow(2, 8, **FLAT), seed=9)
    big = FlatFlow(2, 16, **FLAT)
    assert grow(big, small.state_dict()) == []
    x = torch.randn(2, 2, 8, 8)
    assert torch.allclose(big.encode(tile(x))[0], tile(small.encode(x)[0]), atol=1e-5)


# -- configs and the module ------------------------------------------------------------------------


def test_model_flat_composes_with_the_critical_experiment(tmp_path):
    cfg = compose_cfg(tmp_path, "experiment=lattice_phi4_critical", "model=flat", "model.transform=spline", "lattice.size=16")
    module = train_app.build_module(cfg, None)
    assert isinstance(module.flow, FlatFlow) and module.flow.image_size == 16
    assert module.flow.couplings[0].transform == "spline"
    with pytest.raises(UserError, match="model.flow='tree'"):
        build_flow(2, 8, {"flow": "tree"})


def _trained_checkpoint(tmp_path, *overrides: str):
    cfg = compose_cfg(tmp_path, "experiment=lattice_phi4_critical", *RG_SPLINE, "model.hidden=8", "model.couplings=[1]",
                      "lattice.batch_size=16", "lattice.eval_samples=64", "dataset.steps_per_epoch=2",
                      "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "optim.warmup_steps=1",
                      "test=false", *overrides)
    return train_app.train(cfg)["last_ckpt"]


@pytest.mark.slow
def test_lattice_grow_from_continues_a_smaller_run_at_twice_the_size(tmp_path):
    """The chain as users run it: train at L = 4, then at L = 8 with lattice.grow_from=<its last.ckpt>."""
    small_ckpt = _trained_checkpoint(tmp_path / "small", "lattice.size=4")
    small = torch.load(small_ckpt, map_location="cpu", weights_only=False)["state_dict"]
    cfg = compose_cfg(tmp_path / "big", "experiment=lattice_phi4_critical", *RG_SPLINE, "model.hidden=8", "model.couplings=[1]",
                      "lattice.size=8", f"lattice.grow_from={small_ckpt}")
    module = train_app.build_module(cfg, None)
    assert module.grow_from == str(small_ckpt)
    module.setup("fit")
    own = module.state_dict()
    assert all(torch.equal(own[k], v) for k, v in small.items() if k.startswith("flow."))
    with pytest.raises(UserError, match="another architecture"):
        other = compose_cfg(tmp_path / "other", "experiment=lattice_phi4_critical", *RG_SPLINE, "model.hidden=16",
                            "model.couplings=[1]", "lattice.size=8", f"lattice.grow_from={small_ckpt}")
        train_app.build_module(other, None).setup("fit")
    spectral = train_app.build_module(compose_cfg(tmp_path / "spectral", "experiment=lattice_phi4_critical", *RG_SPLINE,
                                                  "model.hidden=8", "model.couplings=[1]", "lattice.size=8",
                                                  "model.spectral=true", f"lattice.grow_from={small_ckpt}"), None)
    spectral.setup("fit")  # a momentum scaling added on growing starts as the identity, the rest is copied
    assert not spectral.flow.spectral.log_scale.any()
    assert all(torch.equal(spectral.state_dict()[k], v) for k, v in small.items() if k.startswith("flow."))
    big_ckpt = _trained_checkpoint(tmp_path / "big2", "lattice.size=8", f"lattice.grow_from={small_ckpt}")
    grown, _ = load_module(str(big_ckpt), LatticeFlowModule)  # loading does not grow again: its own weights
    assert grown.size == 8 and grown.flow.num_levels == 2 and grown.hparams.grow_from == str(small_ckpt)


def test_a_run_may_continue_an_ode_flow_with_another_number_of_rk4_steps(tmp_path):
    """steps and eval_steps say how the same weights are integrated (at L = 32 four training steps were exploited,
    docs/lattice.md): a run continues from a checkpoint integrated with fewer; the weights are copied unchanged."""
    tiny = ["experiment=lattice_phi4_critical", "lattice.size=8", "model.features=2", "model.time_basis=2"]
    small = train_app.build_module(compose_cfg(tmp_path, *tiny, "model.steps=[2]", "model.eval_steps=4"), None)
    with torch.no_grad():
        for p in small.flow.parameters():
            p.normal_()
    torch.save({"hyper_parameters": dict(small.hparams), "state_dict": small.state_dict()}, path := tmp_path / "s.ckpt")
    more = train_app.build_module(compose_cfg(tmp_path, *tiny, "model.steps=[8]", "model.eval_steps=32",
                                              f"lattice.grow_from={path}"), None)
    more.setup("fit")
    assert [k for k, v in small.state_dict().items() if not torch.equal(more.state_dict()[k], v)] == []
    with pytest.raises(UserError, match="another architecture"):  # the weights themselves must still match
        train_app.build_module(compose_cfg(tmp_path, *tiny, "model.features=4", f"lattice.grow_from={path}"), None).setup("fit")


# -- growth of the global ODE layer -------------------------------------------------------------------

GLOBAL_ODE = {"bijection": "ode", "velocity": "features", "symmetry": "o2", "block_size": None, "depth": 1,
              "kernel": "periodic", "features": 2, "time_basis": 2, "steps": [4], "lipschitz": None}


@pytest.mark.parametrize("small_size,spectral", [(4, False), (8, True)])  # L = 8 dense, L = 16 by FFT
def test_the_grown_global_ode_layer_on_a_repeated_field_is_the_small_layer_repeated(small_size, spectral):
    """The periodic kernel keeps each displacement of the small torus (its antipode shared by the two
    displacements it stands for), the momentum scaling keeps the momenta both tori have: on a field of
    period L the 2L layer is the L layer, repeated, with four times its log-det."""
    small = perturbed(RGFlow(2, small_size, **GLOBAL_ODE, spectral=spectral), seed=5).double()
    big = RGFlow(2, 2 * small_size, **GLOBAL_ODE, spectral=spectral).double()
    assert grow(big, small.state_dict()) == []  # nothing starts fresh: every weight is carried over
    x = torch.randn(3, 2, small_size, small_size, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    z_small, logdet_small = small.encode(x)
    z_big, logdet_big = big.encode(tile(x))
    assert not torch.allclose(z_small, x, atol=1e-2)
    assert torch.allclose(z_big, tile(z_small), atol=1e-10)
    assert torch.allclose(logdet_big, 4 * logdet_small, atol=1e-8)


def test_a_grown_global_ode_layer_stays_exact_and_o2_equivariant():
    small = perturbed(RGFlow(2, 4, **GLOBAL_ODE, spectral=True), seed=7)
    big = RGFlow(2, 8, **{**GLOBAL_ODE, "steps": [16], "lipschitz": 2.0}, spectral=True)  # RK4 accurate at 16 steps
    grow(big, small.state_dict())
    big = perturbed(big, seed=8, scale=0.1).double()  # as after fine-tuning at 2L
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    z, logdet = big.encode(x)
    back, logdet_back = big.decode(z)
    assert not torch.allclose(z, x, atol=1e-2)
    assert torch.allclose(back, x, atol=1e-6) and torch.allclose(logdet_back, -logdet, atol=1e-6)
    c, s = math.cos(0.7), math.sin(0.7)
    rotate = lambda v: torch.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1]], 1)
    z_rotated, logdet_rotated = big.encode(rotate(x))
    assert torch.allclose(z_rotated, rotate(z), atol=1e-10) and torch.allclose(logdet_rotated, logdet, atol=1e-10)


# -- lattice.pretrain: the smaller torus first, in one command -----------------------------------------

TINY_REAL = ["experiment=lattice_phi4_real", "model.features=2", "model.time_basis=2", "lattice.batch_size=16",
             "lattice.eval_samples=64", "dataset.steps_per_epoch=2", "trainer.max_epochs=1", "trainer.max_time=null",
             "trainer.enable_progress_bar=false", "optim.warmup_steps=1", "test=false", "lattice.size=8", "compile=false"]


def test_lattice_pretrain_trains_the_smaller_torus_first_then_grows_from_it_and_a_stopped_one_resumes(tmp_path):
    cfg = compose_cfg(tmp_path, *TINY_REAL, "lattice.pretrain={size: 4, optim: {lr: 1e-2}}")
    results = train_app.train(cfg)
    first = tmp_path / "run" / "pretrain_L4" / "checkpoints" / "last.ckpt"
    small = torch.load(first, map_location="cpu", weights_only=False)
    assert small["hyper_parameters"]["size"] == 4 and small["hyper_parameters"]["optim"]["lr"] == 1e-2
    grown, _ = load_module(str(results["last_ckpt"]), LatticeFlowModule)
    assert grown.size == 8 and grown.hparams.grow_from == str(first) and grown.hparams.optim["lr"] == 1e-3
    assert small["hyper_parameters"]["gradient"] == grown.gradient == "path"  # both stages: the recipe's estimator
    # a run stopped during its pretraining (its folder holds the pretraining's checkpoint only): that checkpoint
    # resumes the pretraining (2 more steps), then the L = 8 stage grows from it in the same run folder
    stopped = tmp_path / "stopped" / "pretrain_L4" / "checkpoints" / "last.ckpt"
    stopped.parent.mkdir(parents=True)
    shutil.copy(first, stopped)
    again = train_app.train(compose_cfg(tmp_path / "again", *TINY_REAL, "lattice.pretrain={size: 4}",
                                        "trainer.max_epochs=2", f"ckpt_path={stopped}"))
    assert torch.load(stopped, map_location="cpu", weights_only=False)["global_step"] == 4
    assert again["run_dir"].resolve() == (tmp_path / "stopped").resolve()
    assert load_module(str(again["last_ckpt"]), LatticeFlowModule)[0].hparams.grow_from == str(stopped.resolve())
    with pytest.raises(UserError, match="lattice.pretrain.size=8 must be a lattice size below"):
        train_app.train(compose_cfg(tmp_path / "same", *TINY_REAL, "lattice.pretrain={size: 8}"))
    # the run's own size is checked before the pretraining spends its time
    with pytest.raises(UserError, match="12"):
        train_app.train(compose_cfg(tmp_path / "odd", *TINY_REAL, "lattice.size=12", "lattice.pretrain={size: 4}"))
    assert not (tmp_path / "odd" / "run" / "pretrain_L4").exists()
