"""The paper's Figure 2 (a–h) and Appendix C's panes i–j from a results directory.

Figure 2 has panes a–h; Appendix C's Figures 3–11 redraw them for every architecture and dataset and
add panes i and j. Our reading of the panes (the extracted text lost the captions' symbols):

- Figure 2 (a–e), metrics over epochs, one line per run coloured by init: (a) test accuracy,
  (b) NC1, (c) NC2, (d) NC3, (e) alignment of WᵀW with H K_κ⁻¹ Hᵀ (1 when the invariant E
  vanishes, §5.2);
- Figure 2 (f–h), final values against the initial learning rate, one line per init: (f) NC1,
  (g) NC2, (h) NC3;
- Appendix C, Figures 3–11, pane i: the final ‖M Mᵀ‖, ‖H₂H₂ᵀ‖, ‖h̄ h̄ᵀ‖ (the terms of the
  invariant, on the whole measured batch); pane j: the final label alignment of the NTK Θ and of
  the feature kernel Θʰ, on the probe (:func:`alignment_series` says which estimator).

The NC1 panes (b) and (f) show the paper's form, the mean within-class standard deviation that the
released code reports (``nc1``); :func:`draw_curves` and :func:`draw_finals` put the scale-free
trace form tr(Σ_W Σ_B⁺)/K (``nc1_trace``, :mod:`ntklib.collapse`) beside it as an extra pane.

Three figures, at most three panes a row, :data:`ntklib.book.BOOK_WIDTH_IN` wide, one legend of the inits
below each (:func:`legend_below`): :func:`draw_curves` (a–e), :func:`draw_finals` (f–h) and
:func:`draw_kernels` (i–j). :func:`plot_figure2` stacks them in one file
(``python -m ntklib.experiment plot``). The panes beside the paper's, which chapter 07 draws with
them: NC1 (trace), ‖E‖_F over epochs, the final test accuracy against the learning rate and the final
‖E‖_F against a final NC metric (:func:`plot_invariant_vs_collapse`).

Every function takes the tidy frame of :func:`ntklib.results.load_runs` (one row per record), and
the single-pane ones optional axes. Runs of several seeds are drawn one line per run over epochs;
against the learning rate a line joins the mean over the runs at each rate, with each run's own
point beside it. Every column named here is a column of :data:`ntklib.measure.COLUMNS` (checked
when the module is imported).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ntklib import measure, results, rundir
from ntklib.book import BOOK_STYLE, BOOK_WIDTH_IN

NC1_FORMS = {"nc1": "within-class std", "nc1_trace": r"tr$(\Sigma_W \Sigma_B^{+})/K$"}
"""The two NC1 columns and the words of their y-labels."""
NC1_TITLES = {"nc1": "NC1 (std, paper)", "nc1_trace": "NC1 (trace)"}
"""The two NC1 columns and the names of their panes."""
CURVES = (
    ("test_accuracy", "test accuracy", "(a) test accuracy"),
    ("nc1", "within-class std", "(b) NC1 (std, paper)"),
    ("nc2", "distance to simplex ETF", "(c) NC2"),
    ("nc3", "distance to self-duality", "(d) NC3"),
    ("invariant_alignment", "cos(WᵀW, HK⁻¹Hᵀ)", "(e) invariant alignment"),
)
"""(column, y-label, title) of the panes over epochs, Figure 2 (a–e)."""
FINALS = (
    ("nc1", "final within-class std", "(f) NC1 (std, paper)"),
    ("nc2", "final NC2", "(g) NC2"),
    ("nc3", "final NC3", "(h) NC3"),
)
"""(column, y-label, title) of the panes against the initial learning rate, Figure 2 (f–h)."""
NORM_E = r"$\Vert E\Vert_F$"
NC1_TRACE_CURVE = ("nc1_trace", NC1_FORMS["nc1_trace"], NC1_TITLES["nc1_trace"])
NORM_CURVE = ("invariant_norm", NORM_E, f"invariant norm {NORM_E}")
NC1_TRACE_FINAL = ("nc1_trace", f"final {NC1_FORMS['nc1_trace']}", NC1_TITLES["nc1_trace"])
TEST_FINAL = ("test_accuracy", "final test accuracy", "test accuracy")
DRAWN_CURVES = (*CURVES[:2], NC1_TRACE_CURVE, *CURVES[2:], NORM_CURVE)
"""The panes of :func:`draw_curves`, in order: a, b, NC1 (trace), c, d, e, ‖E‖_F."""
DRAWN_FINALS = (FINALS[0], NC1_TRACE_FINAL, *FINALS[1:], TEST_FINAL)
"""The panes of :func:`draw_finals`, in order: f, NC1 (trace), g, h, test accuracy."""
INVARIANT_TERMS = (("mmt_norm", "‖MMᵀ‖"), ("h2h2t_norm", "‖H₂H₂ᵀ‖"), ("mean_outer_norm", "‖h̄h̄ᵀ‖"))
"""(column, name) of the invariant's terms in pane i."""
TERM_STYLES = tuple(dict(marker=marker, ls="-") for marker in "os^")
"""The matplotlib style of each term's lines in pane i."""
ALIGNMENTS = (("align_ntk", "align_ntk_virtual", "NTK Θ"), ("align_feat", "align_feat_virtual", "feature kernel Θʰ"))
"""(exact column on the probe, released code's virtual-batch column, kernel) per kernel, pane j."""
KERNEL_STYLES = tuple(dict(marker="o", ls=ls) for ls in ("-", "--"))
"""The matplotlib style of each kernel's lines in pane j."""
for _spec in (*DRAWN_CURVES, *DRAWN_FINALS, *INVARIANT_TERMS, *ALIGNMENTS):
    measure.column(_spec[0])  # a pane of a column that no record has would stay empty
