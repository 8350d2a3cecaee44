"""Write the canonical Colab install cell (book/colab_install.py) into cell 0 of every chapter.

Only cell 0's source and its ``remove-cell`` tag change; every other cell, every output and the
notebook metadata stay as they are. Cell 0 must already be a code cell (the install cell).

Usage:
    python tests/update_colab_cells.py            # rewrite the cells that differ
    python tests/update_colab_cells.py --check    # exit 1 and name the notebooks that differ
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
CANONICAL = ROOT / "book" / "colab_install.py"
TAG = "remove-cell"


def canonical_source() -> str:
    """The cell's source as a notebook stores it (no trailing newline)."""
    return CANONICAL.read_text(encoding="utf-8").rstrip("\n")


def chapters() -> list[Path]:
    return sorted((ROOT / "book").glob("*.ipynb"))


def update(path: Path, source: str, *, write: bool) -> bool:
    """Whether cell 0 of ``path`` differed (and, with ``write``, was rewritten)."""
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    cell = nb.cells[0] if nb.cells else None
    if cell is None or cell.cell_type != "code":
        raise ValueError(f"{path}: cell 0 must be the code cell of the Colab install, got {cell and cell.cell_type}")
    tags = cell.metadata.get("tags", [])
    if cell.source == source and TAG in tags:
        return False
    if write:
        cell.source = source
        cell.metadata["tags"] = [*tags, TAG] if TAG not in tags else tags
        nbformat.write(nb, path)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report notebooks whose cell 0 differs")
    args = parser.parse_args(argv)
    source = canonical_source()
    changed = [path for path in chapters() if update(path, source, write=not args.check)]
    for path in changed:
        print(f"{'differs' if args.check else 'updated'}: {path.relative_to(ROOT)}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
