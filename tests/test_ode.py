"""The neural-ODE block.

The shipped velocity (``velocity="features"``, flows/features.py): closed-form divergence equal to the
autograd trace, log-det converging to slogdet of the discrete RK4 map at order 4, round trip below 1e-5
at the shipped steps, unbiased importance weights on the free field, D4 / Z2 / O(2) equivariance, the
global layer from the config, one training step on images and on a lattice action.
The MLP velocity (``velocity="mlp"``, flows/ode.py): exact discrete log-det for every scheme, exact
inverse and its gradients, O(2) and Z2 equivariance. (Round trips, slogdet, levels and cones for every
bijection are in test_flow.py.)"""

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rgflow_vision import RGFlowModel
from rgflow_vision.flows import RGFlow
from rgflow_vision.flows.conditioner import fuse_conditioners
from rgflow_vision.flows.features import FeatureODEBlock, FeatureVelocity, periodic_convolution
from rgflow_vision.flows.ode import SCHEMES
from rgflow_vision.lattice import build_action, ess, log_weights, log_z, reverse_kl
from rgflow_vision.model import sample_and_log_prob
from rgflow_vision.priors import GaussianPrior
from rgflow_vision.apps import train as train_app

from .apps import QUICK, compose_cfg
from .conftest import perturbed_flow
from .test_flow import jacobian_logdet

TINY_ODE = ["model=ode", "model.features=2", "model.time_basis=2", "model.steps=[1]"]
SHIPPED = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[1] / "conf" / "model" / "ode_lattice.yaml"))
GLOBAL = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[1] / "conf" / "model" / "ode_global.yaml"))
FEATURE_CASES = [(None, 1, "block"), ("z2", 2, "block"), ("o2", 2, "block"), ("z2", 1, "periodic"), ("o2", 2, "periodic")]


def rotate(x: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate the two channels of every site by ``angle``."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.stack([c * x[:, 0] - s * x[:, 1], s * x[:, 0] + c * x[:, 1]], dim=1)


def reflect(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x[:, 0], -x[:, 1]], dim=1)


