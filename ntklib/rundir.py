"""The run directory: metrics as JSON lines, config, status and checkpoints, all written atomically.

One run lives in one directory::

    config.json      the TrainConfig, its identity hash and the environment (jax/flax versions, device)
    metrics.jsonl    one tidy record per evaluation (epoch, losses, accuracies, NC, kernel, invariant)
    status.json      {"status": "running" | "finished" | "diverged" | "failed", "epoch": ..., "error": ...}
    checkpoint.msgpack   the last training state, its epoch, the config's identity and a checksum
    .lock            the advisory lock of the one process that writes the run

Every write goes to a temporary file in the same directory, is flushed and fsynced, and replaces
the target with :func:`os.replace` — a killed run leaves either the old or the new file, never a
half-written one. Files get the permissions of the user's umask (0644 under the usual 022).

A run knows its identity: the *identity* of a config is every field that can change the numbers
(``TrainConfig.identity``), and its hash (:func:`config_hash`) is stored in ``config.json`` and in
every checkpoint, beside a SHA-256 checksum of the checkpoint's payload. :meth:`RunDir.verify`
refuses, without writing anything, a directory whose config or checkpoint belongs to another
config (naming the differing fields), a checkpoint that fails its checksum, a malformed file
(naming its path and line), and records that miss an evaluation epoch up to the checkpoint. Every
refusal is a :class:`RunError`. ``metrics.jsonl`` loads with ``pandas.read_json(path, lines=True)``; its columns
are defined in :data:`ntklib.measure.COLUMNS`. :class:`RunDir` owns one run's files; the training
loop (:func:`ntklib.train.train_and_evaluate`) writes through it (:meth:`RunDir.commit`), or through
:class:`NullRunDir` when it keeps everything in memory. The table of many runs is
:func:`ntklib.results.load_runs`.

This module imports nothing from ntklib (flax and jax only inside the functions that need them).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import hashlib
import json
import math
import os
import platform
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
CHECKPOINT_FILE = "checkpoint.msgpack"
LOCK_FILE = ".lock"
CHECKPOINT_FORMAT = "ntklib-checkpoint-1"
"""The tag of the checkpoint container, which holds format, config_hash, config, epoch, sha256 and payload."""


class RunStatus(str, enum.Enum):
    """The status of a run in ``status.json``. A ``str`` enum: every member equals (and hashes as)
    the plain string written in the file, ``RunStatus.FINISHED == "finished"``, and ``str()`` or an
    f-string gives that string. ``RunStatus.DONE`` holds the statuses of a run that ended as it
    should, finished or diverged.

    Example:
        >>> RunStatus("finished") is RunStatus.FINISHED, RunStatus.FINISHED == "finished"
        (True, True)
        >>> f"{RunStatus.DIVERGED}", "diverged" in RunStatus.DONE, RunStatus.RUNNING in RunStatus.DONE
        ('diverged', True, False)
    """

    DONE: ClassVar[frozenset[RunStatus]]

    RUNNING = "running"
    """Started, not yet at its last epoch (interrupted, or stopped by ``max_epochs_this_call``)."""
    FINISHED = "finished"
    """Trained to its last epoch."""
    DIVERGED = "diverged"
    """Ended by a NaN/inf training loss (a result, not a fault)."""
    FAILED = "failed"
    """Ended by an exception (its reason in ``status.json``); resumes from its last checkpoint."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


RunStatus.DONE = frozenset({RunStatus.FINISHED, RunStatus.DIVERGED})
"""The statuses of a run that ended as it should, finished or diverged (a divergence is a result,
not a fault). A run with one of them is skipped when asked again."""


class RunError(ValueError):
    """A run directory that cannot be used as asked; the message names the run and what is wrong.
    Nothing is written when one is raised."""


class RunFileError(RunError):
    """A run file that is not valid JSON / JSON lines (the message names its path and line)."""


class RunMismatchError(RunError):
    """A run directory (config or checkpoint) that belongs to another config."""


class CorruptCheckpointError(RunError):
    """A checkpoint that fails its checksum or cannot be decoded."""


class IncompleteRunError(RunError):
    """Records that miss evaluation epochs the checkpoint or the status says were done."""


