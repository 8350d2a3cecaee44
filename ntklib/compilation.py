"""Compilation: count and time JAX's XLA compilations, and JAX's persistent compilation cache.

- :class:`CompileLog` records every XLA compilation while it is active, as (function name,
  seconds), from JAX's ``/jax/core/compile/backend_compile_duration`` monitoring event. A program
  loaded from the persistent cache counts too, with its loading time. Tracing and lowering to
  StableHLO are not included. The events of every thread of the process are recorded.
- :func:`enable_persistent_cache` points JAX's persistent compilation cache at a directory, so a
  second process loads the programs the first one compiled instead of compiling them again. The
  command line (:mod:`ntklib.experiment`) enables it by default in :func:`default_cache_dir`;
  importing ntklib does not. A Ray sweep passes the directory to every task, whose worker
  process enables it too (:func:`use_persistent_cache`).
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from types import TracebackType

import jax
from jax.experimental.compilation_cache import compilation_cache

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
"""JAX's monitoring event of one XLA compilation (or persistent-cache load); ``fun_name`` names the program."""

CACHE_ENV = "NTKLIB_COMPILE_CACHE"
"""The environment variable that sets the command line's default cache (a directory, or ``off``)."""

OFF = "off"


class CompileLog:
    """The XLA compilations of the process while the log is active::

        with CompileLog() as log:
            f(x)
        log.count("f"), log.seconds

    ``events`` holds (function name, seconds) pairs, e.g. ``("jit(step)", 7.5)``.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []
        self._taken = 0

    def _listen(self, event: str, duration_secs: float, **kwargs: str | int) -> None:
        if event == BACKEND_COMPILE_EVENT:
            self.events.append((str(kwargs.get("fun_name", "?")), float(duration_secs)))

    def __enter__(self) -> CompileLog:
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listen)

    @property
    def seconds(self) -> float:
        """Seconds of all recorded compilations."""
        return sum(seconds for _, seconds in self.events)

    def counts(self) -> collections.Counter[str]:
        """Compilations per function name, e.g. ``{"jit(step)": 1, ...}``."""
        return collections.Counter(name for name, _ in self.events)

    def count(self, name: str) -> int:
        """Compilations of the function ``name``, with or without its ``jit(...)`` wrapper."""
        return sum(n for key, n in self.counts().items() if key in (name, f"jit({name})"))

    def take_seconds(self) -> float:
        """Seconds of the compilations recorded since the previous call (or the start)."""
        new = self.events[self._taken :]
        self._taken = len(self.events)
        return sum(seconds for _, seconds in new)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ntklib/jax``, or ``~/.cache/ntklib/jax`` when ``XDG_CACHE_HOME`` is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ntklib" / "jax"


def resolve_cache_dir(directory: str | None = None, *, enabled: bool = True) -> Path | None:
    """The cache directory the command line uses, or None for no cache: ``enabled=False`` (the flag
    ``--no-compile-cache``) gives None; else ``directory`` (``--compile-cache``); else
    :data:`CACHE_ENV` (a directory, or ``off``); else :func:`default_cache_dir`.

    Raises:
        ValueError: naming ``directory`` when it is empty.
    """
    if not enabled:
        return None
    if directory is not None:
        if not directory.strip():
            raise ValueError("--compile-cache: an empty path; give a directory or use --no-compile-cache")
        return Path(directory)
    env = os.environ.get(CACHE_ENV, "").strip()
    if env.lower() == OFF:
        return None
    return Path(env) if env else default_cache_dir()


def enable_persistent_cache(directory: str | Path, *, min_compile_seconds: float = 0.0) -> Path:
    """Store every compiled program of at least ``min_compile_seconds`` in ``directory`` (created),
    and load programs from there. JAX's own default threshold is 1 s; at 0, the many small programs
    of a run are cached too (a tiny ResNet20 run: 185 files, 1.5 MiB; ``bench/RESULTS.md``).

    Takes effect for programs compiled after the call. Returns the directory.

    Raises:
        ValueError: naming ``min_compile_seconds`` when it is negative.
    """
    if not min_compile_seconds >= 0:
        raise ValueError(f"min_compile_seconds must be >= 0, got {min_compile_seconds!r}")
    path = Path(directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()  # a process that compiled before without a cache checks again
    return path


def use_persistent_cache(directory: str | Path | None, *, min_compile_seconds: float = 0.0) -> Path | None:
    """Make ``directory`` this process's persistent cache, or switch the cache off for None; does
    nothing when the process already uses that directory (so calling it once per task is cheap).

    A Ray worker (:mod:`ntklib.ray_engine`) calls it at the start of every task with the cache
    directory of the sweep, so the worker processes share the command line's cache.

    Returns:
        The directory in use, or None.
    """
    current = jax.config.jax_compilation_cache_dir  # type: ignore[attr-defined]  # a flag the stubs lack
    if directory is None:
        if current is not None:
            jax.config.update("jax_compilation_cache_dir", None)
            compilation_cache.reset_cache()
        return None
    path = Path(directory).expanduser()
    if current is not None and Path(current) == path:
        return path
    return enable_persistent_cache(path, min_compile_seconds=min_compile_seconds)
