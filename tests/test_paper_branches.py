"""Every chapter's paper branch executes, at its smoke size.

Each chapter runs with ``NTK_BOOK_SCALE=paper`` and ``NTK_BOOK_SMOKE=1``: the paper branch's code
path (its dataset loader, model variant and branches) with the few sizes the chapter declares as its
smoke overrides (``ntklib.book.setup``, whose one marker line the test reads). Chapter 7 runs twice:
its default paper path, which draws the committed GPU sweep, and the explicit sweep path
(``NTK_BOOK_RUN_SWEEP=1``).

The notebooks are executed in memory with nbclient, from ``book/`` as the book build runs them, and
nothing is written back. Chapters that read MNIST, FashionMNIST or CIFAR-10 through
tensorflow-datasets get one extra first cell, here and not in the chapter, that enters
``tfds.testing.mock_data``: tfds then serves generated images and labels and nothing downloads.
Every chapter's ``## Checks`` cells run: a failing assertion fails the test that names the chapter.
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

BOOK = Path(__file__).resolve().parents[1] / "book"

# 360 mock examples: the generated labels give every class at least 26 samples, so two exactly
# balanced batches of 12 per class (ntklib.data.balanced_batches) and probes of a few per class.
MOCK_TFDS_CELL = """\
import tensorflow_datasets as tfds

# Test-only cell (tests/test_paper_branches.py): every tfds dataset is generated mock data.
_mock_tfds = tfds.testing.mock_data(num_examples=360, policy=tfds.testing.MockPolicy.USE_CODE)
_mock_tfds.__enter__()
"""

# (chapter, whether it reads a tfds dataset, extra environment)
CASES = [
    ("01_preliminaries", False, {}),
    ("02_block_structure", True, {}),
    ("03_convergence_phases", False, {}),
    ("04_gradient_flow", False, {}),
    ("05_invariant", False, {}),
    ("06_neural_collapse", False, {}),
    ("07_experiments", True, {}),
    ("07_experiments", True, {"NTK_BOOK_RUN_SWEEP": "1"}),
    ("08_beyond_the_paper", False, {}),
]
IDS = ["01", "02", "03", "04", "05", "06", "07-committed-results", "07-run-sweep", "08"]


def execute_in_memory(path: Path, *, mock_tfds: bool) -> nbformat.NotebookNode:
    """Execute the notebook at ``path`` from ``book/`` without writing it; return the executed copy."""
    nb = nbformat.read(path, as_version=4)
    if mock_tfds:
        nb.cells.insert(0, nbformat.v4.new_code_cell(MOCK_TFDS_CELL))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(BOOK)}}).execute()
    return nb


def book_files() -> list[Path]:
    """The files under ``book/``, without caches (ruff's, Python's) that other tests may write meanwhile."""
    files = (p.relative_to(BOOK) for p in BOOK.rglob("*"))
    return sorted(p for p in files if not any(part.startswith(".") or part == "__pycache__" for part in p.parts))


def stdout_of(nb: nbformat.NotebookNode) -> str:
    return "".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )


@pytest.mark.parametrize(("chapter", "mock_tfds", "extra_env"), CASES, ids=IDS)
def test_paper_branch_executes_at_smoke_size(tmp_path, monkeypatch, chapter, mock_tfds, extra_env):
    monkeypatch.setenv("NTK_BOOK_SCALE", "paper")
    monkeypatch.setenv("NTK_BOOK_SMOKE", "1")
    monkeypatch.delenv("NTK_BOOK_RUN_SWEEP", raising=False)
    for name, value in extra_env.items():
        monkeypatch.setenv(name, value)
    # tfds's data (and ntklib's decoded-array cache) in a fresh directory: no real dataset is read and
    # no mock array is left where a later real run would take it for MNIST.
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    # One BLAS thread: on a busy 2-core machine threaded OpenBLAS spins (SciPy's expm of chapter 3's
    # 120 × 120 kernel took 60× longer).
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, "1")
    before = book_files()

    nb = execute_in_memory(BOOK / f"{chapter}.ipynb", mock_tfds=mock_tfds)

    text = stdout_of(nb)
    markers = [line for line in text.splitlines() if line.startswith("scale=")]  # book.setup's line
    assert len(markers) == 1, f"{chapter} printed {len(markers)} marker lines: {markers}"
    assert markers[0].startswith("scale=paper (smoke size), seed="), "the paper branch did not run at its smoke size"
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()]
    assert "## Checks" in headings, f"{chapter} has no ## Checks section"
    assert book_files() == before, "the chapter wrote into book/"
