"""The tree is clean under the project's linter, formatter and type checker.

Each test runs one tool, configured in ``pyproject.toml``, as a subprocess from the repository root
and fails with the tool's report when it finds anything. Together they take seconds (mypy's first
run about ten, later runs reuse ``.mypy_cache``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("ruff", "check", "--no-fix", "."), id="ruff-check"),
        pytest.param(("ruff", "format", "--check", "--diff", "."), id="ruff-format"),
        pytest.param(("mypy",), id="mypy"),
    ],
)
def test_tool_finds_nothing(command: tuple[str, ...]) -> None:
    result = _run(*command)
    assert result.returncode == 0, f"`{' '.join(command)}` found problems:\n{result.stdout}\n{result.stderr}"
