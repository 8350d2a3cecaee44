"""The two views beside Figure 2: final NC metrics against test accuracy, and ‖E‖ against collapse."""

import matplotlib
import numpy as np
import pandas as pd
import pytest

from ntklib import plots

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


def test_final_metrics_against_test_accuracy_one_point_per_run():
    df = _final_runs()
    axes = plots.plot_final_vs_test_accuracy(df)
    final = plots.final_records(df)
    points = np.concatenate([line.get_xydata() for line in axes[1].get_lines()])  # NC2 pane
    expected = final[["test_accuracy", "nc2"]].to_numpy()
    np.testing.assert_allclose(points[np.lexsort(points.T[::-1])], expected[np.lexsort(expected.T[::-1])])
    assert "tr(Σ_W Σ_B⁺)/K" in axes[0].get_ylabel()
    matplotlib.pyplot.close("all")


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
    from ntklib import measure, results

    run = tmp_path / "flax" / "lr_0.1"
    results.RunDir(run).path.mkdir(parents=True)
    results.write_json(run / results.CONFIG_FILE, {"config": {"init": "flax", "lr": 0.1}})
    results.write_records(run, [{"epoch": 0, "status": "ok", "inv_invariant_norm": 2.0, "inv_mmt_norm": 3.0}])
    df = results.load_runs(tmp_path)
    assert df.loc[0, "invariant_norm"] == 2.0 and df.loc[0, "mmt_norm"] == 3.0
    assert set(results.LEGACY_COLUMNS.values()) <= {c.name for c in measure.COLUMNS}
