"""Issue 21: the four physics figures of the lattice slice, each one command from JSON reports. Here on small
fake inputs: the pictures, the bulk-distance fit, scripts/lattice_mc.py's JSON and scripts/lattice_figures.py."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from rgflow_vision import plots
from rgflow_vision.apps import train as train_app
from rgflow_vision.lattice.report import _finite, bulk

from .apps import compose_cfg

pytestmark = pytest.mark.usefixtures("one_thread")  # lattice_mc.py sets one thread; the fixture puts it back

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_drawn(image: Image.Image, size: tuple[int, int]) -> None:
    assert image.size == size
    assert len(image.getcolors(maxcolors=1 << 20)) > 1  # not blank


# -- the pictures ----------------------------------------------------------------------------------


def test_the_phase_diagram_draws_flow_and_metropolis_points_and_skips_what_is_missing():
    points = [{"kappa": k, "chi_flow": (10 * k, 0.1), "absm_flow": None, "chi_mc": (10 * k, 0.05),
               "absm_mc": (k, 0.01), "ess": 0.3} for k in (0.2, 0.4, 0.6)]
    points.append({"kappa": 0.5, "chi_mc": (5.0, 0.1), "absm_mc": (0.5, 0.01)})  # Metropolis only
    assert_drawn(plots.phase_diagram_picture(points, "phase"), (1000, 400))


def test_the_two_point_picture_draws_g_and_its_pulls_even_with_non_positive_values():
    g = np.exp(-np.arange(9) / 2)
    flow = (np.append(g[:-1], -1e-4), np.full(9, 1e-3))  # the last value noise below zero: left off the log axis
    assert_drawn(plots.two_point_picture(flow, (g, np.full(9, 1e-3)), 16, "G(r)"), (600, 550))


def test_the_bulk_fit_recovers_d0_and_xi_and_leaves_out_the_pairs_below_twice_the_floor():
    d0, xi, floor = 1.5, 2.0, 1e-3
    distance = np.arange(1.0, 15.0)
    correlation = np.exp(-(distance - d0) / xi)
    correlation[distance > 12] = 1.5 * floor  # at the noise: would bend the line if used
    fit = plots.fit_bulk_distance(distance, correlation, floor)
    assert fit["d0"] == pytest.approx(d0, abs=1e-9) and fit["xi"] == pytest.approx(xi, abs=1e-9)
    assert fit["rms"] == pytest.approx(0.0, abs=1e-9)
    assert fit["used"].tolist() == (distance <= 12).tolist()


def test_the_bulk_fit_needs_two_distances_above_the_floor():
    fit = plots.fit_bulk_distance([1.0, 2.0, 3.0], [0.5, 1e-4, 1e-4], 1e-3)
    assert math.isnan(fit["xi"]) and fit["used"].sum() == 1


def test_the_bulk_geometry_picture_draws_each_curve_with_its_fit():
    distance = np.arange(1.0, 9.0)
    curves = {"massive": (distance, np.exp(-distance / 1.0), 1e-3),
              "critical": (distance, np.exp(-distance / 3.0), 1e-3),
              "noise": (distance, np.full(8, 1e-3), 1e-3)}  # nothing to fit: said in the legend
    assert_drawn(plots.bulk_geometry_picture(curves, "bulk"), (1000, 420))


def test_the_hmc_picture_draws_tau_in_trajectories_and_in_seconds():
    def space(tau, seconds):
        return {"tau |M|^2/V": (tau, 0.1 * tau), "tau phi2": (tau / 3, 0.1), "seconds_per_trajectory": seconds}

    rows = [{"label": f"L={size}", "latent": space(2.0, 0.02 * size), "field": space(6.0, 0.001 * size)}
            for size in (16, 32)]
    assert_drawn(plots.hmc_tau_picture(rows, "hmc"), (1000, 400))


# -- scripts/lattice_mc.py out= ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def mc_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("mc") / "mc.json"
    script("lattice_mc").main(["size=4", "chains=8", "therm=20", "sweeps=40", "runs=2", "progress=0", f"out={out}"])
    return out


def test_lattice_mc_writes_g_of_r_to_half_the_lattice_with_g0_equal_to_phi2(mc_report):
    report = json.loads(mc_report.read_text())
    assert report["action"] == "complex_phi4(kappa=0.6, lam=1.145)" and report["size"] == 4
    assert len(report["two_point"]) == len(report["two_point_err"]) == 4 // 2 + 1
    # G(0) is <phi^2> on every configuration, so the two estimates agree to rounding
    assert report["two_point"][0] == pytest.approx(report["phi2"], rel=1e-12)
    assert report["two_point_err"][0] == pytest.approx(report["phi2_err"], rel=1e-9)
    assert report["absm_err"] > 0 and report["seconds"] > 0
    assert len(report["per_run"]) == 2
    for run in report["per_run"]:
        assert run["absm"][0] ** 2 * 16 <= run["chi"][0]  # <|M|>^2 <= <|M|^2>, V = 16
        assert run["therm_over_tau"] == pytest.approx(20 / run["tau_int"][0])


# -- scripts/lattice_figures.py, end to end ------------------------------------------------------------


def flow_report(kappa: float, size: int = 4, **extra) -> dict:
    """What lattice.py writes, the keys the figures read."""
    g = [1.4 * math.exp(-r / 2) for r in range(size // 2 + 1)]
    return {"action": f"complex_phi4(kappa={kappa:g}, lam=1.145)", "size": size, "ess": 0.4, "chi": 20 * kappa,
            "chi_err": 0.5, "phi2": g[0], "phi2_err": 0.01, "two_point": g, "two_point_err": [0.01] * len(g), **extra}


@pytest.fixture(scope="module")
def bulk_summary(tmp_path_factory):
    """The bulk entry of an untrained tiny flow's report, through JSON as lattice.py writes it."""
    module = train_app.build_module(compose_cfg(tmp_path_factory.mktemp("lattice"), "experiment=lattice_free",
                                                "model.hidden=8", "model.couplings=[1,1]"), None).eval()
    cfg = OmegaConf.create({"seed": 0, "bulk": {"chains": 2, "trajectories": 5, "step_size": 0.1, "leapfrog": 2,
                                                "target_acceptance": 0.75, "tune_rounds": 1}})
    lines, summary, correlations = bulk(module, cfg)
    assert "ms per trajectory" in lines[0] and "ms per trajectory" in lines[1]
    return json.loads(json.dumps(_finite(summary))), correlations