def randomised(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """float64, every weight of the (zero-initialised) velocities drawn at random: far from the identity."""
    torch.manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.add_(scale * torch.randn_like(p) if not name.endswith("omega") else 0.2 * torch.randn_like(p))
    return module


def feature_flow(channels: int, size: int, scale: float = 0.05, **architecture) -> RGFlow:
    """The shipped lattice flow, random weights, no Lipschitz cap unless ``lipschitz`` is given."""
    return randomised(RGFlow(channels, size, **{**SHIPPED, "symmetry": None, "lipschitz": None, **architecture}), scale)


# -- the feature velocity (shipped) ----------------------------------------------------------------


@pytest.mark.parametrize("symmetry, channels, kernel", FEATURE_CASES)
def test_the_closed_form_divergence_is_the_trace_of_the_jacobian(symmetry, channels, kernel):
    velocity = randomised(FeatureVelocity(channels, 4, symmetry, features=3, time_basis=3, kernel=kernel))
    x = 2 * torch.randn(3, channels * 16, dtype=torch.float64)
    v, divergence = velocity(x, 0.37)
    jac = torch.autograd.functional.jacobian(lambda y: velocity(y, 0.37)[0].sum(0), x, vectorize=True)  # (D, N, D)
    trace = torch.stack([jac[:, n].trace() for n in range(3)])
    assert divergence.abs().min() > 1.0 and (divergence - trace).abs().max() < 1e-12


def test_the_log_det_converges_to_slogdet_of_the_discrete_map_at_order_four():
    """The RK4 integral of the divergence is not slogdet of the RK4 map; their gap falls like h^4."""
    block = randomised(FeatureODEBlock(2, 4, steps=1, symmetry="o2", features=3, time_basis=3, lipschitz=None), scale=0.2)
    x = torch.randn(1, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    gaps = []
    for n in (16, 32, 64):
        exact = torch.linalg.slogdet(torch.autograd.functional.jacobian(lambda y: block(y, steps=n)[0][0], x)[:, 0])
        gaps.append(abs(block(x, steps=n)[1].item() - exact.logabsdet.item()))
    assert abs(exact.logabsdet.item()) > 1.0 and gaps[0] > 1e-6, (exact, gaps)
    for coarse, fine in zip(gaps, gaps[1:]):
        assert 12 < coarse / fine < 24, gaps  # order 4: 2^4 = 16 (order 3 would give 8, order 5 32)


@pytest.mark.parametrize("architecture, scale", [(SHIPPED, 1.0), ({**SHIPPED, "symmetry": None}, 0.1),
                                                 ({**GLOBAL, "spectral": False}, 1.0)])
def test_the_round_trip_at_the_shipped_steps_is_below_1e_5(architecture, scale):
    """Large random weights: every velocity at its Lipschitz cap, as far from the identity as allowed
    (symmetry None: the bias, which the cap leaves free, of size 0.1 per time-basis function). The global layer
    without its momentum scaling, whose inverse is exact (test_spectral.py) and whose random scales would blow up."""
    flow = feature_flow(2, 8, scale=scale, **architecture).eval()  # eval mode: the shipped eval_steps
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    z, logdet = flow.encode(x)
    x_back, logdet_back = flow.decode(z)
    assert (z - x).abs().max() > 0.1  # every velocity at its cap (trained ones align their terms and move further)
    assert (x_back - x).abs().max() < 1e-5 and (logdet + logdet_back).abs().max() < 1e-5


def test_importance_weights_give_the_exact_free_field_log_z():
    """log q is the RK4 log-det, accurate to O(h^4), and training at 2 steps cannot exploit its error (the
    Lipschitz cap): after a short training, the reweighted ln Z agrees with the exact one in eval mode."""
    action = build_action("free_complex", t=1.0, mu=4.5)
    torch.manual_seed(0)
    flow, prior = RGFlow(2, 8, **{**SHIPPED, "features": 2, "depth": 1}), GaussianPrior(2, 8)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(100):
        x, log_q, _ = sample_and_log_prob(flow, prior, 64)
        loss = reverse_kl(log_q, action(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x, log_q, _ = sample_and_log_prob(flow.double().eval(), prior.double(), 4096, dtype=torch.float64)
    log_w = log_weights(log_q, action(x))
    estimate = log_z(log_w)
    assert 0.01 < ess(log_w) < 0.99, ess(log_w)  # trained, not perfect: the weights matter
    assert estimate.bound < action.log_z(8) and abs(estimate.estimate - action.log_z(8)) < 4 * estimate.error + 0.01


def d4(x: torch.Tensor) -> list:
    """The 7 non-trivial rotations and reflections of the last two axes."""
    rotations = [torch.rot90(x, r, dims=(-2, -1)) for r in range(4)]
    return rotations[1:] + [r.flip(-1) for r in rotations]


@pytest.mark.parametrize("symmetry, channels", [(None, 1), ("z2", 2), ("o2", 2)])
def test_the_block_commutes_with_the_rotations_and_reflections_of_the_block(symmetry, channels):
    block = randomised(FeatureODEBlock(channels, 4, steps=2, symmetry=symmetry, features=3, time_basis=2, lipschitz=None))
    x = torch.randn(3, channels, 4, 4, dtype=torch.float64)
    y, logdet = block(x.flatten(1))
    y = y.view_as(x)
    assert (y - x).abs().max() > 0.3
    for gx, gy in zip(d4(x), d4(y)):
        out, out_logdet = block(gx.flatten(1))
        assert (out.view_as(x) - gy).abs().max() < 1e-12 and (out_logdet - logdet).abs().max() < 1e-12


def test_the_global_layer_commutes_with_translations_rotations_and_reflections_of_the_lattice():
    flow = feature_flow(1, 8, **{**GLOBAL, "symmetry": "z2"}, scale=0.1)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    z, logdet = flow.encode(x)
    assert flow.num_levels == 1 and (z - x).abs().max() > 0.05
    for gx, gz in [*zip(d4(x), d4(z)), (x.roll((3, 1), (-2, -1)), z.roll((3, 1), (-2, -1)))]:
        out, out_logdet = flow.encode(gx)
        assert (out - gz).abs().max() < 1e-12 and (out_logdet - logdet).abs().max() < 1e-12


@pytest.mark.parametrize("architecture", [{}, GLOBAL])
def test_the_z2_feature_flow_is_odd_and_the_o2_one_commutes_with_rotations(architecture):
    odd = feature_flow(1, 8, **{**architecture, "symmetry": "z2"}, scale=0.1)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    z, logdet = odd.encode(x)
    z_neg, logdet_neg = odd.encode(-x)
    assert (z - x).abs().max() > 0.05 and (z_neg + z).abs().max() < 1e-14 and (logdet_neg - logdet).abs().max() < 1e-12
    o2 = feature_flow(2, 8, **{**architecture, "symmetry": "o2"}, scale=0.1)
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    z, logdet = o2.encode(x)
    assert (z - x).abs().max() > 0.05
    for g in (lambda v: rotate(v, 0.7), lambda v: rotate(v, -2.3), reflect):
        gz, g_logdet = o2.encode(g(x))
        assert (gz - g(z)).abs().max() < 1e-12 and (g_logdet - logdet).abs().max() < 1e-12
    free = feature_flow(2, 8, **{**architecture, "symmetry": None}, scale=0.1)  # symmetry None: neither holds
    z, _ = free.encode(x)
    assert (free.encode(-x)[0] + z).abs().max() > 1e-3 and (free.encode(rotate(x, 0.7))[0] - rotate(z, 0.7)).abs().max() > 1e-3


def test_one_reverse_kl_step_of_the_global_layer_built_from_the_config(tmp_path):
    cfg = compose_cfg(tmp_path, "experiment=lattice_free", "model=ode_global", "model.features=2", "model.steps=[2]")
    module = train_app.build_module(cfg, None)
    assert module.flow.num_levels == 1 and module.flow.block_size == 8
    action = build_action("free_complex", t=1.0, mu=4.5)
    x, log_q, _ = sample_and_log_prob(module.flow, module.prior, 32)
    reverse_kl(log_q, action(x)).backward()
    assert all(torch.isfinite(p.grad).all() for p in module.flow.parameters())
    assert module.flow.decimators[0].velocity.weight.grad.abs().max() > 0


# -- the MLP velocity ------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_every_scheme_has_the_exact_log_det_of_its_discrete_map(scheme):
    flow = perturbed_flow(1, 8, torch.float64, bijection="ode", scheme=scheme)
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    z, logdet = flow.encode(x)
    _, expected = jacobian_logdet(flow.encode, x)
    assert abs(expected.item()) > 0.2
    assert logdet.item() == pytest.approx(expected.item(), abs=1e-10)
    x_back, logdet_inv = flow.decode(z)
    assert (x_back - x).abs().max() < 1e-12 and (logdet + logdet_inv).abs().max() < 1e-12


def test_integrating_in_the_decode_direction_gives_an_exact_flow_too():
    flow = perturbed_flow(2, 8, torch.float64, bijection="ode", symmetry="o2", explicit="decode")
    z = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    x, logdet = flow.decode(z)
    _, expected = jacobian_logdet(flow.decode, z)
    assert logdet.item() == pytest.approx(expected.item(), abs=1e-10) and abs(expected.item()) > 0.2
    z_back, logdet_inv = flow.encode(x)
    assert (z_back - z).abs().max() < 1e-12 and (logdet + logdet_inv).abs().max() < 1e-12


def test_the_log_det_is_the_integral_of_the_divergence_as_the_steps_shrink():
    """The discrete log-det tends to int_0^1 tr(dv/dx)(x(t), t) dt: RK4's error falls like h^4."""
    torch.manual_seed(0)
    block = perturbed_flow(1, 4, torch.float64, bijection="ode", steps=1, rate=0.6).decimators[0]
    x = torch.randn(3, 16, dtype=torch.float64)

    def with_steps(n):
        block.steps, block.velocity.lipschitz = n, 0.6  # the same velocity field, finer steps
        return block(x)[1]

    def divergence_integral(n=256):  # trapezoid along a fine trajectory
        h, state, total = 1 / n, x, 0
        for i in range(n + 1):
            _, jac = block.velocity(state, i * h, torch.eye(16, dtype=x.dtype).expand(3, -1, -1))
            weight = 0.5 if i in (0, n) else 1.0
            total = total + weight * h * jac.diagonal(dim1=1, dim2=2).sum(1)
            if i < n:
                state = block.step(state, i * h, h)[0]
        return total

    exact = divergence_integral()
    errors = [(with_steps(n) - exact).abs().max().item() for n in (2, 4, 8)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5, errors


def test_o2_flow_commutes_with_rotations_and_reflections_of_the_two_channels():
    flow = perturbed_flow(2, 8, torch.float64, bijection="ode", symmetry="o2")
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    z, logdet = flow.encode(x)
    assert (z - x).abs().max() > 0.3
    for g in (lambda v: rotate(v, 0.7), lambda v: rotate(v, -2.3), reflect):
        gz, g_logdet = flow.encode(g(x))
        assert (gz - g(z)).abs().max() < 1e-12
        assert (g_logdet - logdet).abs().max() < 1e-12
        gx, _ = flow.decode(g(z))
        assert (gx - g(x)).abs().max() < 1e-12


def test_o2_flow_is_not_equivariant_under_a_rotation_that_differs_between_sites():
    """The symmetry is global (one rotation at every site): a local one is a different map."""
    flow = perturbed_flow(2, 8, torch.float64, bijection="ode", symmetry="o2")
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    z, _ = flow.encode(x)
    angles = torch.rand(8, 8, dtype=torch.float64) * 6.28
    c, s = angles.cos(), angles.sin()

    def local(v):
        return torch.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1]], dim=1)

    assert (flow.encode(local(x))[0] - local(z)).abs().max() > 1e-3


@pytest.mark.parametrize("channels", [1, 3])
def test_z2_flow_is_odd(channels):
    flow = perturbed_flow(channels, 8, torch.float64, bijection="ode", symmetry="z2")
    x = torch.randn(3, channels, 8, 8, dtype=torch.float64)
    z, logdet = flow.encode(x)
    assert (z - x).abs().max() > 0.3
    z_neg, logdet_neg = flow.encode(-x)
    assert torch.equal(z_neg, -z) and torch.equal(logdet_neg, logdet)
    assert (flow.decode(-z)[0] + x).abs().max() < 1e-12


def test_the_unconstrained_ode_flow_has_no_such_symmetry():
    flow = perturbed_flow(2, 8, torch.float64, bijection="ode")
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    z, _ = flow.encode(x)
    assert (flow.encode(-x)[0] + z).abs().max() > 1e-3
    assert (flow.encode(rotate(x, 0.7))[0] - rotate(z, 0.7)).abs().max() > 1e-3


@pytest.mark.parametrize("symmetry, channels", [(None, 1), ("o2", 2)])
def test_decode_gradients_are_those_of_the_exact_inverse(symmetry, channels):
    """decode solves for each step's input; its derivative (parameters and latents) is the implicit one."""
    flow = perturbed_flow(channels, 8, torch.float64, bijection="ode", symmetry=symmetry)
    z = torch.randn(2, channels, 8, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn_like(z)

    def loss(z_):
        x, logdet = flow.decode(z_)
        return (x * w).sum() + torch.sin(logdet).sum()

    params = dict(flow.named_parameters())
    grads = torch.autograd.grad(loss(z), [z, *params.values()])
    direction = [torch.randn_like(g) for g in grads]
    eps = 1e-6

    def shifted(sign):
        with torch.no_grad():
            for p, d in zip(params.values(), direction[1:]):
                p.add_(sign * eps * d)
            value = loss(z + sign * eps * direction[0])
            for p, d in zip(params.values(), direction[1:]):
                p.sub_(sign * eps * d)
        return value

    finite_difference = (shifted(1) - shifted(-1)) / (2 * eps)
    analytic = sum((g * d).sum() for g, d in zip(grads, direction))
    assert analytic.item() == pytest.approx(finite_difference.item(), rel=1e-6)


def test_forward_mode_jvps_of_decode_match_finite_differences():
    import torch.autograd.forward_ad as fwAD

    flow = perturbed_flow(1, 16, torch.float64, bijection="ode").eval()
    z = torch.randn(1, 1, 16, 16, dtype=torch.float64)
    tangent = torch.zeros_like(z)
    tangent[0, 0, 5, 6] = 1.0
    with torch.no_grad(), fwAD.dual_level():
        jvp = fwAD.unpack_dual(flow.decode(fwAD.make_dual(z, tangent))[0]).tangent
    eps = 1e-6
    fd = (flow.decode(z + eps * tangent)[0] - flow.decode(z - eps * tangent)[0]) / (2 * eps)
    assert (jvp - fd).abs().max() < 1e-7


def test_every_step_stays_a_bijection_however_large_the_weights():
    """Spectral normalisation and the bounded output scale cap Lip(v) at rate/h, whatever the raw weights."""
    flow = perturbed_flow(1, 8, torch.float64, bijection="ode", rate=0.69)
    with torch.no_grad():
        for p in flow.parameters():
            p.mul_(50)
    x = 5 * torch.randn(4, 1, 8, 8, dtype=torch.float64)
    z, logdet = flow.encode(x)
    x_back, logdet_inv = flow.decode(z)
    assert (x_back - x).abs().max() < 1e-10 and (logdet + logdet_inv).abs().max() < 1e-10


def test_ode_model_trains_on_images_with_the_hydra_config(tmp_path):
    cfg = compose_cfg(tmp_path, *TINY_ODE, "trainer.fast_dev_run=true", "dataset.batch_size=4", *QUICK[3:5])
    assert cfg.model.bijection == "ode"
    results = train_app.train(cfg)
    assert math.isfinite(results["test/bpd"]) and 0 < results["test/bpd"] < 16


def test_one_reverse_kl_step_of_the_shipped_ode_lattice_flow_on_the_free_field():
    action = build_action("free_complex", t=1.0, mu=4.5)
    flow = RGFlow(2, 8, **{**SHIPPED, "features": 2, "steps": 2})
    prior = GaussianPrior(2, 8)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    losses = []
    for _ in range(2):
        x, log_q, _ = sample_and_log_prob(flow, prior, 64)
        loss = reverse_kl(log_q, action(x))
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in flow.parameters())
        assert flow.decimators[0].velocity.weight.grad.abs().max() > 0
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[0] > -action.log_z(8) - 1e-6  # the bound holds


def test_image_model_with_an_ode_flow_samples_and_scores():
    model = RGFlowModel.build(1, 8, bijection="ode", velocity="features", features=2, steps=1)
    model.flow = randomised(model.flow, 0.05).float()
    images = model.sample(3)
    assert images.shape == (3, 1, 8, 8) and images.dtype == torch.long
    assert torch.isfinite(model.bpd(images)).all()


def test_the_hierarchy_analyses_run_on_an_ode_model():
    """Receptive fields (forward-mode JVPs through decode), mixing and inpainting (gradients through decode)."""
    from rgflow_vision import analysis

    torch.manual_seed(0)
    model = RGFlowModel.build(1, 8, bijection="ode", velocity="features", features=2, steps=1)
    model.flow = randomised(model.flow, 0.05).float()
    fields = analysis.receptive_fields(model.flow, model.prior, num_samples=1, max_sites=2)
    assert len(fields.mean_maps) == model.flow.num_levels and all((m >= 0).all() for m in fields.mean_maps)
    x = torch.randint(0, 256, (2, 1, 8, 8))
    assert torch.equal(analysis.mix(model, x[:1], x[1:], 0), x[:1])
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:4, 2:4] = True
    result = analysis.inpaint(model, x[:1], mask, steps=2)
    assert result.restored.shape == (1, 1, 8, 8) and 0 < result.latents_updated <= 64


@pytest.mark.parametrize("symmetry, channels", [("o2", 2), ("z2", 1), (None, 1), ("z2", 2), (None, 3)])
def test_the_dense_circulant_and_the_fft_apply_the_same_periodic_convolution(symmetry, channels):
    """A small torus runs the periodic kernel as a dense matrix (faster there), a large one by FFT: the
    same velocity, divergence and Lipschitz scaling to rounding."""
    fft = randomised(FeatureVelocity(channels, 8, symmetry, features=3, time_basis=3, kernel="periodic",
                                     lipschitz=2.0, dense=False), scale=1.0)
    dense = randomised(FeatureVelocity(channels, 8, symmetry, features=3, time_basis=3, kernel="periodic",
                                       lipschitz=2.0, dense=True), scale=1.0)
    assert fft.dense is False and dense.dense is True
    x = torch.randn(5, channels * 64, dtype=torch.float64)
    (v_fft, div_fft), (v_dense, div_dense) = fft(x, 0.3), dense(x, 0.3)
    assert v_fft.abs().max() > 0.1 and div_fft.abs().min() > 0.1
    assert torch.allclose(v_fft, v_dense, atol=1e-12, rtol=0) and torch.allclose(div_fft, div_dense, atol=1e-12, rtol=0)


def test_the_periodic_convolutions_written_out_adjoints_are_its_gradients():
    """The FFT path's convolution backpropagates by hand-written correlations (flows/features.py,
    PeriodicConvolution): they equal the numerical gradients in float64, and the map is the direct sum
    v[n, q](x) = sum_p sum_y k[q, p](x - y) x[n, p](y)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    kernel = torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(periodic_convolution, (x, kernel))
    direct = sum(kernel[:, :, a, b].detach() @ x.detach().roll((a, b), dims=(2, 3)).movedim(1, -1).unsqueeze(-1)
                 for a in range(8) for b in range(8)).squeeze(-1).movedim(-1, 1)
    assert torch.allclose(periodic_convolution(x, kernel), direct, atol=1e-12, rtol=0)


@pytest.mark.slow  # torch.compile of the feature velocity (dense and FFT paths)
@pytest.mark.parametrize("symmetry, channels, kernel", [("o2", 2, "block"), ("z2", 1, "periodic")])
def test_fused_feature_velocities_give_the_eager_flow_and_gradients(symmetry, channels, kernel):
    """compile=conditioners (fuse_conditioners) runs every feature velocity compiled: the same map, log-det and
    gradients as eager, in float64 on random weights."""
    architecture = {"symmetry": symmetry, "kernel": kernel, "lipschitz": 2.0}
    if kernel == "periodic":
        architecture.update(block_size=None, depth=1)
    flows = [feature_flow(channels, 16, scale=0.3, **architecture) for _ in range(2)]
    if kernel == "periodic":
        assert not flows[1].disentanglers[0].velocity.dense  # L = 16: the FFT path
    assert fuse_conditioners(flows[1]) > 0
    x = torch.randn(3, channels, 16, 16, dtype=torch.float64)
    results = []
    for flow in flows:
        xi = x.clone().requires_grad_(True)
        out, logdet = flow.encode(xi)
        (out.square().sum() + logdet.sum()).backward()
        results.append([out, logdet, xi.grad] + [p.grad for p in flow.parameters()])
    assert results[0][1].abs().max() > 0.1  # away from the identity
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10)
