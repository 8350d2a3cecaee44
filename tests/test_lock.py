"""The lock file is compiled from the declared ranges, and every install command reads it.

``requirements.txt`` and ``pyproject.toml`` declare ranges; ``requirements.lock`` pins the exact
versions that the README's two commands and ``.ci/run`` install. A range changed without
refreshing the lock fails here, naming the package.
"""

import sys
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from requirement_sets import declared_requirements, pinned_versions  # noqa: E402 (tools/ is no package)

LOCK = ROOT / "requirements.lock"
INSTALL = "python -m pip install -r requirements.lock"
BUILD_COMMAND = f"{INSTALL} && jupyter-book build --all -W -n --keep-going ."
TEST_COMMAND = f"{INSTALL} && python -m pytest --nbval-lax tests book"


def test_every_declared_range_admits_its_locked_version():
    locked = pinned_versions(LOCK)
    outside = []
    for requirement in declared_requirements():
        version = locked.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            outside.append(f"{requirement}: locked {version}")
    assert not outside, "refresh requirements.lock (README, 'Locked installs'):\n" + "\n".join(outside)


def test_every_declared_range_has_an_upper_bound_at_a_tested_version():
    """Upper bounds stop at the locked version: a fresh `pip install ntklib` gets nothing untested."""
    locked = pinned_versions(LOCK)
    unbounded = [
        str(r) for r in declared_requirements() if not any(s.operator in ("<", "<=", "==") for s in r.specifier)
    ]
    assert not unbounded, unbounded
    above_lock = [
        f"{r}: locked {locked[canonicalize_name(r.name)]}"
        for r in declared_requirements()
        if any(s.operator == "<=" and s.version != locked[canonicalize_name(r.name)] for s in r.specifier)
    ]
    assert not above_lock, above_lock


def test_the_lock_installs_the_package_itself():
    assert "-e ." in LOCK.read_text().splitlines()


def test_the_readme_commands_and_ci_install_from_the_lock():
    readme = (ROOT / "README.md").read_text().splitlines()
    assert BUILD_COMMAND in readme and TEST_COMMAND in readme
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text().splitlines(), ".ci/run runs the README's test command"
