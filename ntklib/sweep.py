"""Sweeps over initial learning rates × initialisations (paper §6, Figure 2 panes f–j).

Layout: ``<root>/<init>/lr_<lr:.4e>/`` is one run directory (:mod:`ntklib.results`). A sweep
can be stopped and restarted at will: finished and diverged runs are skipped, an interrupted run
resumes from its checkpoint, and a run that diverges (NaN/inf loss, status "diverged") or fails
with an exception (status "failed", the message in ``status.json``) does not stop the others.
The command line is ``python -m ntklib.experiment sweep`` (:mod:`ntklib.experiment`).
"""

from __future__ import annotations

import dataclasses
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ntklib import results
from ntklib.data import Dataset, load_dataset
from ntklib.models import PAPER_INITS
from ntklib.train import TrainConfig, train_and_evaluate

PAPER_LR_MIN = 1e-4
PAPER_LR_MAX = 10**0.25


def learning_rates(
    num: int = 30, lr_min: float = PAPER_LR_MIN, lr_max: float = PAPER_LR_MAX, largest: int | None = None
) -> list[float]:
    """``num`` log-spaced rates in [lr_min, lr_max] (the paper: 30 in [1e-4, 10^0.25]); with
    ``largest`` only that many of the largest (the paper: 20 for most settings)."""
    lrs = np.logspace(np.log10(lr_min), np.log10(lr_max), num).tolist()
    return lrs[-largest:] if largest else lrs


def run_dir(root: str | Path, init: str, lr: float) -> Path:
    """``<root>/<init>/lr_<lr:.4e>``."""
    return Path(root) / init / f"lr_{lr:.4e}"


@dataclasses.dataclass
class SweepEntry:
    init: str
    lr: float
    out_dir: str
    status: str
    skipped: bool


def run_sweep(
    base: TrainConfig,
    lrs: Sequence[float],
    inits: Sequence[str] = PAPER_INITS,
    root: str | Path = "runs",
    *,
    dataset: Dataset | None = None,
    progress: bool = True,
) -> list[SweepEntry]:
    """Train ``base`` with every (init, lr) into :func:`run_dir`; returns one entry per run.

    Finished or diverged runs are skipped (``skipped=True``); any exception of a run is recorded
    as status "failed" and the sweep goes on. The dataset is loaded once.
    """
    entries = []
    for init in inits:
        for lr in lrs:
            config = base.replace(init=init, lr=float(lr))
            out = run_dir(root, init, lr)
            status = results.read_status(out)
            if status in ("finished", "diverged"):
                entries.append(SweepEntry(init, float(lr), str(out), status, True))
                continue
            if dataset is None:
                dataset = load_dataset(base.dataset, data_dir=base.data_dir, image_size=base.input_size)
            try:
                status = train_and_evaluate(config, out, dataset=dataset, progress=progress).status
            except Exception as error:  # a sweep outlives one bad run
                status = "failed"
                results.write_status(out, "failed", error=repr(error), traceback=traceback.format_exc())
            entries.append(SweepEntry(init, float(lr), str(out), status, False))
            if progress:
                print(f"[sweep] {init} lr={lr:.4e}: {status}", file=sys.stderr)
    return entries
