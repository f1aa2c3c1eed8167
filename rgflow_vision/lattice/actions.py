"""Lattice actions on an ``L x L`` periodic lattice, fields stored as channels ``(B, C, L, L)``.

Every action here has the form

    S(phi) = sum_x U(phi_x) - J sum_<xy> phi_x . phi_y,

an on-site potential ``U`` plus a nearest-neighbour hopping with coupling ``J``; ``<xy>`` runs
over each bond once (``x`` and ``x + e_mu`` for ``mu`` = both axes, built with ``torch.roll``),
and ``.`` is the dot product over channels. A complex field ``phi = a + i b`` is stored as the
two real channels ``(a, b)``, so ``phi_x^* phi_y + c.c. = 2 phi_x . phi_y`` and ``|phi|^2 = a^2 + b^2``.

The form gives :meth:`LatticeAction.local_action`, the per-site energy that the checkerboard
Metropolis sampler uses: changing only sites of one checkerboard colour changes ``S`` by exactly
the sum of their local-action changes, because no two such sites are neighbours.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def neighbour_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of the four nearest neighbours of every site (periodic), same shape as ``x``."""
    return sum(torch.roll(x, shift, dims=dim) for dim in (-2, -1) for shift in (1, -1))


def bond_sum(x: torch.Tensor) -> torch.Tensor:
    """``sum_<xy> phi_x . phi_y`` per configuration, ``(B,)``: every bond once (forward neighbours)."""
    forward = x * torch.roll(x, -1, dims=-2) + x * torch.roll(x, -1, dims=-1)
    return forward.flatten(1).sum(dim=1)


