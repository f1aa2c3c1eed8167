"""What the root apps do, given their composed Hydra config: train, evaluate, sample, and the
hierarchy apps (mix, receptive fields, inpaint)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EMAWeightAveraging, LearningRateMonitor, ModelCheckpoint, WeightAveraging
from omegaconf import DictConfig, OmegaConf, open_dict

from .. import analysis
from ..errors import UserError
from .callbacks import HierarchyPictures, SampleGrid
from .config import to_dict
from .checkpoint import load_module, read_checkpoint, resolve_checkpoint
from .hierarchy import box_mask, compare_inpainting, mixing_picture, receptive_field_picture
from .images import image_grid, save_and_log
from .module import FlowLitModule


def build_callbacks(cfg: DictConfig, has_logger: bool = True) -> list[L.Callback]:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if not has_logger:  # the learning-rate monitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if cfg.get("ema"):
        callbacks.append(EMAWeightAveraging(decay=cfg.ema))
    # Weight averaging swaps the EMA weights out again at the end of each validation epoch: it
    # must come after the callbacks that draw with them.
    return sorted(callbacks, key=lambda c: isinstance(c, WeightAveraging))


def build_loggers(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]


def build_module(cfg: DictConfig, datamodule) -> L.LightningModule:
    """The LightningModule the config asks for: image likelihood training, or a lattice action."""
    if cfg.get("action"):
        from ..lattice.module import build_lattice_module

        return build_lattice_module(cfg, datamodule)
    return FlowLitModule(
        channels=datamodule.channels,
        image_size=datamodule.image_size,
        bits=datamodule.bits,
        architecture=to_dict(cfg.model),
        prior=to_dict(cfg.prior),
        optim=to_dict(cfg.optim),
        compile=cfg.compile,
        eval_seed=cfg.seed,
        dataset=to_dict(cfg.dataset),
    )


def train(cfg: DictConfig) -> dict:
    """Fit, test, and report where everything went. Returns the metrics and paths."""
    ckpt_path = None
    if cfg.get("ckpt_path"):
        ckpt_path = resolve_checkpoint(cfg.ckpt_path)
        if ckpt_path.parent.name == "checkpoints":  # continue in the run folder that wrote it
            with open_dict(cfg):
                cfg.paths.output_dir = str(ckpt_path.parent.parent.resolve())
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.dataset)
    module = build_module(cfg, datamodule)
    if ckpt_path is not None:  # fail with one sentence now rather than deep inside Lightning
        _check_resumable(ckpt_path, module)
    loggers = build_loggers(cfg)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=build_callbacks(cfg, bool(loggers)), logger=loggers or False)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    results = {"run_dir": Path(trainer.default_root_dir)}
    if cfg.get("test"):
        results.update(trainer.test(module, datamodule=datamodule, verbose=False)[0])
    for checkpoint in trainer.checkpoint_callbacks:  # none is written under fast_dev_run
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.dirpath and checkpoint.best_model_path:
            key = "best_ckpt" if checkpoint.monitor else "last_ckpt"
            results[key] = Path(checkpoint.best_model_path)
    results["samples"] = [p for cb in trainer.callbacks if isinstance(cb, SampleGrid) for p in cb.last_paths]
    results["pictures"] = [p for cb in trainer.callbacks if isinstance(cb, HierarchyPictures) for p in cb.last_paths]
    if trainer.is_global_zero:
        _report(results, trainer)
    return results


def _check_resumable(path: Path, module) -> None:
    saved = read_checkpoint(path, type(module))["hyper_parameters"]
    changed = [k for k in module.REQUIRED_HPARAMS if saved.get(k) != module.hparams.get(k)]
    if changed:
        raise UserError(f"checkpoint {path} was trained with other {', '.join(changed)} than this config: resume "
                        "with the run's own config (its .hydra/overrides.yaml) plus ckpt_path=...")


def _report(results: dict, trainer: L.Trainer) -> None:
    lines = [f"run folder   {results['run_dir'].resolve()}"]
    if results.get("last_ckpt"):
        lines.append(f"checkpoint   {results['last_ckpt']}")
    if results.get("best_ckpt"):
        lines.append(f"best         {results['best_ckpt']}")
    for key, value in results.items():
        if key.startswith("test/"):
            lines.append(f"{key.replace('/', ' '):<12} {value:.4f}")
    lines += [f"samples      {path}" for path in results["samples"]]
    lines += [f"hierarchy    {path}" for path in results["pictures"]]
    for logger in trainer.loggers:
        where = getattr(logger, "log_dir", None) or logger.save_dir
        if where:  # fast_dev_run replaces the loggers with a DummyLogger that writes nowhere
            lines.append(f"logs         {where} ({type(logger).__name__})")
    print("\n".join(lines))


def _datamodule_for(module: FlowLitModule, cfg: DictConfig):
    """The checkpoint's dataset config, with the user's ``dataset.*`` overrides on top."""
    saved = module.hparams.get("dataset")
    if not saved:
        raise UserError("this checkpoint does not record its dataset: pass the dataset config, e.g. dataset=digits")
    overrides = to_dict(cfg.get("dataset"))
    return instantiate(OmegaConf.merge(saved, overrides))


def evaluate(cfg: DictConfig) -> float:
    """Bits per dimension of a checkpoint on the test split (the same number training reported)."""
    module, path = load_module(cfg.ckpt)
    datamodule = _datamodule_for(module, cfg)
    trainer = L.Trainer(**to_dict(cfg.trainer), logger=False)
    bpd = trainer.test(module, datamodule=datamodule, verbose=False)[0]["test/bpd"]
    print(f"test bpd {bpd:.4f}  ({path})")
    return bpd


def sample(cfg: DictConfig) -> Path:
    """A grid of ``n`` samples at ``temperature`` from a checkpoint; with ``split_level`` the levels
    below it are drawn at ``temperature`` and the coarser ones at ``coarse_temperature``."""
    if cfg.n < 1:
        raise UserError(f"n={cfg.n} images is not a grid: pass n=64 or another positive number")
    module, path = load_module(cfg.ckpt)
    model = module.model
    generator = torch.Generator().manual_seed(cfg.seed)
    if cfg.get("split_level") is None:
        pixels, what = model.sample(cfg.n, cfg.temperature, generator), f"temperature {cfg.temperature:g}"
        name = f"samples_T{cfg.temperature:g}.png"
    else:
        pixels = analysis.sample_mixed_temperature(
            model, cfg.n, cfg.temperature, cfg.coarse_temperature, cfg.split_level, generator
        )
        what = (f"temperature {cfg.temperature:g} below level {cfg.split_level}, "
                f"{cfg.coarse_temperature:g} from it up")
        name = f"samples_T{cfg.temperature:g}_split{cfg.split_level}_T{cfg.coarse_temperature:g}.png"
    out = Path(cfg.out) if cfg.get("out") else Path(cfg.paths.output_dir) / name
    save_and_log(None, image_grid(pixels, model.pixels.bits), out, "samples")
    print(f"{cfg.n} samples at {what} from {path}\nwrote {out.resolve()}")
    return out


# -- the hierarchy apps ------------------------------------------------------------------------


def _source_images(module: FlowLitModule, cfg: DictConfig, specs) -> torch.Tensor:
    """Integer images ``(N, C, L, L)`` from test-split indices or image files, in the model's format."""
    model = module.model
    channels, size = model.flow.channels, model.flow.image_size
    test_set = None
    images = []
    for spec in specs:
        if isinstance(spec, int) or str(spec).lstrip("-").isdigit():
            if test_set is None:
                datamodule = _datamodule_for(module, cfg)
                datamodule.setup("test")
                test_set = datamodule.test_set
            index = int(spec)
            if not 0 <= index < len(test_set):
                raise UserError(f"image index {index} is outside the test split, which holds images "
                                f"0..{len(test_set) - 1}: pass an index in that range or an image file")
            images.append(test_set[index])
        else:
            images.append(_image_file(Path(str(spec)), channels, size))
    return torch.stack(images).to(module.device)


