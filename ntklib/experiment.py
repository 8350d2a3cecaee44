"""Command line of the paper's experiments: one run, a learning-rate × init sweep, or Figure 2.

Flags only; the work is done by :mod:`ntklib.train`, :mod:`ntklib.sweep` and :mod:`ntklib.plots`.

One run (the flags of the paper's scripts)::

    python -m ntklib.experiment --arch resnet20 --dataset mnist --init flax --lr 0.01 \\
        --epochs 400 --out runs/resnet20_mnist/flax/lr_1.0000e-02

A sweep over learning rates and inits (skips finished runs, continues past diverged ones)::

    python -m ntklib.experiment sweep --arch resnet20 --dataset mnist --epochs 400 \\
        --num-lrs 30 --lr-min 1e-4 --lr-max 1.778 --inits flax torch normal_fan_out --out runs/resnet20_mnist

Figure 2 panes from a results directory::

    python -m ntklib.experiment plot runs/resnet20_mnist --out figures/resnet20_mnist

``--tiny`` starts from :meth:`ntklib.train.TrainConfig.tiny` (seconds on a CPU) instead of the
paper's protocol; every other flag overrides the chosen base.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ntklib.data import DATASETS
from ntklib.models import ARCHS, INITS
from ntklib.ntk import OffDiagonal
from ntklib.train import TrainConfig


def add_config_flags(parser: argparse.ArgumentParser, *, with_lr: bool = True) -> None:
    """Flags that override fields of :class:`~ntklib.train.TrainConfig` (None: keep the base)."""
    parser.add_argument("--tiny", action="store_true", help="start from TrainConfig.tiny() (CPU, seconds)")
    parser.add_argument("--arch", choices=ARCHS)
    parser.add_argument("--dataset", choices=DATASETS)
    if with_lr:
        parser.add_argument("--init", choices=INITS)
        parser.add_argument("--lr", type=float, help="initial learning rate")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="multiple of the number of classes (paper: 120)")
    parser.add_argument("--loss", choices=("mse", "ce"))
    parser.add_argument("--momentum", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--eval-every", type=int, help="epochs between metric records (paper: 2)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--data-dir", help="tfds data directory")
    parser.add_argument("--image-size", type=int, help="resize inputs (default: 32 for VGG on MNIST, else native)")
    parser.add_argument("--eval-batch-size", type=int)
    parser.add_argument("--no-kernel-metrics", dest="kernel_metrics", action="store_false", default=None,
                        help="skip the NTK statistics and invariant metrics")
    parser.add_argument("--kernel-every", type=int,
                        help="epochs between records with kernel metrics (a multiple of --eval-every; default: all)")
    parser.add_argument("--ntk-per-class", type=int, help="samples per class for the NTK (default: whole batch)")
    parser.add_argument("--ntk-chunk-size", type=int, help="feature neurons per Jacobian chunk")
    parser.add_argument("--ntk-offdiag", choices=[mode.value for mode in OffDiagonal],
                        help="off-diagonal block norms to record (default: logits; norms adds the feature kernel's)")
    parser.add_argument("--epoch-mode", choices=("auto", "scan", "loop"),
                        help="one jitted lax.scan per epoch, or a Python loop of jitted steps (auto: loop on CPU)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bar")


_FIELDS = ("arch", "dataset", "init", "lr", "epochs", "batch_size", "loss", "momentum", "weight_decay",
           "eval_every", "seed", "data_dir", "image_size", "eval_batch_size", "kernel_metrics", "kernel_every",
           "ntk_per_class", "ntk_chunk_size", "ntk_offdiag", "epoch_mode")


def config_from_flags(args: argparse.Namespace) -> TrainConfig:
    """The base config (default or ``--tiny``) with every given flag applied."""
    overrides = {f: getattr(args, f) for f in _FIELDS if getattr(args, f, None) is not None}
    return TrainConfig.tiny(**overrides) if args.tiny else TrainConfig.default(**overrides)


def run_main(argv: Sequence[str] | None = None) -> int:
    """``python -m ntklib.experiment [flags]``: train one model into ``--out``."""
    from ntklib.train import train_and_evaluate

    parser = argparse.ArgumentParser(prog="python -m ntklib.experiment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser)
    parser.add_argument("--out", required=True, help="run directory (resumed if it holds a checkpoint)")
    parser.add_argument("--max-epochs-this-call", type=int, help="stop after this many epochs (resumable)")
    args = parser.parse_args(argv)
    config = config_from_flags(args)
    result = train_and_evaluate(config, args.out, max_epochs_this_call=args.max_epochs_this_call,
                                progress=args.progress)
    final = result.records[-1] if result.records else {}
    summary = {k: final.get(k) for k in ("epoch", "train_loss", "test_accuracy", "nc1", "nc2", "nc3", "nc4")}
    print(json.dumps({"status": result.status, "out": args.out, **summary}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch: ``sweep ...`` → :func:`ntklib.sweep.main`, ``plot ...`` → :func:`ntklib.plots.main`,
    anything else → one run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sweep":
        from ntklib import sweep

        return sweep.main(argv[1:])
    if argv and argv[0] == "plot":
        from ntklib import plots

        return plots.main(argv[1:])
    return run_main(argv)


if __name__ == "__main__":
    sys.exit(main())
