"""The LightningModule that trains RG-Flow on images by maximum likelihood."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from torchmetrics import MeanMetric

from ..errors import UserError
from ..model import RGFlowModel


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; training stops before the bad step reaches a checkpoint."""


class TrainingBase(L.LightningModule):
    """What every RG-Flow training shares: AdamW with warm-up and cosine decay, a clear stop on a
    non-finite loss, and the random streams saved in checkpoints so that resuming is exact.

    Subclasses set ``self.optim`` (the ``optim`` block of conf/train.yaml, where its defaults live) and
    list in ``REQUIRED_HPARAMS`` the constructor arguments a checkpoint must hold to rebuild them.
    """

    REQUIRED_HPARAMS: tuple[str, ...] = ()
    KIND = "a training"  # for messages: "pass a checkpoint of <KIND> run"

    def _stop_if_not_finite(self, loss: torch.Tensor) -> None:
        finite = bool(torch.isfinite(loss))
        if self.trainer is not None and self.trainer.world_size > 1:  # every rank must stop together
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            raise NonFiniteLossError(
                f"the loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}); "
                "the checkpoints written before it are intact: resume from the last one with a lower optim.lr "
                "or stronger trainer.gradient_clip_val"
            )

    def configure_optimizers(self):
        o = self.optim
        missing = [k for k in OPTIM_KEYS if k not in o]
        if missing:
            raise UserError(f"optim lacks {', '.join(missing)}: pass every key of the optim block in conf/train.yaml")
        params = [p for p in self.parameters() if p.requires_grad]
        # The fused kernel exists for CPU and CUDA float tensors; it is one kernel per step instead of many.
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        optimizer = torch.optim.AdamW(
            params, lr=o["lr"], betas=tuple(o["betas"]), weight_decay=o["weight_decay"], fused=fused
        )
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(o["warmup_steps"], total if o["cosine"] else None, o["min_lr_ratio"])
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning restores model, optimizer, schedule, step and callbacks, but not the random
        # streams (dequantisation noise, shuffling, flow draws): keep them so a resumed run is the same run.
        states = _collect_rng_states(include_cuda=torch.cuda.is_available())
        kind, keys, *rest = states["numpy"]  # as a tensor, so checkpoints load with weights_only=True
        checkpoint["rng_states"] = {**states, "numpy": (kind, torch.from_numpy(keys.copy()), *rest)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint and self._trainer is not None and self.trainer.state.fn == "fit":
            states = dict(checkpoint["rng_states"])
            kind, keys, *rest = states["numpy"]
            _set_rng_states({**states, "numpy": (kind, keys.numpy(), *rest)})
            if self.global_rank > 0:  # the checkpoint holds rank 0's streams; other ranks must differ
                torch.manual_seed(int(torch.randint(2**62, ())) + self.global_rank)


# What configure_optimizers reads; the values are in conf/train.yaml (optim), and nowhere else.
OPTIM_KEYS = ("lr", "weight_decay", "betas", "warmup_steps", "cosine", "min_lr_ratio")


class FlowLitModule(TrainingBase):
    """Negative log-likelihood training of :class:`~rgflow_vision.RGFlowModel`.

    Everything needed to rebuild the model is a constructor argument and saved in the
    checkpoint, so ``FlowLitModule.load_from_checkpoint(path)`` needs no config. ``dataset`` is the
    dataset's config, kept so that the apps can rebuild the test split from a checkpoint.

    Logged: ``train/bpd`` (per step and epoch), ``val/bpd`` and ``test/bpd``: torchmetrics means
    over every image of the split, synced across DDP ranks (not a mean of batch means).
    Evaluation draws each image's dequantisation noise from a seed made of its pixels, so the
    same checkpoint gives the same bpd whatever the batching or the number of ranks.
    """

    REQUIRED_HPARAMS = ("channels", "image_size", "bits", "architecture", "prior")
    KIND = "an image training"

    def __init__(
        self,
        channels: int,
        image_size: int,
        bits: int = 8,
        architecture: dict | None = None,
        prior: dict | None = None,
        optim: dict | None = None,
        compile: bool = False,
        eval_seed: int = 0,
        dataset: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        # Keys left out fall to RGFlowModel.build's and RGFlow's own defaults.
        prior = {{"name": "prior", "learn_scale": "learn_prior_scale"}[k]: v for k, v in (prior or {}).items()}
        self.model = RGFlowModel.build(channels, image_size, bits, **prior, **(architecture or {}))
        self.optim = dict(optim or {})
        self.train_bpd, self.val_bpd, self.test_bpd = MeanMetric(), MeanMetric(), MeanMetric()
        self._compiled_bpd = None

    # -- steps -------------------------------------------------------------------------------

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        bpd = self._train_bpd_fn()(batch)
        loss = bpd.mean()
        self._stop_if_not_finite(loss)
        self.train_bpd(bpd.detach())
        self.log("train/bpd", self.train_bpd, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.val_bpd.update(self._eval_bpd(batch, batch_idx))
        self.log("val/bpd", self.val_bpd, on_epoch=True, prog_bar=True)

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.test_bpd.update(self._eval_bpd(batch, batch_idx))
        self.log("test/bpd", self.test_bpd, on_epoch=True)

    def _train_bpd_fn(self):
        # torch.compile compiles a callable's forward only, so compile the loss function itself.
        if not self.hparams.compile:
            return self.model.bpd
        if self._compiled_bpd is None:
            self._compiled_bpd = torch.compile(self.model.bpd)
        return self._compiled_bpd

    def _eval_bpd(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.model.bpd(batch, content_seeded_noise(batch, self.hparams.eval_seed))


def warmup_cosine(warmup_steps: int, total_steps: int | None, min_ratio: float = 0.0):
    """LR multiplier: linear warm-up over ``warmup_steps``, then cosine decay to ``min_ratio`` at
    ``total_steps`` (constant after warm-up when ``total_steps`` is None)."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if total_steps is None or total_steps <= warmup_steps:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def content_seeded_noise(batch: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Dequantisation noise in ``[0, 1)`` drawn from a generator seeded by each image's pixels.

    The same image gets the same noise whatever its batch, rank or world size, so the bits/dim
    of a checkpoint is one number: evaluate.py reproduces the test bpd of training, with DDP too.
    """
    flat = batch.reshape(len(batch), -1).long().cpu()
    weights = torch.randint(1, 2**31, (flat.shape[1],), generator=torch.Generator().manual_seed(seed))
    noise = torch.empty(batch.shape)
    for i, image_seed in enumerate((flat * weights).sum(1).tolist()):  # < 2**63: 2**16 * 2**31 * D
        noise[i] = torch.rand(batch.shape[1:], generator=torch.Generator().manual_seed(image_seed))
    return noise.to(batch.device)
