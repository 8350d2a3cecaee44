"""Sweeps on Ray: every run of a sweep as one Ray task, on one machine or a cluster.

``python -m ntklib.experiment sweep … --engine ray`` calls :func:`run_sweep_ray`. Each task runs
:func:`ntklib.sweep.run_one`, the per-run logic of the local engine, so the semantics are the same:
finished and diverged runs of the same config are skipped, an interrupted run resumes from its
checkpoint, a run that raises is "failed" with its reason, a directory of another config is
"refused", and the results land in the same ``<root>/<init>/lr_<lr>/`` layout.

Faults: a task whose worker process dies (killed, out of memory, node lost) is retried by Ray up to
``max_retries`` times and resumes from the run's last checkpoint (the dead process's lock on the
run directory is released by the operating system). A run whose worker dies more often is
"failed", with the reason, and the sweep goes on. A keyboard interrupt of the driver cancels the
tasks; every run stays resumable (checkpoints are written atomically).

Resources: ``cpus_per_run`` and ``gpus_per_run`` (a fraction packs several runs onto one GPU; JAX
then gets that fraction of the GPU's memory) are the Ray resources of each task. Every worker must
see the run directories at the same path: on a cluster, ``root`` lives on a shared file system.

Compilation: with ``compile_cache`` (the command line passes its ``--compile-cache`` directory),
every task enables JAX's persistent compilation cache there in its worker process, so workers, and
a worker that Ray starts again after a fault, load the programs another one compiled.

Ray is imported only here, and only when a Ray sweep starts: ``import ntklib`` does not pay for it.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ntklib import compilation, sweep
from ntklib.config import ConfigError, TrainConfig
from ntklib.models import PAPER_INITS
from ntklib.rundir import STATUS_FILE, RunStatus, read_json
from ntklib.sources import DatasetNotPreparedError

GPU_MEMORY_SHARE = 0.9
"""Of a GPU's memory, the share that the runs packed onto it divide among themselves."""

STOPS_THE_SWEEP = (ConfigError, DatasetNotPreparedError)
"""The errors of a task that would be the same for every run, so the sweep stops and raises them."""


class RayNotInstalledError(ImportError):
    """``--engine ray`` without Ray installed (the message says how to install it)."""


def import_ray() -> Any:
    """The ``ray`` module, or :class:`RayNotInstalledError`."""
    try:
        import ray
    except ImportError as error:
        raise RayNotInstalledError(
            f"the Ray engine needs Ray ({error}); install it with: pip install 'ray>=2.40,<3'"
        ) from None
    return ray


_cached_dataset = functools.lru_cache(maxsize=1)(sweep.load_run_dataset)
"""The dataset, loaded once per worker process (Ray reuses workers across tasks)."""


def run_task(config: TrainConfig, out: str, gpus_per_run: float, compile_cache: str | None = None) -> sweep.SweepEntry:
    """The body of one Ray task: :func:`ntklib.sweep.run_one` in the worker process, with the
    sweep's persistent compilation cache (``compile_cache``; None: none)."""
    if 0 < gpus_per_run < 1:  # before JAX starts its GPU backend in this process
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{GPU_MEMORY_SHARE * gpus_per_run:.3f}")
    compilation.use_persistent_cache(compile_cache)
    get_dataset = functools.partial(_cached_dataset, *sweep.dataset_args(config))
    return sweep.run_one(config, Path(out), get_dataset, progress=False)


