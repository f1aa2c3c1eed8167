"""sample.py, mix.py, receptive_fields.py and inpaint.py: load a checkpoint, run the analysis, write a picture."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2

from .. import analysis, plots
from ..errors import UserError
from ..training import FlowLitModule
from .common import datamodule_for, load_checkpoint, number, save_picture


def sample(cfg: DictConfig) -> Path:
    """A grid of ``n`` samples at ``temperature`` from a checkpoint; with ``split_level`` the levels
    below it are drawn at ``temperature`` and the coarser ones at ``coarse_temperature``. The integer
    samples go beside the picture, in an ``.npz`` of the same name (key ``samples``)."""
    number(cfg, "n", 1, "pass n=64 or another positive number of images", integer=True)
    for key in ("temperature", "coarse_temperature"):  # they scale the prior's noise
        number(cfg, key, 0, f"pass {key}=1 for the model, lower for smoother samples, 0 for the prior's mode")
    module, path = load_checkpoint(cfg)
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
    print(f"{cfg.n} samples at {what} from {path}")
    out = save_picture(cfg, plots.image_grid(pixels, model.pixels.bits), name)
    plots.save_pixels(out, model.pixels.bits, samples=pixels)
    return out


def source_images(module: FlowLitModule, cfg: DictConfig, specs) -> torch.Tensor:
    """Integer images ``(N, C, L, L)`` from test-split indices or image files, in the model's format."""
    model = module.model
    channels, size = model.flow.channels, model.flow.image_size
    test_set = None
    images = []
    for spec in specs:
        if isinstance(spec, int) or str(spec).lstrip("-").isdigit():
            if test_set is None:
                datamodule = datamodule_for(module, cfg)
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
    try:
        image = Image.open(path).convert("L" if channels == 1 else "RGB")
    except (FileNotFoundError, UnidentifiedImageError, OSError):
        raise UserError(f"{path} is not a readable image file: pass a PNG/JPEG path or a test-split index") from None
    shape = v2.Compose([v2.PILToTensor(), v2.Resize(size, antialias=True), v2.CenterCrop(size)])
    return shape(image)


def mix(cfg: DictConfig) -> Path:
    """Coarse levels of image A with fine levels of image B: sources and mix, or every cut (``hc=all``).
    The integer images go beside the picture, in an ``.npz`` of the same name (``a``, ``b``, ``mix``)."""
    hc = "all" if cfg.hc == "all" else number(cfg, "hc", 0, "pass hc=all or a level cut such as hc=1", integer=True)
    module, _ = load_checkpoint(cfg)
    model = module.model
    x_a, x_b = source_images(module, cfg, [cfg.a]), source_images(module, cfg, [cfg.b])
    mixes = analysis.mix_all(model, x_a, x_b, None if hc == "all" else [hc])  # (cuts, N, C, L, L)
    picture = plots.mixing_grid(x_a, x_b, mixes, bits=model.pixels.bits, labels=hc == "all")
    cuts = f"every cut hc = 0..{model.flow.num_levels}" if hc == "all" else f"hc = {hc} of 0..{model.flow.num_levels}"
    print(f"levels >= hc from A ({cfg.a}), below hc from B ({cfg.b}); {cuts}")
    out = save_picture(cfg, picture, f"mix_hc{hc}.png")
    plots.save_pixels(out, model.pixels.bits, a=x_a, b=x_b, mix=mixes)
    return out


def receptive_fields(cfg: DictConfig) -> Path:
    """One receptive-field map per level, with the radius that holds 90% of its mass."""
    number(cfg, "num_samples", 1, "pass num_samples=4 or another number of prior samples", integer=True)
    module, _ = load_checkpoint(cfg)
    fields, picture = plots.receptive_field_picture(module.model, cfg.num_samples, cfg.max_sites, cfg.seed,
                                                    show_progress=cfg.progress)
    print(f"{'level':>5}{'radius (mean)':>15}{'radius (centre)':>17}{'sites':>7}")
    for h in range(fields.levels):
        print(f"{h:>5}{fields.radius[h]:>15.2f}{fields.radius_centre[h]:>17.2f}{fields.num_sites[h]:>7}")
    return save_picture(cfg, picture, "receptive_fields.png")


