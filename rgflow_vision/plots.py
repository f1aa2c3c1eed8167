"""Every figure, one renderer per concept, as a ``PIL.Image.Image``: image grids, receptive
fields, mixing grids, inpainting panels, the latent correlations of a lattice flow. Drawn on
matplotlib's Agg canvas directly (no pyplot, so no global backend switch or figure registry).

The renderers take plain tensors; ``*_picture`` run the analysis on a model, then render. Integer
images are ``(B, C, L, L)`` with ``C`` 1 or 3 and values ``0 .. 2**bits - 1``. Grids of such small
images are drawn at a display size: enlarged by nearest neighbour, by an integer factor, to at
least :data:`DISPLAY_SIZE` pixels (a 16x16 digit is a speck on a screen otherwise); the pixels
themselves go beside the PNG with :func:`save_pixels`. :func:`save` writes a PNG atomically. Uses
the analysis tools, not Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from PIL import Image
from torchvision.utils import make_grid

from . import analysis
from .model import RGFlowModel


DISPLAY_SIZE = 512  # pixels: the longer side of a grid of small images, at least


def display_scale(width: int, height: int, size: int = DISPLAY_SIZE) -> int:
    """The smallest integer factor that brings the longer side of ``width x height`` to ``size`` pixels or more."""
    return max(1, math.ceil(size / max(width, height)))


def enlarge(image: Image.Image, size: int | None = DISPLAY_SIZE) -> Image.Image:
    """``image`` enlarged by nearest neighbour, each pixel an ``s x s`` block with the integer ``s`` of
    :func:`display_scale` (so no pixel is blurred or resampled unevenly); ``size=None``: unchanged."""
    scale = display_scale(*image.size, size) if size else 1
    return image if scale == 1 else image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def image_grid(pixels: torch.Tensor, bits: int = 8, nrow: int | None = None, padding: int = 2,
               size: int | None = DISPLAY_SIZE) -> Image.Image:
    """``(N, C, L, L)`` integer pixels in ``0 .. 2**bits - 1`` as one PIL image (grey or RGB), tiled
    ``nrow`` to a row with white ``padding``, then enlarged to ``size`` pixels (:func:`enlarge`;
    ``size=None``: pixel for pixel)."""
    images = pixels.detach().float().cpu() / (2**bits - 1)
    grid = make_grid(images, nrow=nrow or max(1, round(len(images) ** 0.5)), padding=padding, pad_value=1.0)
    array = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return enlarge(Image.fromarray(array[..., 0] if pixels.shape[1] == 1 else array), size)


def _write_atomically(path: str | Path, write) -> Path:
    """``write(file)`` into a temporary file beside ``path``, then renamed: an interrupted write leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with open(partial, "wb") as file:  # a file object: numpy would append .npz to a name
        write(file)
    partial.replace(path)
    return path


def save(image: Image.Image, path: str | Path) -> Path:
    """Write ``image`` as PNG, atomically."""
    return _write_atomically(path, lambda file: image.save(file, format="PNG"))


def save_pixels(path: str | Path, bits: int = 8, **batches: torch.Tensor) -> Path:
    """The integer images behind a picture at ``path``, as ``path`` with ``.npz`` for ``.png``: one array per
    keyword (e.g. ``(N, C, L, L)`` pixels; masks as 0/1), uint8 up to 8 bits, else uint16, and ``bits``.
    ``numpy.load`` reads it."""
    dtype = np.uint8 if bits <= 8 else np.uint16
    arrays = {name: x.detach().cpu().numpy().astype(dtype) for name, x in batches.items()}
    return _write_atomically(Path(path).with_suffix(".npz"),
                             lambda file: np.savez_compressed(file, bits=np.array(bits), **arrays))