for _name in (*NC1_FORMS, *(virtual for _, virtual, _ in ALIGNMENTS), "batch_per_class", "probe_per_class"):
    measure.column(_name)


ROW_HEIGHT_IN = 2.3
"""Height of one row of panes in the figures of :func:`draw_curves`, :func:`draw_finals`, :func:`draw_kernels`."""
TITLES_HEIGHT_IN = 1.1
"""Height added to those figures for their title and the legend below."""
SAVE_DPI = 150
"""Resolution of the file that :func:`plot_figure2` writes."""


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def _legend(ax, **kwargs) -> None:
    """A legend only when something is labelled (matplotlib warns otherwise)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def legend_below(fig, axes, **legend_kwargs):
    """Replace the legends of ``axes`` by one legend below ``fig`` (a figure or subfigure with a
    constrained layout), each label once; ``legend_kwargs`` go to ``fig.legend`` (default: centred,
    up to three columns). Legends added with ``add_artist`` (the style keys of panes i and j) stay.
    Returns the legend, or None when nothing is labelled."""
    entries: dict = {}
    for ax in np.ravel(axes) if isinstance(axes, np.ndarray) else list(axes):
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if not entries:
        return None
    legend_kwargs = {"loc": "outside lower center", "ncol": min(3, len(entries)), **legend_kwargs}
    return fig.legend(list(entries.values()), list(entries), **legend_kwargs)


def _with_nc1_form(specs, nc1: str):
    """``specs`` with their NC1 panes switched to the column ``nc1`` (a key of :data:`NC1_FORMS`)."""
    if nc1 not in NC1_FORMS:
        raise ValueError(f"unknown nc1 {nc1!r}; valid choices: {', '.join(NC1_FORMS)}")
    return tuple(
        (
            nc1,
            ylabel.replace(NC1_FORMS["nc1"], NC1_FORMS[nc1]),
            title.replace(NC1_TITLES["nc1"], NC1_TITLES[nc1]),
        )
        if column == "nc1"
        else (column, ylabel, title)
        for column, ylabel, title in specs
    )


def init_colors(inits: Sequence[str]) -> dict[str, str]:
    """One matplotlib colour per initialisation, the same in every pane (inits in sorted order)."""
    return {init: f"C{i}" for i, init in enumerate(sorted(inits))}


def _log_scale(column: str) -> bool:
    """Whether a column may be drawn on a log scale: the NC metrics and the norms."""
    return column.startswith("nc") or column.endswith("_norm")


def _log_y_if_wide(ax) -> None:
    """A log y-axis when the pane's lines span more than a decade; a narrower range stays linear,
    where its tick labels are legible."""
    values = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.get_lines()] or [np.empty(0)])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size and values.max() > 10 * values.min():
        ax.set_yscale("log")


def plot_metric_over_epochs(
    df, column: str, ax=None, *, ylabel: str | None = None, title: str | None = None, log_y: bool | None = None
):
    """One record column over epochs, one line per run (so one per seed) coloured by init; a log
    scale when ``log_y``, by default for NC metrics and norms that span more than a decade. Records
    without the column (kernel metrics taken only every few records) are skipped, not drawn as gaps."""
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(4.5, 3.2))
    colors = init_colors(df["init"].unique())
    seen = set()
    for _, frame in df[df["status"] == "ok"].groupby("run_dir"):
        if column not in frame or frame[column].isna().all():
            continue
        init = frame["init"].iloc[0]
        points = frame[["epoch", column]].dropna()
        ax.plot(
            points["epoch"],
            points[column],
            color=colors[init],
            alpha=0.7,
            marker=".",
            label=init if init not in seen else None,
        )
        seen.add(init)
    ax.set(xlabel="epoch", ylabel=ylabel or column, title=title or column)
    if log_y and seen:
        ax.set_yscale("log")
    elif log_y is None and _log_scale(column):
        _log_y_if_wide(ax)
    _legend(ax, title="init")
    return ax


def _curve_panes(df, axes, specs):
    """One :func:`plot_metric_over_epochs` pane per ``(column, ylabel, title)`` of ``specs``."""
    if axes is None:
        _, axes = _pyplot().subplots(1, len(specs), figsize=(4 * len(specs), 3.2))
    axes = list(axes)
    for ax, (column, ylabel, title) in zip(axes, specs, strict=True):
        plot_metric_over_epochs(df, column, ax, ylabel=ylabel, title=title)
    return axes


def plot_training_curves(df, axes=None, *, nc1: str = "nc1"):
    """Figure 2 (a–e): metrics over epochs, one line per run, coloured by init (NC1 form ``nc1``
    in pane b). Returns the five axes."""
    return _curve_panes(df, axes, _with_nc1_form(CURVES, nc1))


def _series(ax, frame, x: str, column: str, *, color, label=None, **style) -> None:
    """The final ``column`` of one init's runs against ``x``: a line through the mean over the runs
    at each ``x`` (the seeds), and each run's own point when some ``x`` has several."""
    points = frame[[x, column]].dropna()
    mean = points.groupby(x)[column].mean()
    ax.plot(mean.index, mean.to_numpy(), color=color, label=label, **style)
    if len(mean) < len(points):
        ax.plot(points[x], points[column], ls="none", marker=style.get("marker", "o"), ms=3, alpha=0.5, color=color)


