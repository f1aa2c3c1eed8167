"""Lattice actions: the formulas of reference/lattice.md, each bond once, the exact free field."""

from __future__ import annotations

import math

import pytest
import torch

from rgflow_vision.lattice import ComplexPhi4, FreeComplexField, RealPhi4, build_action, two_point

# reference/lattice.md, L = 8, t = 1, mu = 4.5
REF_LOG_Z = -14.21720
REF_G = [0.317593, 0.107292, 0.042180, 0.020259, 0.014841]


pytestmark = pytest.mark.usefixtures("one_thread")


def bonds(size):
    """Every nearest-neighbour bond of the periodic lattice once: (site, forward neighbour)."""
    for i in range(size):
        for j in range(size):
            yield (i, j), ((i + 1) % size, j)
            yield (i, j), (i, (j + 1) % size)


def complex_action_by_hand(x, t, mu, lam):
    """lattice.md, literally: -t sum_<ij> (phi_i^* phi_j + c.c.) + mu sum |phi|^2 + lam sum |phi|^4."""
    phi = torch.complex(x[:, 0], x[:, 1])
    s = (mu * phi.abs() ** 2 + lam * phi.abs() ** 4).sum(dim=(1, 2))
    for a, b in bonds(x.shape[-1]):
        phi_i, phi_j = phi[:, a[0], a[1]], phi[:, b[0], b[1]]
        s = s - t * (phi_i.conj() * phi_j + phi_j.conj() * phi_i).real
    return s


def kappa_action_by_hand(x, kappa, lam):
    """lattice.md's kappa form: sum [|phi|^2 + lam (|phi|^2 - 1)^2] - 2 kappa sum_<ij> phi_i . phi_j."""
    r2 = (x**2).sum(dim=1)
    s = (r2 + lam * (r2 - 1) ** 2).sum(dim=(1, 2))
    for a, b in bonds(x.shape[-1]):
        s = s - 2 * kappa * (x[:, :, a[0], a[1]] * x[:, :, b[0], b[1]]).sum(dim=1)
    return s


def tutorial_real_action(x, m2, lam):
    """The lattice-flow tutorial's code: both rolls per direction, no bond bookkeeping."""
    phi = x[:, 0]
    density = m2 * phi**2 + lam * phi**4
    for mu in (1, 2):
        density = density + 2 * phi**2 - phi * torch.roll(phi, -1, mu) - phi * torch.roll(phi, 1, mu)
    return density.sum(dim=(1, 2))


def random_fields(channels, size, n=5, scale=1.3):
    return scale * torch.randn(n, channels, size, size, dtype=torch.float64)


@pytest.mark.parametrize("size", [3, 4, 6])
def test_complex_phi4_is_lattice_md_formula_with_each_bond_once(size):
    x = random_fields(2, size)
    action = ComplexPhi4(t=0.7, mu=1.9, lam=0.6)
    assert torch.allclose(action(x), complex_action_by_hand(x, 0.7, 1.9, 0.6), atol=1e-10)


@pytest.mark.parametrize("size", [3, 4, 6])
def test_real_phi4_is_the_tutorial_normalisation(size):
    x = random_fields(1, size)
    assert torch.allclose(RealPhi4(-4, 8)(x), tutorial_real_action(x, -4, 8), atol=1e-10)


def test_kappa_form_equals_t_mu_lam_form_up_to_a_constant():
    kappa, lam, size = 0.2, 1.145, 6
    x = random_fields(2, size, n=8)
    plain = ComplexPhi4(t=kappa, mu=1 - 2 * lam, lam=lam)(x)
    kappa_form = kappa_action_by_hand(x, kappa, lam)
    # action differences between configurations agree, so the two forms define the same distribution
    assert torch.allclose(plain - plain[0], kappa_form - kappa_form[0], atol=1e-9)
    assert torch.allclose(kappa_form - plain, torch.full_like(plain, lam * size**2), atol=1e-9)
    # from_kappa keeps the constant, so it is the kappa form exactly
    assert torch.allclose(ComplexPhi4.from_kappa(kappa, lam)(x), kappa_form, atol=1e-9)


ACTIONS = [
    FreeComplexField(1.0, 4.5),
    ComplexPhi4(t=0.6, mu=-1.3, lam=1.1),
    ComplexPhi4.from_kappa(0.2, 1.145),
    RealPhi4(-4, 8),
]


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.name)
def test_actions_are_invariant_under_lattice_symmetries(action):
    x = random_fields(action.channels, 6)
    s = action(x)
    for moved in [
        torch.roll(x, (2, -1), dims=(-2, -1)),  # translations
        x.transpose(-2, -1),  # reflection in the diagonal
        x.flip(-1),  # reflection of an axis
        -x,  # phi -> -phi
    ]:
        assert torch.allclose(action(moved), s, atol=1e-10)


@pytest.mark.parametrize("action", ACTIONS[:3], ids=lambda a: a.name)
def test_complex_actions_are_u1_invariant(action):
    x = random_fields(2, 4)
    alpha = 0.83
    rotated = torch.stack(
        [math.cos(alpha) * x[:, 0] - math.sin(alpha) * x[:, 1], math.sin(alpha) * x[:, 0] + math.cos(alpha) * x[:, 1]],
        dim=1,
    )
    assert torch.allclose(action(rotated), action(x), atol=1e-10)


