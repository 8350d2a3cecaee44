"""ntklib as a package: the sdist and the wheel build, pass twine's check, and the wheel runs alone.

The dists are built with ``python -m build --no-isolation`` (the backend is the locked setuptools,
so nothing downloads), the wheel from the sdist, as ``build`` does by default: a file missing from
the sdist fails the wheel. The wheel is installed with ``--no-deps`` into a throwaway virtualenv
that sees this environment's packages (jax, flax, ...) only through a path file. That file lists
this environment's site-packages as a plain directory, so Python runs none of the ``.pth`` files
there, and the editable install's import hook, which maps ``ntklib`` to the source tree, never
loads. The throwaway venv cannot import ntklib before the wheel is in, and imports it from its own
site-packages after.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib

import ntklib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]
MODULES = sorted(path.name for path in (ROOT / "ntklib").glob("*.py"))

PROOF = """
import importlib.metadata, json, sys
import ntklib, ntklib.experiment
print(json.dumps({
    "ntklib": ntklib.__file__,
    "experiment": ntklib.experiment.__file__,
    "version": ntklib.__version__,
    "metadata": str(importlib.metadata.distribution("ntklib").locate_file("")),
    "meta_path": [type(finder).__module__ for finder in sys.meta_path],
    "sys_path": sys.path,
}))
"""


def run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command without PYTHONPATH/PYTHONHOME, so only the interpreter's own paths count."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(list(map(str, command)), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{' '.join(result.args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    ok(run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT, cwd=out))
    (sdist,), (wheel,) = list(out.glob("*.tar.gz")), list(out.glob("*.whl"))
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="module")
def wheel_venv(dists, tmp_path_factory) -> Path:
    """A virtualenv with the wheel installed (no deps) and this environment's site-packages after it."""
    venv = tmp_path_factory.mktemp("wheel_venv")
    ok(run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv))
    python = venv / "bin" / "python"
    site = Path(ok(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=venv)).strip())
    parent = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    path_file = site / "parent-environment.pth"  # directories only: no line of it is executed
    path_file.write_text("\n".join(parent) + "\n")
    missing = run(python, "-c", "import ntklib", cwd=venv)
    assert missing.returncode != 0 and "ModuleNotFoundError" in missing.stderr, "ntklib importable before the wheel"
    path_file.unlink()  # pip must not see this environment's ntklib while it installs
    pip = (sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", dists["wheel"])
    ok(run(*pip, cwd=venv))
    path_file.write_text("\n".join(parent) + "\n")
    return venv


def test_version_is_single_sourced_from_the_package_metadata():
    assert ntklib.__version__ == version("ntklib") == VERSION
    source = (ROOT / "ntklib" / "__init__.py").read_text()
    assert VERSION not in source, "the version is typed only in pyproject.toml"


def test_the_changelog_has_a_section_for_this_version():
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings[0] == ("Unreleased", ""), "Keep a Changelog: [Unreleased] first"
    assert headings[1][0] == VERSION and headings[1][1], f"the newest release section is {headings[1]}, not {VERSION}"


def test_twine_check_passes_on_the_sdist_and_the_wheel(dists):
    report = ok(run(sys.executable, "-m", "twine", "check", "--strict", dists["sdist"], dists["wheel"], cwd=ROOT))
    assert report.count("PASSED") == 2, report


def test_the_wheel_holds_every_module_and_nothing_else(dists):
    info = f"ntklib-{VERSION}.dist-info/"
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = wheel.namelist()
        record = {line.split(",")[0] for line in wheel.read(info + "RECORD").decode().splitlines()}
        entry_points = wheel.read(info + "entry_points.txt").decode()
    assert record == set(names), "RECORD lists exactly the wheel's files"
    assert sorted(n.removeprefix("ntklib/") for n in names if n.startswith("ntklib/")) == MODULES
    strays = [n for n in names if not (n.startswith("ntklib/") or n.startswith(info))]
    assert not strays, f"files outside the package: {strays}"
    assert not [n for n in names if re.match(r"(tests|book|results|bench|tools)/", n)]
    assert re.search(r"^ntk-collapse = ntklib\.experiment:main$", entry_points, re.M), entry_points


def test_the_sdist_holds_the_sources_the_wheel_is_built_from(dists):
    top = f"ntklib-{VERSION}/"
    with tarfile.open(dists["sdist"]) as sdist:
        names = {name.removeprefix(top) for name in sdist.getnames()}
    assert {f"ntklib/{module}" for module in MODULES} <= names
    assert {"pyproject.toml", "README.md", "LICENSE", "PKG-INFO"} <= names
    assert not [n for n in names if re.match(r"(tests|book|results|bench|tools)/", n)]


def test_the_wheel_runs_alone_in_a_clean_virtualenv(wheel_venv):
    """ntklib and its command line come from the wheel, not from the source tree."""
    proof = json.loads(ok(run(wheel_venv / "bin" / "python", "-c", PROOF, cwd=wheel_venv)).splitlines()[-1])
    for key in ("ntklib", "experiment", "metadata"):
        path = Path(proof[key]).resolve()
        assert path.is_relative_to(wheel_venv.resolve()), f"{key} from {path}, not from the throwaway venv"
        assert not path.is_relative_to(ROOT), f"{key} from the source tree: {path}"
    assert proof["version"] == VERSION
    assert not [m for m in proof["meta_path"] if "editable" in m], proof["meta_path"]
    assert sysconfig.get_path("purelib") in proof["sys_path"], "this environment's packages are visible"


def test_ntk_collapse_help_is_python_m_ntklib_experiment_help(wheel_venv):
    script = ok(run(wheel_venv / "bin" / "ntk-collapse", "--help", cwd=wheel_venv))
    module = ok(run(wheel_venv / "bin" / "python", "-m", "ntklib.experiment", "--help", cwd=wheel_venv))
    assert script == module
    assert "{run,sweep,plot}" in script, script


def test_ntk_collapse_exits_with_mains_return_code(wheel_venv):
    """The script is sys.exit(main()): a user error exits 2 with the module's one-line message."""
    missing = wheel_venv / "no_such_run"
    script = run(wheel_venv / "bin" / "ntk-collapse", "plot", missing, "--out", "fig", cwd=wheel_venv)
    module = run(
        wheel_venv / "bin" / "python", "-m", "ntklib.experiment", "plot", missing, "--out", "fig", cwd=wheel_venv
    )
    assert script.returncode == module.returncode == 2, (script.stderr, module.stderr)
    assert script.stderr == module.stderr and "no such path" in script.stderr, script.stderr