def _final_panes(df, axes, specs, *, x: str, xlabel: str, connect: bool):
    """One pane per ``(column, ylabel, title)`` of ``specs``: the final ``column`` of every finished
    run against its final ``x``, one series per init (the mean over runs at each ``x`` joined by a
    line when ``connect``, else one point per run), log scale for NC metrics over a decade or more."""
    if axes is None:
        _, axes = _pyplot().subplots(1, len(specs), figsize=(4 * len(specs), 3.2))
    axes = list(axes)  # callers walk them again (e.g. the log x of _lr_panes): not a one-pass iterator
    final = results.final_records(df)
    colors = init_colors(df["init"].unique())
    for ax, (column, ylabel, title) in zip(axes, specs, strict=True):
        groups = final.groupby("init") if column in final else ()
        for init, frame in groups:
            if connect:
                _series(ax, frame, x, column, color=colors[init], label=init, marker="o")
            else:
                ax.plot(frame[x], frame[column], marker="o", ls="none", color=colors[init], label=init)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        if _log_scale(column):
            _log_y_if_wide(ax)
        _legend(ax, title="init")
    return axes


def _lr_panes(df, axes, specs):
    """:func:`_final_panes` against the initial learning rate, on a log axis."""
    axes = _final_panes(df, axes, specs, x="lr", xlabel="initial learning rate", connect=True)
    for ax in axes:
        ax.set_xscale("log")
    return axes


