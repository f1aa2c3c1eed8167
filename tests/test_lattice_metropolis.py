"""Checkerboard Metropolis reproduces exact free-field values and the Monte Carlo references."""

from __future__ import annotations

import math
import time

import pytest
import torch

from rgflow_vision.lattice import (
    ComplexPhi4,
    FreeComplexField,
    RealPhi4,
    chain_mean,
    metropolis,
    metropolis_sweep,
    neighbour_sum,
)
from rgflow_vision.lattice.metropolis import merge_checkerboard, split_checkerboard, split_neighbour_sum


pytestmark = pytest.mark.usefixtures("one_thread")


def assert_agrees(name, value, error, reference, reference_error=0.0, sigmas=3.0):
    combined = math.hypot(error, reference_error)
    assert abs(value - reference) < sigmas * combined, (
        f"{name}: {value:.5f} +- {error:.5f} against {reference:.5f} +- {reference_error:.5f} "
        f"({abs(value - reference) / combined:.1f} combined sigma)"
    )


def test_split_layout_round_trips_and_gives_the_neighbour_sums():
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    even, odd = split_checkerboard(x)
    assert torch.equal(merge_checkerboard(even, odd), x)
    i = torch.arange(6)
    even_sites = x[..., (i[:, None] + i[None, :]) % 2 == 0].view(3, 2, 6, 3)  # row-major: row i's even sites
    assert torch.equal(even, even_sites)
    n_even, n_odd = split_checkerboard(neighbour_sum(x))
    assert torch.allclose(split_neighbour_sum(odd, 0), n_even)
    assert torch.allclose(split_neighbour_sum(even, 1), n_odd)
    with pytest.raises(ValueError, match="even lattice size"):
        split_checkerboard(torch.zeros(1, 1, 5, 5))


def test_a_sweep_with_huge_steps_rejects_and_with_zero_action_accepts_everything():
    x = torch.randn(16, 1, 4, 4, dtype=torch.float64)
    same, acc = metropolis_sweep(RealPhi4(-4, 8), x, step_size=1e3)
    assert acc < 0.01
    _, acc = metropolis_sweep(RealPhi4(-4, 0.0), x, step_size=0.0)  # zero step: dS = 0
    assert acc == 1.0


def test_step_size_is_tuned_towards_the_target_acceptance():
    run = metropolis(FreeComplexField(1.0, 4.5), 64, 4, 50, n_therm=100, step_size=20.0, target_acceptance=0.4,
                     generator=torch.Generator().manual_seed(0))
    assert run.acceptance == pytest.approx(0.4, abs=0.05)
    assert run.observables["chi"].shape == (50, 64) and run.observables["G"].shape == (50, 64, 4)
    assert run.observables["M"].shape == (50, 64, 2) and run.state.shape == (64, 2, 4, 4)


def test_free_field_chi_and_two_point_function_at_l8():
    free, size = FreeComplexField(1.0, 4.5), 8
    start = time.perf_counter()
    run = metropolis(free, 512, size, 600, n_therm=150, measure_every=3, generator=torch.Generator().manual_seed(1))
    chi, chi_err = chain_mean(run.observables["chi"])
    assert chi_err < 0.03
    assert_agrees("chi", chi.item(), chi_err.item(), free.susceptibility(), sigmas=4)
    g, g_err = chain_mean(run.observables["G"])
    exact = free.two_point(size, axis=True)
    for r in range(5):
        assert_agrees(f"G({r})", g[r].item(), g_err[r].item(), exact[r].item(), sigmas=4)
    print(f"free field L=8: chi = {chi:.4f}({1e4 * chi_err:.0f}), exact 2; {time.perf_counter() - start:.1f} s")


def test_real_phi4_reference_chi_at_l8():
    """lattice.md: M^2 = -4, lam = 8, L = 8: chi = 0.7440(13), <phi^2> = 0.14349(2)."""
    start = time.perf_counter()
    run = metropolis(RealPhi4(-4, 8), 1024, 8, 1000, n_therm=300, measure_every=2,
                     generator=torch.Generator().manual_seed(2))
    chi, chi_err = chain_mean(run.observables["chi"])
    phi2, phi2_err = chain_mean(run.observables["phi2"])
    assert_agrees("chi", chi.item(), chi_err.item(), 0.7440, 0.0013)
    assert_agrees("<phi^2>", phi2.item(), phi2_err.item(), 0.14349, 0.00002)
    print(f"real phi^4 L=8: chi = {chi:.4f}({1e4 * chi_err:.0f}), ref 0.7440(13); "
          f"<phi^2> = {phi2:.5f}({1e5 * phi2_err:.0f}); {time.perf_counter() - start:.1f} s")


def test_complex_phi4_kappa_form_reference_chi_at_l8():
    """lattice.md (corrected): kappa = 0.2, lam = 1.145, L = 8: chi = 1.8481(24),
    G(0..4) = .82734, .14108, .02531, .00490, .00180 on the torus."""
    start = time.perf_counter()
    run = metropolis(ComplexPhi4.from_kappa(0.2, 1.145), 1024, 8, 1000, n_therm=300, measure_every=2,
                     generator=torch.Generator().manual_seed(3))
    chi, chi_err = chain_mean(run.observables["chi"])
    g, g_err = chain_mean(run.observables["G"])
    assert_agrees("chi", chi.item(), chi_err.item(), 1.8481, 0.0024)
    for r, ref in enumerate([0.82734, 0.14108, 0.02531, 0.00490, 0.00180]):
        assert_agrees(f"G({r})", g[r].item(), g_err[r].item(), ref, 0.00005)
    print(f"complex kappa=0.2 L=8: chi = {chi:.4f}({1e4 * chi_err:.0f}), ref 1.8481(24); "
          f"G = {[round(v, 4) for v in g[:5].tolist()]}; {time.perf_counter() - start:.1f} s")


@pytest.mark.slow
@pytest.mark.parametrize(
    "action,size,reference,error",
    [
        (RealPhi4(-4, 6.975), 6, 1.0691, 0.0034),
        (RealPhi4(-4, 6.008), 8, 1.898, 0.008),
        (ComplexPhi4.from_kappa(0.6, 1.145), 8, 68.62, 0.07),
    ],
    ids=["real-lam6.975-L6", "real-lam6.008-L8", "complex-kappa0.6-L8"],
)
def test_other_reference_susceptibilities(action, size, reference, error):
    """The remaining rows of lattice.md's table (2048 chains x 3000 sweeps gave 1.0632(20),
    1.8995(47) and 68.676(19))."""
    start = time.perf_counter()
    run = metropolis(action, 1024, size, 1000, n_therm=300, measure_every=2, generator=torch.Generator().manual_seed(4))
    chi, chi_err = chain_mean(run.observables["chi"])
    assert_agrees("chi", chi.item(), chi_err.item(), reference, error)
    print(f"{action.name} L={size}: chi = {chi:.4f} +- {chi_err:.4f}, ref {reference} +- {error}; "
          f"{time.perf_counter() - start:.1f} s")
