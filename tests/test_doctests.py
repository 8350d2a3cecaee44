"""Every runnable example in ntklib's docstrings runs and prints what it shows, and every module
whose docstrings have an ``Example:`` (or ``Examples:``) section runs at least one of them.

An example that cannot run on a CPU in seconds (it needs a trained network, a dataset, a GPU) is
marked illustrative with ``# doctest: +SKIP`` on each of its lines; skipped examples are not run,
so a module whose examples are all illustrative needs one more that runs.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import ntklib

MODULES = sorted(f"ntklib.{info.name}" for info in pkgutil.iter_modules(ntklib.__path__))

EXAMPLE_SECTION = re.compile(r"^\s*Examples?:\s*$", re.MULTILINE)
"""A Google-style ``Example:`` / ``Examples:`` heading on a line of its own."""

_DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def example_sections(name: str) -> list[str]:
    """The qualified names of the objects of module ``name`` whose docstring has an Example section,
    read from the source with ``ast`` (``"<module>"`` for the module's own docstring)."""
    path = Path(ntklib.__path__[0]) / f"{name.removeprefix('ntklib.')}.py"
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, _DEFINITIONS):
                qualified = f"{prefix}{child.name}"
                if EXAMPLE_SECTION.search(ast.get_docstring(child) or ""):
                    found.append(qualified)
                visit(child, f"{qualified}.")

    tree = ast.parse(path.read_text())
    if EXAMPLE_SECTION.search(ast.get_docstring(tree) or ""):
        found.append("<module>")
    visit(tree, "")
    return found


def test_modules_found() -> None:
    assert "ntklib.block_kernel" in MODULES and len(MODULES) >= 10


def test_example_sections_are_found() -> None:
    assert "residual_of" in example_sections("ntklib.dynamics")
    assert "<module>" in example_sections("ntklib.ntk") and "resolve_loop" in example_sections("ntklib.ntk")
    assert example_sections("ntklib.idx") == []


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed (see stdout)"
    sections = example_sections(name)
    assert result.attempted > 0 or not sections, (
        f"{name} has Example sections ({', '.join(sections)}) but runs no example: "
        "every one is skipped or empty; add one that runs on a CPU in seconds"
    )
