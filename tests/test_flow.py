"""RGFlow is an exact bijection with an exact log-det, organised by RG level, for every registered block bijection."""

import inspect
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rgflow_vision.flows import RGFlow, causal_cone, cone_width, level_map
from rgflow_vision.flows.bijections import realnvp

from .conftest import BIJECTIONS, TINY_BY_BIJECTION, perturbed_flow, site_mask

TOL = {torch.float32: 1e-4, torch.float64: 1e-9}


@pytest.mark.parametrize("bijection", BIJECTIONS)
def test_flow_is_the_identity_at_initialisation(bijection):
    flow = RGFlow(3, 16, **TINY_BY_BIJECTION[bijection])
    x = torch.randn(4, 3, 16, 16)
    z, logdet = flow.encode(x)
    if bijection == "rnvp_spline":  # equal bins and unit slopes are computed: the identity to rounding
        assert (z - x).abs().max() < 1e-5 and logdet.abs().max() < 1e-4
    else:
        assert torch.equal(z, x)
        assert torch.equal(logdet, torch.zeros(4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [8, 16, 32])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("bijection", BIJECTIONS)
def test_decode_inverts_encode(channels, size, dtype, bijection):
    flow = perturbed_flow(channels, size, dtype, bijection=bijection)
    x = torch.randn(5, channels, size, size, dtype=dtype)
    z, logdet_enc = flow.encode(x)
    assert z.shape == x.shape and z.dtype == dtype and logdet_enc.shape == (5,)
    assert (z - x).abs().max() > 0.1, "the weights should be far from the identity"
    x_back, logdet_dec = flow.decode(z)
    assert (x_back - x).abs().max() < TOL[dtype]
    assert (logdet_enc + logdet_dec).abs().max() < TOL[dtype] * 10
    assert logdet_enc.abs().min() > 1e-3


@pytest.mark.parametrize("bijection", BIJECTIONS)
def test_float64_data_through_a_float32_flow_stays_float64_and_exactly_invertible(bijection):
    flow = perturbed_flow(3, 16, bijection=bijection)  # float32 weights
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    z, logdet = flow.encode(x)
    assert z.dtype == logdet.dtype == torch.float64
    x_back, logdet_inv = flow.decode(z)
    assert (x_back - x).abs().max() < 1e-9 and (logdet + logdet_inv).abs().max() < 1e-9


@pytest.mark.parametrize("batch", [1, 2, 7])
@pytest.mark.parametrize("bijection", BIJECTIONS)
def test_any_batch_size_and_batch_independence(batch, bijection):
    flow = perturbed_flow(3, 16, bijection=bijection)
    x = torch.randn(batch, 3, 16, 16)
    z, logdet = flow.encode(x)
    for i in range(batch):  # each sample is transformed on its own
        zi, ldi = flow.encode(x[i : i + 1])
        assert torch.allclose(zi[0], z[i], atol=1e-5) and torch.allclose(ldi[0], logdet[i], atol=1e-4)


def jacobian_logdet(fn, x):
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.view_as(x))[0].flatten(), x.flatten(), vectorize=True)
    sign, logabsdet = torch.linalg.slogdet(jac)
    return sign, logabsdet


@pytest.mark.parametrize("channels, size", [(1, 8), (3, 8), (1, 16)])
@pytest.mark.parametrize("bijection", BIJECTIONS)
def test_logdet_equals_slogdet_of_the_autograd_jacobian(channels, size, bijection):
    flow = perturbed_flow(channels, size, torch.float64, bijection=bijection)
    x = torch.randn(1, channels, size, size, dtype=torch.float64)
    z, logdet = flow.encode(x)
    sign, expected = jacobian_logdet(flow.encode, x)
    assert sign != 0
    # The ODE's Lipschitz bound keeps its log-dets smaller than the couplings' for random weights.
    assert abs(expected.item()) > (0.2 if bijection == "ode" else 1.0), "a log-det near zero would not test much"
    assert logdet.item() == pytest.approx(expected.item(), abs=1e-8)
    _, expected_dec = jacobian_logdet(flow.decode, z)
    assert flow.decode(z)[1].item() == pytest.approx(expected_dec.item(), abs=1e-8)
    assert expected_dec.item() == pytest.approx(-expected.item(), abs=1e-8)


