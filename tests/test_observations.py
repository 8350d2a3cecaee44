"""ntklib.observations against naive references on small hand-made tables of final records."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from ntklib import observations as ob


def _final(seed: int = 0, n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "run_dir": [f"r{i}" for i in range(n)],
            "init": np.repeat(["a", "b", "c"], n // 3),
            "lr": np.tile(np.geomspace(0.01, 1, n // 3), 3),
            "seed": 0,
            "train_accuracy": rng.uniform(0.97, 1.0, n),
            "test_accuracy": rng.uniform(0.95, 1.0, n),
            "nc1_trace": rng.uniform(0.001, 1, n),
            "nc2": rng.uniform(0.1, 0.8, n),
            "nc3": rng.uniform(0.1, 1.2, n),
            "invariant_norm": rng.uniform(0.1, 10, n),
            "invariant_alignment": rng.uniform(0, 1, n),
        }
    )


def _spearman(a, b) -> float:
    """Pearson correlation of the ranks, by hand (no ties in these tables)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_fitting_keeps_exactly_the_runs_at_or_above_the_threshold():
    final = _final()
    kept = ob.fitting(final, threshold=0.985)
    assert set(kept["run_dir"]) == {r.run_dir for r in final.itertuples() if r.train_accuracy >= 0.985}


def test_rank_correlation_matches_a_naive_spearman_and_is_nan_below_three_values():
    final = _final(1)
    assert ob.rank_correlation(final["invariant_norm"], final["nc2"]) == pytest.approx(
        _spearman(final["invariant_norm"], final["nc2"])
    )
    assert ob.rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    assert np.isnan(ob.rank_correlation([1, 2], [1, 2]))


def test_comparable_pairs_are_every_pair_within_the_gap_with_the_metric_ratio():
    final = _final(2)
    pairs = ob.comparable_pairs(final, gap=0.01, metric="nc3")
    expected = {}
    for a, b in itertools.combinations(final.itertuples(), 2):
        if abs(a.test_accuracy - b.test_accuracy) <= 0.01:
            low, high = (a, b) if a.nc3 <= b.nc3 else (b, a)
            expected[(low.run_dir, high.run_dir)] = high.nc3 / low.nc3
    got = {(r.run_a, r.run_b): r.ratio for r in pairs.itertuples()}
    assert got.keys() == expected.keys() and len(got) > 0
    assert all(got[key] == pytest.approx(value) for key, value in expected.items())
    assert pairs["ratio"].is_monotonic_decreasing and (pairs["ratio"] >= 1).all()


def test_nc1_drop_divides_each_run_by_its_own_start():
    final = _final(3)
    start = final.assign(nc1_trace=final["nc1_trace"] * 10).iloc[::-1]  # another order
    assert np.allclose(ob.nc1_drop(final, start).to_numpy(), 0.1)


def test_invariant_correlations_pool_and_split_by_init():
    final = _final(4)
    table = ob.invariant_correlations(final, metric="nc2")
    assert list(table.index) == ["pooled", "a", "b", "c"]
    assert table.loc["pooled", "runs"] == len(final)
    part = final[final["init"] == "b"]
    assert table.loc["b", "rho_norm"] == pytest.approx(_spearman(part["invariant_norm"], part["nc2"]))
    assert table.loc["b", "rho_alignment"] == pytest.approx(_spearman(part["invariant_alignment"], part["nc2"]))


def test_loss_comparison_pairs_runs_by_seed_and_rate_and_drops_runs_that_do_not_fit():
    mse = _final(5).assign(train_accuracy=1.0)
    ce = mse.assign(nc2=mse["nc2"] / 2, nc3=mse["nc3"] * 2, invariant_norm=mse["invariant_norm"] * 10)
    ce.loc[0, "train_accuracy"] = 0.5  # does not fit: left out
    result = ob.loss_comparison(mse[mse["init"] == "a"], ce[ce["init"] == "a"])
    assert result["pairs"] == (mse["init"] == "a").sum() - 1
    assert result["ce_lower"]["nc2"] == 1 and result["ce_lower"]["nc3"] == 0
    assert result["norm_ratio"] == pytest.approx(10)


def test_reproduction_measures_the_distance_outside_the_committed_range():
    committed = pd.DataFrame(
        {
            "init": ["a", "a", "a", "b"],
            "lr": [0.1, 0.1, 0.2, 0.1],
            "nc2": [0.30, 0.40, 0.90, 0.10],
            "invariant_norm": [1.0, 2.0, 50.0, 0.1],
        }
    )
    live = pd.DataFrame({"init": ["a", "a"], "lr": [0.1, 0.1], "nc2": [0.45, 0.35], "invariant_norm": [0.5, 3.0]})
    table = ob.reproduction(live, committed, metrics=("nc2", "invariant_norm"))
    # run 0: 0.05 above [0.3, 0.4]; a factor 2 below [1, 2]. run 1: inside; a factor 1.5 above
    assert table[["lo", "hi"]].iloc[0].tolist() == [0.30, 0.40]
    assert np.allclose(table["outside"], [0.05, 2.0, 0.0, 1.5])
