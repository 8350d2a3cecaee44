"""The project's declared ranges and its lock, read in one place.

``tests/test_lock.py`` checks the lock against the ranges with these functions, and
``tools/check_newest.sh`` calls this file to write the ranges without their caps and to compare an
installed environment with the lock:

    python tools/requirement_sets.py uncapped              # the ranges, caps at tested versions (<=) dropped
    python tools/requirement_sets.py diff LOCK FREEZE      # packages whose version differs: locked -> installed

The ranges are the package's runtime dependencies, the extras the tests exercise (``tfds``, ``ray``)
and the lines of ``requirements.txt``; the lock is ``requirements.lock``, compiled from them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
TESTED_EXTRAS = ("tfds", "ray")
PIN = re.compile(r"([A-Za-z0-9_.\-]+)==(\S+)")


def declared_requirements(root: Path = ROOT) -> list[Requirement]:
    """Every range the lock is compiled from: the package's, its tested extras', requirements.txt's."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in TESTED_EXTRAS:
        lines += project["optional-dependencies"][extra]
    lines += [line for line in (root / "requirements.txt").read_text().splitlines() if line[:1].isalpha()]
    return [Requirement(line) for line in lines]


def pinned_versions(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of every ``name==version`` line (a lock, or ``pip freeze``)."""
    pins = (PIN.match(line) for line in Path(path).read_text().splitlines())
    return {canonicalize_name(m[1]): m[2] for m in pins if m}


def uncapped(requirement: Requirement) -> str:
    """The requirement without its caps at a tested version (``<=``); bounds written ``<`` stay."""
    kept = ",".join(str(s) for s in requirement.specifier if s.operator != "<=")
    return f"{requirement.name}{kept}"


def differences(locked: dict[str, str], installed: dict[str, str]) -> list[tuple[str, str, str]]:
    """``(name, locked, installed)`` for every package whose version differs; ``-`` where absent."""
    names = sorted((locked.keys() | installed.keys()) - {"pip"})  # pip is the installer, not locked
    rows = [(name, locked.get(name, "-"), installed.get(name, "-")) for name in names]
    return [row for row in rows if row[1] != row[2]]


def main(argv: list[str]) -> int:
    if argv[:1] == ["uncapped"] and len(argv) == 1:
        print("\n".join(uncapped(r) for r in declared_requirements()))
    elif argv[:1] == ["diff"] and len(argv) == 3:
        locked = pinned_versions(Path(argv[1]))
        rows = differences(locked, pinned_versions(Path(argv[2])))
        for name, old, new in rows:
            print(f"  {name}: {old} -> {new}")
        summary = f"{len(rows)} of {len(locked)} locked packages differ"
        print(f"  {summary}" if rows else "  none: the newest versions are the locked ones")
    else:
        print("usage: requirement_sets.py uncapped | diff LOCK FREEZE", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
