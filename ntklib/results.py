"""Run directories: metrics as JSON lines, config, status and checkpoints, all written atomically.

One run lives in one directory::

    config.json      the TrainConfig and the environment (jax/flax versions, device kind)
    metrics.jsonl    one tidy record per evaluation (epoch, losses, accuracies, NC, kernel, invariant)
    status.json      {"status": "running" | "finished" | "diverged", "epoch": ...}
    checkpoint.msgpack   the last training state and its epoch (for resuming)

Every write goes to a temporary file in the same directory, is flushed and fsynced, and replaces
the target with :func:`os.replace` — a killed run leaves either the old or the new file, never a
half-written one. ``metrics.jsonl`` loads with ``pandas.read_json(path, lines=True)``; its columns
are defined in :data:`ntklib.measure.COLUMNS`. :class:`RunDir` owns one run's files; the training
loop (:func:`ntklib.train.train_and_evaluate`) writes through it, or through :class:`NullRunDir`
when it keeps everything in memory.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
CHECKPOINT_FILE = "checkpoint.msgpack"


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a fsynced temporary file in the same directory + os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_safe(value: Any) -> Any:
    """JSON-safe value: numpy/jax scalars to Python, non-finite floats to None."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: str | os.PathLike, obj: dict) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_atomic(path, json.dumps(json_safe(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> dict | None:
    """The JSON object at ``path``, or None if the file does not exist."""
    path = Path(path)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def read_records(run_dir: str | os.PathLike) -> list[dict]:
    """All metric records of a run, oldest first ([] when there are none)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_records(run_dir: str | os.PathLike, records: list[dict]) -> None:
    """Atomically replace the run's metrics file with ``records`` (one JSON object per line)."""
    lines = "".join(json.dumps(json_safe(r), sort_keys=True) + "\n" for r in records)
    write_atomic(Path(run_dir) / METRICS_FILE, lines)


def read_status(run_dir: str | os.PathLike) -> str | None:
    """ "running", "finished", "diverged" or None (never started)."""
    status = read_json(Path(run_dir) / STATUS_FILE)
    return None if status is None else status.get("status")


def write_status(run_dir: str | os.PathLike, status: str, **extra: Any) -> None:
    """Atomically record the run's status."""
    write_json(Path(run_dir) / STATUS_FILE, {"status": status, **extra})


class RunDir:
    """One run's directory: its config, metric records, status and checkpoint, all written
    atomically.

    Example:
        >>> run = RunDir("runs/one")  # doctest: +SKIP
        >>> run.begin(config.to_dict())  # doctest: +SKIP
        >>> run.write_records(records)  # doctest: +SKIP
        >>> run.write_status("running", epoch=2)  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def begin(self, config: dict[str, Any]) -> str | None:
        """Create the directory and write ``config`` (with :func:`environment`) unless the run was
        started before; returns the earlier run's status (None for a new run).

        Raises:
            ValueError: naming ``config`` when the directory holds a run of a different config.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        saved = read_json(self.path / CONFIG_FILE)
        if saved is None:
            write_json(self.path / CONFIG_FILE, {"config": config, "environment": environment()})
        elif saved.get("config") != json_safe(config):
            raise ValueError(f"config: {self.path} holds a run with a different config: {saved.get('config')}")
        return read_status(self.path)

    def read_records(self) -> list[dict]:
        return read_records(self.path)

    def write_records(self, records: list[dict]) -> None:
        write_records(self.path, records)

    def write_status(self, status: str, **extra: Any) -> None:
        write_status(self.path, status, **extra)

    def save_checkpoint(self, target: Any, epoch: int) -> None:
        """Atomically save the pytree ``target`` and its epoch (msgpack, :mod:`flax.serialization`)."""
        import flax.serialization

        payload = {"state": target, "epoch": epoch}
        write_atomic(self.path / CHECKPOINT_FILE, flax.serialization.to_bytes(payload))

    def load_checkpoint(self, template: Any) -> tuple[Any, int] | None:
        """(the saved pytree, shaped like ``template``, and its epoch), or None without a checkpoint."""
        import flax.serialization

        path = self.path / CHECKPOINT_FILE
        if not path.exists():
            return None
        restored = flax.serialization.from_bytes({"state": template, "epoch": 0}, path.read_bytes())
        return restored["state"], int(restored["epoch"])


class NullRunDir(RunDir):
    """A run kept in memory: every write is dropped, nothing is ever read back."""

    def __init__(self) -> None:
        """No directory: nothing is created."""

    def begin(self, config: dict[str, Any]) -> str | None:
        return None

    def read_records(self) -> list[dict]:
        return []

    def write_records(self, records: list[dict]) -> None:
        pass

    def write_status(self, status: str, **extra: Any) -> None:
        pass

    def save_checkpoint(self, target: Any, epoch: int) -> None:
        pass

    def load_checkpoint(self, template: Any) -> tuple[Any, int] | None:
        return None


def environment() -> dict[str, Any]:
    """Versions and device of this process, for config.json."""
    import flax
    import jax
    import optax

    device = jax.devices()[0]
    return {
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "python": platform.python_version(),
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "hostname": platform.node(),
    }


def load_runs(root: str | os.PathLike):
    """Every run under ``root`` (any depth) as one tidy pandas DataFrame.

    Each row is one metrics record, joined with its run's config (``arch``, ``dataset``, ``init``,
    ``lr``, ...), its final ``run_status`` and ``run_dir``. Runs without records are skipped.
    """
    import pandas as pd

    frames = []
    for config_path in sorted(Path(root).rglob(CONFIG_FILE)):
        run_dir = config_path.parent
        records = read_records(run_dir)
        if not records:
            continue
        config = (read_json(config_path) or {}).get("config", {})
        frame = pd.DataFrame.from_records(records)
        for key, value in config.items():
            if key not in frame.columns and not isinstance(value, (dict, list)):
                frame[key] = value
        frame["run_status"] = read_status(run_dir)
        frame["run_dir"] = str(run_dir)
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)
