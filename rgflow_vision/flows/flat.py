"""The flat comparison flow: checkerboard couplings over the whole lattice, no hierarchy.

This is the coupling flow of the lattice-flow tutorial (Albergo, Kanwar, Shanahan et al., arXiv 2101.08176):
each half-coupling freezes one colour of a checkerboard and transforms the other colour elementwise, with
parameters computed by a small convolutional network (periodic, i.e. circular, padding) of the frozen colour.
Every site sees its neighbourhood through the network's receptive field; nothing ties the flow to a scale,
so one network fits every ``L`` (its weights do not depend on the lattice size).

It is the baseline against which the RG flow's hierarchy must pay: the same elementwise transforms as
:class:`~.coupling.Coupling` (``"affine"``: ``y = x exp(tanh s) + t``; ``"spline"``: rational-quadratic,
:mod:`.spline`), the same mask kinds (``"sites"``: ``i + j`` even; ``"channels"``: ``i + j + c`` even, so a
complex field's two components condition each other) and the same ``encode``/``decode`` interface as
:class:`~.rgflow.RGFlow`, so the lattice module, its estimators and ``lattice.py`` take either.
"""

from __future__ import annotations

import torch
from torch import nn

from .coupling import MASKS, TRANSFORMS, StoredBackward
from .spectral import MomentumScale
from .spline import rational_quadratic


def lattice_checkerboard(channels: int, size: int, mask: str = "channels") -> torch.Tensor:
    """``(C, L, L)`` 0/1 mask of the frozen sites of parity 0 (see :func:`.coupling.checkerboard`)."""
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {', '.join(MASKS)}, got {mask!r}")
    i = torch.arange(size)
    c = torch.arange(channels) if mask == "channels" else torch.zeros(channels, dtype=torch.long)
    return ((c[:, None, None] + i[:, None] + i[None, :]) % 2 == 0).float()


