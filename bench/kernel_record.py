"""Cost of one kernel record of the training loop, by off-diagonal mode, side by side in one run.

A record (:func:`ntklib.measure.kernel_statistics`) computes the diagonal blocks Θ_cc and Θʰ_jj and,
depending on ``offdiag``, the norms of the off-diagonal blocks:

* ``none``: no off-diagonal blocks;
* ``logits`` (the default): the NTK's ‖Θ_{cc'}‖, C²N²P flops on top;
* ``norms``: also the feature cross-blocks ‖Θʰ_{jj'}‖, d²N²P flops (64 times the feature
  diagonal blocks for ResNet20). This was every record's cost before ``logits`` became the default.

The workload is chapter 7's default probe: ResNet20 (flax init) on 3 samples per class of the
8×8 digits (N = 30), no neuron chunking.

Usage:
    python bench/kernel_record.py                  # ≈ 3 min on 2 CPU cores
    python bench/kernel_record.py --per-class 2 --repeats 1
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from ntklib.data import load_dataset
from ntklib.measure import kernel_statistics, subsample_per_class
from ntklib.models import build_model
from ntklib.ntk import OffDiagonal

MODES = (OffDiagonal.NONE, OffDiagonal.LOGITS, OffDiagonal.NORMS)


def time_record(model, variables, x, labels, offdiag: OffDiagonal, repeats: int) -> tuple[float, float]:
    """(first call incl. compile, median of ``repeats`` later calls), in seconds."""

    def record():
        stats = kernel_statistics(model, variables, x, labels, offdiag=offdiag)
        jax.block_until_ready(stats.gamma.diag)

    t0 = time.perf_counter()
    record()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        record()
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--per-class", type=int, default=3, help="probe samples per class (chapter 7: 3)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per mode after the first")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)

    data = load_dataset("digits")
    x, labels = subsample_per_class(data.train_images, data.train_labels, args.per_class)
    x = jnp.asarray(x)
    model = build_model(args.arch, 10, "flax")
    variables = model.init(jax.random.key(0), x[:2], train=False)
    print(f"# kernel_record  {' '.join(sys.argv[1:]) or '(defaults)'}")
    print(f"jax {jax.__version__}, devices {jax.devices()}, python {platform.python_version()}")
    print(f"workload: {args.arch} on digits 8x8, N = {len(labels)} ({args.per_class} per class), no chunking")

    median = {}
    for mode in MODES:
        first, median[mode] = time_record(model, variables, x, labels, mode, args.repeats)
        print(f"offdiag={mode.value:7s} first call {first:7.2f} s   median of {args.repeats}: {median[mode]:7.3f} s")
    base = median[OffDiagonal.LOGITS]
    print(
        "\nratios to the default (logits): " + ", ".join(f"{mode.value} {median[mode] / base:.2f}x" for mode in MODES)
    )


if __name__ == "__main__":
    main()
