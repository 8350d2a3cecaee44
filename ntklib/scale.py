"""The book's scale switch: every chapter runs at the ``default`` scale (CPU, minutes, embedded
data) unless the environment variable ``NTK_BOOK_SCALE`` says ``paper`` (GPU, the paper's protocol).

``NTK_BOOK_SMOKE=1`` (only together with ``NTK_BOOK_SCALE=paper``) shrinks the paper branch to a
*smoke size*: the same code path (dataset loader, model variant, branches), with the few sizes that
each chapter declares next to its paper config (epochs, samples per class, horizons) made small, so
that the test suite can execute every paper branch on a CPU.

A chapter picks its sizes with :func:`book_config`::

    CFG = book_config(
        {"default": dict(epochs=6, m=3), "paper": dict(epochs=60, m=12)},
        smoke=dict(epochs=1, m=2),  # overrides of the paper config under NTK_BOOK_SMOKE=1
    )
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

SCALES = ("default", "paper")
ENV_VAR = "NTK_BOOK_SCALE"
SMOKE_ENV_VAR = "NTK_BOOK_SMOKE"
SMOKE_VALUES = ("0", "1")  # the values of an on/off switch (env_flag)


def book_scale(scale: str | None = None) -> str:
    """Return the scale a chapter runs at: ``scale`` if given, else ``$NTK_BOOK_SCALE``, else
    ``"default"``.

    Raises:
        ValueError: naming ``NTK_BOOK_SCALE`` (or ``scale``) when the value is not one of SCALES.
    """
    value = scale if scale is not None else os.environ.get(ENV_VAR, "default")
    if value not in SCALES:
        source = "scale" if scale is not None else ENV_VAR
        raise ValueError(f"{source} must be one of {SCALES}, got {value!r}")
    return value


def env_flag(name: str) -> bool:
    """An on/off switch read from the environment variable ``name``: unset or ``"0"`` is off, ``"1"``
    is on.

    Raises:
        ValueError: naming the variable when its value is anything else.
    """
    value = os.environ.get(name, "0")
    if value not in SMOKE_VALUES:
        raise ValueError(f"{name} must be one of {SMOKE_VALUES}, got {value!r}")
    return value == "1"


def book_smoke(scale: str | None = None) -> bool:
    """Whether the paper branch runs at its smoke size: ``$NTK_BOOK_SMOKE`` is ``"1"`` (unset or
    ``"0"``: no).

    Args:
        scale: the scale, as for :func:`book_scale` (None: ``$NTK_BOOK_SCALE``).

    Raises:
        ValueError: naming ``NTK_BOOK_SMOKE`` when its value is not ``0`` or ``1``, or when it is
            ``1`` at a scale other than ``paper`` (the smoke size shrinks the paper branch only).
    """
    if not env_flag(SMOKE_ENV_VAR):
        return False
    chosen = book_scale(scale)
    if chosen != "paper":
        raise ValueError(
            f"{SMOKE_ENV_VAR}=1 shrinks the paper branch and needs {ENV_VAR}=paper, but the scale is {chosen!r}"
        )
    return True


def book_config(
    configs: Mapping[str, Mapping[str, Any]],
    *,
    smoke: Mapping[str, Any] | None = None,
    scale: str | None = None,
) -> dict[str, Any]:
    """The sizes of a chapter at its scale: a copy of ``configs[scale]``, updated with ``smoke``
    when :func:`book_smoke` is true.

    Args:
        configs: one config per scale, keyed by every name in ``SCALES``.
        smoke: overrides of the paper config at the smoke size; each key must be a key of
            ``configs["paper"]`` (a smoke size shrinks what the paper branch has, it adds nothing).
        scale: the scale, as for :func:`book_scale` (None: ``$NTK_BOOK_SCALE``).

    Returns:
        A new dict; ``configs`` is left unchanged.

    Raises:
        ValueError: naming ``configs`` when its keys are not the scales, ``smoke`` when it names a key
            that the paper config lacks, and ``NTK_BOOK_SCALE`` / ``NTK_BOOK_SMOKE`` for bad values.

    Example:
        >>> sizes = {"default": {"epochs": 6, "m": 3}, "paper": {"epochs": 60, "m": 12}}
        >>> book_config(sizes, smoke={"epochs": 1}, scale="default")  # NTK_BOOK_SMOKE unset
        {'epochs': 6, 'm': 3}
    """
    if set(configs) != set(SCALES):
        raise ValueError(f"configs must have exactly the keys {SCALES}, got {sorted(configs)}")
    unknown = sorted(set(smoke or {}) - set(configs["paper"]))
    if unknown:
        raise ValueError(f"smoke overrides keys that the paper config lacks: {unknown}")
    chosen = book_scale(scale)
    config = dict(configs[chosen])
    if book_smoke(chosen):
        config.update(smoke or {})
    return config
