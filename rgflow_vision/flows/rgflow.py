"""RG-Flow: a hierarchical normalizing flow in which every level is one bijective RG step."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from . import geometry
from .bijections import BIJECTIONS
from .spectral import MomentumScale


class RGFlow(nn.Module):
    """Bijection between images ``x`` and latents ``z`` of the same ``(B, C, L, L)`` layout.

    Level ``h`` (``0 .. H-1``, ``H = log2(L/K) + 1``) acts on the sublattice
    ``x[..., ::2**h, ::2**h]`` with a *disentangler* (blocks shifted by ``K/2``) followed by
    a *decimator* (aligned blocks). The active sites it leaves off the next, twice coarser
    sublattice are its latents, so ``z[..., ::2**h, ::2**h]`` holds the levels ``>= h``.

    ``bijection`` picks the block bijection from :data:`~.bijections.BIJECTIONS`: ``"rnvp"``
    (RealNVP couplings, the default) or ``"ode"`` (a neural ODE), or is such a builder itself;
    ``options`` are its own keywords. ``symmetry`` (``"z2"``: odd; ``"o2"``: two channels rotated at every site) is
    built into the ODE's velocity and makes the whole flow equivariant.

    ``depth`` repeats the (disentangler, decimator) pair at every level: a level is ``depth``
    pairs applied in turn before its latents are split off. One pair cannot whiten a massive
    Gaussian field across the block edges (the best linear flow of that form leaves KL 0.04 at
    ``L = 8`` and 0.15 at ``L = 16``); two pairs can (below 1e-3 at ``L = 8``), see
    :func:`rgflow_vision.lattice.diagnostics.gaussian_floor`. Parameters of pair ``r`` of level
    ``h`` sit at index ``h * depth + r``, so ``depth=1`` keeps the layout of earlier checkpoints.

    ``share_levels=True`` gives every level the same ``depth`` pairs (one set of weights, built for
    level 0): at a critical point the RG step is the same at every scale, and the flow's parameters
    no longer grow with ``L``. The lists still hold one entry per level (the same modules).

    ``spectral=True`` adds a learned momentum-space scaling on the field side (:class:`~.spectral.MomentumScale`:
    last when decoding, first when encoding), which holds the Gaussian part of a lattice field's correlations,
    the zero mode's large amplitude near a critical point among them; the RG levels learn the rest.

    The defaults are a small configuration for CPU work. The paper's is
    ``hidden=512, num_res_blocks=4, couplings=(8, 6, 4, 2), conditioner="separate"``; levels deeper than
    ``couplings`` reuse its last entry. ``reversible=True`` (RealNVP) rebuilds activations in
    the backward pass instead of storing them.
    """

    def __init__(
        self,
        channels: int,
        image_size: int,
        *,
        block_size: int | None = 4,
        bijection: str | Callable[..., nn.Module] = "rnvp",
        symmetry: str | None = None,
        depth: int = 1,
        share_levels: bool = False,
        spectral: bool = False,
        **options,
    ):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be a positive number, got {channels}")
        if isinstance(bijection, str) and bijection not in BIJECTIONS:
            raise ValueError(f"unknown bijection {bijection!r}: use one of {sorted(BIJECTIONS)}")
        build = BIJECTIONS[bijection] if isinstance(bijection, str) else bijection
        block_size = block_size or image_size  # None: one block, the whole image (a flat, global layer)
        self.num_levels = geometry.num_levels(image_size, block_size)
        if depth < 1:
            raise ValueError(f"depth (layer pairs per level) must be a positive integer, got {depth}")
        self.depth = depth
        self.channels, self.image_size, self.block_size = channels, image_size, block_size
        self.bijection, self.symmetry = bijection, symmetry

        def layer(h):
            return build(channels, block_size, h, symmetry=symmetry, **options)

        self.share_levels = bool(share_levels)
        levels = [h for h in range(self.num_levels) for _ in range(depth)]
        if self.share_levels:  # one stack of `depth` pairs, built for level 0, referenced by every level
            disentanglers, decimators = [layer(0) for _ in range(depth)], [layer(0) for _ in range(depth)]
            self.disentanglers = nn.ModuleList(disentanglers[i % depth] for i in range(len(levels)))
            self.decimators = nn.ModuleList(decimators[i % depth] for i in range(len(levels)))
        else:
            self.disentanglers = nn.ModuleList(layer(h) for h in levels)
            self.decimators = nn.ModuleList(layer(h) for h in levels)
        self.register_buffer("_level_map", geometry.level_map(image_size, block_size), persistent=False)
        self.spectral = MomentumScale(channels, image_size) if spectral else None

    @property
    def reversible(self) -> bool:
        return self.decimators[0].reversible

    @reversible.setter
    def reversible(self, value: bool) -> None:
        for block_flow in [*self.disentanglers, *self.decimators]:
            block_flow.reversible = value

    def level_map(self) -> torch.Tensor:
        """``(L, L)`` long tensor: the level of the latent at each site."""
        return self._level_map.clone()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RG direction, data to latents: ``(z, log|det dz/dx|)``."""
        self._check(x, "encode")
        with parametrize.cached():  # each weight-normalised matrix is built once per call
            return self._encode(x)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Generation, latents to data: ``(x, log|det dx/dz|)``."""
        self._check(z, "decode")
        with parametrize.cached():
            return self._decode(z)

    def level_layers(self, h: int) -> list[tuple[nn.Module, int]]:
        """``(block bijection, shift)`` of every layer of level ``h`` in the RG (encode) order:
        ``depth`` times a disentangler (blocks shifted by ``K/2``) then a decimator."""
        pairs = range(h * self.depth, (h + 1) * self.depth)
        shift = self.block_size // 2
        return [layer for i in pairs for layer in ((self.disentanglers[i], shift), (self.decimators[i], 0))]

    def _encode(self, x):
        logdet = x.new_zeros(x.shape[0], dtype=torch.promote_types(x.dtype, torch.float32))
        if self.spectral is not None:
            x, logdet = self.spectral(x, inverse=True)
        levels, state = [], x
        for h in range(self.num_levels):
            for bijection, shift in self.level_layers(h):
                state, ld = self._layer(bijection, state, shift, inverse=False)
                logdet = logdet + ld
            levels.append(state)
            state = state[..., ::2, ::2]  # the next level's active sublattice
        z = levels[-1]
        for fine in reversed(levels[:-1]):
            z = geometry.interleave(fine, z)
        return z, logdet

    def _decode(self, z):
        logdet = z.new_zeros(z.shape[0], dtype=torch.promote_types(z.dtype, torch.float32))
        state = z[..., :: 2 ** (self.num_levels - 1), :: 2 ** (self.num_levels - 1)]
        for h in reversed(range(self.num_levels)):
            if h < self.num_levels - 1:  # bring back this level's latents around the coarse sites
                state = geometry.interleave(z[..., :: 2**h, :: 2**h], state)
            for bijection, shift in reversed(self.level_layers(h)):
                state, ld = self._layer(bijection, state, shift, inverse=True)
                logdet = logdet + ld
        if self.spectral is not None:
            state, ld = self.spectral(state)
            logdet = logdet + ld
        return state, logdet

    def _layer(self, block_flow: nn.Module, state: torch.Tensor, shift: int, inverse: bool):
        b, c, m, _ = state.shape
        blocks = geometry.to_blocks(state, self.block_size, shift)
        blocks, logdet = block_flow(blocks, inverse=inverse)
        out = geometry.from_blocks(blocks, b, c, m, self.block_size, shift)
        return out, logdet.view(b, -1).sum(dim=1)

    def _check(self, x: torch.Tensor, what: str) -> None:
        expected = (self.channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"RGFlow.{what} expects a batch of shape (B, {self.channels}, {self.image_size}, "
                f"{self.image_size}); got {tuple(x.shape)}. Build the flow with the channels and "
                f"image size of your data."
            )