class RunLockedError(RunError):
    """Another process holds the run directory's lock."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a fsynced temporary file in the same directory + os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; a run's files are as shareable as any other
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


def _parse_object(text: str, path: Path, line: int = 1) -> dict:
    """``text`` as a JSON object; a :class:`RunFileError` names ``path`` and the real line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise RunFileError(f"{path}:{line + error.lineno - 1}: invalid JSON ({error.msg})") from None
    if not isinstance(value, dict):
        raise RunFileError(f"{path}:{line}: expected a JSON object, got {type(value).__name__}")
    return value


def read_json(path: str | os.PathLike) -> dict | None:
    """The JSON object at ``path``, or None if the file does not exist.

    Raises:
        RunFileError: naming the path and line of malformed JSON.
    """
    path = Path(path)
    if not path.exists():
        return None
    return _parse_object(path.read_text(errors="replace"), path)


def read_records(run_dir: str | os.PathLike) -> list[dict]:
    """All metric records of a run, oldest first ([] when there are none).

    Raises:
        RunFileError: naming the path and line of a malformed (e.g. truncated) line.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    records = [_parse_object(text, path, number) for number, text in enumerate(lines, 1) if text.strip()]
    for number, record in enumerate(records, 1):
        if not isinstance(record.get("epoch"), int):
            raise RunFileError(f"{path}: record {number} has no integer 'epoch'")
    return records


def write_records(run_dir: str | os.PathLike, records: list[dict]) -> None:
    """Atomically replace the run's metrics file with ``records`` (one JSON object per line)."""
    lines = "".join(json.dumps(json_safe(r), sort_keys=True) + "\n" for r in records)
    write_atomic(Path(run_dir) / METRICS_FILE, lines)


def _status_of(record: dict, path: Path) -> RunStatus | None:
    """The :class:`RunStatus` of a ``status.json`` object (None without a ``status`` key)."""
    value = record.get("status")
    if value is None:
        return None
    try:
        return RunStatus(value)
    except ValueError:
        valid = ", ".join(member.value for member in RunStatus)
        raise RunFileError(f"{path}: unknown status {value!r}; valid: {valid}") from None


def read_status(run_dir: str | os.PathLike) -> RunStatus | None:
    """The run's :class:`RunStatus`, or None (never started).

    Raises:
        RunFileError: when status.json is malformed or holds an unknown status.
    """
    path = Path(run_dir) / STATUS_FILE
    status = read_json(path)
    return None if status is None else _status_of(status, path)


def write_status(run_dir: str | os.PathLike, status: RunStatus | str, **extra: Any) -> None:
    """Atomically record the run's status (as its plain string) and ``extra`` (e.g. ``epoch``).

    Raises:
        ValueError: ``status`` is not a :class:`RunStatus` value.
    """
    write_json(Path(run_dir) / STATUS_FILE, {"status": RunStatus(status).value, **extra})


def config_hash(identity: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``identity`` (sorted keys; floats as their exact repr)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, allow_nan=False).encode()).hexdigest()