def receptive_field_figure(
    maps: torch.Tensor,
    radii: Sequence[float] | None = None,
    centre: tuple[int, int] | None = None,
    title: str | None = None,
    log_scale: bool = True,
) -> Image.Image:
    """One panel per level of ``maps`` ``(H, L, L)`` (e.g. ``ReceptiveFields.mean_maps``), each
    scaled to its own maximum, with the radius (if given) drawn as a circle around ``centre``
    (default ``(L//2, L//2)``, where the analysis puts the latent). ``log_scale`` shows three
    decades below the maximum: the latent's own pixel dominates a linear scale."""
    maps = maps.detach().double().cpu()
    levels, size = maps.shape[0], maps.shape[-1]
    cy, cx = centre if centre is not None else (size // 2, size // 2)
    fig = Figure(figsize=(2.2 * levels, 2.6 if title else 2.4), dpi=100)
    for h in range(levels):
        ax = fig.add_subplot(1, levels, h + 1)
        peak = float(maps[h].max())
        norm = LogNorm(vmin=peak * 1e-3, vmax=peak, clip=True) if log_scale and peak > 0 else None
        ax.imshow(maps[h].numpy(), cmap="magma", norm=norm, interpolation="nearest")
        label = f"level {h}"
        if radii is not None:
            ax.add_patch(Circle((cx, cy), radii[h], fill=False, color="cyan", linewidth=1))
            label += f"\nr = {radii[h]:.1f}"
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return _to_pil(fig)


def mixing_grid(
    x_a: torch.Tensor, x_b: torch.Tensor, mixes: torch.Tensor, bits: int = 8, cuts: Sequence[int] | None = None,
    labels: bool = True,
) -> Image.Image:
    """Rows: A, B, then the mix at each cut (``mixes[k]`` at ``cuts[k]``, default ``hc = 0, 1, ..``, as
    from ``mix_all``); one column per image of the batch. ``labels=False``: the bare pixel grid
    at the images' own resolution, no axes."""
    if not labels:
        return image_grid(torch.cat([x_a, x_b, *mixes]), bits, nrow=len(x_a))
    cuts = range(len(mixes)) if cuts is None else cuts
    rows = [("A", x_a), ("B", x_b)] + [(f"hc={hc}", m) for hc, m in zip(cuts, mixes, strict=True)]
    return _image_table(rows, bits, by="row")


def inpainting_panel(columns, mask: torch.Tensor | None = None, bits: int = 8) -> Image.Image:
    """One row per image, one labelled column per ``(name, images)`` pair (e.g. corrupted |
    harmonic | cone | original), and the mask (``(L, L)`` or ``(B, L, L)``) last if given."""
    columns = list(columns)
    if mask is not None:
        batch, top = columns[0][1].shape[0], 2**bits - 1
        m = mask.bool().cpu().expand(batch, *mask.shape[-2:])[:, None]
        columns.append(("mask", m.long() * top))
    return _image_table(columns, bits, by="column")


def _image_table(groups, bits, by):
    """Tile labelled ``(B, C, L, L)`` batches: one labelled row (or column) per group."""
    top = 2**bits - 1
    batch = groups[0][1].shape[0]
    images = []
    for _, x in groups:
        x = x.detach().cpu().double() / top
        images.append(x.clamp(0, 1).expand(-1, 3, -1, -1) if x.shape[1] == 1 else x.clamp(0, 1))
    if by == "row":
        tiles, nrow = torch.cat(images), batch
    else:  # image b of every group side by side
        tiles, nrow = torch.stack(images, dim=1).flatten(0, 1), len(groups)
    pad = 2
    grid = make_grid(tiles, nrow=nrow, padding=pad, pad_value=1.0)
    # At display size, each pixel an s x s block drawn one to one on the canvas: axes placed by hand
    # (in inches at `dpi`) to the enlarged grid's exact size, the labels in the margin.
    scale = display_scale(grid.shape[2], grid.shape[1])
    array = grid.permute(1, 2, 0).numpy().repeat(scale, axis=0).repeat(scale, axis=1)
    dpi = 100
    height, width = array.shape[0] / dpi, array.shape[1] / dpi  # inches
    left, bottom = (0.8, 0.1) if by == "row" else (0.3, 0.7)  # room for the row / the slanted column labels
    fig = Figure(figsize=(left + width + 0.1, bottom + height + 0.1), dpi=dpi)
    fig_width, fig_height = fig.get_size_inches()
    ax = fig.add_axes((left / fig_width, bottom / fig_height, width / fig_width, height / fig_height))
    ax.imshow(array, interpolation="nearest")
    size = images[0].shape[-1] + pad
    ticks = [(pad + size * k + (size - pad - 1) / 2 + 0.5) * scale - 0.5 for k in range(len(groups))]
    labels = [name for name, _ in groups]
    if by == "row":
        ax.set_yticks(ticks, labels, fontsize=8)
        ax.set_xticks([])
    else:
        ax.set_xticks(ticks, labels, fontsize=8, rotation=30)
        ax.set_yticks([])
    ax.tick_params(length=0)
    return _to_pil(fig, tight=False)


def _to_pil(fig: Figure, tight: bool = True) -> Image.Image:
    canvas = FigureCanvasAgg(fig)
    if tight:  # off where the axes were placed by hand
        fig.tight_layout()
    canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1).convert("RGB")