def _image_file(path: Path, channels: int, size: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import v2

    try:
        image = Image.open(path).convert("L" if channels == 1 else "RGB")
    except (FileNotFoundError, UnidentifiedImageError, OSError):
        raise UserError(f"{path} is not a readable image file: pass a PNG/JPEG path or a test-split index") from None
    shape = v2.Compose([v2.PILToTensor(), v2.Resize(size, antialias=True), v2.CenterCrop(size)])
    return shape(image)


def mix(cfg: DictConfig) -> Path:
    """Coarse levels of image A with fine levels of image B: sources and mix, or every cut (``hc=all``)."""
    module, path = load_module(cfg.ckpt)
    model = module.model
    hc = cfg.hc if str(cfg.hc) == "all" else int(cfg.hc)
    x_a, x_b = _source_images(module, cfg, [cfg.a]), _source_images(module, cfg, [cfg.b])
    picture = mixing_picture(model, x_a, x_b, hc)
    out = Path(cfg.out) if cfg.get("out") else Path(cfg.paths.output_dir) / f"mix_hc{hc}.png"
    save_and_log(None, picture, out, "mix")
    cuts = f"every cut hc = 0..{model.flow.num_levels}" if hc == "all" else f"hc = {hc} of 0..{model.flow.num_levels}"
    print(f"levels >= hc from A ({cfg.a}), below hc from B ({cfg.b}); {cuts}\nwrote {out.resolve()}")
    return out


def receptive_fields(cfg: DictConfig) -> Path:
    """One receptive-field map per level, with the radius that holds 90% of its mass."""
    module, path = load_module(cfg.ckpt)
    fields, picture = receptive_field_picture(module.model, cfg.num_samples, cfg.max_sites, cfg.seed)
    out = Path(cfg.out) if cfg.get("out") else Path(cfg.paths.output_dir) / "receptive_fields.png"
    save_and_log(None, picture, out, "receptive_fields")
    print(f"{'level':>5}{'radius (mean)':>15}{'radius (centre)':>17}{'sites':>7}")
    for h in range(fields.levels):
        print(f"{h:>5}{fields.radius[h]:>15.2f}{fields.radius_centre[h]:>17.2f}{fields.num_sites[h]:>7}")
    print(f"wrote {out.resolve()}")
    return out


def inpaint(cfg: DictConfig) -> Path:
    """Corrupt a box, restore it through the latents of its causal cone and through all latents."""
    module, path = load_module(cfg.ckpt)
    if cfg.mask != "box":
        raise UserError(f"mask={cfg.mask} is not a known corruption: use mask=box (with size=... and at=[row,col])")
    original = _source_images(module, cfg, [cfg.image])
    mask = box_mask(module.model.flow.image_size, cfg.size, tuple(cfg.at) if cfg.get("at") else None)
    comparison = compare_inpainting(module.model, original, mask, steps=cfg.steps, lr=cfg.lr, seed=cfg.seed)
    out = Path(cfg.out) if cfg.get("out") else Path(cfg.paths.output_dir) / "inpaint.png"
    save_and_log(None, comparison.picture, out, "inpaint")
    print(comparison.summary())
    print(f"wrote {out.resolve()}")
    return out
