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


# The units of work, longest first, as measured on a 2-core machine (bench/RESULTS.md): the file of
# every chapter's paper branch (one unit, several minutes), then the chapters by execution time;
# the unit tests follow in collection order.
_LONGEST_FIRST = (
    "test_paper_branches.py",
    "02_block_structure.ipynb",
    "06_neural_collapse.ipynb",
    "07_experiments.ipynb",
    "08_beyond_the_paper.ipynb",
    "04_gradient_flow.ipynb",
    "05_invariant.ipynb",
    "01_preliminaries.ipynb",
    "03_convergence_phases.ipynb",
)


def _longest_first(item) -> tuple[int, str]:
    """Sort key: the units of :data:`_LONGEST_FIRST` in that order, any other chapter, the unit tests."""
    name = item.path.name
    if name in _LONGEST_FIRST:
        return (_LONGEST_FIRST.index(name), name)
    return (len(_LONGEST_FIRST), "") if item.path.suffix == ".ipynb" else (len(_LONGEST_FIRST) + 1, "")


def pytest_collection_modifyitems(config, items):
    """Order the suite longest work first, for its two processes.

    ``pyproject.toml`` runs pytest-xdist with ``--dist loadfile --no-loadscope-reorder``: each file is
    one unit of work, so a notebook's cells run in order on one process (nbval needs that), and the
    units go to the processes in this order: the longest start first, so that no long unit is left
    to run alone at the end while the other process idles.
    ``tests/test_scheduling.py`` fails, naming the notebook, if a notebook's cells could be split.
    """
    items.sort(key=_longest_first)  # stable: a file's own order is kept


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """Tell each pytest-xdist worker the controller's ``--dist`` mode (``tests/test_scheduling.py``).

    A worker's own options say ``--dist no``; ``workerinput`` is xdist's documented channel from
    the controller to its workers.
    """
    node.workerinput["dist"] = node.config.option.dist
