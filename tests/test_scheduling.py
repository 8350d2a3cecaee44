"""A notebook's cells run in order in one process, under any pytest and pytest-xdist the ranges allow.

nbval turns a notebook into one test item a cell, and the items of one notebook share one kernel:
a cell that runs in another process, or before the cells it depends on, fails with a
``NameError``. pytest-xdist decides which process runs which item from its ``--dist`` mode, which
``pyproject.toml`` sets. Two tests:

- ``test_dist_mode_keeps_each_notebook_whole`` reads the mode this run was started with and fails,
  naming every chapter, when that mode could send the cells of one notebook to two processes.
- ``test_notebook_cells_run_in_order_in_one_process`` runs, with the project's configuration and
  without this folder's ``conftest.py``, two generated notebooks on two processes. Every cell asserts
  that the cells before it ran, in order, in its kernel.

The modes that keep a file whole are those whose units of work are whole files, or parts of files
that nbval's cells never form (pytest-xdist's documentation): ``loadfile`` (by file), ``loadscope``
(by module, or by class for methods), ``each`` (every process runs everything) and ``no`` (one
process). ``load`` and ``worksteal`` send any item anywhere. ``loadgroup`` groups only items marked
``xdist_group``, through a suffix of the node id; pytest 9 no longer reads the attribute that
pytest-xdist 3.8 writes it to, so the marks are silently lost and every cell is scheduled alone.
"""

import os
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
WHOLE_FILE_MODES = {"no", "each", "loadfile", "loadscope"}
WHY_SPLIT = {
    "load": "it sends each cell to whichever process is free",
    "worksteal": "it sends each cell to whichever process is free, and moves cells between them",
    "loadgroup": (
        "it groups only items marked xdist_group, through a node-id suffix that pytest 9 ignores, "
        "and sends the rest one by one"
    ),
}


def split_notebooks(dist: str, notebooks: list[Path]) -> list[str]:
    """One line for every notebook whose cells ``--dist dist`` could send to two processes."""
    if dist in WHOLE_FILE_MODES:
        return []
    why = WHY_SPLIT.get(dist, "it is not a mode known to keep a file's items together")
    split = "its cells could run on two processes"
    return [f"{nb.relative_to(ROOT)}: under --dist {dist} {split} ({why})" for nb in notebooks]


def test_split_notebooks_names_each_chapter_under_a_splitting_mode():
    assert split_notebooks("loadfile", CHAPTERS) == []
    assert split_notebooks("no", CHAPTERS) == []
    lines = split_notebooks("loadgroup", CHAPTERS)
    assert len(lines) == len(CHAPTERS) >= 7
    assert lines[0].startswith("book/01_preliminaries.ipynb: under --dist loadgroup") and "pytest 9" in lines[0]
    assert "free" in split_notebooks("load", CHAPTERS)[0]


def distribution_mode(config) -> str:
    """The ``--dist`` mode of this run: a worker reads the controller's (``conftest.py``), else ``no``."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return workerinput["dist"]
    return config.getoption("dist", default="no") if config.getoption("numprocesses", default=None) else "no"


def test_dist_mode_keeps_each_notebook_whole(request):
    """This run's ``--dist`` (``pyproject.toml``'s addopts, or the command line) keeps notebooks whole."""
    split = split_notebooks(distribution_mode(request.config), CHAPTERS)
    assert not split, "\n".join(split)


def write_dependent_notebook(path: Path, cells: int) -> None:
    """A notebook whose cell k asserts that cells 0..k-1 ran before it, in its own kernel."""
    sources = ["ran = [0]"] + [f"assert ran == list(range({k})), ran\nran.append({k})" for k in range(1, cells)]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_notebook_cells_run_in_order_in_one_process(tmp_path):
    """End to end, with the project's pytest configuration: two processes, two notebooks, cells in order."""
    for name in ("first", "second"):
        write_dependent_notebook(tmp_path / f"{name}.ipynb", cells=8)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path)]
        + ["-p", "no:cacheprovider", "--nbval-lax", "-n", "2", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    failed = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    why = "\n".join(failed or [output[-3000:]])
    assert result.returncode == 0, f"cells of one notebook ran apart or out of order:\n{why}"
    assert "2 workers" in output and "16 passed" in output, output[-3000:]
