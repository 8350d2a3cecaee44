"""The paper's Figure 2 (a–h) and Appendix C's panes i–j, the book's three figures of them, the CLI's
composite, and the view beside them: ‖E‖ against collapse."""

import matplotlib
import numpy as np
import pandas as pd
import pytest

from ntklib import book, experiment, plots, results, rundir

matplotlib.use("Agg")


def _final_runs():
    """Four finished runs with two records each; only the last record of a run is final."""
    rows = []
    for i, (init, lr) in enumerate([("flax", 0.01), ("flax", 0.1), ("torch", 0.01), ("torch", 0.1)]):
        for epoch in (0, 2):
            rows.append(
                {
                    "run_dir": f"{init}_{lr}",
                    "init": init,
                    "lr": lr,
                    "epoch": epoch,
                    "status": "ok",
                    "run_status": "finished",
                    "test_accuracy": 0.5 + 0.1 * i + 0.01 * epoch,
                    "nc1_trace": 1.0 + i + epoch,
                    "nc2": 0.2 * (i + 1) + epoch,
                    "nc3": 0.3,
                    "invariant_norm": 10.0**i + epoch,
                }
            )
    return pd.DataFrame(rows)


def test_final_against_lr_on_a_flat_axes_iterator_sets_every_log_scale():
    """``axes.flat`` can be walked once; the panes still all get their log learning-rate axis."""
    import matplotlib.pyplot as plt

    _, axes = plt.subplots(2, 2)
    plots.plot_final_vs_lr(_final_runs(), axes.flat, nc1="nc1_trace")
    assert [ax.get_xscale() for ax in axes.flat] == ["log"] * 4
    assert all(ax.get_lines() for ax in axes.flat)
    matplotlib.pyplot.close("all")


def test_invariant_against_collapse_uses_final_values_and_init_colours():
    df = _final_runs()
    ax = plots.plot_invariant_vs_collapse(df, metric="nc2")
    colors = plots.init_colors(df["init"].unique())
    assert [c.get_label() for c in ax.collections] == ["flax", "torch"]
    for collection in ax.collections:
        np.testing.assert_allclose(
            collection.get_facecolor()[0], matplotlib.colors.to_rgba(colors[collection.get_label()])
        )
    np.testing.assert_allclose(
        sorted(np.concatenate([c.get_offsets()[:, 0] for c in ax.collections])), [3, 12, 102, 1002]
    )
    matplotlib.pyplot.close("all")


def test_invariant_against_an_unknown_column_is_rejected():
    with pytest.raises(KeyError, match="nc9"):
        plots.plot_invariant_vs_collapse(_final_runs(), metric="nc9")


def test_runs_written_before_the_column_rename_load_under_todays_names(tmp_path):
    """The committed H200 sweep was written with ``inv_``-prefixed invariant keys."""
    from ntklib import measure

    run = tmp_path / "flax" / "lr_0.1"
    rundir.RunDir(run).path.mkdir(parents=True)
    rundir.write_json(run / rundir.CONFIG_FILE, {"config": {"init": "flax", "lr": 0.1}})
    rundir.write_records(run, [{"epoch": 0, "status": "ok", "inv_invariant_norm": 2.0, "inv_mmt_norm": 3.0}])
    df = results.load_runs(tmp_path)
    assert df.loc[0, "invariant_norm"] == 2.0 and df.loc[0, "mmt_norm"] == 3.0
    assert set(results.LEGACY_COLUMNS.values()) <= {c.name for c in measure.COLUMNS}


INITS = ("flax", "torch")
LRS = (0.01, 0.1)


def _sweep(seeds=(0,), *, virtual: bool = False):
    """A finished sweep, 2 inits × 2 lrs × ``seeds``, records at epochs 0, 2, 4 of every column the
    figures draw (batches of 12 per class, a probe of 3); ``virtual``: records with the released
    code's ``align_*_virtual`` columns."""
    rows = []
    for i, (init, lr, seed) in enumerate((i, lr, s) for i in INITS for lr in LRS for s in seeds):
        for epoch in (0, 2, 4):
            value = 1.0 + i + epoch + 0.01 * seed
            row = {
                "run_dir": f"{init}/lr_{lr}/seed_{seed}",
                "init": init,
                "lr": lr,
                "seed": seed,
                "epoch": epoch,
                "status": "ok",
                "run_status": "finished",
                "batch_per_class": 12,
                "probe_per_class": 3,
                "test_accuracy": 0.1 * value,
                "nc1": value,
                "nc1_trace": 100 * value,
                "nc2": 2 * value,
                "nc3": 3 * value,
                "invariant_alignment": 0.01 * value,
                "invariant_norm": 10 * value,
                "mmt_norm": value,
                "h2h2t_norm": 2 * value,
                "mean_outer_norm": 3 * value,
                "align_ntk": 0.1,
                "align_feat": 0.2,
            }
            if virtual:
                row |= {"align_ntk_virtual": 0.3, "align_feat_virtual": 0.4}
            rows.append(row)
    return pd.DataFrame(rows)


