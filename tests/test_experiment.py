"""Command line: one run, a sweep that skips finished runs and survives divergence, Figure 2."""

import argparse
import json
import subprocess
import sys

import matplotlib
import matplotlib.pyplot
import numpy as np
import pandas as pd
import pytest

from ntklib import experiment, plots, results, rundir
from ntklib.sweep import learning_rates, run_dir

TINY = ["--tiny", "--no-kernel-metrics", "--no-progress"]


def test_cli_single_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        experiment.main(
            [
                *TINY,
                "--arch",
                "mlp",
                "--dataset",
                "digits",
                "--init",
                "torch",
                "--lr",
                "0.05",
                "--epochs",
                "2",
                "--eval-every",
                "1",
                "--seed",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "finished" and summary["epoch"] == 2
    config = rundir.read_json(out / rundir.CONFIG_FILE)["config"]
    assert (config["init"], config["lr"], config["seed"], config["kernel_metrics"]) == ("torch", 0.05, 3, False)
    assert len(pd.read_json(out / rundir.METRICS_FILE, lines=True)) == 3


def test_cli_kernel_flags_reach_the_config():
    parser = argparse.ArgumentParser()
    experiment.add_config_flags(parser)
    args = parser.parse_args(
        ["--tiny", "--epochs", "8", "--eval-every", "2", "--kernel-every", "4", "--ntk-offdiag", "norms"]
    )
    config = experiment.config_from_flags(args)
    assert (config.kernel_every, config.ntk_offdiag) == (4, "norms")
    assert [config.kernels_at(epoch) for epoch in (0, 2, 4, 6, 8)] == [True, False, True, False, True]
    with pytest.raises(SystemExit):
        parser.parse_args(["--ntk-offdiag", "some"])


def test_learning_rates_are_the_papers_grid():
    lrs = learning_rates()
    assert len(lrs) == 30 and lrs[0] == 1e-4 and abs(lrs[-1] - 10**0.25) < 1e-12
    assert learning_rates(largest=20) == lrs[-20:]


def test_sweep_skips_finished_and_survives_divergence_then_plots(tmp_path, capsys):
    root = tmp_path / "sweep"
    argv = ["sweep", *TINY, "--lrs", "1e6", "0.05", "--inits", "flax", "torch", "--out", str(root)]
    assert experiment.main(argv) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    status = {(e["init"], e["lr"]): e["status"] for e in entries}
    assert status == {
        ("flax", 1e6): "diverged",
        ("flax", 0.05): "finished",
        ("torch", 1e6): "diverged",
        ("torch", 0.05): "finished",
    }
    assert not any(e["skipped"] for e in entries)
    assert rundir.read_status(run_dir(root, "flax", 1e6)) == "diverged"

    assert experiment.main(argv) == 0  # everything is done: all skipped
    entries = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert all(e["skipped"] for e in entries) and len(entries) == 4

    frame = results.load_runs(root)
    assert set(frame["init"]) == {"flax", "torch"} and set(frame["run_status"]) == {"finished", "diverged"}

    png = tmp_path / "figure2.png"
    assert experiment.main(["plot", str(root), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_module_entry_point_help():
    done = subprocess.run([sys.executable, "-m", "ntklib.experiment", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--arch" in done.stdout and "sweep" in done.stdout


def _synthetic_runs():
    rows = [
        {
            "run_dir": f"{init}_{lr}",
            "init": init,
            "lr": lr,
            "epoch": epoch,
            "status": "ok",
            "run_status": "finished",
            "test_accuracy": 0.5,
            "nc1": 1.0 + epoch,
            "nc1_trace": 10.0 / (1 + epoch),
            "nc2": 0.5,
            "nc3": 0.4,
            "invariant_alignment": 0.3,
        }
        for init in ("flax", "torch")
        for lr in (0.01, 0.1)
        for epoch in (0, 1, 2)
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("nc1", ["nc1", "nc1_trace"])
def test_nc1_form_selects_the_plotted_column(nc1):
    matplotlib.use("Agg")
    df = _synthetic_runs()
    curves = plots.plot_training_curves(df, nc1=nc1)
    line = curves[1].get_lines()[0]
    np.testing.assert_array_equal(line.get_ydata(), df[df["run_dir"] == "flax_0.01"][nc1])
    assert plots.NC1_FORMS[nc1] in curves[1].get_ylabel()
    finals = plots.plot_final_vs_lr(df, nc1=nc1)
    np.testing.assert_array_equal(finals[0].get_lines()[0].get_ydata(), [df[nc1].iloc[2]] * 2)
    matplotlib.pyplot.close("all")


def test_unknown_nc1_form_is_rejected():
    with pytest.raises(ValueError, match="nc1"):
        plots.plot_training_curves(_synthetic_runs(), nc1="nc1_std")


def test_metric_curves_skip_records_without_the_metric():
    matplotlib.use("Agg")
    df = _synthetic_runs()
    df["align_ntk"] = np.where(df["epoch"] == 1, np.nan, 0.5 + 0.1 * df["epoch"])  # kernels at epochs 0 and 2
    ax = plots.plot_metric_over_epochs(df, "align_ntk", log_y=False)
    assert len(ax.get_lines()) == 4 and all(list(line.get_xdata()) == [0, 2] for line in ax.get_lines())
    assert ax.get_yscale() == "linear"
    matplotlib.pyplot.close("all")


def test_cli_flags_cover_every_config_field():
    """Each TrainConfig field has its flag, with the help text of the field's metadata."""
    import dataclasses

    from ntklib.config import TrainConfig

    parser = argparse.ArgumentParser()
    experiment.add_config_flags(parser)
    options = {action.dest: action for action in parser._actions}
    for field in dataclasses.fields(TrainConfig):
        assert field.name in options, field.name
        assert field.metadata["help"] in options[field.name].help
    values = {"arch": "vgg11", "lr": 0.3, "nesterov": False, "image_size": 16, "data_dir": "/tmp/d"}
    argv = ["--arch", "vgg11", "--lr", "0.3", "--no-nesterov", "--image-size", "16", "--data-dir", "/tmp/d"]
    config = experiment.config_from_flags(parser.parse_args(argv))
    assert {name: getattr(config, name) for name in values} == values
    assert config.epochs == TrainConfig().epochs  # flags not given keep the base
    sweep_parser = argparse.ArgumentParser()
    experiment.add_config_flags(sweep_parser, exclude=experiment.SWEPT_FIELDS)
    assert not {"init", "lr"} & {action.dest for action in sweep_parser._actions}


def test_config_flags_sit_in_one_group_per_field_group():
    """--help shows the flags of each TrainConfig field group under that group's heading."""
    import dataclasses

    from ntklib.config import GROUPS, TrainConfig

    parser = argparse.ArgumentParser()
    experiment.add_config_flags(parser)
    groups = {group.title: {action.dest for action in group._group_actions} for group in parser._action_groups}
    for field in dataclasses.fields(TrainConfig):
        assert field.name in groups[field.metadata["group"]], field.name
    text = parser.format_help()
    assert all(f"\n{name}:\n  {description}" in text for name, description in GROUPS.items())
