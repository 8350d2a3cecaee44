"""The experimental observations of the paper's §6 and Appendix C.2, as measurements on a sweep.

Every function takes ``final``: the final records of a sweep, one row per run
(:func:`ntklib.results.final_records` of :func:`ntklib.results.load_runs`), with the run's config
columns (``init``, ``lr``, ``seed``, ``loss``) beside the record columns of :mod:`ntklib.measure`.
The functions measure; the book decides, per seed, which observation held.

- (a) :func:`comparable_pairs`, :func:`nc1_drop`: among runs that fit the training set, most of
  those with high test accuracy collapse, yet runs of comparable test accuracy end with clearly
  different degrees of collapse (§6, Figure 2 f–h).
- (b) :func:`invariant_correlations`: a smaller final ‖E‖_F, or a higher invariant alignment, goes
  with stronger collapse, within each initialisation and pooled (§5.2 and §6).
- (c) :func:`rank_correlation` of the final test accuracy with a label alignment: the
  best-performing models have the kernels most aligned with the labels (§6, Appendix C pane j).
- Appendix C.2, :func:`loss_comparison`: the same runs under cross-entropy and MSE.
- :func:`reproduction`: how far runs retrained elsewhere fall outside the committed runs' range.

>>> import pandas as pd
>>> final = pd.DataFrame(
...     {
...         "run_dir": ["a", "b", "c"],
...         "init": ["x", "x", "y"],
...         "test_accuracy": [0.990, 0.985, 0.950],
...         "nc2": [0.1, 0.3, 0.2],
...     }
... )
>>> comparable_pairs(final, gap=0.01)[["run_a", "run_b", "ratio"]].round(6).to_dict("records")
[{'run_a': 'a', 'run_b': 'b', 'ratio': 3.0}]
>>> rank_correlation(final["test_accuracy"], final["nc2"])
-0.5
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = [
    "FIT_ACCURACY",
    "comparable_pairs",
    "fitting",
    "invariant_correlations",
    "loss_comparison",
    "nc1_drop",
    "rank_correlation",
    "reproduction",
]

FIT_ACCURACY = 0.99
"""A run fits the training set (§6) when its final training accuracy is at least this."""


def fitting(final, threshold: float = FIT_ACCURACY):
    """The runs whose final training accuracy is at least ``threshold``."""
    return final[final["train_accuracy"] >= threshold]


def rank_correlation(a, b) -> float:
    """Spearman's rank correlation of two equally long sequences (NaN for fewer than 3 values)."""
    import pandas as pd

    a, b = pd.Series(np.asarray(a, float)), pd.Series(np.asarray(b, float))
    return float(a.rank().corr(b.rank())) if len(a) > 2 else float("nan")


def comparable_pairs(final, *, gap: float = 0.01, metric: str = "nc2"):
    """Every pair of runs whose final test accuracies differ by at most ``gap``, with
    ``ratio`` = larger / smaller final ``metric``; the most different pair first.

    Columns: run_a (the more collapsed), run_b, init_a, init_b, test_a, test_b, metric_a,
    metric_b, ratio."""
    import pandas as pd

    rows = []
    for (_, a), (_, b) in itertools.combinations(final.iterrows(), 2):
        if abs(a["test_accuracy"] - b["test_accuracy"]) > gap:
            continue
        a, b = (a, b) if a[metric] <= b[metric] else (b, a)
        rows.append(
            {
                "run_a": a["run_dir"],
                "run_b": b["run_dir"],
                "init_a": a["init"],
                "init_b": b["init"],
                "test_a": a["test_accuracy"],
                "test_b": b["test_accuracy"],
                "metric_a": a[metric],
                "metric_b": b[metric],
                "ratio": b[metric] / a[metric],
            }
        )
    columns = ["run_a", "run_b", "init_a", "init_b", "test_a", "test_b", "metric_a", "metric_b", "ratio"]
    return pd.DataFrame(rows, columns=columns).sort_values("ratio", ascending=False, ignore_index=True)


def nc1_drop(final, start, metric: str = "nc1_trace"):
    """final / initial ``metric`` of each run (indexed by run_dir): below 1 when it collapsed.

    ``start`` holds each run's epoch-0 record (one row per run_dir)."""
    initial = start.set_index("run_dir")[metric]
    return final.set_index("run_dir")[metric] / initial.reindex(final["run_dir"]).to_numpy()


def invariant_correlations(final, *, metric: str = "nc2"):
    """Rank correlations of the final invariant with the final collapse ``metric``, pooled and
    within each init: ``rho_norm`` = ρ(‖E‖_F, metric) (the theory: > 0) and ``rho_alignment`` =
    ρ(cosine of WᵀW and H K⁻¹ Hᵀ, metric) (the theory: < 0), with the number of runs."""
    import pandas as pd

    parts = {"pooled": final, **{init: part for init, part in final.groupby("init")}}
    return pd.DataFrame(
        {
            name: {
                "runs": len(part),
                "rho_norm": rank_correlation(part["invariant_norm"], part[metric]),
                "rho_alignment": rank_correlation(part["invariant_alignment"], part[metric]),
            }
            for name, part in parts.items()
        }
    ).T


def loss_comparison(mse, ce, metrics=("nc1_trace", "nc2", "nc3")):
    """Runs of one init at the same (seed, lr) under MSE and cross-entropy, both fitting: for each
    metric the fraction of pairs where cross-entropy ends lower, and the median of
    ‖E‖_F(CE) / ‖E‖_F(MSE). Appendix C.2 reports every metric lower and ‖E‖ much larger under CE."""
    keys = ["seed", "lr"]
    pairs = fitting(mse).merge(fitting(ce), on=keys, suffixes=("_mse", "_ce"))
    lower = {m: float((pairs[f"{m}_ce"] < pairs[f"{m}_mse"]).mean()) for m in metrics}
    ratio = float((pairs["invariant_norm_ce"] / pairs["invariant_norm_mse"]).median())
    return {"pairs": len(pairs), "ce_lower": lower, "norm_ratio": ratio}


def reproduction(live, committed, *, metrics=("test_accuracy", "nc2", "invariant_norm"), factors=("invariant_norm",)):
    """How far each retrained run falls outside the committed runs of its (init, lr).

    For every run of ``live`` and every metric: ``lo`` and ``hi``, the smallest and largest final
    value among the ``committed`` runs with the same init and learning rate, and ``outside``, the
    distance from [lo, hi]: max(lo − x, x − hi, 0) in general, and for the scale-like metrics in
    ``factors`` (‖E‖_F spans decades) the factor max(lo / x, x / hi, 1). One row per run × metric:
    init, lr, metric, live, lo, hi, outside."""
    import pandas as pd

    rows = []
    for run in live.itertuples():
        same = committed[(committed["init"] == run.init) & np.isclose(committed["lr"], run.lr)]
        for metric in metrics:
            lo, hi, value = same[metric].min(), same[metric].max(), getattr(run, metric)
            outside = max(lo / value, value / hi, 1.0) if metric in factors else max(lo - value, value - hi, 0.0)
            rows.append(dict(init=run.init, lr=run.lr, metric=metric, live=value, lo=lo, hi=hi, outside=outside))
    return pd.DataFrame(rows, columns=["init", "lr", "metric", "live", "lo", "hi", "outside"])