class LatticeAction(nn.Module):
    """Base class: ``S = sum_x U(phi_x) - hopping * sum_<xy> phi_x . phi_y``.

    Subclasses set ``channels``, ``hopping`` (the coupling ``J``), ``name`` and define
    :meth:`onsite`. Calling the module returns the action per configuration, ``(B,)``, in the
    field's dtype.
    """

    channels: int
    hopping: float
    name: str

    def onsite(self, x: torch.Tensor) -> torch.Tensor:
        """On-site potential ``U(phi_x)`` at every site, ``(B, L, L)`` (channels already combined)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.action(x)

    def action(self, x: torch.Tensor) -> torch.Tensor:
        """``S(x)`` per configuration, ``(B,)``."""
        self._check(x)
        return self.onsite(x).flatten(1).sum(dim=1) - self.hopping * bond_sum(x)

    def local_action(self, x: torch.Tensor) -> torch.Tensor:
        """Per-site energy ``U(phi_x) - J phi_x . sum_{y nn x} phi_y``, ``(B, L, L)``.

        It counts each bond twice, so it does not sum to ``S``; its use is differences: if
        ``x'`` differs from ``x`` only on sites that are pairwise non-neighbours (one checkerboard
        colour, ``L`` even), ``S(x') - S(x)`` is the sum over those sites of
        ``local_action(x') - local_action(x)``.
        """
        self._check(x)
        return self.onsite(x) - self.hopping * (x * neighbour_sum(x)).sum(dim=1)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.channels or x.shape[-1] != x.shape[-2]:
            raise ValueError(
                f"{type(self).__name__} expects fields of shape (B, {self.channels}, L, L); got {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return self.name


class ComplexPhi4(LatticeAction):
    """Complex ``phi^4``: ``S = -t sum_<ij> (phi_i^* phi_j + c.c.) + sum_i [mu |phi_i|^2 + lam |phi_i|^4] + shift V``.

    Two real channels ``(a, b)``; the hopping coupling is ``J = 2t``. ``shift`` is a constant
    per site (zero by default) so that :meth:`from_kappa` reproduces the kappa form exactly,
    constant included; it moves ``ln Z`` by ``-shift V`` and nothing else.
    """

    channels = 2

    def __init__(self, t: float, mu: float, lam: float, *, shift: float = 0.0):
        super().__init__()
        self.t, self.mu, self.lam, self.shift = float(t), float(mu), float(lam), float(shift)
        self.hopping = 2 * self.t
        self.name = f"complex_phi4(t={self.t:g}, mu={self.mu:g}, lam={self.lam:g})"

    @classmethod
    def from_kappa(cls, kappa: float, lam: float) -> ComplexPhi4:
        """The kappa form ``S = sum_i [|phi_i|^2 + lam (|phi_i|^2 - 1)^2] - 2 kappa sum_<ij> phi_i . phi_j``.

        Expanding ``lam (|phi|^2 - 1)^2 = lam |phi|^4 - 2 lam |phi|^2 + lam`` gives ``t = kappa``,
        ``mu = 1 - 2 lam`` and the constant ``lam`` per site (kept as ``shift``).
        """
        action = cls(t=kappa, mu=1 - 2 * lam, lam=lam, shift=lam)
        action.kappa = float(kappa)
        action.name = f"complex_phi4(kappa={float(kappa):g}, lam={float(lam):g})"
        return action

    def onsite(self, x: torch.Tensor) -> torch.Tensor:
        r2 = (x * x).sum(dim=1)
        return self.mu * r2 + self.lam * r2 * r2 + self.shift


class FreeComplexField(ComplexPhi4):
    """Free complex field, ``ComplexPhi4`` with ``lam = 0``; normalisable for ``mu > 4|t|``.

    Exact results on the ``L x L`` periodic lattice, with ``V = L^2``, momenta ``k = 2 pi n / L`` and
    ``D(k) = mu - 2t sum_d cos k_d``:

    - ``Z = int d^{2V}(a, b) exp(-S) = (2 pi)^V / det(2 D)``, so
      ``ln Z = V ln(2 pi) - sum_k ln[2 D(k)]``;
    - ``G(r) = <phi_0^* phi_r> = <a_0 a_r + b_0 b_r> = (1/V) sum_k e^{ikr} / D(k)``;
    - ``chi = <|M|^2>/V = sum_r G(r) = 1/(mu - 4t)``.
    """

    def __init__(self, t: float, mu: float):
        if not mu > 4 * abs(t):
            raise ValueError(f"the free field needs mu > 4|t| to be normalisable; got t={t}, mu={mu}")
        super().__init__(t, mu, 0.0)
        self.name = f"free_complex(t={self.t:g}, mu={self.mu:g})"

    def kernel(self, size: int) -> torch.Tensor:
        """``D(k) = mu - 2t (cos k_1 + cos k_2)`` on the ``(L, L)`` momentum grid (FFT order), float64."""
        k = 2 * math.pi * torch.arange(size, dtype=torch.float64) / size
        return self.mu - 2 * self.t * (torch.cos(k)[:, None] + torch.cos(k)[None, :])

    def log_z(self, size: int) -> float:
        """``ln Z = V ln(2 pi) - sum_k ln[2 D(k)]`` (L = 8, t = 1, mu = 4.5: -14.21720)."""
        return size**2 * math.log(2 * math.pi) - torch.log(2 * self.kernel(size)).sum().item()

    def two_point(self, size: int, axis: bool = False) -> torch.Tensor:
        """``G(r) = <phi_0^* phi_r>``: ``(L, L)`` over all displacements ``r = (r_1, r_2)``, or ``(L,)``
        along an axis (``r = 0 .. L-1``; both axes agree) with ``axis=True``. Float64."""
        g = torch.fft.ifft2(1 / self.kernel(size)).real
        return g[:, 0].clone() if axis else g

    def susceptibility(self) -> float:
        """``chi = <|M|^2>/V = 1/(mu - 4t)``, the same for every ``L``."""
        return 1 / (self.mu - 4 * self.t)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact normalised ``log p(x) = -S(x) - ln Z``, ``(B,)``."""
        return -self.action(x) - self.log_z(x.shape[-1])

    def sample(
        self, n: int, size: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact independent samples and their exact log density: ``(x (n, 2, L, L), log p(x) (n,))``.

        Each channel is Gaussian with covariance ``A^{-1}``, ``A = 2(mu - t Adj)`` the circulant
        Hessian of ``S``; ``x = F^{-1} diag(eigenvalues^{-1/2}) F w`` with white noise ``w`` is real
        because the eigenvalues are even in ``k``. A "perfect flow" to test estimators with.
        """
        w = torch.randn((n, 2, size, size), generator=generator, dtype=torch.float64)
        x = torch.fft.ifft2(torch.fft.fft2(w) / torch.sqrt(2 * self.kernel(size))).real
        x = x.to(dtype)
        return x, self.log_prob(x)


class RealPhi4(LatticeAction):
    """Real ``phi^4`` in the lattice-flow tutorial normalisation (d = 2, one channel):

        S = sum_x [ sum_mu (2 phi_x^2 - phi_x phi_{x+mu} - phi_x phi_{x-mu}) + m2 phi_x^2 + lam phi_x^4 ].

    The kinetic term is ``sum_<xy> (phi_x - phi_y)^2``, so ``U = (4 + m2) phi^2 + lam phi^4``, ``J = 2``.
    """

    channels = 1

    def __init__(self, m2: float, lam: float):
        super().__init__()
        self.m2, self.lam = float(m2), float(lam)
        self.hopping = 2.0
        self.name = f"real_phi4(m2={self.m2:g}, lam={self.lam:g})"

    def onsite(self, x: torch.Tensor) -> torch.Tensor:
        phi2 = x[:, 0] ** 2
        return (4 + self.m2) * phi2 + self.lam * phi2 * phi2


ACTIONS = {"free_complex": FreeComplexField, "complex_phi4": ComplexPhi4, "real_phi4": RealPhi4}


def build_action(name: str, **params: float) -> LatticeAction:
    """An action by short name (``free_complex(t, mu)``, ``complex_phi4(t, mu, lam)`` or
    ``complex_phi4(kappa, lam)`` for the kappa form, ``real_phi4(m2, lam)``), e.g. from a config."""
    if name not in ACTIONS:
        raise ValueError(f"unknown action {name!r}; choose one of {sorted(ACTIONS)}")
    if name == "complex_phi4" and "kappa" in params:
        return ComplexPhi4.from_kappa(**params)
    return ACTIONS[name](**params)