def test_the_bulk_entry_has_the_production_hmc_timing_and_the_correlation_curve(bulk_summary):
    summary, correlations = bulk_summary
    for space in ("latent", "field"):
        entry = summary[space]
        assert entry["seconds"] > 0 and entry["seconds_per_trajectory"] == pytest.approx(entry["seconds"] / 5)
    curve = summary["correlations"]
    assert curve["distance"] == correlations.distance.tolist() and curve["noise"] == correlations.noise
    assert len(curve["correlation"]) == len(curve["abs_correlation"]) == len(curve["distance"])


def test_each_figure_is_one_command_on_the_reports(tmp_path, mc_report, bulk_summary, capsys):
    figures = script("lattice_figures")
    for kappa in (0.5, 0.6):
        (tmp_path / f"flow_k{kappa}.json").write_text(json.dumps(flow_report(kappa)))
    bulk_report = tmp_path / "bulk.json"
    bulk_report.write_text(json.dumps({**flow_report(0.6), "bulk": bulk_summary[0]}))

    out = figures.main(["phase", f"flow={tmp_path}/flow_k*.json", f"mc={mc_report}", f"out={tmp_path}/phase.png"])
    assert_drawn(Image.open(out), (1000, 400))
    assert "no <|M|>/V" in capsys.readouterr().out  # the flow reports lack absm: said, and Metropolis's drawn
    out = figures.main(["two_point", f"flow={tmp_path}/flow_k0.6.json", f"mc={mc_report}", f"out={tmp_path}/g.png"])
    assert_drawn(Image.open(out), (600, 550))
    out = figures.main(["bulk", f"massive={bulk_report}", f"critical={bulk_report}", f"out={tmp_path}/bulk.png"])
    assert_drawn(Image.open(out), (1000, 420))
    out = figures.main(["hmc", f"reports={bulk_report},{bulk_report}", "labels=L=4,L=8", f"out={tmp_path}/hmc.png"])
    assert_drawn(Image.open(out), (1000, 400))


def test_the_phase_diagram_refuses_reports_at_different_lattice_sizes(tmp_path):
    for size in (4, 8):
        (tmp_path / f"flow_L{size}.json").write_text(json.dumps(flow_report(0.3 + size / 100, size)))
    with pytest.raises(SystemExit, match="L = 8"):
        script("lattice_figures").main(["phase", f"flow={tmp_path}/flow_L*.json", f"out={tmp_path}/p.png"])