def _lines_data(ax):
    """The y-values of the lines of a pane, concatenated."""
    return np.concatenate([line.get_ydata() for line in ax.get_lines()])


def _check_layout(fig, n_panes, paper):
    """Page width, at most three panes a row, one legend of the inits below and none in the panes,
    the paper's panes named in the title. Returns the panes (the axes with data)."""
    axes = [ax for ax in fig.axes if ax.axison]
    assert len(axes) == n_panes
    assert fig.get_figwidth() == book.BOOK_WIDTH_IN
    assert all(ax.get_subplotspec().get_gridspec().ncols <= 3 for ax in axes)
    assert [ax.get_legend() for ax in axes] == [None] * n_panes
    (legend,) = fig.legends
    assert [text.get_text() for text in legend.get_texts()] == list(INITS)
    assert paper in fig.get_suptitle()
    return axes


def test_legend_below_gathers_each_label_once_and_empties_the_panes():
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, layout="constrained")
    for ax in axes:
        ax.plot([0, 1], label="flax")
        ax.plot([1, 0], label="torch")
        ax.legend()
    legend = plots.legend_below(fig, axes, title="init")
    assert [t.get_text() for t in legend.get_texts()] == ["flax", "torch"] and legend.get_title().get_text() == "init"
    assert all(ax.get_legend() is None for ax in axes) and fig.legends == [legend]
    bare, bare_axes = plt.subplots(1, 2, layout="constrained")
    assert plots.legend_below(bare, bare_axes) is None and not bare.legends  # nothing labelled
    plt.close("all")


def test_draw_curves_is_figure2_a_to_e_with_nc1_in_both_forms():
    df = _sweep()
    fig = plots.draw_curves(df, "a sweep")
    axes = _check_layout(fig, 7, "Figure 2 (a–e)")
    assert [ax.get_title() for ax in axes] == [
        "(a) test accuracy",
        "(b) NC1 (std, paper)",
        "NC1 (trace)",
        "(c) NC2",
        "(d) NC3",
        "(e) invariant alignment",
        f"invariant norm {plots.NORM_E}",
    ]
    assert fig.get_suptitle().startswith("a sweep\n")
    run = df[df["run_dir"] == df["run_dir"].iloc[0]]
    for ax, column in zip(axes[1:3], ("nc1", "nc1_trace"), strict=True):  # the paper's std form, then the trace
        np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), run[column])
    assert "within-class std" in axes[1].get_ylabel() and plots.NC1_FORMS["nc1_trace"] in axes[2].get_ylabel()
    assert [ax.get_xlabel() for ax in axes] == ["", "", "", "", "epoch", "epoch", "epoch"]  # lowest of each column
    matplotlib.pyplot.close("all")


def test_draw_finals_is_figure2_f_to_h_against_the_learning_rate():
    df = _sweep()
    fig = plots.draw_finals(df, "")
    axes = _check_layout(fig, 5, "Figure 2 (f–h)")
    titles = ["(f) NC1 (std, paper)", "NC1 (trace)", "(g) NC2", "(h) NC3", "test accuracy"]
    assert [ax.get_title() for ax in axes] == titles and fig.get_suptitle() == "paper's Figure 2 (f–h)"
    final = results.final_records(df)
    for ax, column in zip(axes, ("nc1", "nc1_trace", "nc2", "nc3", "test_accuracy"), strict=True):
        np.testing.assert_allclose(sorted(_lines_data(ax)), sorted(final[column]))
        assert ax.get_xscale() == "log"
    assert axes[0].get_yscale() == "linear"  # 5 to 8: less than a decade
    matplotlib.pyplot.close("all")


@pytest.mark.parametrize(
    ("virtual", "drawn", "what"),
    [(False, [0.1, 0.2], "exact, probe of 3 per class"), (True, [0.3, 0.4], "released estimator, k = 6 per class")],
)
def test_draw_kernels_is_appendix_c_i_and_j_with_the_alignment_it_drew(virtual, drawn, what):
    fig = plots.draw_kernels(_sweep(virtual=virtual), "end")
    axes = _check_layout(fig, 3, "Appendix C, Figures 3–11, panes i–j")
    assert "Figure 2" not in fig.get_suptitle()
    assert [ax.get_title() for ax in axes] == [
        "(i) invariant terms at the end",
        f"(j) label alignment at the end\n{what}",
        f"{plots.NORM_E} vs nc2",
    ]
    assert sorted(set(_lines_data(axes[1]))) == drawn  # NTK Θ, feature kernel Θʰ
    keys = next(ax for ax in fig.axes if not ax.axison)  # the fourth place: markers of i, line styles of j
    assert sorted(legend.get_title().get_text() for legend in keys.artists) == ["(i) term", "(j) kernel"]
    matplotlib.pyplot.close("all")


