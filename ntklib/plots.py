"""Figure 2 of the paper (and its Appendix C analogues) from a results directory.

Panes (our reading of the paper's figure; the extracted text lost the captions' symbols):

- a–e, metrics over epochs, one line per run: (a) test accuracy, (b) NC1, (c) NC2, (d) NC3,
  (e) alignment of WᵀW with H K_κ⁻¹ Hᵀ (1 when the invariant E vanishes, §5.2);
- f–h, final values against the initial learning rate, one line per initialisation: NC1, NC2,
  NC3 and test accuracy;
- i, final ‖M Mᵀ‖, ‖H₂H₂ᵀ‖, ‖h̄ h̄ᵀ‖ (the terms of the invariant);
- j, final label alignment of the NTK Θ and of the feature kernel Θʰ.

Two views that are not panes of the paper's figure: final NC metrics against final test accuracy
(:func:`plot_final_vs_test_accuracy`, "comparable performance, different collapse", §6) and the
final invariant norm against a final NC metric (:func:`plot_invariant_vs_collapse`).

Every function takes the tidy frame of :func:`ntklib.results.load_runs` and optional axes, so a
notebook can draw one pane; :func:`plot_figure2` draws all of them and saves a PNG
(``python -m ntklib.experiment plot``). Every column named here is a column of
:data:`ntklib.measure.COLUMNS` (checked when the module is imported). NC1 panes show
the paper's within-class standard deviation (``nc1="nc1"``) or the scale-free trace form
tr(Σ_W Σ_B⁺)/K (``nc1="nc1_trace"``), see :mod:`ntklib.collapse`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ntklib import measure, results

CURVES = (
    ("test_accuracy", "test accuracy", "(a) test accuracy"),
    ("nc1", "NC1 (within-class std)", "(b) NC1"),
    ("nc2", "NC2 (distance to simplex ETF)", "(c) NC2"),
    ("nc3", "NC3 (distance to self-duality)", "(d) NC3"),
    ("invariant_alignment", "alignment ⟨WᵀW, HK⁻¹Hᵀ⟩", "(e) invariant alignment"),
)
FINALS = (
    ("nc1", "final NC1 (within-class std)", "(f) NC1"),
    ("nc2", "final NC2", "(g) NC2"),
    ("nc3", "final NC3", "(h) NC3"),
    ("test_accuracy", "final test accuracy", "(f–h) test accuracy"),
)
NC1_FORMS = {"nc1": "within-class std", "nc1_trace": "tr(Σ_W Σ_B⁺)/K"}
INVARIANT_TERMS = (("mmt_norm", "‖MMᵀ‖"), ("h2h2t_norm", "‖H₂H₂ᵀ‖"), ("mean_outer_norm", "‖h̄h̄ᵀ‖"))
ALIGNMENTS = (("align_ntk", "NTK Θ"), ("align_feat", "feature kernel Θʰ"))
for _spec in (*CURVES, *FINALS, *INVARIANT_TERMS, *ALIGNMENTS):
    measure.column(_spec[0])  # a pane of a column that no record has would stay empty
for _form in NC1_FORMS:
    measure.column(_form)


BOOK_DPI = 100
"""Resolution of the book's figures, dots per inch (a figure w inches wide is 100·w pixels)."""
BOOK_WIDTH_IN = 7.2
"""Width of the book's widest figure in inches. At BOOK_DPI it fits the page's content column (about
700 px in a 1280 px window) nearly unscaled, so its text keeps the size set below."""
MIN_FONT_PT = 10.0
"""Size in points of the book style's smallest text, tick labels and legends (about 10 pt on the page)."""
BOOK_STYLE = {
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


def use_book_style() -> None:
    """Set :data:`BOOK_STYLE`: figures at most :data:`BOOK_WIDTH_IN` wide, text at least
    :data:`MIN_FONT_PT`. Figures with more than three panes should use more rows, not more width."""
    _pyplot().rcParams.update(BOOK_STYLE)


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def _legend(ax, **kwargs) -> None:
    """A legend only when something is labelled (matplotlib warns otherwise)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _with_nc1_form(specs, nc1: str):
    """``specs`` with its NC1 entry switched to the column ``nc1`` (a key of :data:`NC1_FORMS`)."""
    if nc1 not in NC1_FORMS:
        raise ValueError(f"unknown nc1 {nc1!r}; valid choices: {', '.join(NC1_FORMS)}")
    return tuple(
        (nc1, ylabel.replace(NC1_FORMS["nc1"], NC1_FORMS[nc1]), title) if column == "nc1" else (column, ylabel, title)
        for column, ylabel, title in specs
    )


def init_colors(inits: Sequence[str]) -> dict[str, str]:
    """One matplotlib colour per initialisation, the same in every pane (inits in sorted order)."""
    return {init: f"C{i}" for i, init in enumerate(sorted(inits))}


def final_records(df):
    """The last successful record of every finished run (one row per run)."""
    ok = df[(df["status"] == "ok") & (df["run_status"] == "finished")]
    if ok.empty:
        return ok
    return ok.sort_values("epoch").groupby("run_dir", as_index=False).tail(1).sort_values(["init", "lr"])


def plot_metric_over_epochs(
    df, column: str, ax=None, *, ylabel: str | None = None, title: str | None = None, log_y: bool | None = None
):
    """One record column over epochs, one line per run coloured by init (log scale for NC metrics
    unless ``log_y`` says otherwise). Records without the column (kernel metrics taken only every
    few records) are skipped, not drawn as gaps."""
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
    if seen and (column.startswith("nc") if log_y is None else log_y):
        ax.set_yscale("log")
    _legend(ax, title="init")
    return ax


def plot_training_curves(df, axes=None, *, nc1: str = "nc1"):
    """Panes a–e: metrics over epochs, one line per run, coloured by init (NC1 form ``nc1``)."""
    curves = _with_nc1_form(CURVES, nc1)
    if axes is None:
        _, axes = _pyplot().subplots(1, len(curves), figsize=(4 * len(curves), 3.2))
    for ax, (column, ylabel, title) in zip(axes, curves, strict=True):
        plot_metric_over_epochs(df, column, ax, ylabel=ylabel, title=title)
    return axes


def _final_panes(df, axes, specs, *, x: str, xlabel: str, connect: bool):
    """One pane per ``(column, ylabel, title)`` of ``specs``: the final ``column`` of every finished
    run against its final ``x``, one series per init (points joined by a line when ``connect``), log
    scale for the NC metrics."""
    if axes is None:
        _, axes = _pyplot().subplots(1, len(specs), figsize=(4 * len(specs), 3.2))
    axes = list(axes)  # callers walk them again (e.g. plot_final_vs_lr's log x): not a one-pass iterator
    final = final_records(df)
    colors = init_colors(df["init"].unique())
    for ax, (column, ylabel, title) in zip(axes, specs, strict=True):
        for init, frame in final.groupby("init"):
            style = dict(marker="o", ls="-" if connect else "none", color=colors[init], label=init)
            ax.plot(frame[x], frame[column], **style)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        if column.startswith("nc") and not final.empty:
            ax.set_yscale("log")
        _legend(ax, title="init")
    return axes


def plot_final_vs_lr(df, axes=None, *, nc1: str = "nc1"):
    """Panes f–h: final NC1 (form ``nc1``), NC2, NC3 and test accuracy against the initial
    learning rate."""
    axes = _final_panes(df, axes, _with_nc1_form(FINALS, nc1), x="lr", xlabel="initial learning rate", connect=True)
    for ax in axes:
        ax.set_xscale("log")
    return axes


def _plot_final_series(df, ax, series, styles, *, ylabel: str, title: str, log_y: bool):
    """Final value of every (column, name) in ``series`` against the learning rate, one line per
    (series, init); ``styles`` gives each series its matplotlib keyword arguments."""
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(4.5, 3.2))
    final = final_records(df)
    colors = init_colors(df["init"].unique())
    for (column, name), style in zip(series, styles, strict=True):
        if column not in final:
            continue
        for init, frame in final.groupby("init"):
            ax.plot(frame["lr"], frame[column], color=colors[init], label=f"{name}, {init}", **style)
    ax.set(xscale="log", xlabel="initial learning rate", ylabel=ylabel, title=title)
    if log_y:
        ax.set_yscale("log")
    _legend(ax)
    return ax


def plot_invariant_terms(df, ax=None):
    """Pane i: final ‖MMᵀ‖, ‖H₂H₂ᵀ‖, ‖h̄h̄ᵀ‖ against the learning rate (marker per term)."""
    styles = [dict(marker=marker, ls="-") for marker in "os^"]
    return _plot_final_series(
        df, ax, INVARIANT_TERMS, styles, ylabel="Frobenius norm", title="(i) invariant terms at the end", log_y=True
    )


def plot_final_alignment(df, ax=None):
    """Pane j: final label alignment A(Θ, YᵀY) and A(Θʰ, YᵀY) against the learning rate."""
    styles = [dict(marker="o", ls=ls) for ls in ("-", "--")]
    return _plot_final_series(
        df, ax, ALIGNMENTS, styles, ylabel="alignment with YᵀY", title="(j) kernel alignment at the end", log_y=False
    )


def plot_final_vs_test_accuracy(df, axes=None, *, nc1: str = "nc1_trace"):
    """Final NC1 (form ``nc1``), NC2 and NC3 against the final test accuracy, one point per
    finished run, coloured by init: runs of comparable accuracy can end with different collapse."""
    specs = [(column, ylabel, f"{title} vs test accuracy") for column, ylabel, title in _with_nc1_form(FINALS[:3], nc1)]
    return _final_panes(df, axes, specs, x="test_accuracy", xlabel="final test accuracy", connect=False)


def plot_invariant_vs_collapse(df, ax=None, *, metric: str = "nc2"):
    """Final invariant norm ‖E‖_F against the final ``metric`` (a record column), one point per
    finished run, coloured by init: the theory ties a small invariant to strong collapse (§5)."""
    measure.column(metric)
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(4.5, 3.2))
    final = final_records(df).dropna(subset=["invariant_norm", metric])
    colors = init_colors(df["init"].unique())
    for init, frame in final.groupby("init"):
        ax.scatter(frame["invariant_norm"], frame[metric], color=colors[init], label=init)
    ax.set(xscale="log", xlabel="final invariant norm ‖E‖_F", ylabel=f"final {metric}", title=f"‖E‖ vs {metric}")
    _legend(ax, title="init")
    return ax


def plot_figure2(runs, path: str | Path | None = None, *, title: str | None = None, nc1: str = "nc1"):
    """All panes a–j in one figure; ``runs`` is a results root or a :func:`ntklib.results.load_runs`
    frame, ``nc1`` the NC1 form of panes b and f. Saves a PNG to ``path`` when given, atomically
    (:func:`ntklib.results.write_atomic`). Returns the figure.

    Raises:
        FileNotFoundError: when ``runs`` is a path that does not exist.
        ValueError: when there are no runs with records.
    """
    plt = _pyplot()
    df = results.load_runs(runs) if isinstance(runs, (str, Path)) else runs
    if df.empty:
        raise ValueError(f"no runs with records in {runs!r}")
    fig, axes = plt.subplots(3, 5, figsize=(21, 11), constrained_layout=True)
    plot_training_curves(df, axes[0], nc1=nc1)
    plot_final_vs_lr(df, axes[1, :4], nc1=nc1)
    plot_invariant_terms(df, axes[1, 4])
    plot_final_alignment(df, axes[2, 0])
    for ax in axes[2, 1:]:
        ax.set_axis_off()
    if title is None:
        first = df.iloc[0]
        title = f"{first.get('arch', '')} on {first.get('dataset', '')}: {df['run_dir'].nunique()} runs"
    fig.suptitle(title)
    if path is not None:
        import io

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        results.write_atomic(path, buffer.getvalue())
    return fig