class ConvNet(nn.Module):
    """``in -> hidden -> ... -> out`` channels, ``kernel x kernel`` convolutions with circular padding (the
    lattice is periodic), LeakyReLU between them; the last convolution starts at zero, so the coupling it
    drives starts as the identity."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, conv_layers: int, kernel: int = 3):
        super().__init__()
        if conv_layers < 1 or kernel % 2 == 0:
            raise ValueError(f"a ConvNet needs conv_layers >= 1 and an odd kernel, got {conv_layers}, {kernel}")
        widths = [in_channels] + [hidden] * (conv_layers - 1) + [out_channels]
        layers: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Conv2d(a, b, kernel, padding=kernel // 2, padding_mode="circular"), nn.LeakyReLU()]
        self.net = nn.Sequential(*layers[:-1])
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FlatCoupling(nn.Module):
    """One half-coupling over the whole lattice: the sites where ``frozen`` is 1 pass through and condition
    the elementwise transform of the others."""

    def __init__(self, frozen: torch.Tensor, hidden: int, conv_layers: int, kernel: int, transform: str,
                 bins: int, tail_bound: float):
        super().__init__()
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
        if transform == "spline" and (bins < 2 or not tail_bound > 0):
            raise ValueError(f"a spline needs bins >= 2 and tail_bound > 0, got bins={bins}, tail_bound={tail_bound}")
        channels = frozen.shape[0]
        self.register_buffer("frozen", frozen, persistent=False)
        # the flat indices (channel-major, as x.flatten(1)) of the transformed values
        self.register_buffer("free", torch.nonzero(frozen.flatten() == 0)[:, 0], persistent=False)
        self.transform, self.bins, self.tail_bound = transform, bins, float(tail_bound)
        per_value = 2 if transform == "affine" else 3 * bins - 1
        self.net = ConvNet(channels, channels * per_value, hidden, conv_layers, kernel)

    def forward(self, x: torch.Tensor, inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        net_dtype = self.net.net[0].weight.dtype
        # The network runs in its own precision; the transform and its log-det in the data's (at least float32).
        dtype = torch.promote_types(x.dtype, torch.float32)
        raw = self.net((x * self.frozen).to(net_dtype)).to(dtype)  # (B, C * per_value, L, L)
        raw = raw.unflatten(1, (-1, x.shape[1])).flatten(2)  # (B, per_value, C*L*L), channel-major values
        params = raw.index_select(2, self.free)
        values = x.flatten(1).index_select(1, self.free)
        if self.transform == "affine":
            s, t = torch.tanh(params[:, 0]), params[:, 1]
            y, logdet = ((values - t) * torch.exp(-s), -s) if inverse else (values * torch.exp(s) + t, s)
        else:
            k = self.bins
            y, logdet = rational_quadratic(values, params[:, :k], params[:, k:2 * k], params[:, 2 * k:],
                                           self.tail_bound, inverse)
        out = x.flatten(1).index_copy(1, self.free, y.to(x.dtype)).view_as(x)
        return out, logdet.sum(dim=1)


class FlatFlow(StoredBackward):
    """Bijection ``x <-> z`` of ``(B, C, L, L)`` fields: ``couplings`` pairs of half-couplings over the whole
    lattice, the first of each pair freezing the mask's parity 0, the second its complement.

    ``encode`` runs them in order (data to latents), ``decode`` backwards. ``num_levels = 1`` and
    ``level_map()`` is all zeros: every latent is a site of one flat layer (no RG tree, so no bulk picture).
    """

    num_levels = 1
    depth = 1

    def __init__(self, channels: int, image_size: int, *, couplings: int = 8, hidden: int = 32,
                 conv_layers: int = 3, kernel: int = 3, mask: str = "channels", transform: str = "affine",
                 bins: int = 8, tail_bound: float = 4.0, spectral: bool = False):
        super().__init__()
        if channels < 1 or image_size < 2 or image_size % 2:
            raise ValueError(f"the flat flow needs channels >= 1 and an even lattice size, got {channels}, {image_size}")
        if couplings < 1:
            raise ValueError(f"couplings must be a positive number of coupling pairs, got {couplings}")
        self.channels, self.image_size, self.block_size = channels, image_size, image_size
        parity0 = lattice_checkerboard(channels, image_size, mask)
        self.couplings = nn.ModuleList(
            FlatCoupling(frozen, hidden, conv_layers, kernel, transform, bins, tail_bound)
            for _ in range(couplings) for frozen in (parity0, 1 - parity0)
        )
        self.spectral = MomentumScale(channels, image_size) if spectral else None  # as RGFlow's

    def level_map(self) -> torch.Tensor:
        """``(L, L)`` zeros: one level."""
        return torch.zeros(self.image_size, self.image_size, dtype=torch.long)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data to latents: ``(z, log|det dz/dx|)``."""
        self._check(x, "encode")
        logdet = 0
        if self.spectral is not None:
            x, logdet = self.spectral(x, inverse=True)
        z, ld = self._run(x, self.couplings, inverse=False)
        return z, ld + logdet

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents to data: ``(x, log|det dx/dz|)``."""
        self._check(z, "decode")
        x, logdet = self._run(z, reversed(self.couplings), inverse=True)
        if self.spectral is not None:
            x, ld = self.spectral(x)
            logdet = logdet + ld
        return x, logdet

    @staticmethod
    def _run(x, couplings, inverse):
        logdet = x.new_zeros(x.shape[0], dtype=torch.promote_types(x.dtype, torch.float32))
        for coupling in couplings:
            x, ld = coupling(x, inverse)
            logdet = logdet + ld
        return x, logdet

    def _check(self, x: torch.Tensor, what: str) -> None:
        expected = (self.channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"FlatFlow.{what} expects a batch of shape (B, {self.channels}, {self.image_size}, "
                             f"{self.image_size}); got {tuple(x.shape)}")
