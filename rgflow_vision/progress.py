"""One progress bar for every long task: tqdm (which Lightning installs), on stderr.

stdout keeps the apps' tables and the lines they print, so ``python lattice.py > report.txt`` still
shows the bar and writes only the report. Where stderr is not a terminal, tqdm's own convention
holds: the bar is redrawn with carriage returns at most every ``mininterval`` seconds. tqdm's
environment variables change the defaults for every bar, Lightning's too: ``TQDM_DISABLE=1`` turns
them off, ``TQDM_MININTERVAL=30`` thins a log file. The apps also take ``progress=false``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm


def progress(iterable: Iterable | None = None, desc: str | None = None, total: float | None = None,
             enabled: bool = True, unit: str = "it", **options) -> tqdm:
    """A tqdm bar on stderr over ``iterable`` (or a manual one: ``total`` and ``.update(k)``), off when
    ``enabled`` is false. It closes itself at the end of the iterable, or use it as a context manager."""
    if not enabled:  # only then, so that TQDM_DISABLE still works on the bars that are enabled
        options["disable"] = True
    return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, **options)


def write(line: str) -> None:
    """Print ``line`` on stdout without tearing an open bar (tqdm lifts it and redraws it below)."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()  # a log file sees each line when it is written
