"""The neural-ODE block bijection (Sheshmani, You, Fu, Azizi, arXiv 2203.07975).

Inside every block the ``C*K*K`` values follow ``dx/dt = v(x, t)`` for ``t`` in ``[0, 1]``; the
velocity sees only its block, so locality (and the causal cones) are those of the coupling flow.

What the flow uses is the *discrete* map: ``steps`` fixed steps of an explicit Runge-Kutta
scheme. Its log-det is computed exactly, not approximated by the integral of the divergence:
every step's ``D x D`` Jacobian is propagated through the stages (each velocity evaluation
returns its Jacobian, see :mod:`.velocity`) and its ``slogdet`` is added. This is the discrete
counterpart of ``int tr(dv/dx) dt`` and agrees with it to the scheme's order; it is what a
normalising flow needs.

Every step is a bijection of the whole space whatever the weights: the velocity's Lipschitz
constant is at most ``rate / h`` (see :mod:`.velocity`), so the step is the identity plus a map
of Lipschitz constant at most ``e^rate - 1 < 1`` (the RK4 increment's bound is the Taylor
polynomial of ``e^x - 1``; lower-order schemes' are smaller). Decoding inverts each step exactly: the scheme run backwards gives a
guess within ``O(h^(p+1))``, and Newton's method with the same exact Jacobian finishes it to
rounding, so ``decode(encode(x)) == x`` and the two log-dets cancel to rounding, not to the
solver's tolerance. A last Newton step is taken with gradients on: its value is the solution and
its derivative is the implicit-function one, so training through ``decode`` (lattice reverse KL,
inpainting) and forward-mode JVPs see the true derivative of the inverse.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from .coupling import StoredBackward
from .velocity import velocity_field

# Butcher tableaus of explicit schemes: (stage coefficients a, weights b, nodes c).
SCHEMES = {
    "euler": ([[]], [1.0], [0.0]),
    "midpoint": ([[], [0.5]], [0.0, 1.0], [0.0, 0.5]),
    "rk4": ([[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]], [1 / 6, 1 / 3, 1 / 3, 1 / 6], [0.0, 0.5, 0.5, 1.0]),
}
MAX_NEWTON = 8  # iterations per inverted step; 2-3 suffice from the backward-scheme guess
MAX_RATE = 0.69  # ln 2 rounded down: e^rate - 1 < 1, each step is invertible


class ODEBlock(StoredBackward):
    """``(N, C*K*K) -> (N, C*K*K)``: the time-1 map of ``dx/dt = v(x, t)``, fixed steps of ``scheme``.

    ``explicit`` names the direction that integrates (one Jacobian pass per step); the other solves
    (about three). Images train through ``encode``, lattice actions through ``decode``: integrate there.
    """

    def __init__(self, channels: int, block_size: int, steps: int, hidden: int, depth: int,
                 symmetry: str | None = None, scheme: str = "rk4", rate: float = 0.5, explicit: str = "encode"):
        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"unknown ODE scheme {scheme!r}: use one of {sorted(SCHEMES)}")
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"ODE rate (Lipschitz bound of v times the step) must be in (0, {MAX_RATE}], got {rate}")
        self.velocity = velocity_field(channels, block_size, hidden, depth, symmetry, lipschitz=rate * steps)
        if explicit not in ("encode", "decode"):
            raise ValueError(f"explicit must be 'encode' or 'decode', got {explicit!r}")
        self.steps, self.scheme, self.explicit = steps, scheme, explicit

    def forward(self, x: torch.Tensor, inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = torch.promote_types(x.dtype, torch.float32)
        h = 1.0 / self.steps
        logdet = x.new_zeros(x.shape[0], dtype=dtype)
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(dtype)
            for module in self.modules():  # fill parametrize's cache (if on) with weights that carry gradients
                if parametrize.is_parametrized(module):
                    module.weight
            implicit = inverse == (self.explicit == "encode")
            for n in reversed(range(self.steps)) if implicit else range(self.steps):
                if implicit:
                    x, jac = self.invert_step(x, n * h, h)
                    logdet = logdet - torch.linalg.slogdet(jac).logabsdet
                else:
                    x, jac = self.step(x, n * h, h, jacobian=True)
                    logdet = logdet + torch.linalg.slogdet(jac).logabsdet
        return x, logdet

    def step(self, x: torch.Tensor, t: float, h: float, jacobian: bool = False):
        """One explicit step from ``t`` to ``t + h`` and, optionally, its transposed Jacobian ``(N, D, D)``."""
        a, b, c = SCHEMES[self.scheme]
        eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device).expand(x.shape[0], -1, -1) if jacobian else None
        ks, dks = [], []
        for a_i, c_i in zip(a, c):
            xi, dxi = x, eye
            for a_ij, k, dk in zip(a_i, ks, dks):
                if a_ij:
                    xi = xi + (h * a_ij) * k
                    dxi = None if dk is None else dxi + (h * a_ij) * dk
            k, dk = self.velocity(xi, t + c_i * h, dxi)
            ks.append(k)
            dks.append(dk)
        y, dy = x, eye
        for b_i, k, dk in zip(b, ks, dks):
            if b_i:
                y = y + (h * b_i) * k
                dy = None if dk is None else dy + (h * b_i) * dk
        return y, dy

    def invert_step(self, y: torch.Tensor, t: float, h: float):
        """``x`` with ``step(x, t, h) == y`` to rounding, and the step's Jacobian at ``x``."""
        target = y.detach()  # drops autograd history and forward-mode tangents alike
        tol = torch.finfo(y.dtype).eps ** 0.5 * (1 + target.abs().amax())
        with torch.no_grad():
            x = self.step(target, t + h, -h)[0]  # the scheme run backwards: the starting guess
            for _ in range(MAX_NEWTON):
                phi, jac = self.step(x, t, h, jacobian=True)
                dx = torch.linalg.solve(jac.mT, phi - target)
                x = x - dx
                if dx.abs().amax() <= tol:  # quadratic convergence: the next correction is at rounding
                    break
        # The differentiable Newton step: value x (the residual vanishes), derivative J^{-1} (dy - dPhi/dtheta).
        x = x - torch.linalg.solve(jac.mT, self.step(x, t, h)[0] - y)
        return x, self.step(x, t, h, jacobian=True)[1]