def inpaint(cfg: DictConfig) -> dict:
    """Corrupt boxes of test images with noise and restore them: the classical fills, the cone (its
    MAP and, with ``samples``, the median of posterior samples), all latents.

    With ``n``: the first ``n`` test-split images, one box each, a table and
    ``inpaint_metrics.json``; without: the one ``image`` (index or file). Both draw a picture of the
    first 8, and write every image of every method, and the masks, in an ``.npz`` beside it.
    One image with ``samples``: also its completions drawn from the posterior, ``inpaint_samples.png``.
    """
    number(cfg, "size", 1, "pass the side of the box in pixels, e.g. size=8", integer=True)
    number(cfg, "steps", 0, "pass a number of optimisation steps, e.g. steps=150", integer=True)
    number(cfg, "samples", 0, "pass a number of posterior chains per image, e.g. samples=8 (0: the MAP only)",
           integer=True)
    number(cfg, "sampler_steps", 1, "pass a number of Langevin steps per chain, e.g. sampler_steps=30", integer=True)
    number(cfg, "burn_in", 0, "pass a number of steps that adapt the step size, e.g. burn_in=15", integer=True)
    number(cfg, "spread", 0, "pass a noise level in pixel levels for the chains' own starts, e.g. spread=48")
    if cfg.samples and cfg.burn_in >= cfg.sampler_steps:
        raise UserError(f"burn_in={cfg.burn_in} leaves no samples: pass burn_in below "
                        f"sampler_steps={cfg.sampler_steps}")
    if cfg.start not in ("harmonic", "biharmonic", "telea"):
        raise UserError(f"start={cfg.start} is not a classical fill: pass start=biharmonic, harmonic or telea")
    if cfg.start == "telea" and not analysis.telea_available():
        raise UserError("start=telea needs OpenCV: pip install opencv-python-headless, or pass start=biharmonic")
    if cfg.get("n") is not None:
        number(cfg, "n", 1, "pass n=200 or another positive number of test images", integer=True)
    if cfg.mask != "box":
        raise UserError(f"mask={cfg.mask} is not a known corruption: use mask=box (with size=... and at=...)")
    at = cfg.at if cfg.at is not None else ("random" if cfg.get("n") is not None else "centre")
    at = at if isinstance(at, str) else list(at)
    if isinstance(at, str) and at not in ("random", "centre"):
        raise UserError(f"at={at} is not a position: pass at=random, at=centre or at=[row,col]")
    module, path = load_checkpoint(cfg)
    if cfg.get("n") is not None:
        original = _test_images(module, cfg, cfg.n)
    else:
        original = source_images(module, cfg, [cfg.image])
    evaluation = analysis.evaluate_inpainting(module.model, original, cfg.size, at, cfg.seed,
                                              batch_size=cfg.batch_size, steps=cfg.steps, lr=cfg.lr,
                                              start=cfg.start, compare_all=cfg.compare_all, samples=cfg.samples,
                                              sampler={"steps": cfg.sampler_steps, "burn_in": cfg.burn_in,
                                                       "spread": cfg.spread},
                                              show_progress=cfg.progress)
    metrics = {**evaluation.metrics, "checkpoint": str(path), "steps": cfg.steps, "lr": cfg.lr, "samples": cfg.samples,
               **({"sampler_steps": cfg.sampler_steps, "burn_in": cfg.burn_in, "spread": cfg.spread}
                  if cfg.samples else {})}
    print(plots.inpainting_table(metrics))
    out = save_picture(cfg, plots.inpainting_picture(evaluation), "inpaint.png")
    plots.save_pixels(out, module.model.pixels.bits, **evaluation.images, masks=evaluation.masks)
    if cfg.samples and cfg.get("n") is None:  # beside the main picture, wherever that went
        drawn = out.with_name("inpaint_samples.png")
        plots.inpainting_samples_picture(evaluation).save(drawn)
        print(f"wrote {drawn.resolve()}")
    report = out.with_name("inpaint_metrics.json")
    report.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {report.resolve()}")
    return metrics


def _test_images(module: FlowLitModule, cfg: DictConfig, n: int) -> torch.Tensor:
    """The first ``n`` images of the checkpoint's test split."""
    datamodule = datamodule_for(module, cfg)
    datamodule.setup("test")
    if n > len(datamodule.test_set):
        raise UserError(f"n={n} is more than the {len(datamodule.test_set)} images of the test split: "
                        f"pass n={len(datamodule.test_set)} or fewer")
    return torch.stack([datamodule.test_set[i] for i in range(n)]).to(module.device)
