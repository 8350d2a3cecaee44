"""The book's conventions in one place: a chapter's scale, smoke size and seed, its figure style and
figure size, and where it finds committed results.

Every chapter opens with one call, :func:`setup`, which reads three environment variables:

- ``NTK_BOOK_SCALE``: ``default`` (CPU, minutes, embedded data; the value when unset) or ``paper``
  (GPU, the paper's protocol);
- ``NTK_BOOK_SMOKE``: ``1`` (only together with ``NTK_BOOK_SCALE=paper``) shrinks the paper branch
  to a *smoke size*: the same code path (dataset loader, model variant, branches) with the few sizes
  that the chapter declares next to its paper sizes made small, so that the test suite can execute
  every paper branch on a CPU; unset or ``0``: off;
- ``NTK_BOOK_SEED``: the chapter's seed, an integer >= 0 (0 when unset).

It then enables float64 in jax when asked, applies the figure style :data:`BOOK_STYLE` and numpy's
print options, and prints one marker line, ``scale=<label>, seed=<n>`` followed by the chapter's
sizes, that ``tests/test_paper_branches.py`` reads::

    BOOK = book.setup(
        {"default": dict(epochs=6, m=3), "paper": dict(epochs=60, m=12)},
        smoke=dict(epochs=1),  # overrides of the paper sizes under NTK_BOOK_SMOKE=1
        x64=True,
    )
    EPOCHS, M = BOOK.sizes["epochs"], BOOK.sizes["m"]

Figures are :func:`figsize` (:data:`BOOK_WIDTH_IN` wide) and read committed results through
:func:`results_path`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCALES = ("default", "paper")
"""The scales a chapter runs at, the CPU default and the paper's sizes."""
SCALE_VAR = "NTK_BOOK_SCALE"
SMOKE_VAR = "NTK_BOOK_SMOKE"
SEED_VAR = "NTK_BOOK_SEED"
FLAG_VALUES = ("0", "1")
"""The values of an on/off switch (:func:`env_flag`): off, on."""

BOOK_DPI = 100
"""Resolution of the book's figures, dots per inch (a figure w inches wide is 100·w pixels)."""
BOOK_WIDTH_IN = 7.2
"""Width of the book's widest figure in inches. At BOOK_DPI it fits the page's content column (about
700 px in a 1280 px window) nearly unscaled, so its text keeps the size set below."""
MIN_FONT_PT = 10.0
"""Size in points of the book style's smallest text, tick labels and legends (about 10 pt on the page)."""
BOOK_STYLE: dict[str, Any] = {
    "figure.dpi": BOOK_DPI,
    "savefig.dpi": BOOK_DPI,
    "figure.figsize": (BOOK_WIDTH_IN, 3.6),
    "figure.constrained_layout.use": True,
    "font.size": 11.0,
    "axes.titlesize": 11.0,
    "axes.labelsize": 11.0,
    "xtick.labelsize": MIN_FONT_PT,
    "ytick.labelsize": MIN_FONT_PT,
    "legend.fontsize": MIN_FONT_PT,
    "legend.title_fontsize": MIN_FONT_PT,
}
"""matplotlib rcParams of every figure in the book (:func:`use_book_style`)."""


@dataclass(frozen=True)
class Book:
    """What a chapter runs at, as :func:`setup` read it.

    Attributes:
        scale: one of :data:`SCALES`.
        smoke: whether the paper branch runs at its smoke size.
        seed: the chapter's seed (``NTK_BOOK_SEED``).
        sizes: the chapter's sizes at its scale (:func:`sizes_at`); empty when it declares none.
    """

    scale: str
    smoke: bool
    seed: int
    sizes: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The scale as the marker line names it (``default``, ``paper`` or ``paper (smoke size)``)."""
        return f"{self.scale} (smoke size)" if self.smoke else self.scale

    def pick(
        self, configs: Mapping[str, Mapping[str, Any]], *, smoke: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Further sizes at this book's scale and smoke size, as :func:`sizes_at` picks them.

        Example:
            >>> Book("paper", smoke=True, seed=0).pick(
            ...     {"default": {"epochs": 40}, "paper": {"epochs": 40}}, smoke={"epochs": 1}
            ... )
            {'epochs': 1}
        """
        return sizes_at(configs, self.scale, smoke=smoke, smoke_on=self.smoke)

    def marker(self) -> str:
        """The line :func:`setup` prints: ``scale=<label>, seed=<n>``, then ``: name=value, ...`` of the
        sizes (floats to four significant digits).

        Example:
            >>> Book("default", smoke=False, seed=3, sizes={"K": 4, "tol": 2e-2}).marker()
            'scale=default, seed=3: K=4, tol=0.02'
        """
        line = f"scale={self.label}, seed={self.seed}"
        if self.sizes:
            line += ": " + ", ".join(f"{name}={_format(value)}" for name, value in self.sizes.items())
        return line


