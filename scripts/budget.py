#!/usr/bin/env python
"""Quality per compute: train a configuration for a fixed wall-clock budget, report steps and test bpd.

    python scripts/budget.py --seconds 600 dataset=mnist dataset.root=data/mnist-9k dataset.download=false \
        dataset.val_size=500 model.hidden=64 model.num_res_blocks=1 "model.couplings=[2]" --json budget.json

Everything after the options is a Hydra override of conf/train.yaml, as for train.py. The run is
train.py's own path (rgflow_vision.apps.train.train) with Lightning's ``max_time`` set to the budget
and ``max_epochs`` out of the way, so the same steps, validation epochs, checkpoints and test
happen as in a real run; the budget covers fitting (validation included), not the final test. What
is not part of the measurement is turned off: the sample grids and hierarchy pictures, the loggers
(and with them the learning-rate monitor) and the progress bar. With ``optim.cosine`` the learning
rate follows the wall clock down to ``optim.min_lr_ratio`` at the end of the budget (``max_epochs`` is
set far out, so time runs out first); the report gives the final learning rate.

The report is one line (steps, steps/s, test bpd, the CPU: model, bf16 matrix units, torch threads)
and, with ``--json PATH``, the same as JSON with the overrides.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from rgflow_vision.allocator import use_tcmalloc
from rgflow_vision.apps import common, train
from rgflow_vision.errors import UserError
from rgflow_vision.hardware import cpu_info, describe_cpu

ROOT = Path(__file__).resolve().parents[1]
PICTURE_CALLBACKS = ("sample_grid", "hierarchy")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, required=True, help="wall-clock budget for fitting")
    parser.add_argument("--json", type=Path, help="also write the report here as JSON")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    return parser.parse_args(argv)


def budget_config(seconds: int, overrides: list[str]) -> DictConfig:
    """conf/train.yaml with the user's overrides, bounded by ``seconds`` and stripped of what is not measured."""
    stamp = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{os.getpid()}"  # runs started side by side get their own folders
    # Outside @hydra.main there is no Hydra run folder: the paths train.py would get are given here.
    defaults = [f"paths.output_dir={Path.cwd() / 'outputs' / 'budget' / stamp}",
                f"paths.data_dir={Path.cwd() / 'data'}"]
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("train", overrides=[*defaults, *common.quote_values_with_equals(overrides)])
    with open_dict(cfg):
        minutes, secs = divmod(seconds, 60)
        hours, minutes = divmod(minutes, 60)
        cfg.trainer.max_time = f"{hours // 24:02d}:{hours % 24:02d}:{minutes:02d}:{secs:02d}"  # Lightning's DD:HH:MM:SS
        cfg.trainer.max_epochs = 1_000_000
        cfg.trainer.max_steps = -1
        cfg.trainer.enable_progress_bar = False
        cfg.test = True
        cfg.logger = {}
        for name in PICTURE_CALLBACKS:
            (cfg.get("callbacks") or {}).pop(name, None)
    return cfg


def report(seconds: int, results: dict, overrides: list[str]) -> dict:
    steps = results["global_step"]
    return {"budget_s": seconds, "steps": steps, "fit_s": round(results["fit_seconds"], 2),
            "steps_per_s": round(steps / results["fit_seconds"], 3), "test_bpd": results["test/bpd"],
            "final_lr": results["final_lr"],
            **cpu_info(), "overrides": overrides, "run_dir": str(results["run_dir"].resolve())}


def fit(args: argparse.Namespace) -> dict:
    if args.seconds < 1:
        raise UserError(f"--seconds {args.seconds} is not a budget: give at least 1 second")
    return train.train(budget_config(args.seconds, args.overrides))


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    results = common.entry_point(fit)(args)  # train.py's error path: one sentence, exit status 2
    out = report(args.seconds, results, args.overrides)
    print(f"budget {out['budget_s']} s: {out['steps']} steps in {out['fit_s']:.1f} s "
          f"({out['steps_per_s']:.2f} steps/s), "
          f"test bpd {out['test_bpd']:.4f} | {describe_cpu(out)}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    use_tcmalloc()  # as train.py does: re-runs this process with tcmalloc before torch allocates
    main(sys.argv[1:])
