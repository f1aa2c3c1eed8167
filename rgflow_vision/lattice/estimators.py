"""Estimators for flow samples and Markov chains: importance weights, ESS, ``ln Z``, reweighting,
independence Metropolis, jackknife and binned errors, integrated autocorrelation times.

Conventions. A flow sample ``x ~ q`` with density ``log q(x)`` and action ``S(x)`` (target
``p(x) = exp(-S(x)) / Z``) has the importance log-weight ``log w = -S(x) - log q(x)``, so
``E_q[w] = Z``. Sample axes come first. Errors are one standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


def log_weights(log_q: torch.Tensor, action_values: torch.Tensor) -> torch.Tensor:
    """``log w = -S(x) - log q(x)``, ``(N,)``, in float64."""
    return -action_values.double() - log_q.double()


def reverse_kl(log_q: torch.Tensor, action_values: torch.Tensor) -> torch.Tensor:
    """Reverse-KL training loss ``E_q[log q(x) + S(x)] = KL(q || p) - ln Z >= -ln Z`` (a differentiable scalar)."""
    return (log_q + action_values).mean()


def ess(log_w: torch.Tensor) -> float:
    """Effective sample size per sample, ``ESS/N = (sum w)^2 / (N sum w^2)``, in ``(0, 1]``.

    1 when all weights are equal (a perfect flow), ``1/N`` when one weight dominates.
    """
    log_w = log_w.double().flatten()
    return math.exp(2 * torch.logsumexp(log_w, 0).item() - torch.logsumexp(2 * log_w, 0).item()) / log_w.numel()


@dataclass
class LogZ:
    """``estimate = ln((1/N) sum w)`` (consistent; biased low by ``~ var(w)/(2 N E[w]^2)``), its
    jackknife ``error``, and ``bound = E_q[log w] = -(reverse KL) <= ln Z`` (Jensen; equality iff q = p)."""

    estimate: float
    error: float
    bound: float


def log_z(log_w: torch.Tensor, n_blocks: int = 100) -> LogZ:
    """``ln Z`` from importance log-weights: ``logsumexp(log w) - ln N``, with a blocked-jackknife error,
    and the variational lower bound ``mean(log w)``."""
    log_w = log_w.double().flatten()

    def estimator(lw):
        return torch.logsumexp(lw, 0) - math.log(lw.numel())

    value, error = jackknife(estimator, log_w, n_blocks=n_blocks)
    return LogZ(estimate=value.item(), error=error.item(), bound=log_w.mean().item())


def jackknife(
    estimator: Callable[..., torch.Tensor], *samples: torch.Tensor, n_blocks: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocked (delete-one-block) jackknife of ``estimator(*samples)``: ``(value, error)``.

    ``samples`` share their first (sample) axis, cut into ``n_blocks`` contiguous blocks (fewer if
    there are fewer samples; blocks longer than the autocorrelation time make the error valid for
    chains). ``value`` is the estimator on all samples; ``error^2 = (n-1)/n sum_b (theta_b - theta_.)^2``
    over the leave-block-out estimates ``theta_b``.
    """
    n = samples[0].shape[0]
    n_blocks = min(n_blocks, n)
    if n_blocks < 2:
        raise ValueError(f"the jackknife needs at least 2 samples, got {n}")
    value = estimator(*samples)
    bounds = torch.linspace(0, n, n_blocks + 1).round().long().tolist()
    leave_out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        leave_out.append(estimator(*(torch.cat([s[:lo], s[hi:]]) for s in samples)))
    theta = torch.stack(leave_out)
    error = ((n_blocks - 1) / n_blocks * ((theta - theta.mean(0)) ** 2).sum(0)).sqrt()
    return value, error