def test_level_map_and_num_levels():
    flow = RGFlow(3, 32)
    assert flow.num_levels == 4
    levels = flow.level_map()
    assert levels.dtype == torch.long and levels.shape == (32, 32)
    for h in range(4):  # z[..., ::2**h, ::2**h] is exactly the latents of level >= h
        assert bool((levels[:: 2**h, :: 2**h] >= h).all())
        assert int((levels >= h).sum()) == (32 // 2**h) ** 2


@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("bijection", BIJECTIONS)
def test_latents_of_level_h_are_final_once_level_h_is_done(level, bijection):
    """Changing the layers of levels above h cannot move latents of level <= h: they have left."""
    flow = perturbed_flow(1, 32, torch.float64, bijection=bijection)
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    z_before, _ = flow.encode(x)
    with torch.no_grad():
        for layers in (flow.disentanglers, flow.decimators):
            for h in range(level + 1, flow.num_levels):
                for p in layers[h].parameters():
                    p.add_(0.3 * torch.randn_like(p))
    z_after, _ = flow.encode(x)
    moved = (z_after - z_before).abs().amax(dim=(0, 1)) > 1e-12
    levels = flow.level_map()
    assert not moved[levels <= level].any()
    assert moved[levels > level].all()


@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("bijection", BIJECTIONS)
def test_a_level_h_latent_moves_only_pixels_in_its_causal_cone(level, bijection):
    """Bound: the pixels a level-h latent reaches fit a square of side 12 * 2^h - 4 (8 for h = 0)."""
    size = 64
    flow = perturbed_flow(1, size, torch.float64, bijection=bijection)
    z = torch.randn(1, 1, size, size, dtype=torch.float64)
    site = (2**level * 5, 2**level * 7)  # its cone does not wrap around
    assert flow.level_map()[site] == level
    x, _ = flow.decode(z)
    z2 = z.clone()
    z2[0, 0, site[0], site[1]] += 1.0
    x2, _ = flow.decode(z2)
    # Outside the cone the arithmetic is the same, bit for bit; inside, the edge of a level-2 cone moves by ~1e-12.
    moved = (x2 - x)[0, 0] != 0
    cone = causal_cone(site_mask(size, *site), direction="decode")
    assert not moved[~cone].any(), "a pixel outside the causal cone changed"
    assert torch.equal(moved, cone), "for generic weights the cone is tight"
    rows, cols = moved.any(1).nonzero(), moved.any(0).nonzero()
    assert rows.max() - rows.min() + 1 == cone_width(level) == cols.max() - cols.min() + 1


@pytest.mark.parametrize("bijection", BIJECTIONS)
def test_a_pixel_reaches_only_latents_in_its_encode_cone(bijection):
    size = 32
    flow = perturbed_flow(1, size, torch.float64, bijection=bijection)
    x = torch.randn(1, 1, size, size, dtype=torch.float64)
    x2 = x.clone()
    x2[0, 0, 17, 9] += 1.0
    moved = (flow.encode(x2)[0] - flow.encode(x)[0])[0, 0].abs() > 1e-12
    cone = causal_cone(site_mask(size, 17, 9), direction="encode")
    assert torch.equal(moved, cone)
    levels = level_map(size)
    assert all(int((cone & (levels == h)).sum()) > 0 for h in range(flow.num_levels))
    assert int(cone.sum()) < size * size // 4


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: RGFlow(3, 12), "image size 12 is not allowed"),
        (lambda: RGFlow(3, 2), "image size 2 is not allowed"),
        (lambda: RGFlow(1, 48), "image size 48 is not allowed"),
        (lambda: RGFlow(0, 16), "channels must be a positive"),
        (lambda: RGFlow(1, 16, couplings=()), "couplings per level"),
        (lambda: RGFlow(1, 16, bijection="glow"), "unknown bijection 'glow': use one of"),
        (lambda: RGFlow(1, 16, bijection="ode", steps=[0]), "ODE steps per level"),
        (lambda: RGFlow(1, 16, bijection="ode", scheme="rk45"), "unknown ODE scheme"),
        (lambda: RGFlow(1, 16, bijection="ode", symmetry="o2"), "two channels at every site; this flow has 1"),
        (lambda: RGFlow(2, 16, bijection="ode", symmetry="u1"), "unknown symmetry 'u1'"),
        (lambda: RGFlow(2, 16, symmetry="o2"), "'rnvp' has no built-in symmetry"),
        (lambda: RGFlow(2, 16, bijection="ode", reversible=True), "reversible backpropagation is implemented for"),
        (lambda: RGFlow(2, 16, bijection="ode", explicit="both"), "explicit must be 'encode' or 'decode'"),
        (lambda: RGFlow(2, 16, bijection="ode", rate=0.9), r"rate .* must be in \(0, 0.69\]"),
    ],
)
def test_bad_architectures_raise_a_clear_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("shape", [(2, 1, 16, 16), (2, 3, 8, 8), (3, 16, 16), (2, 3, 16, 8)])
def test_inputs_of_the_wrong_shape_name_both_shapes(shape):
    flow = RGFlow(3, 16)
    with pytest.raises(ValueError, match=r"expects a batch of shape \(B, 3, 16, 16\); got"):
        flow.encode(torch.randn(shape))
    with pytest.raises(ValueError, match=r"decode expects"):
        flow.decode(torch.randn(shape))