def plot_final_vs_lr(df, axes=None, *, nc1: str = "nc1"):
    """Figure 2 (f–h) and the final test accuracy against the initial learning rate: final NC1
    (form ``nc1``), NC2, NC3, test accuracy. Returns the four axes."""
    return _lr_panes(df, axes, (*_with_nc1_form(FINALS, nc1), TEST_FINAL))


def style_key(ax, names, styles, **legend_kwargs):
    """A legend of black lines in ``styles`` named ``names`` on ``ax``, kept beside its
    ``ax.legend()`` (and by :func:`legend_below`): which marker or line style is which series."""
    from matplotlib.legend import Legend
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="k", **style) for style in styles]
    return ax.add_artist(Legend(ax, handles, list(names), **legend_kwargs))


def _plot_final_series(df, ax, series, styles, *, ylabel: str, title: str, log_y: bool, key: bool):
    """Final value of every (column, name) in ``series`` against the learning rate, one line per
    (series, init): colour for the init (labelled, for :func:`legend_below`), ``styles`` (matplotlib
    keyword arguments, one per series) for the series, with their :func:`style_key` when ``key``."""
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(4.5, 3.2))
    final = results.final_records(df)
    colors = init_colors(df["init"].unique())
    for i, ((column, _), style) in enumerate(zip(series, styles, strict=True)):
        groups = final.groupby("init") if column in final else ()
        for init, frame in groups:
            _series(ax, frame, "lr", column, color=colors[init], label=init if i == 0 else None, **style)
    ax.set(xscale="log", xlabel="initial learning rate", ylabel=ylabel, title=title)
    if log_y:
        _log_y_if_wide(ax)
    if key:
        style_key(ax, [name for _, name in series], styles, loc="best")
    _legend(ax, title="init")
    return ax


def plot_invariant_terms(df, ax=None, *, key: bool = True):
    """Appendix C, Figures 3–11, pane i: final ‖MMᵀ‖, ‖H₂H₂ᵀ‖, ‖h̄h̄ᵀ‖ (whole batch) against the
    learning rate, a marker per term (:data:`TERM_STYLES`, in a key in the pane when ``key``)."""
    title = "(i) invariant terms at the end"
    return _plot_final_series(
        df, ax, INVARIANT_TERMS, TERM_STYLES, ylabel="Frobenius norm", title=title, log_y=True, key=key
    )