# -- the analysis of a model, drawn -------------------------------------------------------------


def receptive_field_picture(
    model: RGFlowModel, num_samples: int = 4, max_sites: int | None = 16, seed: int = 0, show_progress: bool = False
) -> tuple[analysis.ReceptiveFields, Image.Image]:
    """The receptive fields of ``model`` (seeded prior samples) and their figure; ``show_progress``: a bar on stderr."""
    fields = analysis.receptive_fields(model.flow, model.prior, num_samples=num_samples, max_sites=max_sites,
                                       generator=torch.Generator().manual_seed(seed), show_progress=show_progress)
    title = f"receptive fields (mean over sites, {int(100 * fields.mass)}% mass radius)"
    return fields, receptive_field_figure(fields.mean_maps, fields.radius, fields.centre, title=title)


def mixing_picture(model: RGFlowModel, x_a: torch.Tensor, x_b: torch.Tensor, hc: int | str = "all") -> Image.Image:
    """Sources and mixes: every cut, labelled, with ``hc="all"``; else the one cut ``hc`` as bare pixels."""
    mixes = analysis.mix_all(model, x_a, x_b, None if hc == "all" else [hc])
    return mixing_grid(x_a, x_b, mixes, bits=model.pixels.bits, labels=hc == "all")


INPAINT_COLUMNS = ("corrupted", "harmonic", "biharmonic", "telea", "cone", "posterior", "all", "original")
INPAINT_LABELS = {"harmonic": "harmonic fill", "biharmonic": "biharmonic", "telea": "Telea (OpenCV)",
                  "cone": "cone", "posterior": "median", "all": "all latents"}


def inpainting_picture(evaluation: analysis.InpaintEvaluation, count: int = 8, columns=INPAINT_COLUMNS) -> Image.Image:
    """The first ``count`` images of an inpainting evaluation, one row each, one column per method it
    has (of ``columns``), the mask last."""
    names = {"all": "all latents", "posterior": "median"}
    present = [c for c in columns if c in evaluation.images]
    return inpainting_panel([(names.get(c, c), evaluation.images[c][:count]) for c in present],
                            evaluation.masks[:count])


def inpainting_samples_picture(evaluation: analysis.InpaintEvaluation, image: int = 0) -> Image.Image:
    """Completions of one corruption drawn from the posterior: the corrupted image, the samples,
    their per-pixel median and the original, in one labelled row."""
    samples = evaluation.samples[image]
    columns = [("corrupted", evaluation.images["corrupted"][image : image + 1])]
    columns += [(f"sample {k + 1}", s[None]) for k, s in enumerate(samples)]
    columns += [("median", evaluation.images["posterior"][image : image + 1]),
                ("original", evaluation.images["original"][image : image + 1])]
    return inpainting_panel(columns, evaluation.masks[image : image + 1])


def inpainting_table(metrics: dict) -> str:
    """An inpainting evaluation as the app prints it: every method it ran, the classical fills first."""
    rows = [f"{'':<15}{'masked error':>13}{'latents/image':>15}{'seconds/image':>15}"]
    for name in ("corrupted", "harmonic", "biharmonic", "telea"):
        if name in metrics:
            rows.append(f"{INPAINT_LABELS.get(name, name):<15}{metrics[name]:>13.2f}")
    for name in ("cone", "posterior", "all"):
        if name in metrics:
            rows.append(f"{INPAINT_LABELS[name]:<15}{metrics[name]:>13.2f}{metrics[name + '_latents']:>15.0f}"
                        f"{metrics['seconds_' + name]:>15.2f}")
    where = metrics["at"] if isinstance(metrics["at"], str) else f"at {metrics['at']}"
    best = metrics.get("best_classical")
    if best and "posterior" in metrics:
        rows.append(f"(median against {best}: {100 * (metrics['posterior'] / metrics[best] - 1):+.1f}%, "
                    f"better on {100 * metrics[f'posterior_beats_{best}']:.0f}% of the images, "
                    f"equal on {100 * metrics[f'posterior_ties_{best}']:.0f}%)")
    median = "; median: per pixel, of posterior samples of them, its seconds with its MAP" * ("posterior" in metrics)
    rows.append(f"({metrics['n']} image(s), {metrics['size']}x{metrics['size']} noise box {where}, seed "
                f"{metrics['seed']}; masked error: mean |restored - original| over the box, in pixel levels; "
                f"cone: the MAP through the cone latents{median})")
    return "\n".join(rows)