def test_alignment_falls_back_to_the_exact_one_where_records_predate_the_virtual_columns():
    df = _sweep(virtual=True).drop(columns=["batch_per_class", "probe_per_class"])
    assert plots.alignment_series(df) == (
        (("align_ntk_virtual", "NTK Θ"), ("align_feat_virtual", "feature kernel Θʰ")),
        "released estimator, k = m/2 per class",
    )
    df[["align_ntk_virtual", "align_feat_virtual"]] = np.nan
    assert plots.alignment_series(df)[1] == "exact, on the probe"
    ax = plots.plot_final_alignment(df)  # alone: the kernels' key in the pane, the inits' legend
    assert ax.get_legend() is not None and len(ax.artists) == 1
    matplotlib.pyplot.close("all")


def test_several_seeds_one_line_per_run_over_epochs_and_the_mean_against_the_lr():
    seeds = (0, 1, 2)
    df = _sweep(seeds)
    curves = [ax for ax in plots.draw_curves(df, "").axes if ax.axison]
    assert len(curves[1].get_lines()) == len(INITS) * len(LRS) * len(seeds)
    finals = [ax for ax in plots.draw_finals(df, "").axes if ax.axison]
    lines = finals[0].get_lines()  # per init: the mean over seeds, then every run's point
    assert len(lines) == 2 * len(INITS)
    final = results.final_records(df)
    flax = final[final["init"] == "flax"]
    np.testing.assert_allclose(lines[0].get_ydata(), flax.groupby("lr")["nc1"].mean())
    assert len(lines[1].get_ydata()) == len(LRS) * len(seeds) and lines[1].get_linestyle() == "None"
    matplotlib.pyplot.close("all")


def test_runs_without_kernel_records_draw_empty_kernel_panes():
    """``--no-kernel-metrics`` runs have no invariant or alignment columns: those panes stay empty."""
    kernel_columns = [c for c in _sweep().columns if c.endswith("_norm") or c.startswith(("align", "invariant"))]
    fig = plots.plot_figure2(_sweep().drop(columns=kernel_columns))
    titled = {ax.get_title(): ax for ax in fig.axes if ax.axison}
    assert not titled["(e) invariant alignment"].get_lines() and not titled[f"{plots.NORM_E} vs nc2"].collections
    assert titled["(b) NC1 (std, paper)"].get_lines()
    matplotlib.pyplot.close("all")


def _write_sweep(root, df):
    """``df`` as run directories under ``root`` (config, records, status)."""
    for run_dir, frame in df.groupby("run_dir"):
        path = root / run_dir
        rundir.RunDir(path).path.mkdir(parents=True)
        first = frame.iloc[0]
        config = {"init": first["init"], "lr": float(first["lr"]), "seed": int(first["seed"]), "arch": "mlp"}
        rundir.write_json(path / rundir.CONFIG_FILE, {"config": config})
        records = frame.drop(columns=["run_dir", "init", "lr", "seed", "run_status"]).to_dict("records")
        rundir.write_records(path, records)
        rundir.write_status(path, "finished")


def test_cli_plot_writes_the_composite_of_the_three_figures(tmp_path, capsys):
    _write_sweep(tmp_path / "sweep", _sweep())
    assert experiment.main(["plot", str(tmp_path / "sweep"), "--out", str(tmp_path / "figure2")]) == 0
    png = tmp_path / "figure2.png"  # .png appended
    assert capsys.readouterr().out.strip() == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = plots.plot_figure2(tmp_path / "sweep", tmp_path / "figure2.pdf", title="T")
    assert (tmp_path / "figure2.pdf").read_bytes()[:4] == b"%PDF"
    titles = [sub.get_suptitle() for sub in fig.subfigs]
    assert fig.get_suptitle() == "T" and titles == [
        "paper's Figure 2 (a–e)",
        "paper's Figure 2 (f–h)",
        "paper's Appendix C, Figures 3–11, panes i–j",
    ]
    assert len([ax for ax in fig.axes if ax.axison]) == 7 + 5 + 3 and fig.get_figwidth() == book.BOOK_WIDTH_IN
    matplotlib.pyplot.close("all")
