#!/usr/bin/env python
"""Write requirements/constraints.txt: the exact versions of this environment's packages that the
project needs (its dependencies from pyproject.toml, dev extra included, and theirs), as the tested
set that .ci/run installs with.

    python scripts/constraints.py        # run in the environment that passed the test suite
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(requirements: list[str]) -> dict[str, metadata.Distribution]:
    """Every installed distribution the requirements pull in, by canonical name (markers of this platform)."""
    found: dict[str, metadata.Distribution] = {}
    stack = [Requirement(r) for r in requirements]
    while stack:
        requirement = stack.pop()
        name = canonical(requirement.name)
        if name in found:
            continue
        try:
            found[name] = distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            sys.exit(f"error: {requirement.name} is not installed here: install the project first (pip install -e '.[dev]')")
        for line in distribution.requires or []:
            child = Requirement(line)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in ("", *requirement.extras)):
                stack.append(child)
    return found


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    lines = [f"{d.metadata['Name']}=={d.version}" for _, d in sorted(closure(wanted).items())]
    out = ROOT / "requirements" / "constraints.txt"
    header = (f"# The tested set: python {sys.version.split()[0]}, written by python scripts/constraints.py.\n"
              "# Install with: pip install -c requirements/constraints.txt -e \".[dev]\"\n")
    out.write_text(header + "\n".join(lines) + "\n")
    print(f"wrote {out} ({len(lines)} packages)")


if __name__ == "__main__":
    main()
