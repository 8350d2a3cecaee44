"""Every runnable example in ntklib's docstrings runs and prints what it shows.

An example that cannot run on a CPU in seconds (it needs a trained network, a dataset, a GPU) is
marked illustrative with ``# doctest: +SKIP`` on each of its lines.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import ntklib

MODULES = sorted(f"ntklib.{info.name}" for info in pkgutil.iter_modules(ntklib.__path__))


def test_modules_found() -> None:
    assert "ntklib.block_kernel" in MODULES and len(MODULES) >= 10


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed (see stdout)"
