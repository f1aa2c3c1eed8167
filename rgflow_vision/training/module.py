"""The LightningModule that trains RG-Flow on images by maximum likelihood."""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric

from ..errors import UserError
from ..flows.conditioner import fuse_conditioners
from ..lightning_base import NonFiniteLossError, TrainingBase, warmup_cosine
from ..model import RGFlowModel

__all__ = ["FlowLitModule", "NonFiniteLossError", "TrainingBase", "content_seeded_noise", "warmup_cosine"]


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
        compile: bool | str = False,
        eval_seed: int = 0,
        dataset: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        # Keys left out fall to RGFlowModel.build's and RGFlow's own defaults.
        prior = {{"name": "prior", "learn_scale": "learn_prior_scale"}[k]: v for k, v in (prior or {}).items()}
        if prior.get("prior") == "onsite":
            raise UserError("prior=onsite is the on-site measure of a lattice action: use it with a lattice "
                            "experiment (e.g. experiment=lattice_phi4_massive); images take prior=laplace or gaussian")
        self.model = RGFlowModel.build(channels, image_size, bits, **prior, **(architecture or {}))
        if compile not in (True, False, "conditioners"):
            raise UserError(f"compile={compile} is not an option: false, true (the whole training loss) or "
                            "conditioners (only the coupling networks' residual blocks and feature ODE velocities)")
        if compile == "conditioners":
            fuse_conditioners(self.model)
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
        if self.hparams.compile is not True:
            return self.model.bpd
        if self._compiled_bpd is None:
            self._compiled_bpd = torch.compile(self.model.bpd)
        return self._compiled_bpd

    def _eval_bpd(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.model.bpd(batch, content_seeded_noise(batch, self.hparams.eval_seed))


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