def reweight(
    values: torch.Tensor, log_w: torch.Tensor | None = None, n_blocks: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-normalised importance-sampling average ``<O> = sum_i w_i O_i / sum_i w_i`` with a blocked
    jackknife error: ``(mean, error)``, each of shape ``values.shape[1:]``.

    ``values``: ``(N, ...)`` per-sample observables (e.g. :func:`.observables.susceptibility`);
    ``log_w``: ``(N,)`` importance log-weights, or ``None`` for a plain average (the same jackknife,
    which then equals the blocked standard error).
    """
    values = values.double()
    if log_w is None:
        log_w = torch.zeros(values.shape[0], dtype=torch.float64)
    w = torch.exp(log_w.double() - log_w.max()).reshape(-1, *([1] * (values.dim() - 1)))

    def estimator(v, wt):
        return (wt * v).sum(0) / wt.sum(0)

    return jackknife(estimator, values, w, n_blocks=n_blocks)


def chain_mean(series: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``(T, n_chains, ...)`` measurements and its error from the spread of the chain means,
    ``std(chain means) / sqrt(n_chains)`` (independent, thermalised chains): ``(mean, error)``."""
    chain_means = series.double().mean(dim=0)
    return chain_means.mean(dim=0), chain_means.std(dim=0) / math.sqrt(chain_means.shape[0])


def binned_error(series: torch.Tensor, bin_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of a ``(T, ...)`` series and the standard error of its means over bins of ``bin_size``
    consecutive measurements (the trailing ``T mod bin_size`` are dropped): ``(mean, error)``.
    The error grows with ``bin_size`` until bins outlast the autocorrelation, then plateaus."""
    series = series.double()
    n_bins = series.shape[0] // bin_size
    if n_bins < 2:
        raise ValueError(f"{series.shape[0]} measurements make fewer than 2 bins of {bin_size}")
    bins = series[: n_bins * bin_size].reshape(n_bins, bin_size, *series.shape[1:]).mean(dim=1)
    return series.mean(dim=0), bins.std(dim=0) / math.sqrt(n_bins)


@dataclass
class IndependenceMetropolis:
    """``indices[t]``: which proposal the chain holds at step ``t`` (``(N,)`` long; ``samples[indices]``
    is the chain); ``accepted[t]``: whether proposal ``t`` was accepted (``accepted[0]`` is the start);
    ``acceptance``: the fraction of accepted proposals among ``1 .. N-1``."""

    indices: torch.Tensor
    accepted: torch.Tensor
    acceptance: float


def independence_metropolis(log_w: torch.Tensor, generator: torch.Generator | None = None) -> IndependenceMetropolis:
    """Metropolis-Hastings with independent proposals ``x_t ~ q`` (e.g. a flow), in proposal order.

    The chain starts at proposal 0 and accepts proposal ``t`` with probability
    ``min(1, w_t / w_current)``, which leaves ``p = exp(-S)/Z`` invariant for ``w = exp(-S)/q``.
    Exact proposals (``w`` constant) are always accepted.
    """
    log_w = log_w.double().flatten()
    n = log_w.numel()
    log_u = torch.log(torch.rand(n, generator=generator, dtype=torch.float64)).tolist()
    lw = log_w.tolist()
    indices, accepted = [0] * n, [True] * n
    current = 0
    for t in range(1, n):
        if log_u[t] < lw[t] - lw[current]:
            current = t
        else:
            accepted[t] = False
        indices[t] = current
    accepted_t = torch.tensor(accepted)
    rate = accepted_t[1:].double().mean().item() if n > 1 else float("nan")
    return IndependenceMetropolis(indices=torch.tensor(indices), accepted=accepted_t, acceptance=rate)


def autocorrelation(series: torch.Tensor) -> torch.Tensor:
    """Normalised autocorrelation ``rho(t)``, ``t = 0 .. T-1``, of a ``(T,)`` series or of
    ``(T, n_chains)`` independent chains (each centred on its own mean; autocovariances averaged
    over chains before normalising). Computed with a zero-padded FFT."""
    x = series.double()
    if x.dim() == 1:
        x = x[:, None]
    x = x.reshape(x.shape[0], -1)
    t_len = x.shape[0]
    x = x - x.mean(dim=0)
    f = torch.fft.rfft(x, n=2 * t_len, dim=0)
    acov = torch.fft.irfft(f * f.conj(), n=2 * t_len, dim=0)[:t_len].mean(dim=1) / t_len
    return acov / acov[0]


@dataclass
class AutocorrelationTime:
    """``tau = 1 + 2 sum_{t=1}^{W} rho(t)``, in measurements, so that the variance of a mean of ``N``
    correlated measurements is ``tau sigma^2 / N`` (``N / tau`` effective samples; an AR(1) series with
    coefficient ``rho`` has ``tau = (1 + rho)/(1 - rho)``); ``error`` is the Madras-Sokal estimate
    ``tau sqrt(2 (2W + 1) / N)``; ``window`` is ``W``. Wolff's ``tau_int`` is ``tau / 2``."""

    tau: float
    error: float
    window: int


def integrated_autocorrelation_time(series: torch.Tensor, c: float = 6.0) -> AutocorrelationTime:
    """Integrated autocorrelation time with automatic windowing (Madras-Sokal, as in Sokal's notes):
    the window ``W`` is the smallest with ``W >= c * tau(W) / 2`` (``c`` times Wolff's ``tau_int``;
    ``c`` of 4 to 10 is usual; 6 leaves a bias below 1% for an exponential decay).
    ``series``: ``(T,)`` or ``(T, n_chains)``."""
    rho = autocorrelation(series)
    n = series.numel()
    tau = 1 + 2 * torch.cumsum(rho[1:], dim=0)  # tau[W - 1] = tau(W)
    windows = torch.arange(1, rho.numel(), dtype=torch.float64)
    ok = torch.nonzero(windows >= c * tau / 2)
    w = int(ok[0]) + 1 if ok.numel() else rho.numel() - 1
    value = tau[w - 1].item() if w >= 1 else 1.0
    return AutocorrelationTime(tau=value, error=value * math.sqrt(2 * (2 * w + 1) / n), window=w)
