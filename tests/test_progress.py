"""Issue 20: long work shows a progress bar on stderr while the results keep to stdout, and grids of
small images are written at a size people can see, with their integer pixels beside them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rgflow_vision import plots
from rgflow_vision.apps import pictures
from rgflow_vision.apps import train as train_app
from rgflow_vision.lattice import report as lattice_report_module
from rgflow_vision.lattice.estimators import log_weights, log_z
from rgflow_vision.lattice.report import bulk, lattice_report

from .apps import compose_cfg, run_app

TINY_LATTICE = ["experiment=lattice_free", "model.hidden=8", "model.couplings=[1,1]"]


# -- progress ------------------------------------------------------------------------------------


def test_a_long_app_shows_its_progress_on_stderr_and_its_table_on_stdout(trained_run, tmp_path):
    _, results = trained_run
    run = run_app("receptive_fields", f"ckpt={results['last_ckpt']}", "num_samples=1", "max_sites=2",
                  f"out={tmp_path / 'rf.png'}", f"hydra.run.dir={tmp_path / 'app'}", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "receptive fields" in run.stderr and "100%" in run.stderr and "JVP" in run.stderr  # stderr is a pipe here
    assert run.stdout.splitlines()[0].split()[0] == "level" and "wrote" in run.stdout
    assert "JVP" not in run.stdout and "%|" not in run.stdout


def test_progress_false_turns_the_bar_off(trained_run, tmp_path, capsys):
    _, results = trained_run
    cfg = compose_cfg(tmp_path, f"ckpt={results['last_ckpt']}", "num_samples=1", "max_sites=2", "progress=false",
                      f"out={tmp_path / 'rf.png'}", config="receptive_fields")
    pictures.receptive_fields(cfg)
    captured = capsys.readouterr()
    assert "JVP" not in captured.err and "level" in captured.out


def test_inpainting_n_images_counts_them_on_stderr(trained_run, tmp_path, capsys):
    _, results = trained_run
    cfg = compose_cfg(tmp_path, f"ckpt={results['last_ckpt']}", "n=3", "size=4", "steps=1", f"out={tmp_path / 'i.png'}",
                      config="inpaint")
    pictures.inpaint(cfg)
    captured = capsys.readouterr()
    assert "inpainting" in captured.err and "100%" in captured.err and "masked error" in captured.out
    saved = np.load(tmp_path / "i.npz")  # every image of every method, and the masks
    assert saved["original"].shape == saved["cone"].shape == (3, 1, 16, 16) and saved["masks"].shape == (3, 16, 16)


@pytest.fixture(scope="module")
def lattice_module(tmp_path_factory):
    """An untrained tiny lattice flow: the report and the bulk view need weights, not good ones."""
    cfg = compose_cfg(tmp_path_factory.mktemp("lattice"), *TINY_LATTICE)
    return train_app.build_module(cfg, None).eval()


def test_the_lattice_report_counts_its_draws_and_they_are_the_modules_draws(lattice_module, monkeypatch, capsys):
    """Drawn chunk by chunk for the bar, from one random stream: the configurations of ``draw`` in those chunks."""
    monkeypatch.setattr(lattice_report_module, "DRAW_CHUNK", 64)
    report = lattice_report(lattice_module, 200, seed=3, show_progress=True)
    err = capsys.readouterr().err
    assert "lattice report" in err and "6/6" in err  # 4 chunks of draws, the IMH chain, the estimates
    with torch.no_grad():
        _, log_q, action, _ = lattice_module.draw(200, torch.Generator().manual_seed(3), chunk=64)
    assert report.row("ln Z (estimate)").flow[0] == pytest.approx(log_z(log_weights(log_q, action)).estimate, abs=1e-9)
    lattice_report(lattice_module, 200, seed=3)
    assert capsys.readouterr().err == ""  # off by default in the library


def test_the_bulk_hmc_bar_counts_every_trajectory_of_each_space(lattice_module, capsys):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"seed": 0, "bulk": {"chains": 2, "trajectories": 7, "step_size": 0.1, "leapfrog": 2,
                                                "target_acceptance": 0.75, "tune_rounds": 1}})
    lines, _, _ = bulk(lattice_module, cfg, show_progress=True)
    err = capsys.readouterr().err
    for space in ("latent", "field"):
        assert f"HMC in {space} space" in err
    assert err.count("17/17") >= 2  # 1 tuning round of 10 trajectories, then 7 measured, in each space
    assert len(lines) == 3


# -- pictures at display size --------------------------------------------------------------------


def digits(n: int, size: int = 16, channels: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, size, size), generator=torch.Generator().manual_seed(n))


@pytest.mark.parametrize(("n", "size", "channels", "scale"), [(64, 16, 1, 4), (9, 16, 3, 10), (64, 32, 3, 2)])
def test_a_grid_is_its_native_pixels_enlarged_by_an_integer_factor_to_512_or_more(n, size, channels, scale):
    x = digits(n, size, channels)
    native = np.asarray(plots.image_grid(x, size=None))
    shown = np.asarray(plots.image_grid(x))
    assert max(native.shape[:2]) < plots.DISPLAY_SIZE <= max(shown.shape[:2])
    assert shown.shape[:2] == (scale * native.shape[0], scale * native.shape[1])
    blocks = native.repeat(scale, axis=0).repeat(scale, axis=1)  # every pixel an s x s block, nothing blurred
    assert np.array_equal(shown, blocks)
    assert np.array_equal(native[2:2 + size, 2:2 + size], x[0].permute(1, 2, 0).squeeze(-1).numpy())


def test_a_grid_already_large_enough_is_left_pixel_for_pixel():
    x = digits(16, 128)
    assert plots.image_grid(x).size == plots.image_grid(x, size=None).size == (4 * 130 + 2,) * 2


def test_labelled_tables_are_drawn_at_display_size():
    x = digits(2)
    mixing = plots.mixing_grid(x[:1], x[1:], torch.stack([x[:1], x[1:], x[:1], x[1:]]))
    panel = plots.inpainting_panel([("corrupted", x), ("cone", x)], torch.ones(16, 16, dtype=torch.bool))
    for picture in (mixing, panel):
        assert max(picture.size) >= plots.DISPLAY_SIZE


def test_the_pixels_go_beside_the_picture(tmp_path):
    x = digits(4)
    path = plots.save_pixels(tmp_path / "grid.png", 8, samples=x, masks=torch.ones(4, 16, 16, dtype=torch.bool))
    assert path == tmp_path / "grid.npz" and not list(tmp_path.glob("*.part"))
    saved = np.load(path)
    assert saved["samples"].dtype == np.uint8 and np.array_equal(saved["samples"], x.numpy())
    assert int(saved["bits"]) == 8 and saved["masks"].all()
    assert plots.save_pixels(tmp_path / "deep.png", 12, x=4000 * torch.ones(1, 1, 2, 2, dtype=torch.long))
    assert np.load(tmp_path / "deep.npz")["x"].max() == 4000  # more than 8 bits: uint16


def test_training_writes_each_sample_grid_at_display_size_with_its_samples(trained_run):
    tmp_path, _ = trained_run
    grids = sorted((tmp_path / "run" / "samples").glob("*.png"))
    assert grids
    for png in grids:
        samples = torch.from_numpy(np.load(png.with_suffix(".npz"))["samples"].astype(np.int64))
        assert samples.shape[1:] == (1, 16, 16)
        assert np.array_equal(np.asarray(Image.open(png)), np.asarray(plots.image_grid(samples)))


def test_the_sample_and_mix_apps_write_their_pixels_beside_the_picture(trained_run, tmp_path):
    _, results = trained_run
    grid = pictures.sample(compose_cfg(tmp_path, f"ckpt={results['last_ckpt']}", "n=4", f"out={tmp_path / 's.png'}",
                                       config="sample"))
    assert np.load(grid.with_suffix(".npz"))["samples"].shape == (4, 1, 16, 16)
    mixed = pictures.mix(compose_cfg(tmp_path, f"ckpt={results['last_ckpt']}", "hc=all", f"out={tmp_path / 'm.png'}",
                                     config="mix"))
    saved = np.load(mixed.with_suffix(".npz"))
    assert saved["a"].shape == saved["b"].shape == (1, 1, 16, 16) and saved["mix"].shape == (4, 1, 1, 16, 16)
    assert max(Image.open(mixed).size) >= plots.DISPLAY_SIZE
