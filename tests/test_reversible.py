"""Reversible backpropagation: the same gradients, without storing the activations."""

import pytest
import torch

from rgflow_vision.flows.conditioner import fuse_conditioners

from .conftest import perturbed_flow


def twin_flows(dtype=torch.float64, bijection="rnvp"):
    plain = perturbed_flow(3, 16, dtype, bijection=bijection, hidden=32)
    rev = perturbed_flow(3, 16, dtype, bijection=bijection, hidden=32)
    rev.reversible = True
    assert rev.reversible and not plain.reversible
    return plain, rev


@pytest.mark.parametrize("bijection", ["rnvp", "rnvp_shared"])
@pytest.mark.parametrize("direction", ["encode", "decode"])
def test_reversible_gradients_equal_stored_activation_gradients(direction, bijection):
    plain, rev = twin_flows(bijection=bijection)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    w = torch.randn_like(x)  # an arbitrary loss that uses both outputs
    grads = []
    for flow in (plain, rev):
        xi = x.clone().requires_grad_(True)
        out, logdet = getattr(flow, direction)(xi)
        ((out * w).sum() + (logdet**2).sum()).backward()
        grads.append([xi.grad] + [p.grad for p in flow.parameters()])
    for g_plain, g_rev in zip(*grads):
        assert g_rev is not None
        assert torch.allclose(g_plain, g_rev, rtol=1e-7, atol=1e-9)


def saved_bytes(flow, x):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        flow.encode(x)[1].sum()
    return total


def test_reversible_mode_stores_far_fewer_activations():
    plain, rev = twin_flows(torch.float32)
    x = torch.randn(8, 3, 16, 16)
    stored, reversible = saved_bytes(plain, x), saved_bytes(rev, x)
    image = x.numel() * 4
    # one output per layer (2 per level, 3 levels) plus the pixels that enter
    assert reversible <= 8 * image, (reversible, image)
    assert stored > 20 * reversible


def test_reversible_mode_is_bypassed_without_gradients():
    _, rev = twin_flows(torch.float32)
    with torch.no_grad():
        z, logdet = rev.encode(torch.randn(2, 3, 16, 16))
    assert z.grad_fn is None and logdet.grad_fn is None


def test_reversible_backward_replays_the_autocast_of_the_forward():
    plain, rev = twin_flows(torch.float32)
    x = torch.randn(2, 3, 16, 16)
    grads = []
    for flow in (plain, rev):
        flow.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z, logdet = flow.encode(x)
        assert z.dtype == torch.float32 and logdet.dtype == torch.float32
        (z.square().sum() + logdet.sum()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in flow.parameters()]))
    # Both ran their networks in bf16; a float32 replay differs by about 4e-3.
    assert ((grads[0] - grads[1]).norm() / grads[0].norm()).item() < 1e-3


def test_eval_mode_uses_plain_autograd_so_forward_mode_jvps_work():
    _, rev = twin_flows(torch.float64)
    rev.eval()
    z = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    tangent = torch.zeros_like(z)
    tangent[0, 0, 4, 4] = 1.0
    _, jvp = torch.func.jvp(lambda v: rev.decode(v)[0], (z,), (tangent,))
    eps = 1e-6
    fd = (rev.decode(z + eps * tangent)[0] - rev.decode(z - eps * tangent)[0]) / (2 * eps)
    assert torch.allclose(jvp, fd, atol=1e-6)


@pytest.mark.slow  # one torch.compile of the residual blocks (about 25 s)
def test_fused_conditioners_give_the_eager_values_and_gradients_in_reversible_mode():
    """compile=conditioners (fuse_conditioners): the same flow, its residual blocks compiled; the log-det and
    every gradient of the reversible backward equal the eager ones to rounding."""
    _, eager = twin_flows()
    _, fused = twin_flows()
    assert fuse_conditioners(fused) > 0
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    results = []
    for flow in (eager, fused):
        xi = x.clone().requires_grad_(True)
        out, logdet = flow.encode(xi)
        (out.square().sum() + logdet.sum()).backward()
        results.append([out, logdet, xi.grad] + [p.grad for p in flow.parameters()])
    assert results[0][1].abs().max() > 0.1  # a flow away from the identity
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10)