def config_differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``"name: saved → wanted"`` for every field of ``wanted`` whose saved value differs."""
    missing = "(absent)"
    return [
        f"{name}: {saved.get(name, missing)!r} → {value!r}"
        for name, value in sorted(wanted.items())
        if saved.get(name, missing) != value
    ]


def _mismatch(path: Path, what: str, saved: dict[str, Any], wanted: dict[str, Any]) -> RunMismatchError:
    fields = "; ".join(config_differences(saved, wanted)) or "(identity hash differs)"
    return RunMismatchError(
        f"{path} holds a run of a different config ({what}): {fields}. Use another --out, or delete the directory"
    )


def _decode_checkpoint(path: Path, data: bytes) -> dict[str, Any]:
    """The verified checkpoint container of :meth:`RunDir.save_checkpoint`."""
    import flax.serialization

    try:
        container = flax.serialization.msgpack_restore(data)
    except Exception as error:
        raise CorruptCheckpointError(f"{path}: cannot be decoded ({error}); delete it to start the run over") from None
    keys = {"format", "config_hash", "config", "epoch", "sha256", "payload"}
    if not isinstance(container, dict) or container.get("format") != CHECKPOINT_FORMAT or not keys <= set(container):
        raise CorruptCheckpointError(
            f"{path}: not an {CHECKPOINT_FORMAT} checkpoint (corrupt, or written by an older ntklib without a "
            "config hash and checksum); delete it to start the run over"
        )
    if hashlib.sha256(container["payload"]).hexdigest() != container["sha256"]:
        raise CorruptCheckpointError(f"{path}: the payload fails its SHA-256 checksum; delete it to start the run over")
    return container


def evaluation_epochs(up_to: int, *, eval_every: int, epochs: int) -> list[int]:
    """The epochs ≤ ``up_to`` that have a record: 0, every ``eval_every``-th and the last."""
    return [e for e in range(up_to + 1) if e % eval_every == 0 or e == epochs]


class RunDir:
    """One run's directory: its config, metric records, status and checkpoint, all written
    atomically, by one process at a time (:meth:`lock`).

    Example:
        >>> run = RunDir("runs/one")  # doctest: +SKIP
        >>> with run.lock():  # doctest: +SKIP
        ...     status = run.begin(config.to_dict(), identity=config.identity(), required_epochs=f)  # doctest: +SKIP
        ...     run.commit(records, status=RunStatus.RUNNING, epoch=2, checkpoint=state)  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._verified: dict[str, Any] | None = None  # the checkpoint container verify() read
        self._identity: dict[str, Any] | None = None  # the identity verify() checked, for checkpoints

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's advisory lock (``fcntl.flock`` on ``.lock``) for the ``with`` block; the
        operating system releases it when the process dies, however it dies.

        Raises:
            RunLockedError: naming the run when another process holds it.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                raise RunLockedError(
                    f"{self.path} is being written by another process (pid {holder}); wait for it to end"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def verify(
        self,
        config: dict[str, Any],
        *,
        identity: dict[str, Any],
        required_epochs: Callable[[int], Iterable[int]],
    ) -> RunStatus | None:
        """Check, without writing anything, that this directory may continue the run ``config``;
        returns the earlier run's status (None for a new run).

        Args:
            config: the whole config (as in config.json).
            identity: the fields of ``config`` that define the numbers (their hash is the run's identity).
            required_epochs: ``f(epoch)``, the epochs whose records must exist once ``epoch`` is done.

        Raises:
            RunFileError: a malformed config.json, status.json or metrics.jsonl (path and line named).
            RunMismatchError: config.json or the checkpoint belong to another config (differing fields named).
            CorruptCheckpointError: the checkpoint fails its checksum.
            IncompleteRunError: records miss an evaluation epoch up to the checkpoint or a final status.
        """
        self._verified = None
        self._identity = json_safe(identity)
        if not self.path.exists():
            return None
        if not self.path.is_dir():
            raise RunError(f"{self.path} is a file, not a run directory")
        wanted = json_safe(identity)
        saved = read_json(self.path / CONFIG_FILE)
        if saved is not None:
            saved_config = saved.get("config")
            if not isinstance(saved_config, dict) or {k: saved_config.get(k) for k in wanted} != wanted:
                raise _mismatch(self.path, CONFIG_FILE, saved_config if isinstance(saved_config, dict) else {}, wanted)
        status_record = read_json(self.path / STATUS_FILE) or {}
        status = _status_of(status_record, self.path / STATUS_FILE)
        records = read_records(self.path)
        done = None
        checkpoint = self.path / CHECKPOINT_FILE
        if checkpoint.exists():
            container = _decode_checkpoint(checkpoint, checkpoint.read_bytes())
            if container["config_hash"] != config_hash(wanted):
                raise _mismatch(self.path, CHECKPOINT_FILE, container["config"], wanted)
            self._verified = container
            done = int(container["epoch"])
        if status in RunStatus.DONE and isinstance(status_record.get("epoch"), int):
            done = status_record["epoch"] if status == RunStatus.FINISHED else status_record["epoch"] - 1
        if done is not None:
            have = {r["epoch"] for r in records}
            missing = sorted(set(required_epochs(done)) - have)
            if missing:
                shown = ", ".join(map(str, missing[:10])) + (" …" if len(missing) > 10 else "")
                raise IncompleteRunError(
                    f"{self.path}: {METRICS_FILE} misses the records of epochs {shown}, done by epoch {done}; "
                    "delete the directory to start the run over"
                )
        return status

    def begin(
        self,
        config: dict[str, Any],
        *,
        identity: dict[str, Any],
        required_epochs: Callable[[int], Iterable[int]],
    ) -> RunStatus | None:
        """:meth:`verify`, then create the directory and write ``config`` (with its identity hash
        and :func:`environment`) unless the run was started before; returns the earlier run's
        status (None for a new run). Call it holding :meth:`lock`.

        Raises:
            RunError: as :meth:`verify`.
        """
        status = self.verify(config, identity=identity, required_epochs=required_epochs)
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / CONFIG_FILE).exists():
            saved = {"config": config, "identity": config_hash(json_safe(identity)), "environment": environment()}
            write_json(self.path / CONFIG_FILE, saved)
        return status

    def read_records(self) -> list[dict]:
        return read_records(self.path)

    def write_records(self, records: list[dict]) -> None:
        write_records(self.path, records)

    def write_status(self, status: RunStatus | str, **extra: Any) -> None:
        write_status(self.path, status, **extra)

    def commit(self, records: list[dict], *, status: RunStatus, epoch: int, checkpoint: Any = None) -> None:
        """Write the run's progress up to ``epoch``: ``records``, then the checkpoint of the pytree
        ``checkpoint`` (when given), then ``status`` with ``epoch``.

        Resume relies on this order, records → checkpoint → status. Every write is atomic, so a
        process killed during a commit leaves a prefix of it: the records may run ahead of the
        checkpoint and the checkpoint ahead of the status, never the reverse. A resumed run
        continues from the checkpoint's epoch and drops the later records; :meth:`verify` refuses
        records that miss an evaluation epoch up to the checkpoint or a final status.
        """
        self.write_records(records)
        if checkpoint is not None:
            self.save_checkpoint(checkpoint, epoch)
        self.write_status(status, epoch=epoch)

    def save_checkpoint(self, target: Any, epoch: int) -> None:
        """Atomically save the pytree ``target`` and its epoch (msgpack, :mod:`flax.serialization`),
        with the hash of the identity that :meth:`verify` checked, that identity itself and the
        payload's SHA-256.

        Raises:
            RunError: :meth:`verify` (or :meth:`begin`) was not called first.
        """
        import flax.serialization

        identity = self._identity
        if identity is None:
            raise RunError(f"{self.path}: call begin() before save_checkpoint()")
        payload = flax.serialization.to_bytes({"state": target, "epoch": epoch})
        container = {
            "format": CHECKPOINT_FORMAT,
            "config_hash": config_hash(identity),
            "config": identity,
            "epoch": epoch,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "payload": payload,
        }
        write_atomic(self.path / CHECKPOINT_FILE, flax.serialization.msgpack_serialize(container))

    def load_checkpoint(self, template: Any) -> tuple[Any, int] | None:
        """(the saved pytree, shaped like ``template``, and its epoch), or None without a checkpoint.
        Only a checkpoint that :meth:`verify` checked is loaded (the bytes it read and verified)."""
        import flax.serialization

        if self._verified is None:
            if (self.path / CHECKPOINT_FILE).exists():
                raise RunError(f"{self.path}: call verify() before load_checkpoint()")
            return None
        restored = flax.serialization.from_bytes({"state": template, "epoch": 0}, self._verified["payload"])
        return restored["state"], int(restored["epoch"])


class NullRunDir(RunDir):
    """A run kept in memory: every write is dropped, nothing is ever read back."""

    def __init__(self) -> None:
        """No directory: nothing is created."""
        self._verified = None
        self._identity = None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        yield

    def verify(self, config: dict[str, Any], **kwargs: Any) -> RunStatus | None:
        return None

    def begin(self, config: dict[str, Any], **kwargs: Any) -> RunStatus | None:
        return None

    def read_records(self) -> list[dict]:
        return []

    def write_records(self, records: list[dict]) -> None:
        pass

    def write_status(self, status: RunStatus | str, **extra: Any) -> None:
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
