"""Hydra plumbing shared by the root apps: resolvers, the allocator, and user-error handling."""

from __future__ import annotations

import functools
import glob
import hashlib
import netrc
import os
import sys
import warnings
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ..errors import UserError


def auto_precision() -> str:
    """bf16-mixed where the accelerator does bf16 matmuls fast (recent GPUs), else full float32."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


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


def to_dict(node) -> dict:
    """A config node as a plain, resolved dict (what modules save as hyperparameters); ``{}`` for None."""
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def register_resolvers() -> None:
    for name, fn in {"auto_precision": auto_precision, "wandb_offline": wandb_offline, "run_id": run_id}.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def use_tcmalloc() -> None:
    """Re-run this process with tcmalloc preloaded when it is installed and not already in use.

    glibc's malloc fragments under RG-Flow's allocation pattern: measured peak memory at batch 64
    is 2.7 GiB with tcmalloc and 6.0 GiB without. ``RGFLOW_ALLOCATOR=system`` keeps glibc.
    """
    if os.environ.get("RGFLOW_ALLOCATOR", "tcmalloc") != "tcmalloc" or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    found = sorted(glob.glob("/usr/lib/*/libtcmalloc_minimal.so.4"))
    if found:
        env = {**os.environ, "LD_PRELOAD": ":".join(filter(None, [found[0], os.environ.get("LD_PRELOAD")]))}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


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
        quiet_known_warnings()
        try:
            return task(cfg)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapped


register_resolvers()