def _per_class_counts(final, column: str, divisor: int = 1) -> str | None:
    """The values of a per-class count column over ``final`` (divided by ``divisor``), joined by
    "/", or None when no record has it."""
    if column not in final or final[column].isna().all():
        return None
    return "/".join(str(int(value) // divisor) for value in sorted(final[column].dropna().unique()))


def alignment_series(df) -> tuple[tuple[tuple[str, str], ...], str]:
    """What pane j draws: ((column, kernel name) per kernel, a description of the estimator).

    The released code's virtual-batch estimator (``align_*_virtual``, k = m // 2 per class, m =
    ``batch_per_class``) when the final records have it, else the exact alignment on the probe
    (``align_*``, ``probe_per_class`` per class): records written before the virtual columns lack them.
    """
    final = results.final_records(df)
    virtual = all(column in final and final[column].notna().any() for _, column, _ in ALIGNMENTS)
    if virtual:
        k = _per_class_counts(final, "batch_per_class", divisor=2)
        what = f"released estimator, k = {k or 'm/2'} per class"
    else:
        probe = _per_class_counts(final, "probe_per_class")
        what = f"exact, probe of {probe} per class" if probe else "exact, on the probe"
    return tuple((virtual_column if virtual else exact, name) for exact, virtual_column, name in ALIGNMENTS), what


def plot_final_alignment(df, ax=None, *, key: bool = True):
    """Appendix C, Figures 3–11, pane j: final label alignment A(Θ, YᵀY) (solid) and A(Θʰ, YᵀY)
    (dashed, :data:`KERNEL_STYLES`, in a key in the pane when ``key``) on the probe against the
    learning rate, the estimator of :func:`alignment_series` (named in the title)."""
    series, what = alignment_series(df)
    title = f"(j) label alignment at the end\n{what}"
    return _plot_final_series(
        df, ax, series, KERNEL_STYLES, ylabel="alignment with YᵀY", title=title, log_y=False, key=key
    )


def plot_invariant_vs_collapse(df, ax=None, *, metric: str = "nc2"):
    """Final invariant norm ‖E‖_F against the final ``metric`` (a record column), one point per
    finished run, coloured by init: the theory ties a small invariant to strong collapse (§5)."""
    measure.column(metric)
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(4.5, 3.2))
    final = results.final_records(df)
    columns = ["invariant_norm", metric]
    final = final.dropna(subset=columns) if set(columns) <= set(final) else final.iloc[:0]  # runs without kernels
    colors = init_colors(df["init"].unique())
    for init, frame in final.groupby("init"):
        ax.scatter(frame["invariant_norm"], frame[metric], color=colors[init], label=init)
    ax.set(
        xscale="log", xlabel=f"final invariant norm {NORM_E}", ylabel=f"final {metric}", title=f"{NORM_E} vs {metric}"
    )
    _legend(ax, title="init")
    return ax


def _rows(n_panes: int, ncols: int) -> int:
    return -(-n_panes // ncols)


CURVES_COLUMNS, FINALS_COLUMNS, KERNELS_COLUMNS, KERNELS_PLACES = 3, 3, 2, 4
"""Panes a row of each figure, and the places of :func:`draw_kernels` (three panes and its keys)."""


def _grid(fig, n_panes: int, ncols: int):
    """``n_panes`` axes in rows of ``ncols`` on ``fig`` (a new figure, :data:`ntklib.book.BOOK_WIDTH_IN` wide,
    when None), the unused places of the last row removed."""
    rows = _rows(n_panes, ncols)
    if fig is None:
        size = (BOOK_WIDTH_IN, rows * ROW_HEIGHT_IN + TITLES_HEIGHT_IN)
        fig = _pyplot().figure(figsize=size, layout="constrained")
    axes = list(fig.subplots(rows, ncols, squeeze=False).ravel())
    for ax in axes[n_panes:]:
        ax.remove()
    return fig, axes[:n_panes]


def _finish(fig, axes, ncols: int, title: str, paper: str, *, shared_x: bool):
    """One legend of the inits below, ``title`` and the paper's panes above; with ``shared_x``, the
    x-label only on the lowest pane of each column."""
    if shared_x:
        for ax in axes[:-ncols]:
            ax.set_xlabel("")
    legend_below(fig, axes, title="init")
    fig.suptitle("\n".join(line for line in (title, paper) if line))
    return fig


def draw_curves(df, title: str, *, fig=None):
    """Figure 2 (a–e) over epochs, with NC1 (trace) beside the paper's NC1 (std) and ‖E‖_F at the
    end (:data:`DRAWN_CURVES`), three panes a row; on ``fig`` (a figure or subfigure) when given."""
    fig, axes = _grid(fig, len(DRAWN_CURVES), CURVES_COLUMNS)
    _curve_panes(df, axes, DRAWN_CURVES)
    return _finish(fig, axes, CURVES_COLUMNS, title, "paper's Figure 2 (a–e)", shared_x=True)


def draw_finals(df, title: str, *, fig=None):
    """Figure 2 (f–h) against the initial learning rate, with NC1 (trace) beside the paper's NC1
    (std) and the final test accuracy (:data:`DRAWN_FINALS`), three panes a row."""
    fig, axes = _grid(fig, len(DRAWN_FINALS), FINALS_COLUMNS)
    _lr_panes(df, axes, DRAWN_FINALS)
    return _finish(fig, axes, FINALS_COLUMNS, title, "paper's Figure 2 (f–h)", shared_x=True)


def draw_kernels(df, title: str, *, fig=None):
    """Appendix C, Figures 3–11, panes i–j and the final ‖E‖_F against the final NC2, two panes a
    row; the fourth place holds the keys (colour: the init, below; marker: the term in i; line
    style: the kernel in j)."""
    fig, axes = _grid(fig, KERNELS_PLACES, KERNELS_COLUMNS)
    plot_invariant_terms(df, axes[0], key=False)
    plot_final_alignment(df, axes[1], key=False)
    plot_invariant_vs_collapse(df, axes[2], metric="nc2")
    keys = axes[3]
    keys.set_axis_off()
    style_key(keys, [name for _, name in INVARIANT_TERMS], TERM_STYLES, title="(i) term", loc="center left")
    style_key(keys, [name for *_, name in ALIGNMENTS], KERNEL_STYLES, title="(j) kernel", loc="center right")
    paper = "paper's Appendix C, Figures 3–11, panes i–j"
    return _finish(fig, axes[:3], KERNELS_COLUMNS, title, paper, shared_x=False)


def plot_figure2(runs, path: str | Path | None = None, *, title: str | None = None):
    """Figure 2 (a–h) and Appendix C's panes i–j in one figure: :func:`draw_curves`,
    :func:`draw_finals` and :func:`draw_kernels` stacked, in the book's style. ``runs`` is a results
    root or a :func:`ntklib.results.load_runs` frame. Saves to ``path`` when given, atomically
    (:func:`ntklib.rundir.write_atomic`), in the format of its extension (PNG without one), at
    :data:`SAVE_DPI`. Returns the figure.

    Raises:
        FileNotFoundError: when ``runs`` is a path that does not exist.
        ValueError: when there are no runs with records.
    """
    plt = _pyplot()
    df = results.load_runs(runs) if isinstance(runs, (str, Path)) else runs
    if df.empty:
        raise ValueError(f"no runs with records in {runs!r}")
    if title is None:
        first = df.iloc[0]
        title = f"{first.get('arch', '')} on {first.get('dataset', '')}: {df['run_dir'].nunique()} runs"
    parts = (
        (draw_curves, _rows(len(DRAWN_CURVES), CURVES_COLUMNS)),
        (draw_finals, _rows(len(DRAWN_FINALS), FINALS_COLUMNS)),
        (draw_kernels, _rows(KERNELS_PLACES, KERNELS_COLUMNS)),
    )
    heights = [rows * ROW_HEIGHT_IN + TITLES_HEIGHT_IN for _, rows in parts]
    with plt.rc_context(BOOK_STYLE):
        fig = plt.figure(figsize=(BOOK_WIDTH_IN, sum(heights) + 0.4), layout="constrained")
        for (draw, _), subfigure in zip(parts, fig.subfigures(len(parts), 1, height_ratios=heights), strict=True):
            draw(df, "", fig=subfigure)
        fig.suptitle(title, fontweight="bold")
        if path is not None:
            import io

            buffer = io.BytesIO()
            fig.savefig(buffer, format=Path(path).suffix[1:] or "png", dpi=SAVE_DPI)
            rundir.write_atomic(path, buffer.getvalue())
    return fig