def bulk_correlation_picture(results, title: str | None = None) -> Image.Image:
    """``|corr|`` (log scale, left) and ``corr`` (right) of latent pairs against their distance, one line per
    :class:`~rgflow_vision.lattice.BulkCorrelations` (a dict of them is labelled by its keys), with the
    independent-sample noise floor."""
    if not isinstance(results, dict):
        results = {results.metric if results.levels is None else f"levels {results.levels}": results}
    fig = Figure(figsize=(10, 4), dpi=100)
    ax_abs, ax_signed = fig.subplots(1, 2)
    metric = "distance"
    for label, res in results.items():
        metric = f"{res.metric} distance"
        distance = res.distance.numpy()
        ax_abs.semilogy(distance, res.abs_correlation.clamp_min(1e-12).numpy(), "o-", ms=3, label=str(label))
        ax_signed.plot(distance, res.correlation.numpy(), "o-", ms=3, label=str(label))
    noise = max(res.noise for res in results.values())
    ax_abs.axhline(math.sqrt(2 / math.pi) * noise, color="gray", ls="--", lw=1, label="independent-sample floor")
    ax_signed.axhline(0.0, color="gray", lw=0.8)
    ax_abs.set(xlabel=metric, ylabel="mean |corr(z_s, z_t)|")
    ax_signed.set(xlabel=metric, ylabel="mean corr(z_s, z_t)")
    ax_abs.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _to_pil(fig)


# -- the lattice figures of docs/lattice.md (scripts/lattice_figures.py draws them from the JSON reports) ------


# Metropolis and the reweighted flow look the same in every lattice figure
MC_STYLE = dict(fmt="s--", color="black", mfc="none", label="Metropolis")
FLOW_LABEL = "flow, reweighted"


def _value_error(pair) -> tuple[float, float]:
    """A ``(value, error)`` pair as floats; ``None`` (JSON's null) or a missing error as NaN."""
    if pair is None:
        return math.nan, math.nan
    value, error = pair
    return (math.nan if value is None else float(value)), (math.nan if error is None else float(error))


def phase_diagram_picture(points, title: str | None = None) -> Image.Image:
    """``chi`` (log scale, left) and ``<|M|>/V`` (right) against ``kappa``: the flow (reweighted, error bars,
    ESS/N written small beside each point) and Metropolis. ``points``: dicts with ``kappa``, ``chi_flow``,
    ``absm_flow``, ``chi_mc``, ``absm_mc`` (each ``(value, error)`` or ``None`` where not measured) and
    ``ess`` (ESS/N of the flow, or ``None``)."""
    points = sorted(points, key=lambda p: p["kappa"])
    fig = Figure(figsize=(10, 4), dpi=100)
    ax_chi, ax_m = fig.subplots(1, 2)
    for ax, key in ((ax_chi, "chi"), (ax_m, "absm")):
        for source, style in (("mc", MC_STYLE),
                              ("flow", dict(fmt="o-", color="tab:blue", label=FLOW_LABEL))):
            kept = [(p["kappa"], *_value_error(p.get(f"{key}_{source}"))) for p in points]
            kept = [row for row in kept if math.isfinite(row[1])]
            if kept:
                k, v, e = (np.array(c) for c in zip(*kept))
                ax.errorbar(k, v, yerr=np.nan_to_num(e), ms=4, capsize=2, lw=1, **style)
        if key == "chi":  # ESS/N beside the flow's chi: where the reweighting can be trusted
            for p in points:
                v, _ = _value_error(p.get("chi_flow"))
                if p.get("ess") is not None and math.isfinite(v):
                    ax.annotate(f"{p['ess']:.2g}", (p["kappa"], v), xytext=(4, -10), textcoords="offset points",
                                fontsize=7, color="tab:blue")
    ax_chi.set_yscale("log")
    ax_chi.set(xlabel="kappa", ylabel="chi = <|M|^2>/V")
    ax_chi.set_title("ESS/N beside each flow point", fontsize=8)
    ax_m.set(xlabel="kappa", ylabel="<|M|>/V")
    ax_chi.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _to_pil(fig)


