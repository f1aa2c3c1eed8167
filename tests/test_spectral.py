"""The momentum-space scaling (flows/spectral.py) that holds the Gaussian part of a lattice field's correlations.

Specification: it is a translation-invariant linear map diagonal in momentum, so its log-det is C sum_k a_k
(slogdet of its Jacobian in float64), its inverse is exact, and it commutes with the lattice's translations,
rotations and reflections, with phi -> -phi and with the O(2) rotations of a complex field. It scales a plane
wave of momentum k by exp(a_k). Inside RGFlow and the flat flow (spectral=True) the whole flow stays exact.
Grown onto a twice larger torus it keeps the scales of the momenta both tori have."""

from __future__ import annotations

import math

import pytest
import torch

from rgflow_vision.flows import RGFlow
from rgflow_vision.flows.flat import FlatFlow
from rgflow_vision.flows.spectral import MomentumScale
from rgflow_vision.lattice.module import grow

from .test_flow import jacobian_logdet
from .test_ode import rotate

pytestmark = pytest.mark.usefixtures("one_thread")


def random_scale(channels: int, size: int, seed: int = 0) -> MomentumScale:
    layer = MomentumScale(channels, size).double()
    with torch.no_grad():  # far from the identity: scales between e^-1 and e^1 and more
        layer.log_scale.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(seed))
    return layer


@pytest.mark.parametrize("channels, size", [(1, 4), (2, 8)])
def test_log_det_is_slogdet_of_the_jacobian_and_the_inverse_is_exact(channels, size):
    layer = random_scale(channels, size)
    x = torch.randn(1, channels, size, size, dtype=torch.float64)
    y, logdet = layer(x)
    sign, expected = jacobian_logdet(layer, x)
    assert sign > 0 and abs(expected.item()) > 1.0
    torch.testing.assert_close(logdet, expected.view(1), rtol=0, atol=1e-10)
    back, inverse_logdet = layer(y, inverse=True)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-12)
    torch.testing.assert_close(inverse_logdet, -logdet, rtol=0, atol=1e-12)


def test_a_plane_wave_of_momentum_k_is_scaled_by_exp_a_k():
    size = 8
    layer = random_scale(1, size)
    a = layer.log_scales()
    n = torch.arange(size, dtype=torch.float64)
    for i, j in [(0, 0), (1, 0), (2, 3), (4, 4)]:
        wave = torch.cos(2 * math.pi * (i * n[:, None] + j * n[None, :]) / size).view(1, 1, size, size)
        torch.testing.assert_close(layer(wave)[0], math.exp(a[i, j].item()) * wave, rtol=0, atol=1e-12)


def test_it_commutes_with_translations_rotations_reflections_z2_and_o2():
    layer = random_scale(2, 8)
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    y = layer(x)[0]
    for g in (lambda v: v.roll((3, 5), (-2, -1)), lambda v: v.rot90(1, (-2, -1)), lambda v: v.flip(-1),
              lambda v: v.transpose(-2, -1), lambda v: -v, lambda v: rotate(v, 0.7), lambda v: v.flip(1)):
        torch.testing.assert_close(layer(g(x))[0], g(y), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["rgflow", "flat"])
def test_flows_with_the_scaling_stay_exact(kind):
    torch.manual_seed(0)
    if kind == "rgflow":
        flow = RGFlow(2, 8, hidden=8, num_res_blocks=1, mlp_depth=1, couplings=[1], mask="channels", spectral=True)
    else:
        flow = FlatFlow(2, 8, couplings=1, hidden=4, conv_layers=2, spectral=True)
    flow = flow.double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    z, logdet = flow.encode(x)
    sign, expected = jacobian_logdet(flow.encode, x)
    assert sign != 0
    torch.testing.assert_close(logdet, expected.view(1), rtol=0, atol=1e-8)
    back, decode_logdet = flow.decode(z)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(decode_logdet, -logdet, rtol=0, atol=1e-8)


def test_growing_keeps_the_scales_of_the_momenta_both_tori_have():
    small, large = (RGFlow(2, size, block_size=None, bijection="ode", symmetry="o2", kernel="periodic",
                           features=2, time_basis=1, steps=[1], spectral=True) for size in (8, 16))
    with torch.no_grad():
        small.spectral.log_scale.normal_(0.0, 0.1)
    grow(large, {k: v for k, v in small.state_dict().items() if k.startswith("spectral")})
    a_small, a_large = small.spectral.log_scales(), large.spectral.log_scales()
    torch.testing.assert_close(a_large[::2, ::2], a_small)  # momentum 2 pi n / 8 is 2 pi (2n) / 16
    between = (a_small + a_small.roll(-1, 0)) / 2  # and the momenta in between are averages of their neighbours
    torch.testing.assert_close(a_large[1::2, ::2], between)
