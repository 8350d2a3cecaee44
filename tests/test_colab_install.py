"""The Colab install cell (cell 0 of every chapter): one canonical source, and its logic run with a
simulated preinstalled JAX and a fake pip that records commands instead of installing."""

import json
import sys
import types
from pathlib import Path

import jax  # noqa: F401  imported before google.colab is faked: jax's debugger would import google.colab.output
import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
CANONICAL = ROOT / "book" / "colab_install.py"
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def cell_zero(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))["cells"][0]


def load_cell(source: str | None = None) -> dict:
    """Execute the cell off Colab ("google.colab" not imported): it only defines its functions."""
    namespace: dict = {"__name__": "colab_cell"}
    exec(compile(source or CANONICAL.read_text(encoding="utf-8"), str(CANONICAL), "exec"), namespace)  # noqa: S102
    return namespace


class FakePip:
    """Records each command, and the constraints file's lines at the time it ran."""

    def __init__(self):
        self.commands, self.constraints = [], []

    def __call__(self, command):
        self.commands.append(list(command))
        if "-c" in command:
            path = command[command.index("-c") + 1]
            self.constraints.append(Path(path).read_text().split())


def versions(**installed):
    """installed_version(name) from keyword arguments (dashes spelled as underscores)."""
    return lambda name: installed.get(name.replace("-", "_"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_chapter_starts_with_the_canonical_cell(path):
    cell = cell_zero(path)
    source = "".join(cell["source"])
    assert cell["cell_type"] == "code" and "remove-cell" in cell["metadata"].get("tags", []), path.name
    assert source == CANONICAL.read_text(encoding="utf-8").rstrip("\n"), (
        f"cell 0 of {path.name} differs from book/colab_install.py; run python tests/update_colab_cells.py"
    )


def test_constants_agree_with_the_repository_config_and_the_package():
    cell = load_cell()
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert cell["REPOSITORY_URL"] == config["repository"]["url"]
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    (jax_requirement,) = [d for d in deps if d.replace(" ", "").startswith(("jax>", "jax<", "jax=", "jax["))]
    assert jax_requirement.replace(" ", "") == "jax" + cell["JAX_RANGE"]


def test_off_colab_the_cell_installs_nothing(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    calls = []
    monkeypatch.setattr("subprocess.run", lambda *a, **k: calls.append(a))
    load_cell()
    assert calls == []


def test_jax_in_range_is_kept_with_constraints():
    cell, pip = load_cell(), FakePip()
    installed = versions(jax="0.7.2", jaxlib="0.7.2", jax_cuda12_plugin="0.7.2", jax_cuda12_pjrt="0.7.2")
    cell["install_ntklib"](installed, pip, True)
    assert len(pip.commands) == 1
    (command,) = pip.commands
    assert command[-1] == f"ntklib @ git+{cell['REPOSITORY_URL']}"
    assert not any(arg.startswith("jax") for arg in command)  # nothing asks for another jax
    assert sorted(pip.constraints[0]) == sorted(
        ["jax==0.7.2", "jaxlib==0.7.2", "jax-cuda12-plugin==0.7.2", "jax-cuda12-pjrt==0.7.2"]
    )


def test_only_installed_jax_distributions_are_pinned():
    cell, pip = load_cell(), FakePip()
    cell["install_ntklib"](versions(jax="0.10.1", jaxlib="0.10.1"), pip, False)
    assert sorted(pip.constraints[0]) == ["jax==0.10.1", "jaxlib==0.10.1"]


@pytest.mark.parametrize("version", ["0.6.2", "0.10.3", "0.12.0", "0.4.35", None])
@pytest.mark.parametrize("gpu", [True, False])
def test_jax_out_of_range_or_absent_is_installed_within_the_range(version, gpu):
    cell, pip = load_cell(), FakePip()
    cell["install_ntklib"](versions(jax=version, jaxlib=version), pip, gpu)
    (command,) = pip.commands
    wanted = ("jax[cuda12]" if gpu else "jax") + cell["JAX_RANGE"]
    assert wanted in command and "-c" not in command
    assert command[-1] == f"ntklib @ git+{cell['REPOSITORY_URL']}"
    assert pip.constraints == []


def test_range_boundaries():
    cell = load_cell()
    for version, kept in (("0.7.0", True), ("0.10.2", True), ("0.6.9", False), ("0.10.3", False)):
        pip = FakePip()
        cell["install_ntklib"](versions(jax=version), pip, True)
        assert ("-c" in pip.commands[0]) == kept, version


def test_backend_warning_only_for_a_gpu_runtime_on_the_cpu():
    warn = load_cell()["backend_warning"]
    assert "WARNING" in warn("cpu", True)
    assert warn("gpu", True) is None and warn("cpu", False) is None


def test_gpu_runtime_detection():
    detect = load_cell()["gpu_runtime"]
    assert detect({"COLAB_GPU": "1"}, lambda _: None)
    assert detect({}, lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    assert not detect({}, lambda _: None) and not detect({"COLAB_GPU": "0"}, lambda _: None)


@pytest.mark.parametrize("colab_gpu", ["1", ""])
def test_on_colab_the_cell_installs_and_reports_the_backend(monkeypatch, capsys, colab_gpu):
    """The whole cell as Colab runs it, with subprocess.run faked: this CPU's jax is in range."""
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setenv("COLAB_GPU", colab_gpu)
    monkeypatch.setattr("shutil.which", lambda _: None)
    calls = []
    monkeypatch.setattr("subprocess.run", lambda command, **kwargs: calls.append(command))
    load_cell()
    out, err = capsys.readouterr()
    assert len(calls) == 1 and "-c" in calls[0]
    assert "backend cpu" in out
    assert ("WARNING" in err) == (colab_gpu == "1")