def two_point_picture(flow_g, mc_g, size: int, title: str | None = None) -> Image.Image:
    """``G(r)``, ``r = 0 .. L/2``, of the flow (reweighted) against Metropolis, log scale (non-positive values
    are left out), and below it the pull ``(flow - MC) / sigma`` with ``sigma`` the two errors in quadrature.
    ``flow_g``, ``mc_g``: ``(values, errors)``, each a sequence of at least ``L/2 + 1``."""
    n = size // 2 + 1
    (fv, fe), (mv, me) = ((np.asarray(v, float)[:n], np.asarray(e, float)[:n]) for v, e in (flow_g, mc_g))
    r = np.arange(n)
    fig = Figure(figsize=(6, 5.5), dpi=100)
    ax, ax_pull = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for v, e, style in ((mv, me, MC_STYLE),
                        (fv, fe, dict(fmt="o", color="tab:blue", label=FLOW_LABEL))):
        shown = v > 0
        lower = np.minimum(e[shown], 0.999 * v[shown])  # a log axis has no room below zero
        ax.errorbar(r[shown], v[shown], yerr=[lower, e[shown]], ms=4, capsize=2, lw=1, **style)
    ax.set_yscale("log")
    positive = np.concatenate([fv[fv > 0], mv[mv > 0]])
    if positive.size:  # error bars reaching zero would stretch the axis over decades: cut them at the data
        ax.set_ylim(bottom=0.3 * positive.min())
    ax.set(ylabel="G(r)")
    ax.legend(fontsize=8)
    pull = (fv - mv) / np.hypot(fe, me)
    ax_pull.axhspan(-1, 1, color="0.9")
    ax_pull.axhline(0, color="gray", lw=0.8)
    ax_pull.plot(r, pull, "o", color="tab:blue", ms=4)
    ax_pull.set(xlabel="r (lattice units, along an axis)", ylabel="pull (sigma)")
    if title:
        ax.set_title(title, fontsize=10)
    return _to_pil(fig)


def fit_bulk_distance(distance, correlation, floor: float) -> dict:
    """The bulk distance read off the latent correlations: ``C ~ exp(-(D - d0) / xi)``, fitted as the least-squares
    line ``D = d0 - xi ln C`` through the pairs ``(D, C)`` with ``C > 2 floor`` (above the noise). Returns
    ``d0``, ``xi``, ``rms`` (the residual ``D - (d0 - xi ln C)``, root mean square over the pairs used) and ``used``
    (a boolean array); ``d0``, ``xi``, ``rms`` are NaN with fewer than two distinct distances above the floor."""
    d, c = np.asarray(distance, float), np.asarray(correlation, float)
    used = np.isfinite(c) & (c > 2 * floor)
    if len(np.unique(d[used])) < 2:
        return {"d0": math.nan, "xi": math.nan, "rms": math.nan, "used": used}
    design = np.stack([np.ones(used.sum()), -np.log(c[used])], axis=1)
    (d0, xi), *_ = np.linalg.lstsq(design, d[used], rcond=None)
    residual = d[used] - design @ np.array([d0, xi])
    return {"d0": float(d0), "xi": float(xi), "rms": float(np.sqrt(np.mean(residual**2))), "used": used}


