"""tcmalloc for the apps and the benchmark: glibc's malloc fragments under RG-Flow's allocation
pattern (README, "Speed and memory")."""

from __future__ import annotations

import glob
import os
import sys


def tcmalloc_path() -> str | None:
    """The installed ``libtcmalloc_minimal.so.4`` (Debian: ``apt-get install libtcmalloc-minimal4``), or None."""
    found = [*sorted(glob.glob("/usr/lib/*/libtcmalloc_minimal.so.4")), *glob.glob("/usr/lib/libtcmalloc_minimal.so.4")]
    return found[0] if found else None


def with_tcmalloc(env: dict[str, str]) -> dict[str, str]:
    """``env`` with tcmalloc added to ``LD_PRELOAD`` when it is installed and not there yet."""
    preload = env.get("LD_PRELOAD", "")
    path = tcmalloc_path()
    if path is None or "tcmalloc" in preload:
        return dict(env)
    return {**env, "LD_PRELOAD": ":".join(filter(None, [path, preload]))}


def use_tcmalloc() -> None:
    """Re-run this process with tcmalloc preloaded when it is installed and not already in use;
    ``RGFLOW_ALLOCATOR=system`` keeps glibc. Call it first thing, before torch allocates."""
    if os.environ.get("RGFLOW_ALLOCATOR", "tcmalloc") != "tcmalloc":
        return
    env = with_tcmalloc(dict(os.environ))
    if env.get("LD_PRELOAD") != os.environ.get("LD_PRELOAD"):
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
