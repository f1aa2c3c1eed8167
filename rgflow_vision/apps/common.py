"""What every root app shares: the command line, one error path, the config resolvers, loading the
checkpoint the user named, and writing a picture."""

from __future__ import annotations

import functools
import hashlib
import netrc
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra.errors import CompactHydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
from PIL import Image

from ..allocator import use_tcmalloc
from ..errors import Interrupted, UserError
from ..training import FlowLitModule, load_module, save_and_log
from ..training.checkpoint import to_dict
from ..lightning_base import TrainingBase

# -- resolvers the configs use ------------------------------------------------------------------


def auto_precision() -> str:
    """bf16-mixed where the accelerator does bf16 matmuls fast (recent GPUs), else full float32."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def auto_workers() -> int:
    """Data-loader worker processes: 2 where a GPU computes, none where the CPU does. Workers take CPU
    time from the training threads (measured on 2 cores: README, Quality per hour)."""
    return 2 if torch.cuda.is_available() else 0


def wandb_offline() -> bool:
    """W&B runs offline unless the user is logged in (API key in the environment or ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") == "online":
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (FileNotFoundError, netrc.NetrcParseError):
        return True


def run_id(output_dir: str) -> str:
    """A stable id per run folder, so a resumed run logs into the same W&B run."""
    return hashlib.sha1(str(Path(output_dir).resolve()).encode()).hexdigest()[:12]


for _name, _fn in {"auto_precision": auto_precision, "auto_workers": auto_workers, "wandb_offline": wandb_offline,
                  "run_id": run_id}.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


# -- the command line and the one error path ----------------------------------------------------

_OVERRIDE = re.compile(r"^([+~]{0,2}[\w.\-/@]+)=(.*)$", re.DOTALL)


def quote_values_with_equals(args: list[str]) -> list[str]:
    """``key=a=b`` becomes ``key='a=b'``. Hydra's override grammar rejects a bare ``=`` in a value,
    and Lightning names checkpoints ``epoch=3-step=100.ckpt``; quoting is the only reading of it."""
    quoted = []
    for arg in args:
        match = _OVERRIDE.match(arg)
        if match and "=" in match[2] and not match[2].startswith(("'", '"')):
            quote = "'" if "'" not in match[2] else '"'
            arg = f"{match[1]}={quote}{match[2]}{quote}" if quote not in match[2] else arg
        quoted.append(arg)
    return quoted


def launch(main: Callable[[], object], allocator: bool = False) -> None:
    """Run a ``@hydra.main`` function as a root app: tcmalloc first if asked (before torch allocates),
    then the command line made readable for Hydra; a config Hydra cannot compose is one sentence."""
    if allocator:
        use_tcmalloc()
    sys.argv[1:] = quote_values_with_equals(sys.argv[1:])  # in place: DDP re-launches sys.argv
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra raises its errors here instead of printing them
    _TASK_STARTED.clear()
    try:
        main()
    except CompactHydraException as error:  # unknown key or option, unparsable override
        print(f"error: {config_message(error)}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        if _TASK_STARTED.is_set():  # the task's own OSErrors are not about the run folder
            raise
        # Hydra creates the run folder and writes its .hydra/ files before the task starts.
        print(f"error: the run folder cannot be written ({error.strerror or error}: {error.filename}): pass a "
              "folder you can write, e.g. hydra.run.dir=$HOME/rgflow-runs/run1", file=sys.stderr)
        sys.exit(2)


_TASK_STARTED = threading.Event()  # set by entry_point: Hydra has made the run folder and called the task


def config_message(error: Exception) -> str:
    """A Hydra or OmegaConf message on one line: option lists comma-separated, Hydra's search path
    and OmegaConf's key and type details dropped, and a missing value says how to give it."""
    if isinstance(error, MissingMandatoryValue) and error.full_key:
        return f"{error.full_key} has no value: pass {error.full_key}=... on the command line"
    lines: list[str] = []
    for raw in str(error).split("Config search path")[0].splitlines():
        line = raw.strip()
        if not line or line.startswith(("full_key:", "object_type=", "reference_type=")):
            continue
        if raw.startswith("\t") and lines:  # an item of the option list above it
            lines[-1] += (" " if lines[-1].endswith(":") else ", ") + line
        else:
            lines.append(line if not lines or lines[-1].endswith(".") else "; " + line)
    return " ".join(lines).replace(" ; ", "; ") or type(error).__name__


def quiet_known_warnings() -> None:
    # Advice that does not apply here: the default dataset is in memory and needs no workers.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*is smaller than the logging interval.*")
    # Deprecations inside Lightning 2.6.6 and its dependencies, not in this code.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)


def entry_point(task):
    """Wrap a Hydra task so that a :class:`UserError` is one sentence on stderr and exit status 2."""

    @functools.wraps(task)
    def wrapped(cfg):
        _TASK_STARTED.set()
        quiet_known_warnings()
        try:
            return task(cfg)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except Interrupted as error:
            print(f"interrupted: {error}", file=sys.stderr)
            sys.exit(error.status)
        except OmegaConfBaseException as error:  # a value the task reads is missing or cannot be resolved
            print(f"error: the config is invalid: {config_message(error)}", file=sys.stderr)
            sys.exit(2)

    return wrapped


@contextmanager
def config_errors(group: str) -> Iterator[None]:
    """Building ``group`` from the config: a value its constructor rejects is the user's to fix, so it
    becomes a :class:`UserError` naming the group (Hydra's instantiate wrapper removed)."""
    try:
        yield
    except UserError:
        raise
    except (InstantiationException, OmegaConfBaseException, ValueError, TypeError) as error:
        cause = error.__cause__ if isinstance(error, InstantiationException) and error.__cause__ else error
        if isinstance(cause, UserError):
            raise cause from None
        raise UserError(f"the {group} config is invalid: {config_message(cause)}") from None


def number(cfg: DictConfig, key: str, minimum: float, advice: str, integer: bool = False) -> float:
    """``cfg[key]`` if it is a number (an integer with ``integer``) of at least ``minimum``, else a UserError."""
    value = cfg.get(key)
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= minimum:  # NaN fails too
        kind = "an integer" if integer else "a number"
        raise UserError(f"{key}={value} is not {kind} of at least {minimum:g}: {advice}")
    return value


# -- checkpoints, data and pictures -------------------------------------------------------------


def load_checkpoint(cfg: DictConfig, module_class: type[TrainingBase] = FlowLitModule):
    """The module of the checkpoint the user named (``ckpt=path`` or ``ckpt=latest``) in eval mode, and its path."""
    return load_module(cfg.get("ckpt"), module_class)


def datamodule_for(module: FlowLitModule, cfg: DictConfig):
    """The checkpoint's dataset config, with the user's ``dataset.*`` overrides on top."""
    saved = module.hparams.get("dataset")
    if not saved:
        raise UserError("this checkpoint does not record its dataset: pass the dataset config, e.g. dataset=digits")
    with config_errors("dataset"):
        return instantiate(OmegaConf.merge(saved, to_dict(cfg.get("dataset"))))


def save_picture(cfg: DictConfig, picture: Image.Image, name: str) -> Path:
    """Write ``picture`` to ``cfg.out``, or to ``name`` in this app's run folder, and say where."""
    out = Path(cfg.out) if cfg.get("out") else Path(cfg.paths.output_dir) / name
    save_and_log(None, picture, out, Path(name).stem)
    print(f"wrote {out.resolve()}")
    return out
