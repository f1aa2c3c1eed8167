"""The LightningModule that trains RG-Flow on a lattice action by reverse KL (no data: the flow draws its own)."""

from __future__ import annotations

import torch
from torchmetrics import CatMetric

from ..errors import UserError
from ..flows import RGFlow
from ..lightning_base import TrainingBase
from ..model import sample_and_log_prob
from ..priors import PRIORS, build_prior
from .actions import FreeComplexField, build_action
from .estimators import ess, log_weights, log_z, reverse_kl
from .observables import susceptibility
from .onsite import OnsitePrior

EVAL_CHUNK = 1024  # configurations decoded at once in evaluation: bounds memory, not the result


class LatticeFlowModule(TrainingBase):
    """Variational training of ``q(x)`` = RGFlow with a prior (``prior``: ``{name, learn_scale}``; a
    factorised Gaussian, or ``onsite``, the action's on-site measure :class:`OnsitePrior`) towards
    ``p(x) = exp(-S(x))/Z``. Every argument is required: the defaults live in conf/dataset/lattice.yaml
    (sizes), conf/model/lattice.yaml (flow) and conf/train.yaml (optim).

    The loss is the reverse KL ``E_{x~q}[log q(x) + S(x)] = KL(q||p) - ln Z``, on ``batch_size`` fresh
    draws per step, so ``-loss`` is a lower bound on ``ln Z``. The fields are the flow's output as
    they are: no pixel transform.

    Logged: ``train/loss``, ``train/log_z_bound`` (``-loss``) and ``train/ess`` (ESS/N of the step's
    batch). Each validation/test step draws ``eval_samples`` configurations without gradients; their
    log-weights ``log w = -S - log q`` are gathered over steps and DDP ranks (a torchmetrics
    CatMetric), and the epoch logs ``ess``, ``log_z`` (importance-sampling estimate), ``log_z_error``,
    ``log_z_bound``, the reweighted susceptibility ``chi`` and, where ``ln Z`` is exact (the free
    field), ``log_z_exact_gap`` (estimate - exact) and ``kl`` (exact - bound = KL(q||p) >= 0).
    """

    REQUIRED_HPARAMS = ("action", "size", "architecture", "prior")
    KIND = "a lattice training"

    def __init__(
        self,
        action: dict,
        size: int,
        architecture: dict,
        prior: dict,
        batch_size: int,
        eval_samples: int,
        optim: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.target = _action(action)
        self.size = int(size)
        try:
            self.flow = RGFlow(self.target.channels, self.size, **architecture)
        except ValueError as error:  # the flow's own check of the sizes, in one sentence
            raise UserError(f"lattice.size={size}, model.block_size={architecture.get('block_size')}: {error}") from None
        self.prior = self._prior(prior)
        self.batch_size, self.eval_samples = int(batch_size), int(eval_samples)
        self.optim = dict(optim or {})
        self.exact_log_z = self.target.log_z(self.size) if isinstance(self.target, FreeComplexField) else None
        self.val_log_w, self.test_log_w = CatMetric(), CatMetric()
        self.val_chi, self.test_chi = CatMetric(), CatMetric()

    def _prior(self, prior: dict):
        if prior["name"] == "onsite":  # the action's own on-site measure (lattice/onsite.py)
            if prior.get("learn_scale"):
                raise UserError("prior=onsite has no scale to learn: pass prior.learn_scale=false")
            return OnsitePrior(self.target, self.size)
        if prior["name"] not in PRIORS:  # the app turns this into one sentence, as for every model value
            raise ValueError(f"unknown prior {prior['name']!r}; choose one of {sorted(PRIORS)} or onsite")
        level_map = self.flow.level_map() if prior.get("learn_scale") else None
        return build_prior(prior["name"], self.target.channels, self.size, level_map=level_map,
                           learn_scale=bool(prior.get("learn_scale")))

    # -- drawing -------------------------------------------------------------------------------

    def draw(
        self, n: int, generator: torch.Generator | None = None, chunk: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` flow configurations ``(x, log q(x), S(x), z)``, differentiable unless under no_grad;
        ``chunk`` bounds how many are decoded at once."""
        x, log_q, z = sample_and_log_prob(self.flow, self.prior, n, generator=generator, chunk=chunk)
        return x, log_q, self.target(x), z

    @torch.no_grad()
    def draw_log_weights(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log w, chi)`` of ``n`` fresh configurations, decoded in chunks, float64 weights."""
        x, log_q, action, _ = self.draw(n, generator, chunk=EVAL_CHUNK)
        return log_weights(log_q, action), susceptibility(x.double())

    def setup(self, stage: str) -> None:
        # seed_everything gives every DDP rank the same stream, and identical draws on every rank would make the
        # extra ranks worthless. Runs before a checkpoint restores its streams (which offsets ranks itself).
        if self._trainer is not None and self.trainer.world_size > 1:
            torch.manual_seed(torch.initial_seed() + 1_000_003 * self.global_rank)

    # -- steps ---------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        _, log_q, action, _ = self.draw(self.batch_size)
        loss = reverse_kl(log_q, action)
        self._stop_if_not_finite(loss)
        step_ess = ess(log_weights(log_q.detach(), action.detach()))
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=self.batch_size)
        self.log("train/log_z_bound", -loss.detach(), on_step=True, on_epoch=True, batch_size=self.batch_size)
        self.log("train/ess", step_ess, on_step=True, on_epoch=True, prog_bar=True, batch_size=self.batch_size)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        log_w, chi = self.draw_log_weights(self.eval_samples)
        self.val_log_w.update(log_w)
        self.val_chi.update(chi)

    def test_step(self, batch, batch_idx: int) -> None:
        log_w, chi = self.draw_log_weights(self.eval_samples)
        self.test_log_w.update(log_w)
        self.test_chi.update(chi)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val", self.val_log_w, self.val_chi)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test", self.test_log_w, self.test_chi)

    def _log_evaluation(self, stage: str, log_w_metric: CatMetric, chi_metric: CatMetric) -> None:
        if not log_w_metric.update_called:  # no evaluation batches ran (limit_val_batches=0)
            return
        # compute() gathers every rank's draws, so every rank computes the same numbers; sync_dist then averages
        # identical values (a no-op that keeps Lightning from warning about unsynced epoch metrics).
        log_w = log_w_metric.compute().double().flatten().cpu()
        chi = chi_metric.compute().double().flatten().cpu()
        log_w_metric.reset()
        chi_metric.reset()
        metrics = evaluation_metrics(log_w, chi, self.exact_log_z)
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name in ("ess", "log_z"), sync_dist=True)


def _action(action: dict | None):
    if not action:
        raise UserError("module=lattice trains towards an action and none is given: use experiment=lattice_free "
                        "(or lattice_phi4_massive, lattice_phi4_critical), or pass action={name: ..., ...}")
    try:
        return build_action(**action)
    except (TypeError, ValueError) as error:
        raise UserError(f"action={action} is not a lattice action ({error}): e.g. action={{name: free_complex, "
                        "t: 1, mu: 4.5}, or complex_phi4 with kappa and lam, or real_phi4 with m2 and lam") from None


def evaluation_metrics(log_w: torch.Tensor, chi: torch.Tensor, exact_log_z: float | None = None) -> dict[str, float]:
    """The numbers an evaluation reports from importance log-weights and per-sample ``|M|^2/V``."""
    finite = torch.isfinite(log_w)
    if not bool(finite.all()):  # a NaN weight would silently poison every estimate below
        return {"ess": 0.0, "log_z": float("nan"), "log_z_bound": float("nan")}
    estimate = log_z(log_w)
    w = torch.exp(log_w - log_w.max())
    metrics = {
        "ess": ess(log_w),
        "log_z": estimate.estimate,
        "log_z_error": estimate.error,
        "log_z_bound": estimate.bound,
        "chi": float((w * chi).sum() / w.sum()),
    }
    if exact_log_z is not None:
        metrics["log_z_exact_gap"] = estimate.estimate - exact_log_z
        metrics["kl"] = exact_log_z - estimate.bound
    return metrics


__all__ = ["LatticeFlowModule", "evaluation_metrics"]
