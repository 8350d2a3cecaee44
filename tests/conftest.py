"""Strict numerics for the whole suite: float64 available, and no silent rank promotion.

Tests of float32 code paths pass float32 arrays explicitly; enabling x64 does not change the
dtype of float32 inputs. ``jax_numpy_rank_promotion="raise"`` makes an operation between arrays of
different ranks an error instead of a broadcast, so that a shape slip cannot pass unnoticed.
The command line's persistent compilation cache is off (``NTKLIB_COMPILE_CACHE=off``); the
fixture ``compile_cache`` is one cache directory for the session's tests that start processes, so
that a process loads the programs that an earlier one (or this one, see :func:`cached`) compiled.
"""

import os

import jax
import pytest

# the command line's persistent compilation cache stays off in tests that call it in-process
# (tests/test_compilation.py turns it on explicitly, in subprocesses)
os.environ["NTKLIB_COMPILE_CACHE"] = "off"

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory):
    """A persistent compilation cache directory shared by the whole session."""
    return tmp_path_factory.mktemp("jax_cache")


def pytest_collection_modifyitems(config, items):
    """Run the book's chapters first, the longest (chapter 07) first of all.

    ``pytest.ini_options`` runs the suite on two processes (pytest-xdist, ``--dist loadfile``: a
    notebook's cells stay in order on one process). Starting the longest file first keeps the other
    process busy with everything else meanwhile, instead of leaving chapter 07 to run alone at the end.
    """
    chapters = sorted((item for item in items if item.path.suffix == ".ipynb"), key=lambda item: item.path.name)
    longest_first = [item for item in chapters if item.path.name.startswith("07")] + [
        item for item in chapters if not item.path.name.startswith("07")
    ]
    items[:] = longest_first + [item for item in items if item.path.suffix != ".ipynb"]