def run_sweep_ray(
    base: TrainConfig,
    lrs: Sequence[float],
    inits: Sequence[str] = PAPER_INITS,
    root: str | Path = "runs",
    *,
    address: str | None = None,
    gpus_per_run: float | None = None,
    cpus_per_run: float = 1.0,
    max_retries: int = 3,
    progress: bool = True,
    poll_seconds: float = 10.0,
    compile_cache: str | Path | None = None,
) -> list[sweep.SweepEntry]:
    """:func:`ntklib.sweep.run_sweep` with every run as a Ray task; one entry per run, in the
    order of :func:`ntklib.sweep.sweep_runs`.

    Args:
        address: the cluster to join (``"auto"``: the one ``ray start`` started on this machine);
            None starts a local one. A Ray session already open in this process is used as it is.
        gpus_per_run: GPUs of a task (a fraction packs runs onto a GPU); None: 1 on a cluster
            with GPUs, else 0.
        cpus_per_run: CPUs of a task.
        max_retries: how often a task whose worker died is run again.
        progress: a progress line over runs on stderr, every ``poll_seconds`` and when a run ends.
        compile_cache: JAX's persistent compilation cache directory, which every task enables in
            its worker process (:func:`ntklib.compilation.use_persistent_cache`), as the command
            line does in its own; None: the workers use none. On a cluster, a directory on a
            shared file system lets every machine reuse what one compiled.

    Raises:
        ConfigError, DatasetNotPreparedError: from the first task that meets them (the same for
            every run); the other tasks are cancelled.
    """
    ray = import_ray()
    runs = sweep.sweep_runs(base, lrs, inits, root)
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=progress, configure_logging=False)
    try:
        if gpus_per_run is None:
            gpus_per_run = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        task = ray.remote(run_task).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=max_retries)
        cache = None if compile_cache is None else str(Path(compile_cache).expanduser())
        refs = {task.remote(config, str(out), gpus_per_run, cache): i for i, (config, out) in enumerate(runs)}
        entries: list[sweep.SweepEntry | None] = [None] * len(runs)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=poll_seconds)
                for ref in done:
                    config, out = runs[refs[ref]]
                    entry = entries[refs[ref]] = _entry(ray, ref, config, out, max_retries)
                    if progress:
                        sweep.report(entry)
                if progress:
                    print(progress_line(runs, entries), file=sys.stderr)
        except BaseException:  # an error that stops the sweep, or a keyboard interrupt
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started:
            ray.shutdown()
    return [entry for entry in entries if entry is not None]


def _entry(ray: Any, ref: Any, config: TrainConfig, out: Path, max_retries: int) -> sweep.SweepEntry:
    """The :class:`~ntklib.sweep.SweepEntry` of a finished task; a task that raised, or whose
    worker died more than ``max_retries`` times, is "failed" with the reason."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        cause = getattr(error, "cause", None)
        if isinstance(cause, STOPS_THE_SWEEP):
            raise cause from None
        reason = repr(cause) if cause is not None else str(error).splitlines()[0]
    except ray.exceptions.RayError as error:  # the worker died (killed, out of memory, node lost)
        first_line = (str(error).strip().splitlines() or [""])[0]
        reason = f"{type(error).__name__} after {max_retries} retries: {first_line}"
    return sweep.SweepEntry(config.init, config.lr, str(out), RunStatus.FAILED, False, reason)


def progress_line(runs: Sequence[tuple[TrainConfig, Path]], entries: Sequence[sweep.SweepEntry | None]) -> str:
    """``[sweep] 3/8 done (2 finished, 1 diverged, 0 failed, 0 refused); running: flax lr=0.05
    epoch 4/24, …`` — the epochs from the runs' status.json (shown for up to 6 runs)."""
    counts = {str(status): 0 for status in (RunStatus.FINISHED, RunStatus.DIVERGED, RunStatus.FAILED, "refused")}
    for entry in entries:
        if entry is not None:
            counts[entry.status] = counts.get(entry.status, 0) + 1
    ended = sum(entry is not None for entry in entries)
    running = []
    for (config, out), entry in zip(runs, entries, strict=True):
        if entry is None:
            try:
                status = read_json(out / STATUS_FILE) or {}
            except (OSError, ValueError):
                status = {}
            if status.get("status") == RunStatus.RUNNING:
                running.append(f"{config.init} lr={config.lr:.3g} epoch {status.get('epoch')}/{config.epochs}")
    shown = ", ".join(running[:6]) + (", …" if len(running) > 6 else "")
    tally = ", ".join(f"{n} {status}" for status, n in counts.items())
    return f"[sweep] {ended}/{len(runs)} done ({tally}); {len(running)} running" + (f": {shown}" if shown else "")