def _format(value: object) -> str:
    """A size as the marker line shows it: floats to four significant digits, sequences item by item."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_format(item) for item in value) + ")"
    return str(value)


def read_scale() -> str:
    """The scale from ``$NTK_BOOK_SCALE`` (``"default"`` when unset).

    Raises:
        ValueError: naming ``NTK_BOOK_SCALE`` when the value is not one of :data:`SCALES`.
    """
    value = os.environ.get(SCALE_VAR, "default")
    if value not in SCALES:
        raise ValueError(f"{SCALE_VAR} must be one of {SCALES}, got {value!r}")
    return value


def env_flag(name: str) -> bool:
    """An on/off switch read from the environment variable ``name``: unset or ``"0"`` is off, ``"1"``
    is on.

    Raises:
        ValueError: naming the variable when its value is anything else.

    Example:
        >>> env_flag("NTK_BOOK_EXAMPLE_FLAG_UNSET")
        False
    """
    value = os.environ.get(name, "0")
    if value not in FLAG_VALUES:
        raise ValueError(f"{name} must be one of {FLAG_VALUES}, got {value!r}")
    return value == "1"


def read_smoke(scale: str) -> bool:
    """Whether the paper branch runs at its smoke size: ``$NTK_BOOK_SMOKE`` is ``"1"``.

    Args:
        scale: the scale the chapter runs at (the smoke size shrinks the paper branch only).

    Raises:
        ValueError: naming ``NTK_BOOK_SMOKE`` when its value is not ``0`` or ``1``, or when it is
            ``1`` at a scale other than ``paper``.
    """
    if not env_flag(SMOKE_VAR):
        return False
    if scale != "paper":
        raise ValueError(
            f"{SMOKE_VAR}=1 shrinks the paper branch and needs {SCALE_VAR}=paper, but the scale is {scale!r}"
        )
    return True


def read_seed() -> int:
    """The chapter's seed from ``$NTK_BOOK_SEED`` (0 when unset).

    Raises:
        ValueError: naming ``NTK_BOOK_SEED`` when the value is not an integer >= 0 written in digits.
    """
    value = os.environ.get(SEED_VAR, "0")
    if not re.fullmatch(r"[0-9]+", value):
        raise ValueError(f"{SEED_VAR} must be an integer >= 0, got {value!r}")
    return int(value)


def sizes_at(
    configs: Mapping[str, Mapping[str, Any]],
    scale: str,
    *,
    smoke: Mapping[str, Any] | None = None,
    smoke_on: bool = False,
) -> dict[str, Any]:
    """The sizes of a chapter at ``scale``: a copy of ``configs[scale]``, updated with ``smoke`` when
    ``smoke_on``.

    Args:
        configs: one dict of sizes per scale, keyed by every name in :data:`SCALES`.
        scale: one of :data:`SCALES`.
        smoke: overrides of the paper sizes at the smoke size; each key must be a key of
            ``configs["paper"]`` (a smoke size shrinks what the paper branch has, it adds nothing).
            Checked at every scale, so that a typo fails everywhere.
        smoke_on: whether the smoke size applies (only at the paper scale).

    Returns:
        A new dict; ``configs`` is left unchanged.

    Raises:
        ValueError: naming ``configs`` when its keys are not the scales, ``smoke`` when it names a key
            that the paper sizes lack, ``scale`` when it is not a scale, and ``NTK_BOOK_SMOKE`` when
            ``smoke_on`` at the default scale.

    Example:
        >>> sizes = {"default": {"epochs": 6, "m": 3}, "paper": {"epochs": 60, "m": 12}}
        >>> sizes_at(sizes, "paper", smoke={"epochs": 1}, smoke_on=True)
        {'epochs': 1, 'm': 12}
    """
    if set(configs) != set(SCALES):
        raise ValueError(f"configs must have exactly the keys {SCALES}, got {sorted(configs)}")
    unknown = sorted(set(smoke or {}) - set(configs["paper"]))
    if unknown:
        raise ValueError(f"smoke overrides keys that the paper config lacks: {unknown}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if smoke_on and scale != "paper":
        raise ValueError(
            f"{SMOKE_VAR}=1 shrinks the paper branch and needs {SCALE_VAR}=paper, but the scale is {scale!r}"
        )
    sizes = dict(configs[scale])
    if smoke_on:
        sizes.update(smoke or {})
    return sizes


def use_book_style() -> None:
    """Set :data:`BOOK_STYLE`: figures at most :data:`BOOK_WIDTH_IN` wide, text at least
    :data:`MIN_FONT_PT`. Figures with more than three panes should use more rows, not more width."""
    import matplotlib.style

    matplotlib.style.use(BOOK_STYLE)


def setup(
    sizes: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    smoke: Mapping[str, Any] | None = None,
    x64: bool = False,
) -> Book:
    """Open a chapter: read its scale, smoke size and seed, set the book's style, print the marker line.

    Reads ``NTK_BOOK_SCALE``, ``NTK_BOOK_SMOKE`` and ``NTK_BOOK_SEED`` (all validated), enables
    float64 in jax when ``x64`` (before the chapter makes any array), sets :data:`BOOK_STYLE` and
    ``np.set_printoptions(legacy="1.25")`` (numbers glued into the text print as ``2.5``, not
    ``np.float64(2.5)``), and prints :meth:`Book.marker`.

    Args:
        sizes: the chapter's sizes per scale, as for :func:`sizes_at` (None: no sizes).
        smoke: overrides of the paper sizes at the smoke size, as for :func:`sizes_at`.
        x64: whether the chapter's theory needs float64 (``jax_enable_x64``); False leaves jax as it is.

    Returns:
        The :class:`Book`, with ``sizes`` picked at the scale.

    Raises:
        ValueError: naming the environment variable whose value is invalid, ``smoke`` when it is given
            without ``sizes`` or names a key the paper sizes lack, ``configs`` for keys other than the
            scales.

    Example:
        >>> import matplotlib as mpl
        >>> import numpy as np
        >>> with np.printoptions(), mpl.rc_context():  # only to leave the doctest session unchanged
        ...     BOOK = setup({"default": {"K": 4}, "paper": {"K": 10}})  # NTK_BOOK_* unset
        scale=default, seed=0: K=4
        >>> BOOK.sizes["K"], BOOK.label
        (4, 'default')
    """
    scale = read_scale()
    smoke_on = read_smoke(scale)
    seed = read_seed()
    if sizes is None and smoke is not None:
        raise ValueError("smoke overrides sizes, but setup got no sizes")
    picked = sizes_at(sizes, scale, smoke=smoke, smoke_on=smoke_on) if sizes is not None else {}
    if x64:
        import jax

        jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]
    import numpy as np

    use_book_style()
    np.set_printoptions(legacy="1.25")
    book = Book(scale, smoke_on, seed, picked)
    print(book.marker())
    return book


def figsize(height: float) -> tuple[float, float]:
    """The size of a full-width figure of ``height`` inches: ``(BOOK_WIDTH_IN, height)``.

    Raises:
        ValueError: naming ``height`` when it is not positive.

    Example:
        >>> figsize(3.2)
        (7.2, 3.2)
    """
    if not height > 0:
        raise ValueError(f"height must be positive (inches), got {height!r}")
    return (BOOK_WIDTH_IN, height)


RESULTS_DIRS = (Path("..", "results"), Path("results"))
"""The directories searched for committed results, from ``book/`` (as the build runs) first, then
from the repository root."""


def results_path(name: str) -> Path:
    """The committed results ``results/<name>``, from ``book/`` or from the repository root.

    Returns:
        The first existing path of :data:`RESULTS_DIRS` joined with ``name``, relative to the working
        directory.

    Raises:
        FileNotFoundError: naming the results directories searched when neither holds ``name``.

    Example:
        >>> results_path("no_such_sweep")
        Traceback (most recent call last):
        FileNotFoundError: no committed results 'no_such_sweep': neither ../results/no_such_sweep nor ...
    """
    for directory in RESULTS_DIRS:
        path = directory / name
        if path.exists():
            return path
    searched = " nor ".join(str(directory / name) for directory in RESULTS_DIRS)
    raise FileNotFoundError(
        f"no committed results {name!r}: neither {searched} exists (run from book/ or the repository root)"
    )
