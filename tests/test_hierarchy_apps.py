"""The hierarchy apps from a trained checkpoint: mixing, receptive fields, inpainting."""

from __future__ import annotations

import pytest
from PIL import Image

from rgflow_vision.errors import UserError
from rgflow_vision.apps import pictures

from .apps import compose_cfg, run_app, run_script


def app_cfg(tmp_path, trained_run, app, *overrides):
    _, results = trained_run
    return compose_cfg(tmp_path, f"ckpt={results['last_ckpt']}", f"out={tmp_path / 'out.png'}", *overrides,
                       config=app)


def test_mix_every_cut_writes_sources_and_one_row_per_cut(tmp_path, trained_run):
    out = pictures.mix(app_cfg(tmp_path, trained_run, "mix", "hc=all"))
    single = pictures.mix(app_cfg(tmp_path, trained_run, "mix", "hc=1", f"out={tmp_path / 'one.png'}"))
    assert Image.open(out).size[1] > Image.open(single).size[1]  # rows: A, B and the cuts 0..H


def test_mix_takes_image_files_as_sources(tmp_path, trained_run):
    Image.new("L", (40, 30), 200).save(tmp_path / "a.png")
    out = pictures.mix(app_cfg(tmp_path, trained_run, "mix", "hc=2", f"a={tmp_path / 'a.png'}", "b=3"))
    assert Image.open(out).size == (10 * (16 + 4), 10 * (3 * 16 + 4 * 2))  # A, B, mix; enlarged 10x


@pytest.mark.parametrize(
    ("overrides", "message"),
    [(["hc=7"], "hc"), (["a=100000"], "outside the test split"), (["b=/no/such.png"], "not a readable image")],
)
def test_mix_rejects_bad_input_with_one_sentence(tmp_path, trained_run, overrides, message):
    with pytest.raises(UserError, match=message):
        pictures.mix(app_cfg(tmp_path, trained_run, "mix", *overrides))


def test_receptive_fields_app_prints_a_radius_per_level(tmp_path, trained_run, capsys):
    pictures.receptive_fields(app_cfg(tmp_path, trained_run, "receptive_fields", "num_samples=1", "max_sites=2"))
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[0] == "level" and [row.split()[0] for row in table[1:4]] == ["0", "1", "2"]
    assert Image.open(tmp_path / "out.png").width > 200


def test_inpaint_app_compares_the_cone_with_all_latents(tmp_path, trained_run, capsys):
    metrics = pictures.inpaint(app_cfg(tmp_path, trained_run, "inpaint", "size=4", "steps=3"))
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line}
    cone, everything = int(rows["cone"][2]), int(rows["all"][3])
    assert cone == metrics["cone_latents"] == 48 * 2 + 16 < everything == 16 * 16  # 48 per level below the top
    assert Image.open(tmp_path / "out.png").height > 16


def test_inpaint_app_evaluates_n_test_images_and_writes_the_metrics(tmp_path, trained_run):
    import json

    metrics = pictures.inpaint(app_cfg(tmp_path, trained_run, "inpaint", "n=5", "size=4", "at=random", "steps=2"))
    saved = json.loads((tmp_path / "inpaint_metrics.json").read_text())
    keys = {"n", "size", "corrupted", "harmonic", "cone", "all", "cone_latents", "all_latents", "seconds_cone",
            "seconds_all"}
    assert keys <= set(saved) and saved["n"] == 5 and saved["size"] == 4 and saved["at"] == "random"
    assert saved == json.loads(json.dumps(metrics))
    assert saved["harmonic"] < saved["corrupted"] and saved["cone_latents"] < saved["all_latents"] == 256


@pytest.mark.parametrize(("overrides", "message"), [(["size=40"], "does not fit"), (["mask=blob"], "mask=box"),
                                                   (["at=[14,14]"], "leaves the"), (["at=corner"], "at=random"),
                                                   (["n=0"], "positive number"), (["n=100000"], "more than the"),
                                                   (["n=2", "size=0"], "size=0")])
def test_inpaint_rejects_bad_input(tmp_path, trained_run, overrides, message):
    with pytest.raises(UserError, match=message):
        pictures.inpaint(app_cfg(tmp_path, trained_run, "inpaint", *overrides))


@pytest.mark.parametrize(("app", "args"), [("mix", ["hc=1"]), ("inpaint", ["size=4", "steps=2"]),
                                           ("receptive_fields", ["num_samples=1", "max_sites=2"])])
def test_each_hierarchy_script_reads_its_config_and_writes_its_picture(tmp_path, trained_run, app, args):
    """mix.py, inpaint.py, receptive_fields.py as typed, run in this process (a new one adds only imports)."""
    _, results = trained_run
    result = run_script(app, f"ckpt={results['last_ckpt']}", *args, f"hydra.run.dir={tmp_path / app}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote" in result.stdout and any((tmp_path / app).glob("*.png"))


def test_a_bad_hierarchy_app_input_exits_2_with_one_sentence(tmp_path, trained_run):
    """A real process: the exit status and stderr a user sees."""
    _, results = trained_run
    result = run_app("mix", f"ckpt={results['last_ckpt']}", "hc=9", f"hydra.run.dir={tmp_path / 'mix'}", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "hc" in result.stderr