def test_actions_are_built_by_name_with_the_kappa_form_available():
    x = random_fields(2, 4)
    assert torch.equal(build_action("complex_phi4", kappa=0.2, lam=1.145)(x), ComplexPhi4.from_kappa(0.2, 1.145)(x))
    assert torch.equal(build_action("complex_phi4", t=1, mu=2, lam=3)(x), ComplexPhi4(1, 2, 3)(x))
    assert build_action("free_complex", t=1, mu=4.5).log_z(8) == FreeComplexField(1, 4.5).log_z(8)
    assert build_action("real_phi4", m2=-4, lam=8).name == "real_phi4(m2=-4, lam=8)"
    with pytest.raises(ValueError, match="unknown action"):
        build_action("ising")


def test_action_rejects_the_wrong_number_of_channels():
    with pytest.raises(ValueError, match="expects fields of shape"):
        RealPhi4(-4, 8)(torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="mu > 4"):
        FreeComplexField(1.0, 3.9)


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.name)
def test_local_action_differences_on_one_colour_are_exact_action_differences(action):
    size = 6
    x = random_fields(action.channels, size)
    i = torch.arange(size)
    for colour in (0, 1):
        mask = (i[:, None] + i[None, :]) % 2 == colour
        moved = torch.where(mask, x + 0.7 * torch.randn_like(x), x)
        local = (action.local_action(moved) - action.local_action(x)).masked_fill(~mask, 0).sum(dim=(1, 2))
        assert torch.allclose(local, action(moved) - action(x), atol=1e-9)


def test_free_field_matches_reference_values_at_l8():
    free = FreeComplexField(t=1.0, mu=4.5)
    assert free.log_z(8) == pytest.approx(REF_LOG_Z, abs=1e-5)
    g_axis = free.two_point(8, axis=True)
    assert torch.allclose(g_axis[:5], torch.tensor(REF_G, dtype=torch.float64), atol=1e-5)
    g = free.two_point(8)
    assert torch.allclose(g[:, 0], g[0, :]) and torch.allclose(g, g.T)
    assert free.susceptibility() == 2.0
    assert g.sum().item() == pytest.approx(2.0, abs=1e-10)  # chi = sum_r G(r)


def hessian_of(action, size):
    """The quadratic form of a Gaussian action, S = x^T H x / 2, by autograd (exact for a quadratic S)."""
    n = action.channels * size * size
    return torch.autograd.functional.hessian(
        lambda v: action(v.view(1, action.channels, size, size)).sum(), torch.zeros(n, dtype=torch.float64)
    )


@pytest.mark.parametrize("size,t,mu", [(3, 1.0, 4.5), (4, 1.0, 4.5), (4, 0.7, 3.1), (5, -0.4, 2.0), (8, 1.0, 4.5)])
def test_free_field_log_z_and_two_point_match_brute_force_gaussian_integration(size, t, mu):
    free = FreeComplexField(t, mu)
    h = hessian_of(free, size)
    sign, logdet = torch.linalg.slogdet(h)
    assert sign.item() == 1.0
    # Z = int d^n x exp(-x^T H x / 2) = (2 pi)^{n/2} det(H)^{-1/2}, n = 2V real variables
    assert free.log_z(size) == pytest.approx(h.shape[0] / 2 * math.log(2 * math.pi) - 0.5 * logdet.item(), abs=1e-9)
    cov = torch.linalg.inv(h).view(2, size, size, 2, size, size)
    g = cov[0, 0, 0, 0] + cov[1, 0, 0, 1]  # <a_0 a_r> + <b_0 b_r> = <phi_0^* phi_r>
    assert torch.allclose(free.two_point(size), g, atol=1e-10)


def test_exact_free_field_sampler_has_the_exact_two_point_function_and_equipartition():
    free, size = FreeComplexField(1.0, 4.5), 4
    x, log_p = free.sample(40_000, size, generator=torch.Generator().manual_seed(3))
    assert x.shape == (40_000, 2, size, size) and x.dtype == torch.float64
    assert torch.allclose(log_p, -free(x) - free.log_z(size))
    # equipartition: <S> = (number of real variables) / 2 = V, with variance V
    assert free(x).mean().item() == pytest.approx(size**2, abs=4 * math.sqrt(size**2 / 40_000))
    g = two_point(x)
    err = g.std(dim=0) / math.sqrt(x.shape[0])
    assert ((g.mean(dim=0) - free.two_point(size)).abs() < 4 * err).all()


def test_free_field_exact_values_at_l16_from_the_fourier_sum_match_the_dense_gaussian():
    """L = 16, t = 1, mu = 4.5: ln Z = V ln(2 pi) - ln det H and G(r) = 2 (H^-1)_{0r} with the dense
    256 x 256 Hessian H of one channel, against the library's Fourier sums (and its reference lookup)."""
    from rgflow_vision.lattice.reference import lookup

    field, size = FreeComplexField(1.0, 4.5), 16
    v = size * size
    sites = torch.arange(v)
    i, j = sites // size, sites % size
    hessian = 2 * 4.5 * torch.eye(v, dtype=torch.float64)
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        hessian[sites, ((i + di) % size) * size + (j + dj) % size] -= 2 * 1.0
    log_z = v * math.log(2 * math.pi) - torch.linalg.slogdet(hessian)[1].item()
    g = 2 * torch.linalg.inv(hessian)[0, :size]
    assert field.log_z(size) == pytest.approx(log_z, abs=1e-9)
    assert field.log_z(size) == pytest.approx(-56.939147, abs=1e-6)
    assert torch.allclose(field.two_point(size, axis=True), g, atol=1e-12)
    expected = [0.316239, 0.105768, 0.040007, 0.016444, 0.007130, 0.003214, 0.001523, 0.000822, 0.000630]
    assert g[:9].tolist() == pytest.approx(expected, abs=1e-6)
    ref = lookup("free_complex", {"t": 1.0, "mu": 4.5}, size)
    assert ref.exact and ref.log_z[0] == pytest.approx(log_z, abs=1e-9) and len(ref.two_point) == 9