def bulk_geometry_picture(curves, title: str | None = None) -> Image.Image:
    """Is the tree distance the bulk distance the correlations see? Left: the distance ``d = d0 - xi ln C`` fitted
    (:func:`fit_bulk_distance`) against the tree distance ``D``, with ``d = D``; right: ``ln C`` against ``D`` with the
    fitted line. ``curves``: label -> ``(tree distances, mean latent correlations, noise floor)``. Pairs at or below
    twice the floor are drawn hollow and left out of the fit."""
    fig = Figure(figsize=(10, 4.2), dpi=100)
    ax_d, ax_c = fig.subplots(1, 2)
    top = 0.0
    for k, (label, (distance, correlation, floor)) in enumerate(curves.items()):
        colour = f"C{k}"
        d, c = np.asarray(distance, float), np.asarray(correlation, float)
        fit = fit_bulk_distance(d, c, floor)
        used, positive = fit["used"], c > 0
        top = max(top, float(d.max(initial=0)))
        ax_c.plot(d[used], np.log(c[used]), "o", color=colour, ms=4, label=str(label))
        ax_c.plot(d[positive & ~used], np.log(c[positive & ~used]), "o", color=colour, mfc="none", ms=4)
        ax_c.axhline(math.log(2 * floor), color=colour, ls=":", lw=0.8)
        if math.isfinite(fit["xi"]):
            ax_d.plot(d[used], fit["d0"] - fit["xi"] * np.log(c[used]), "o", color=colour, ms=4,
                      label=f"{label}: d0 = {fit['d0']:.2f}, xi = {fit['xi']:.2f}, rms {fit['rms']:.2f}")
            line = np.linspace(d[used].min(), d[used].max(), 2)
            ax_c.plot(line, (fit["d0"] - line) / fit["xi"], "-", color=colour, lw=1)
        else:
            ax_d.plot([], [], "o", color=colour, label=f"{label}: fewer than 2 distances above 2x floor")
    ax_d.plot([0, top], [0, top], color="gray", lw=1, ls="--", label="d = D")
    ax_d.set(xlabel="tree distance D", ylabel="bulk distance d = d0 - xi ln C")
    ax_c.set(xlabel="tree distance D", ylabel="ln C (mean latent correlation)")
    ax_c.set_title("dotted: 2x noise floor; hollow: left out of the fit", fontsize=8)
    ax_d.legend(fontsize=7)
    ax_c.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _to_pil(fig)


HMC_TAUS = (("tau |M|^2/V", "|M|^2"), ("tau phi2", "phi^2"))  # bulk-entry key, label


def hmc_tau_picture(rows, title: str | None = None) -> Image.Image:
    """HMC in latent space against field space: the autocorrelation time ``tau`` of ``|M|^2/V`` and ``phi^2`` in
    trajectories (left) and in seconds, ``tau`` times the seconds per trajectory (right), grouped by ``label``.
    ``rows``: dicts with ``label`` and ``latent``, ``field``, each a bulk entry of ``lattice_report.json``
    (``tau |M|^2/V``, ``tau phi2`` as ``(value, error)``, ``seconds_per_trajectory``)."""
    fig = Figure(figsize=(10, 4), dpi=100)
    ax_traj, ax_sec = fig.subplots(1, 2)
    bars = [(space, key, name) for key, name in HMC_TAUS for space in ("latent", "field")]
    width = 0.8 / len(bars)
    x = np.arange(len(rows))
    for b, (space, key, name) in enumerate(bars):
        colour = "tab:blue" if space == "latent" else "tab:orange"
        hatch = "" if key == HMC_TAUS[0][0] else "//"
        tau = np.array([_value_error(row[space][key]) for row in rows])
        seconds = np.array([float(row[space].get("seconds_per_trajectory") or math.nan) for row in rows])
        where = x + (b - (len(bars) - 1) / 2) * width
        for ax, scale in ((ax_traj, 1.0), (ax_sec, seconds)):
            ax.bar(where, tau[:, 0] * scale, width, yerr=np.nan_to_num(tau[:, 1] * scale), capsize=2, color=colour,
                   hatch=hatch, edgecolor="white", label=f"{space}: {name}")
    for ax, unit in ((ax_traj, "trajectories"), (ax_sec, "seconds")):
        ax.set_xticks(x, [str(row["label"]) for row in rows])
        ax.set(ylabel=f"tau ({unit})")
    ax_traj.legend(fontsize=8)
    ax_sec.set_yscale("log")  # a latent trajectory pays for the flow: the two spaces differ by orders of magnitude
    ax_sec.set_title("tau x seconds per trajectory (log scale)", fontsize=8)
    if title:
        fig.suptitle(title)
    return _to_pil(fig)
