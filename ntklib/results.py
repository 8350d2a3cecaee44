"""The table of runs: every run directory under a root as one tidy pandas DataFrame.

One row per metrics record of a run (:mod:`ntklib.rundir`), joined with its run's config and final
status; the record columns are defined in :data:`ntklib.measure.COLUMNS`, and keys of older runs
are renamed to them (:data:`LEGACY_COLUMNS`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ntklib.rundir import CONFIG_FILE, RunError, read_json, read_records, read_status

LEGACY_COLUMNS = {
    f"inv_{name}": name
    for name in ("invariant_norm", "invariant_alignment", "wtw_norm", "mmt_norm", "h2h2t_norm", "mean_outer_norm")
}
"""Record keys of runs written before the record columns were defined in one place (up to commit
3fb8765, e.g. the committed H200 sweep), and their names in :data:`ntklib.measure.COLUMNS`."""


def load_runs(root: str | os.PathLike, *, unreadable: list[tuple[str, str]] | None = None):
    """Every run under ``root`` (any depth) as one tidy pandas DataFrame.

    Each row is one metrics record, joined with its run's config (``arch``, ``dataset``, ``init``,
    ``lr``, ...), its final ``run_status`` and ``run_dir``; keys of older runs are renamed to
    today's columns (:data:`LEGACY_COLUMNS`). Runs without records are skipped, and so
    are runs with a malformed file: each is appended to ``unreadable`` as ``(run_dir, reason)``
    when that list is given, else reported with ``warnings.warn``.

    Raises:
        FileNotFoundError: when ``root`` does not exist.
    """
    import warnings

    import pandas as pd

    if not Path(root).exists():
        raise FileNotFoundError(f"no such path: {root}")
    frames = []
    for config_path in sorted(Path(root).rglob(CONFIG_FILE)):
        run_dir = config_path.parent
        try:
            records = read_records(run_dir)
            config = (read_json(config_path) or {}).get("config", {})
            status = read_status(run_dir)
        except RunError as error:
            if unreadable is None:
                warnings.warn(f"skipped unreadable run {run_dir}: {error}", stacklevel=2)
            else:
                unreadable.append((str(run_dir), str(error)))
            continue
        if not records:
            continue
        frame = pd.DataFrame.from_records(records).rename(columns=LEGACY_COLUMNS)
        for key, value in config.items():
            if key not in frame.columns and not isinstance(value, (dict, list)):
                frame[key] = value
        frame["run_status"] = None if status is None else status.value  # the plain string, as in the file
        frame["run_dir"] = str(run_dir)
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def final_records(df):
    """The last successful record of every finished run of a :func:`load_runs` table: one row per
    run, sorted by ``init`` then ``lr`` (empty when no run finished)."""
    ok = df[(df["status"] == "ok") & (df["run_status"] == "finished")]
    if ok.empty:
        return ok
    return ok.sort_values("epoch").groupby("run_dir", as_index=False).tail(1).sort_values(["init", "lr"])
