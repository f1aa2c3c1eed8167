"""The LightningModule that trains RG-Flow on a lattice action by reverse KL (no data: the flow draws its own)."""

from __future__ import annotations

import torch
from torchmetrics import CatMetric

from lightning.pytorch.utilities import rank_zero_info

from ..errors import UserError
from ..flows import RGFlow
from ..flows.conditioner import fuse_conditioners
from ..flows.features import FeatureVelocity, torus_of
from ..flows.flat import FlatFlow
from ..flows.spectral import MomentumScale
from ..lightning_base import TrainingBase, read_checkpoint, resolve_checkpoint
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

    ``compile="conditioners"`` runs the flow's coupling networks and feature ODE velocities through
    ``torch.compile`` (:func:`~..flows.conditioner.fuse_conditioners`), the rest eager.

    ``architecture["flow"]`` picks the flow: ``"rgflow"`` (the default, conf/model/lattice.yaml) or ``"flat"``
    (checkerboard couplings over the whole lattice, conf/model/flat.yaml). ``grow_from`` (``lattice.grow_from``)
    names the checkpoint of a run on a smaller (or the same) lattice with the same architecture: when training
    starts, its flow's layers are copied into this one (:func:`grow`); for the RG flow the levels the small
    lattice had keep their weights and the new, coarsest level starts as the identity. The action may differ
    (annealing the coupling). A resumed run (``ckpt_path``) restores its own weights over the copy.

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
        grow_from: str | None = None,
        compile: bool | str = False,
        gradient: str = "total",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.target = _action(action)
        self.size = int(size)
        if compile not in (False, "conditioners"):
            raise UserError(f"compile={compile} is not an option for a lattice training: false, or conditioners (the "
                            "flow's networks and ODE velocities compiled, their matrix products left to the library)")
        if gradient not in ("total", "path"):
            raise UserError(f"lattice.gradient={gradient} is not an estimator: total (the reparameterised reverse KL) or "
                            "path (its path gradient, without the score term: docs/lattice.md)")
        self.gradient = gradient
        self.flow = build_flow(self.target.channels, self.size, architecture)
        if compile:
            fuse_conditioners(self.flow)
        self.grow_from = grow_from
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
        # Before the optimizer is built and before a resumed run restores its own weights over these.
        if stage == "fit" and self.grow_from:
            self.grow(self.grow_from)

    def grow(self, ckpt: str) -> None:
        """Copy the flow (and the prior's learned scales) of the lattice run ``ckpt`` into this module."""
        path = resolve_checkpoint(ckpt, key="lattice.grow_from")
        small = read_checkpoint(path, type(self))
        hp = small["hyper_parameters"]
        theirs, mine = _architecture(hp["architecture"]), _architecture(self.hparams.architecture)
        if not theirs["spectral"]:  # a momentum scaling may be added on growing: it starts as the identity
            mine = {**mine, "spectral": False}
        # the same weights may be integrated with another number of RK4 steps
        theirs, mine = ({k: v for k, v in a.items() if k not in SOLVER_KEYS} for a in (theirs, mine))
        if theirs != mine:
            differ = sorted(k for k in {*theirs, *mine} if theirs.get(k) != mine.get(k))
            raise UserError(f"lattice.grow_from={path} was trained with another architecture (model.{', model.'.join(differ)} "
                            "differ): grow with the model config of the smaller run")
        if int(hp["size"]) > self.size or hp["prior"] != self.hparams.prior:
            raise UserError(f"lattice.grow_from={path} is a run at L = {hp['size']} with prior {hp['prior']}: grow "
                            f"from a run at L <= {self.size} with the same prior")
        state = small["state_dict"]
        fresh = grow(self.flow, {k[5:]: v for k, v in state.items() if k.startswith("flow.")})
        prior = {k[6:]: v for k, v in state.items() if k.startswith("prior.")}
        for name, mine in self.prior.state_dict().items():
            if name in prior:  # a learned scale per level: the small run's levels, the new ones at 1
                with torch.no_grad():
                    mine[: prior[name].shape[0]].copy_(prior[name])
        rank_zero_info(f"grew the flow from {path} (L = {hp['size']} -> {self.size}): "
                       f"{len(fresh)} parameter tensors start fresh (the new levels)")

    # -- steps ---------------------------------------------------------------------------------

    def path_draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, log q(x), S(x))`` for the path gradient (Roeder et al. 2017, "sticking the landing"; for flows on
        the lattice Vaitl et al., arXiv 2206.09016): ``x`` is decoded with gradients, and ``log q`` is computed by
        encoding ``x`` again with the parameters held fixed. The loss's gradient then reaches the parameters only
        through ``x``: the score term ``E_q[d log q / d theta]``, zero in expectation but not per batch, is gone,
        and its noise with it; at ``q = p`` the path gradient vanishes draw by draw. The price: one more pass
        (the encode) and its backward with respect to ``x``."""
        z = self.prior.sample(n)
        x, _ = self.flow.decode(z)
        held = [p for p in self.parameters() if p.requires_grad]
        try:
            for p in held:
                p.requires_grad_(False)
            z_back, logdet = self.flow.encode(x)
            log_q = self.prior.log_prob(z_back) + logdet
        finally:
            for p in held:
                p.requires_grad_(True)
        return x, log_q, self.target(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if self.gradient == "path":
            _, log_q, action = self.path_draw(self.batch_size)
        else:
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


FLOWS = {"rgflow": RGFlow, "flat": FlatFlow}


def build_flow(channels: int, size: int, architecture: dict):
    """The flow named by ``architecture["flow"]`` (default ``"rgflow"``), built from the other keys."""
    options = dict(architecture)
    kind = options.pop("flow", "rgflow")
    if kind not in FLOWS:
        raise UserError(f"model.flow={kind!r} is not a lattice flow: use one of {', '.join(FLOWS)}")
    try:
        return FLOWS[kind](channels, size, **options)
    except ValueError as error:  # the flow's own check of the sizes, in one sentence
        raise UserError(f"lattice.size={size}, model.block_size={options.get('block_size')}: {error}") from None


# Keys that set how an ODE flow is integrated, not its weights: a run may grow from one with other values.
SOLVER_KEYS = ("steps", "eval_steps")


def _architecture(architecture: dict) -> dict:
    """The model config with the defaults of keys that older checkpoints lack."""
    return {"flow": "rgflow", "share_levels": False, "spectral": False, **dict(architecture)}


def grow(flow, small_state: dict[str, torch.Tensor]) -> list[str]:
    """Copy ``small_state`` (the ``state_dict`` of the same kind of flow for a smaller lattice) into ``flow``;
    returns the names of the tensors that keep their fresh initialisation.

    RG flow: level ``h`` acts on 4x4 blocks of the sublattice ``x[::2**h, ::2**h]`` at every ``L``, and its
    layers sit at the same indices (``h * depth + r``), so the small flow's levels ``0 .. H-1`` are copied
    onto the same levels and the new, coarsest level keeps its initialisation: the identity (every coupling's
    output starts at zero). With ``share_levels`` the new level is the shared stack itself. Flat flow: its
    networks do not depend on ``L``, so everything is copied. Raises ``ValueError`` for a tensor the flow does
    not have or of another shape. The global ODE layer's periodic kernel keeps its weights on the displacements
    both tori have (:meth:`~..flows.features.FeatureVelocity.grown_weight`). A momentum-space scaling (``spectral``) is interpolated onto the larger
    torus's momenta (:meth:`~..flows.spectral.MomentumScale.grow_from`).
    """
    small_state = dict(small_state)
    spectral = small_state.pop("spectral.log_scale", None) if getattr(flow, "spectral", None) is not None else None
    if spectral is not None:
        flow.spectral.grow_from(_momentum_scale(flow.channels, spectral))
    own = flow.state_dict()
    for name, value in small_state.items():  # a global ODE layer's kernel: carried over to the larger torus
        owner = flow.get_submodule(name.rpartition(".")[0]) if name in own else None
        if isinstance(owner, FeatureVelocity) and name.endswith(".weight") and own[name].shape != value.shape:
            small_state[name] = owner.grown_weight(value)
    for name, value in small_state.items():
        if name not in own or own[name].shape != value.shape:
            have = tuple(own[name].shape) if name in own else "none"
            raise ValueError(f"the smaller flow's {name} {tuple(value.shape)} has no place here (this flow: {have})")
    with torch.no_grad():
        for name, value in small_state.items():
            own[name].copy_(value)
    written = {own[name].data_ptr() for name in small_state}  # shared levels alias the same storage
    if spectral is not None:  # interpolated from the small flow's, not fresh
        written.add(own["spectral.log_scale"].data_ptr())
    return [name for name, value in own.items() if value.data_ptr() not in written]


def _momentum_scale(channels: int, log_scale: torch.Tensor) -> MomentumScale:
    """The :class:`MomentumScale` whose parameters are ``log_scale``, its torus found by its number of orbits."""
    layer = MomentumScale(channels, torus_of(log_scale.numel()))
    with torch.no_grad():
        layer.log_scale.copy_(log_scale)
    return layer


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


__all__ = ["FLOWS", "LatticeFlowModule", "build_flow", "evaluation_metrics", "grow"]