def test_paper_configuration_has_the_papers_parameter_count():
    with torch.device("meta"):
        flow = RGFlow(3, 32, hidden=512, num_res_blocks=4, mlp_depth=2, couplings=(8, 6, 4, 2),
                      conditioner="separate")  # the paper's s and t networks (conf/model/paper.yaml)
    assert sum(p.numel() for p in flow.parameters()) == 100_647_680
    assert [len(d.couplings) for d in flow.disentanglers] == [8, 6, 4, 2]
    assert [len(d.couplings) for d in flow.decimators] == [8, 6, 4, 2]


def test_a_builder_can_be_passed_instead_of_a_registered_name():
    from rgflow_vision.flows import BIJECTIONS

    named = RGFlow(1, 8, bijection="ode", hidden=8, mlp_depth=1, steps=1)
    direct = RGFlow(1, 8, bijection=BIJECTIONS["ode"], hidden=8, mlp_depth=1, steps=1)
    assert named.state_dict().keys() == direct.state_dict().keys()


def test_deeper_levels_reuse_the_last_coupling_count():
    flow = RGFlow(1, 64, hidden=8, num_res_blocks=1, couplings=(3, 1))
    assert [len(d.couplings) for d in flow.disentanglers] == [3, 1, 1, 1, 1]


@pytest.mark.parametrize("bijection", BIJECTIONS)
def test_state_dict_round_trip_gives_the_same_map(bijection):
    flow = perturbed_flow(3, 16, bijection=bijection)
    copy = RGFlow(3, 16, **TINY_BY_BIJECTION[bijection])
    copy.load_state_dict(flow.state_dict())
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(flow.encode(x)[0], copy.encode(x)[0])


def test_an_rgflow_built_in_python_is_the_small_config():
    """One value per default: RGFlow's and the RealNVP block's defaults are conf/model/small.yaml."""
    small = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "model" / "small.yaml"))
    defaults = {name: p.default for fn in (RGFlow, realnvp) for name, p in inspect.signature(fn).parameters.items()
                if p.default is not inspect.Parameter.empty}
    for key, value in small.items():
        default = defaults[key]
        assert (list(default) if isinstance(default, tuple) else default) == value, key


