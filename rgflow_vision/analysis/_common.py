"""Helpers shared by the analysis tools: argument checks, eval mode, mid-bin encoding."""

from __future__ import annotations

import operator
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import UserError


class AnalysisError(UserError, ValueError):
    """A bad argument to an analysis tool: a ``ValueError`` whose message apps can show as it is."""


@contextmanager
def evaluating(module: nn.Module):
    """Eval mode for the duration (no reversible path, so forward-mode AD works), then each
    submodule's own mode back."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def flow_dtype(flow: nn.Module) -> torch.dtype:
    return next(flow.parameters()).dtype


def check_images(model, x: torch.Tensor, name: str) -> None:
    """``x`` must be a ``(B, C, L, L)`` batch of the model's images."""
    flow = model.flow
    expected = (flow.channels, flow.image_size, flow.image_size)
    if not torch.is_tensor(x) or x.dim() != 4 or tuple(x.shape[1:]) != expected:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise AnalysisError(
            f"{name} must be a batch of integer images of shape (B, {expected[0]}, {expected[1]}, {expected[2]}) "
            f"for this model; got {shape}"
        )


def check_level(value, top: int, name: str, meaning: str) -> int:
    """An integer level cut in ``0 .. top`` (inclusive), or an :class:`AnalysisError` saying so."""
    try:
        if isinstance(value, bool):
            raise TypeError
        level = operator.index(value)
    except TypeError:
        raise AnalysisError(f"{name} must be an integer between 0 and {top} ({meaning}); got {value!r}") from None
    if not 0 <= level <= top:
        raise AnalysisError(f"{name} must be between 0 and {top} ({meaning}); got {level}")
    return level


def midbin_logits(model, x_int: torch.Tensor) -> torch.Tensor:
    """Logits ``y`` of integer images dequantised at the middle of their bins (noise 0.5), so that
    ``pixels.inverse(y)`` gives ``x_int`` back exactly: the round trip is far from any bin edge."""
    x = x_int.to(flow_dtype(model.flow))
    return model.pixels(x, torch.full_like(x, 0.5))[0]


def encode_midbin(model, x_int: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, z)``: :func:`midbin_logits` and their latents."""
    y = midbin_logits(model, x_int)
    return y, model.flow.encode(y)[0]
