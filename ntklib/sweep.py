"""Sweeps over initial learning rates × initialisations (paper §6, Figure 2 panes f–h and Appendix C panes i–j).

Layout: ``<root>/<init>/lr_<repr(lr)>/`` is one run directory (:mod:`ntklib.rundir`); the exact
repr keeps distinct rates apart (0.1 and 0.100001 are two runs). A sweep can be stopped and
restarted at will: finished and diverged runs *of the same config* are skipped, an interrupted run
resumes from its checkpoint, and a run that diverges (NaN/inf loss, status "diverged") or fails
with an exception (status "failed", the message in ``status.json``) does not stop the others.
A directory that holds another config's run, a corrupt checkpoint or an unreadable file is
reported ("refused", with the reason) and left untouched. The command line is
``python -m ntklib.experiment sweep`` (:mod:`ntklib.experiment`); ``--engine ray`` runs the runs
as Ray tasks (:mod:`ntklib.ray_engine`), with the same per-run logic (:func:`run_one`), layout and
summary.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ntklib.config import ConfigError, TrainConfig, run_identity
from ntklib.data import Dataset, load_dataset
from ntklib.models import PAPER_INITS
from ntklib.rundir import RunDir, RunError, RunStatus
from ntklib.train import train_and_evaluate

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
    """``<root>/<init>/lr_<repr(lr)>``: the exact repr, so that distinct rates never share a directory."""
    return Path(root) / init / f"lr_{float(lr)!r}"


@dataclasses.dataclass
class SweepEntry:
    """One run of a sweep: its status (a :class:`~ntklib.rundir.RunStatus`, or "refused" for a
    directory that cannot be used), whether it was found done and skipped, and the reason of a
    failure or refusal."""

    init: str
    lr: float
    out_dir: str
    status: str
    skipped: bool
    error: str | None = None


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

    Every existing run directory is verified first (:meth:`ntklib.rundir.RunDir.verify`): one of
    another config, with a corrupt checkpoint, incomplete records or a malformed file is
    "refused" with the reason and left as it is. Finished or diverged runs of the same config are
    skipped (``skipped=True``). A run that raises is recorded by
    :func:`~ntklib.train.train_and_evaluate` as status "failed" and the sweep goes on. The dataset
    is loaded once, when the first run needs training.

    Raises:
        ConfigError: when ``base`` does not fit the dataset (the same for every run); nothing is written.
    """
    loaded: dict[str, Dataset] = {} if dataset is None else {"dataset": dataset}

    def get_dataset() -> Dataset:
        if not loaded:
            loaded["dataset"] = load_run_dataset(*dataset_args(base))
        return loaded["dataset"]

    entries = []
    for config, out in sweep_runs(base, lrs, inits, root):
        entries.append(run_one(config, out, get_dataset, progress))
    return entries


def dataset_args(config: TrainConfig) -> tuple[str, str | None, int | None]:
    """(name, data directory, image size): what the dataset of a run depends on (not init or lr)."""
    return config.dataset, config.data_dir, config.input_size


def load_run_dataset(name: str, data_dir: str | None, image_size: int | None) -> Dataset:
    """The dataset of :func:`dataset_args`; both engines load a run's dataset with it."""
    return load_dataset(name, data_dir=data_dir, image_size=image_size)


def sweep_runs(
    base: TrainConfig, lrs: Sequence[float], inits: Sequence[str], root: str | Path
) -> list[tuple[TrainConfig, Path]]:
    """The (config, run directory) of every run of a sweep, in the order of the summary table:
    inits outer, learning rates inner."""
    return [(base.replace(init=init, lr=float(lr)), run_dir(root, init, lr)) for init in inits for lr in lrs]


def run_one(
    config: TrainConfig, out: Path, get_dataset: Callable[[], Dataset] | None = None, progress: bool = False
) -> SweepEntry:
    """One run of a sweep as a :class:`SweepEntry`: verify ``out``, skip it when done, else train
    (resuming from its checkpoint); a run that raises is "failed" with the reason, a directory that
    cannot be used is "refused". With ``progress``, a run that was not skipped reports its status
    on stderr. Both engines call it, and only it, per run (:mod:`ntklib.ray_engine` once per Ray
    task): this is the one place that decides what happens to a run.

    Args:
        get_dataset: called once the run needs training (None: :func:`load_run_dataset`).

    Raises:
        ConfigError, DatasetNotPreparedError: the same for every run (from ``get_dataset`` or the config).
    """
    entry = _run_one(config, out, get_dataset or functools.partial(load_run_dataset, *dataset_args(config)), progress)
    if progress:
        report(entry)
    return entry


def report(entry: SweepEntry) -> None:
    """``[sweep] flax lr=0.05: finished`` on stderr, for a run that was not skipped."""
    if not entry.skipped:
        print(f"[sweep] {entry.init} lr={entry.lr!r}: {entry.status}", file=sys.stderr)


def _run_one(config: TrainConfig, out: Path, get_dataset: Callable[[], Dataset], progress: bool) -> SweepEntry:
    entry = functools.partial(SweepEntry, config.init, config.lr, str(out))
    try:
        status = RunDir(out).verify(config.to_dict(), **run_identity(config))
        if status in RunStatus.DONE:
            return entry(status, True)
        dataset = get_dataset()  # an unprepared dataset stops the sweep: it is the same for every run
        try:
            result = train_and_evaluate(config, out, dataset=dataset, progress=progress)
        except (RunError, ConfigError):  # the first: below; the second: the same for every run
            raise
        except Exception as error:  # a sweep outlives one bad run; train_and_evaluate wrote "failed"
            return entry(RunStatus.FAILED, False, repr(error))
    except RunError as error:  # another config's run, or unreadable: never touched
        return entry("refused", False, str(error))
    return entry(result.status, result.skipped)


def summary_table(entries: Sequence[SweepEntry]) -> str:
    """A plain-text table of a sweep: init, lr, status, skipped, reason (one row per run)."""
    rows = [("init", "lr", "status", "skipped", "reason")]
    rows += [(e.init, repr(e.lr), e.status, "yes" if e.skipped else "", e.error or "") for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4] for row in rows
    )