def test_the_rational_quadratic_spline_is_a_monotone_bijection_of_the_line_with_its_exact_log_derivative():
    """Inside [-B, B] the spline is increasing and inverted by its quadratic formula; its log-det is log dy/dx from
    autograd; outside it is the identity; all-zero parameters give the identity (equal bins, unit slopes)."""
    from rgflow_vision.flows.spline import rational_quadratic

    n, bins, bound = 4001, 6, 3.0
    params = [torch.randn(1, k, 1, dtype=torch.float64).expand(n, k, 1) for k in (bins, bins, bins - 1)]
    x = torch.linspace(-4, 4, n, dtype=torch.float64)[:, None].requires_grad_(True)  # n values of one feature
    y, logdet = rational_quadratic(x, *params, bound)
    assert bool((y.diff(dim=0) > 0).all())
    slope, = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(logdet, slope.log(), atol=1e-10)
    outside = x.detach().abs() >= bound
    assert torch.equal(y[outside], x[outside]) and bool((logdet[outside] == 0).all())
    assert (y - x).abs().max() > 0.1, "random parameters move the inside"
    x_back, logdet_back = rational_quadratic(y.detach(), *params, bound, inverse=True)
    assert (x_back - x).abs().max() < 1e-12 and (logdet_back + logdet).abs().max() < 1e-10
    zeros = [torch.zeros_like(p) for p in params]
    y0, logdet0 = rational_quadratic(x.detach(), *zeros, bound)
    assert (y0 - x).abs().max() < 1e-14 and logdet0.abs().max() < 1e-14
    from rgflow_vision.flows.coupling import Coupling
    with pytest.raises(ValueError, match="transform must be one of affine, spline"):
        Coupling(1, 4, 8, 1, 1, transform="cubic")
    with pytest.raises(ValueError, match="a spline needs bins >= 2"):
        Coupling(1, 4, 8, 1, 1, transform="spline", bins=1)


def test_the_channel_checkerboard_updates_one_channel_of_a_site_given_the_other():
    """mask="channels": a half-coupling moves a site's channel 1 with its channel 0 (the paper's "sites" mask never
    couples the channels of one site), and the flow stays exactly invertible with the exact log-det."""
    from rgflow_vision.flows.coupling import Coupling, checkerboard

    assert checkerboard(2, 2, "channels").tolist() == [1, 0, 0, 1, 0, 1, 1, 0]
    assert checkerboard(2, 2, "sites").tolist() == [1, 0, 0, 1, 1, 0, 0, 1]
    with pytest.raises(ValueError, match="mask must be one of"):
        checkerboard(2, 2, "rows")
    for mask, coupled in (("sites", False), ("channels", True)):
        torch.manual_seed(0)
        coupling = Coupling(2, 4, 8, 1, 1, mask).double()
        with torch.no_grad():
            for name, p in coupling.named_parameters():
                p.copy_(torch.randn_like(p) if name.endswith("out_scale") else p + 0.1 * torch.randn_like(p))
        v = torch.randn(32, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(lambda u: coupling(u[None], parity=0)[0][0], v).view(2, 16, 2, 16)
        within_site = jac[1, :, 0, :].diagonal()  # d out(channel 1, site k) / d in(channel 0, site k)
        assert bool((within_site.abs() > 1e-6).any()) == coupled
    flow = perturbed_flow(2, 8, torch.float64, mask="channels")
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    z, logdet = flow.encode(x)
    _, expected = jacobian_logdet(flow.encode, x)
    assert logdet.item() == pytest.approx(expected.item(), abs=1e-8) and abs(expected.item()) > 1.0
    x_back, logdet_back = flow.decode(z)
    assert (x_back - x).abs().max() < 1e-9 and abs(logdet_back.item() + logdet.item()) < 1e-9
