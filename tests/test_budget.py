"""scripts/budget.py: a tiny budget on the bundled digits runs through the training app and reports."""

from __future__ import annotations

import json
import math

from rgflow_vision.hardware import cpu_info, describe_cpu

from .apps import TINY_MODEL, run_app, run_script


def test_budget_reports_steps_and_bpd(tmp_path):
    out = tmp_path / "budget.json"
    proc = run_script("scripts/budget", "--seconds", "3", "--json", str(out), "dataset=digits", "dataset.batch_size=16",
                      "optim.warmup_steps=0", *TINY_MODEL, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["steps"] > 0 and report["steps_per_s"] > 0
    assert math.isfinite(report["test_bpd"]) and 0 < report["test_bpd"] < 16
    assert report["final_lr"] < 0.3e-3  # the cosine ran down with the clock from 1e-3 towards 0.05e-3
    assert isinstance(report["avx512_bf16"], bool) and report["torch_threads"] >= 1
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("budget 3 s: ") and "test bpd" in line and report["cpu"] in line
    # The pictures and loggers are off: the run folder holds checkpoints only.
    (run,) = (tmp_path / "outputs" / "budget").iterdir()
    assert [p.name for p in run.iterdir()] == ["checkpoints"]


def test_budget_rejects_no_budget(tmp_path):
    """A real process (the run above is the script in this process): the exit status and stderr a user sees."""
    proc = run_app("scripts/budget", "--seconds", "0", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: --seconds 0 is not a budget: give at least 1 second"]


def test_cpu_info_reads_bf16_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 amx_bf16 avx512_bf16\n"
                       "processor\t: 1\nmodel name\t: Some CPU\nflags\t\t: fpu avx2\n")
    info = cpu_info(cpuinfo)
    assert info["cpu"] == "Some CPU" and info["avx512_bf16"] and info["amx_bf16"]
    assert "bf16 matrix units (avx512_bf16, amx_bf16)" in describe_cpu(info)
    assert not cpu_info(tmp_path / "missing")["amx_bf16"]
