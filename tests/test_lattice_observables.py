"""Observables: G(r) over sites and both axes, chi = <|M|^2>/V = sum_r G(r), G(0) = <|phi|^2>."""

from __future__ import annotations

import pytest
import torch

from rgflow_vision.lattice import axis_two_point, magnetization, phi2, susceptibility, two_point, two_point_axis


@pytest.mark.parametrize("channels", [1, 2])
def test_two_point_function_is_the_site_average_of_phi_0_dot_phi_r(channels):
    x = torch.randn(3, channels, 6, 6, dtype=torch.float64) + 0.3
    g = two_point(x)
    by_hand = torch.zeros(3, 6, 6, dtype=torch.float64)
    for r1 in range(6):
        for r2 in range(6):
            by_hand[:, r1, r2] = (x * torch.roll(x, (-r1, -r2), dims=(-2, -1))).sum(dim=1).mean(dim=(-2, -1))
    assert torch.allclose(g, by_hand)
    assert torch.allclose(g.sum(dim=(-2, -1)), susceptibility(x))  # chi = sum_r G(r), per configuration
    assert torch.allclose(g[:, 0, 0], phi2(x))
    assert torch.allclose(two_point_axis(x), axis_two_point(g))
    assert torch.allclose(axis_two_point(g), 0.5 * (g[:, :, 0] + g[:, 0, :]))
    assert magnetization(x).shape == (3, channels)
    mean_field_sq = (x.mean(dim=(0, 2, 3)) ** 2).sum()
    assert torch.allclose(two_point(x, connected=True), g - mean_field_sq)
    assert torch.allclose(two_point_axis(x, connected=True), axis_two_point(g) - mean_field_sq)


def test_susceptibility_is_m_squared_over_volume():
    x = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    x[:, 0] = 1.0  # uniform real part: M = (16, 0)
    assert susceptibility(x).item() == 16.0
    assert phi2(x).item() == 1.0
