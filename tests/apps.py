"""Running the apps as users do: real configs from conf/, tiny models and limits, the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ["model.hidden=16", "model.num_res_blocks=1", "model.couplings=[2,1]"]
QUICK = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "trainer.enable_progress_bar=false", "callbacks.sample_grid.n=4", "dataset.batch_size=16"]
# The optimizer settings of conf/train.yaml (their one home), for modules built without a config.
OPTIM = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "train.yaml").optim)


def compose_cfg(tmp_path: Path, *overrides: str, config: str = "train") -> DictConfig:
    """A real config from conf/, writing under ``tmp_path`` and reading data from ``tmp_path/data``."""
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config, overrides=[f"paths.output_dir={tmp_path / 'run'}",
                                         f"paths.data_dir={tmp_path / 'data'}", *overrides])
    return cfg


def run_app(app: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RGFLOW_ALLOCATOR": "system", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, str(ROOT / f"{app}.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
