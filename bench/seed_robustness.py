"""Execute chapters under several seeds and report every check: the book's claims must hold for any
``NTK_BOOK_SEED``, not only for the seed its committed outputs were made with.

For each chapter and seed the notebook is executed in memory (nothing is written back) with
``NTK_BOOK_SEED`` set; the script prints PASS or the failing assertion, and the printed output of the
cells under the chapter's ``## Checks`` heading, which state every checked quantity against its
threshold. Exit code 1 when any execution fails.

    python bench/seed_robustness.py                                  # chapters 02 and 07, seeds 0-4
    python bench/seed_robustness.py --chapters 01 03 04 05 06 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

BOOK = Path(__file__).resolve().parent.parent / "book"


def checks_output(nb: nbformat.NotebookNode) -> str:
    """The printed output of every code cell after the ``## Checks`` heading."""
    start = next(
        (i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "## Checks" in c.source.splitlines()), None
    )
    if start is None:
        return ""
    texts = []
    for cell in nb.cells[start:]:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") == "stream":
                texts.append(out["text"].rstrip())
    return "\n".join(texts)


def run(chapter: Path, seed: int, timeout: int) -> tuple[bool, str, float]:
    """Execute ``chapter`` with ``NTK_BOOK_SEED=seed``; (passed, report, seconds)."""
    nb = nbformat.read(chapter, as_version=4)
    os.environ["NTK_BOOK_SEED"] = str(seed)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(BOOK)}})
    start = time.perf_counter()
    try:
        client.execute()
        passed, report = True, checks_output(nb)
    except CellExecutionError as error:
        passed, report = False, f"{checks_output(nb)}\n{str(error).strip().splitlines()[-1]}"
    return passed, report, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chapters", nargs="+", default=["02", "07"], help="chapter number prefixes")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args(argv)
    failures = 0
    for prefix in args.chapters:
        (chapter,) = sorted(BOOK.glob(f"{prefix}_*.ipynb"))
        for seed in args.seeds:
            passed, report, seconds = run(chapter, seed, args.timeout)
            failures += not passed
            print(f"=== {chapter.stem}, seed {seed}: {'PASS' if passed else 'FAIL'} ({seconds:.0f} s)")
            print(report, flush=True)
    print(f"{failures} failed executions")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
