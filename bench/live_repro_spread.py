"""How far chapter 07's live runs fall outside the committed sweep, over many seeds.

Chapter 07 retrains six runs of its committed CPU sweep (the three inits × two learning rates) at
``NTK_BOOK_SEED`` and checks that each final test accuracy, NC2 and ‖E‖_F lies within a tolerance
of the range of the committed seeds 0–2 (:func:`ntklib.observations.reproduction`). This script
trains the same six runs under each given seed, with the committed runs' own configuration (read
from their ``config.json``), and prints how far outside that range each metric fell: the spread
those tolerances must lie outside. About 15 s a seed on a 2-core CPU.

    python bench/live_repro_spread.py --seeds 3 4 5 6 7 8 9 10 11 12
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from ntklib import observations
from ntklib.config import TrainConfig
from ntklib.data import load_dataset
from ntklib.results import final_records, load_runs
from ntklib.rundir import read_json
from ntklib.sweep import learning_rates, run_sweep

SWEEP = Path(__file__).resolve().parent.parent / "results" / "cpu_mlp_digits_e400" / "mse"
LIVE_LRS = tuple(learning_rates(30, largest=16)[i] for i in (7, -1))  # chapter 07's: 0.12, 1.78


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[3, 4], help="NTK_BOOK_SEED values")
    args = parser.parse_args(argv)
    committed = final_records(load_runs(SWEEP))
    saved = read_json(next(SWEEP.glob("seed_0/flax/lr_*/config.json")))["config"]
    base = TrainConfig(**saved)
    inits = sorted(committed["init"].unique())
    data = load_dataset(base.dataset)
    per_seed = {}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="ntk_live_") as root:
            run_sweep(base.replace(seed=seed), LIVE_LRS, inits, root=root, dataset=data, progress=False)
            table = observations.reproduction(final_records(load_runs(root)), committed)
        worst = table.loc[table.groupby("metric")["outside"].idxmax()]
        per_seed[seed] = worst.set_index("metric")["outside"]
        where = ", ".join(f"{r.metric}: {r.outside:.3f} ({r.init}, lr {r.lr:.3g})" for r in worst.itertuples())
        print(f"seed {seed}: farthest outside the committed range: {where}", flush=True)
    spread = pd.DataFrame(per_seed).T
    print("\nfarthest outside over all seeds (a factor for invariant_norm, a difference otherwise):")
    print(spread.max().round(3).to_string())


if __name__ == "__main__":
    main()
