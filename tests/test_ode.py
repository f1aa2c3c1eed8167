"""The neural-ODE block: exact discrete log-det for every scheme, exact inverse and its gradients,
O(2) and Z2 equivariance built into the velocity, and one training step on images and on a lattice action.
(Round trips, slogdet, levels and cones for every bijection are in test_flow.py.)"""

import math

import pytest
import torch

from rgflow_vision import RGFlowModel
from rgflow_vision.flows import RGFlow
from rgflow_vision.flows.ode import SCHEMES
from rgflow_vision.lattice import build_action, reverse_kl
from rgflow_vision.model import sample_and_log_prob
from rgflow_vision.priors import GaussianPrior
from rgflow_vision.apps import train as train_app

from .apps import QUICK, compose_cfg
from .conftest import perturbed_flow
from .test_flow import jacobian_logdet

TINY_ODE = ["model=ode", "model.hidden=8", "model.mlp_depth=1", "model.steps=[1]"]


def rotate(x: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate the two channels of every site by ``angle``."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.stack([c * x[:, 0] - s * x[:, 1], s * x[:, 0] + c * x[:, 1]], dim=1)


def reflect(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x[:, 0], -x[:, 1]], dim=1)


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


def test_one_reverse_kl_step_of_an_o2_ode_flow_on_the_free_field():
    action = build_action("free_complex", t=1.0, mu=4.5)
    flow = RGFlow(2, 8, bijection="ode", symmetry="o2", hidden=8, mlp_depth=1, steps=1)
    prior = GaussianPrior(2, 8)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    losses = []
    for _ in range(2):
        x, log_q, _ = sample_and_log_prob(flow, prior, 64)
        loss = reverse_kl(log_q, action(x))
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in flow.parameters())
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[0] > -action.log_z(8) - 1e-6  # the bound holds


def test_image_model_with_an_ode_flow_samples_and_scores():
    model = RGFlowModel.build(1, 8, bijection="ode", hidden=8, mlp_depth=1, steps=1)
    images = model.sample(3)
    assert images.shape == (3, 1, 8, 8) and images.dtype == torch.long
    assert torch.isfinite(model.bpd(images)).all()


def test_the_hierarchy_analyses_run_on_an_ode_model():
    """Receptive fields (forward-mode JVPs through decode), mixing and inpainting (gradients through decode)."""
    from rgflow_vision import analysis

    torch.manual_seed(0)
    model = RGFlowModel.build(1, 8, bijection="ode", hidden=8, mlp_depth=1, steps=1)
    model.flow = perturbed_flow(1, 8, bijection="ode", hidden=8, mlp_depth=1, steps=1)
    fields = analysis.receptive_fields(model.flow, model.prior, num_samples=1, max_sites=2)
    assert len(fields.mean_maps) == model.flow.num_levels and all((m >= 0).all() for m in fields.mean_maps)
    x = torch.randint(0, 256, (2, 1, 8, 8))
    assert torch.equal(analysis.mix(model, x[:1], x[1:], 0), x[:1])
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:4, 2:4] = True
    result = analysis.inpaint(model, x[:1], mask, steps=2)
    assert result.restored.shape == (1, 1, 8, 8) and 0 < result.latents_updated <= 64
