"""The floors of ntklib's import graph, read from the source with ``ast`` (nothing is imported).

- The theory modules (the block-kernel dynamics, the invariant, the collapse metrics and the block
  statistics of a kernel) import from ntklib only :mod:`ntklib.block_kernel`.
- :mod:`ntklib.block_kernel`, the NTK engine :mod:`ntklib.ntk`, the run directory
  :mod:`ntklib.rundir` and the networks :mod:`ntklib.models` import nothing from ntklib.
- The import graph of ntklib has no cycle.

Every import counts, at any depth of a file (inside a function or an ``if TYPE_CHECKING:`` too).
A module of these lists that does not exist (yet) is left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ntklib"

THEORY = ("dynamics", "invariant", "collapse", "kernel_stats", "linearised")
"""Modules of the paper's theory, and the measured NTK read as a linear model: they build on the
block kernel alone."""

THEORY_MAY_IMPORT = {"block_kernel"}

FLOORS = ("block_kernel", "ntk", "rundir", "models", "epochs", "book")
"""Modules that import nothing from ntklib."""


def ntklib_imports(path: Path) -> set[str]:
    """The ntklib modules (short names, ``"data"`` for ``ntklib.data``) that the file imports.

    ``import ntklib.a``, ``from ntklib.a import x``, ``from ntklib import a`` and the relative
    ``from . import a`` / ``from .a import x`` all count as importing ``a``.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("ntklib.")}
        elif isinstance(node, ast.ImportFrom) and node.level <= 1:
            relative = "ntklib" + (f".{node.module}" if node.module else "")
            module = relative if node.level == 1 else node.module or ""
            if module == "ntklib":  # from ntklib import a, b
                found |= {alias.name for alias in node.names}
            elif module.startswith("ntklib."):
                found.add(module.split(".")[1])
    return found


def import_graph() -> dict[str, set[str]]:
    """{module: the ntklib modules it imports} over every module of the package but ``__init__``."""
    modules = {path.stem: path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    return {name: ntklib_imports(path) & modules.keys() for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, …, a]``, or None (depth-first search)."""
    done: set[str] = set()
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in stack:
            return [*stack[stack.index(node) :], node]
        if node in done:
            return None
        stack.append(node)
        for child in sorted(graph.get(node, ())):
            cycle = visit(child)
            if cycle:
                return cycle
        stack.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


GRAPH = import_graph()


def test_the_package_is_read() -> None:
    assert {"block_kernel", "dynamics", "ntk", "models", "measure"} <= GRAPH.keys()
    assert "block_kernel" in GRAPH["dynamics"] and "ntk" in GRAPH["measure"]


def test_imports_of_every_spelling_are_found(tmp_path: Path) -> None:
    source = tmp_path / "spellings.py"
    source.write_text(
        "import numpy\nimport ntklib.a\nimport ntklib.b as bee\nfrom ntklib.c import x\nfrom ntklib import d, e\n"
        "from . import f\nfrom .g import y\nfrom ntklibx import z\n"
        "def later():\n    from ntklib.h import w\n"
    )
    assert ntklib_imports(source) == set("abcdefgh")


@pytest.mark.parametrize("name", [m for m in THEORY if m in GRAPH])
def test_theory_modules_import_only_the_block_kernel(name: str) -> None:
    extra = GRAPH[name] - THEORY_MAY_IMPORT
    assert not extra, f"ntklib.{name} imports {sorted(extra)} from ntklib; a theory module may import only block_kernel"


@pytest.mark.parametrize("name", [m for m in FLOORS if m in GRAPH])
def test_floor_modules_import_nothing_from_ntklib(name: str) -> None:
    assert not GRAPH[name], f"ntklib.{name} imports {sorted(GRAPH[name])} from ntklib; it must import nothing from it"


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_import_graph_has_no_cycle() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle in ntklib: " + " -> ".join(f"ntklib.{m}" for m in cycle)
