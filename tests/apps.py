"""Running the apps as users do: real configs from conf/, tiny models and limits, the CPU."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import runpy
import subprocess
import sys
from pathlib import Path
from unittest import mock

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
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


APP_ENV = {"RGFLOW_ALLOCATOR": "system", "WANDB_MODE": "disabled"}


def run_app(app: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python <app>.py args`` in a new interpreter: the exit status and stderr exactly as a user sees them.
    Each one pays the interpreter's start and the imports (about 4-10 s); see :func:`run_script`."""
    return subprocess.run([sys.executable, str(ROOT / f"{app}.py"), *args], cwd=cwd, env={**os.environ, **APP_ENV},
                          capture_output=True, text=True, timeout=600)


def run_script(app: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python <app>.py args`` in this process: the same script run as ``__main__`` (its ``@hydra.main``,
    its error path, its exit status), without a new interpreter and its imports. Returns what
    :func:`run_app` returns. Hydra's global state, the root logger Hydra configures, ``sys.argv``, the
    environment and the working directory are put back afterwards, so later tests start clean."""
    script = str(ROOT / f"{app}.py")
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    status = 0
    with (mock.patch.object(sys, "argv", [script, *args]), mock.patch.dict(os.environ, APP_ENV),
          contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err)):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exit_:  # what the interpreter would turn into the exit status
            if isinstance(exit_.code, str):
                print(exit_.code, file=sys.stderr)
            status = 1 if isinstance(exit_.code, str) else exit_.code or 0
        finally:
            GlobalHydra.instance().clear()
            HydraConfig.instance().cfg = None
            for handler in root.handlers:
                if handler not in handlers:  # Hydra's job log: its console and its file
                    handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)
    return subprocess.CompletedProcess([script, *args], status, out.getvalue(), err.getvalue())
