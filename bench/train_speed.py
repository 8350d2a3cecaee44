"""Training speed of the paper's models: train-step throughput and one full-protocol epoch.

Two measurements per architecture, both after compilation (a warm-up call is not timed):

1. throughput: samples/s of the jitted training epoch (``lax.scan`` of SGD steps, batch 120,
   BatchNorm in train mode) over ``--steps`` steps of CIFAR-shaped (32×32×3) synthetic data;
2. one full-protocol epoch with metrics: ``--per-class`` samples of each of 10 classes
   (paper: CIFAR-10, 5 000 per class → 416 balanced steps of 120), then the evaluation the
   training loop does every 2nd epoch — test loss/accuracy on ``--test-size`` samples, NC1–NC4 and
   the exact NTK statistics + invariant of the last batch (:func:`ntklib.measure.measure_batch`).

Usage (GPU, the paper's sizes)::

    python bench/train_speed.py

CPU (reduced, seconds per architecture; the numbers are not the paper's epoch)::

    python bench/train_speed.py --archs resnet20 --steps 4 --per-class 48 --test-size 1000

Target on one H100: ResNet20 CIFAR-shaped ≥ 45 000 samples/s.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntklib.config import TrainConfig
from ntklib.data import Dataset, balanced_batches, steps_per_epoch
from ntklib.measure import measure_batch
from ntklib.models import ARCHS
from ntklib.train import (
    _build_model,
    create_train_state,
    make_evaluate,
    make_train_epoch,
)

PAPER_ARCHS = ("vgg11", "vgg16", "resnet20", "densenet40")
PAPER_STEPS = 5000 // 12  # CIFAR-10: 5 000 per class, 12 per class per batch → 416 steps
PAPER_TEST = 10_000


def synthetic_dataset(per_class: int, test_size: int, shape=(32, 32, 3), seed: int = 0) -> Dataset:
    """Uniform random images with balanced labels (CIFAR-10 shaped by default)."""
    rng = np.random.default_rng(seed)
    train_labels = np.repeat(np.arange(10, dtype=np.int32), per_class)
    test_labels = np.arange(test_size, dtype=np.int32) % 10
    return Dataset(
        rng.random((len(train_labels), *shape), dtype=np.float32),
        train_labels,
        rng.random((test_size, *shape), dtype=np.float32),
        test_labels,
        10,
        "synthetic",
    )


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def block(tree):
    return jax.tree.map(lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, tree)


def bench_arch(
    arch: str,
    dataset: Dataset,
    *,
    steps: int,
    epoch_steps: int | None,
    kernel_metrics: bool,
    ntk_per_class: int | None,
    repeats: int,
    modes: tuple[str, ...],
) -> dict:
    config = TrainConfig(
        arch=arch, dataset="cifar10", batch_size=120, kernel_metrics=kernel_metrics, ntk_per_class=ntk_per_class
    )  # the config of a CIFAR-10 run; the data are the synthetic ones of the same shape
    model = _build_model(arch, 10)
    full_steps = steps_per_epoch(dataset.train_labels, batch_size=120, num_classes=10)
    state = create_train_state(config, 10, dataset.image_shape, full_steps)
    images = jnp.asarray(dataset.train_images)
    labels = jnp.asarray(dataset.train_labels)
    lr = jnp.asarray(1e-3, jnp.float32)
    idx = balanced_batches(dataset.train_labels, batch_size=120, num_classes=10, seed=0, epoch=1)

    # 1. throughput of `steps` train steps per epoch mode (compiled on a first call, same shapes)
    sub = jnp.asarray(np.resize(idx, (steps, 120)))
    out = {"arch": arch, "params": sum(x.size for x in jax.tree.leaves(state.params))}
    for mode in modes:
        train_epoch = make_train_epoch("mse", mode)
        log(f"{arch}: compiling {steps} train steps ({mode})")
        t0 = time.perf_counter()
        state, losses, _ = block(train_epoch(state, images, labels, sub, lr))
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            state, losses, _ = block(train_epoch(state, images, labels, sub, lr))
            times.append(time.perf_counter() - t0)
        out[mode] = {
            "samples_per_s": steps * 120 / min(times),
            "step_ms": 1e3 * min(times) / steps,
            "compile_s": compile_s,
        }
        log(f"{arch} ({mode}): {out[mode]['samples_per_s']:.0f} samples/s")
    best = max(modes, key=lambda m: out[m]["samples_per_s"])
    out["best_mode"] = best
    train_epoch = make_train_epoch("mse", best)

    # 2. one protocol epoch (possibly reduced) + the metrics of one record
    n = epoch_steps or full_steps
    epoch_idx = jnp.asarray(idx[:n])
    evaluate = make_evaluate("mse", min(1000, len(dataset.test_labels)), best)
    test_x, test_y = jnp.asarray(dataset.test_images), jnp.asarray(dataset.test_labels)

    def one_epoch(state):
        t0 = time.perf_counter()
        state, losses, _ = block(train_epoch(state, images, labels, epoch_idx, lr))
        t1 = time.perf_counter()
        block(evaluate(state, test_x, test_y))
        t2 = time.perf_counter()
        last = np.asarray(idx[n - 1])
        measure_batch(model, state.variables, images[last], labels[last], **config.measure_options())
        t3 = time.perf_counter()
        return state, (t1 - t0, t2 - t1, t3 - t2)

    log(f"{arch}: compiling the protocol epoch ({best}) + metrics")
    state, first = one_epoch(state)  # compile
    train_s, eval_s, metrics_s = first
    log(f"{arch}: first call (compile + run): train {train_s:.1f} s, eval {eval_s:.1f} s, metrics {metrics_s:.1f} s")
    log(f"{arch}: timing the protocol epoch")
    state, (train_s, eval_s, metrics_s) = one_epoch(state)
    out.update(
        {
            "epoch_steps": n,
            "full_steps": full_steps,
            "epoch_train_s": train_s,
            "epoch_test_eval_s": eval_s,
            "epoch_batch_metrics_s": metrics_s,
            "epoch_total_s": train_s + eval_s + metrics_s,
        }
    )
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=list(PAPER_ARCHS), choices=ARCHS)
    parser.add_argument("--steps", type=int, default=100, help="train steps in the throughput measurement")
    parser.add_argument("--per-class", type=int, default=5000, help="training samples per class (CIFAR-10: 5000)")
    parser.add_argument("--test-size", type=int, default=10000)
    parser.add_argument("--epoch-steps", type=int, help="cap the protocol epoch at this many steps (CPU)")
    parser.add_argument("--no-kernel-metrics", dest="kernel_metrics", action="store_false")
    parser.add_argument(
        "--ntk-per-class",
        type=int,
        help="NTK on this many samples per class (default: TrainConfig's, 4 for VGG, else all 12)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["scan", "loop"],
        choices=["scan", "loop"],
        help="epoch implementations to time (ntklib.train.make_train_epoch)",
    )
    args = parser.parse_args(argv)

    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({device.platform}), {jax.device_count()} device(s); host {platform.node()}")
    print(
        f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}, numpy {np.__version__}, "
        f"python {platform.python_version()}, matmul precision {jax.config.jax_default_matmul_precision}"
    )
    dataset = synthetic_dataset(args.per_class, args.test_size)
    full_steps = steps_per_epoch(dataset.train_labels, batch_size=120, num_classes=10)
    print(
        f"data: CIFAR-shaped synthetic, {args.per_class}/class → {full_steps} steps/epoch of 120"
        + (f", epoch capped at {args.epoch_steps} steps" if args.epoch_steps else "")
        + f"; test set {args.test_size}; kernel metrics "
        + (
            (
                "on, "
                + (
                    f"{args.ntk_per_class}/class"
                    if args.ntk_per_class
                    else "4/class for VGG, whole batch of 120 otherwise"
                )
            )
            if args.kernel_metrics
            else "off"
        )
    )
    print()
    header = (
        "| arch | params | mode | samples/s | ms/step | compile s | epoch steps | train s | test eval s "
        "| NC+NTK s | epoch total s | paper epoch est. s |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for arch in args.archs:
        r = bench_arch(
            arch,
            dataset,
            steps=args.steps,
            epoch_steps=args.epoch_steps,
            kernel_metrics=args.kernel_metrics,
            ntk_per_class=args.ntk_per_class,
            repeats=args.repeats,
            modes=tuple(args.modes),
        )
        # the paper's epoch: 416 steps and a 10 000-sample test set, scaled linearly from what ran
        est = (
            r["epoch_train_s"] * PAPER_STEPS / r["epoch_steps"]
            + r["epoch_test_eval_s"] * PAPER_TEST / args.test_size
            + r["epoch_batch_metrics_s"]
        )
        for mode in args.modes:
            m = r[mode]
            epoch = (
                f"| {r['epoch_steps']}/{r['full_steps']} | {r['epoch_train_s']:.2f} | {r['epoch_test_eval_s']:.2f} "
                f"| {r['epoch_batch_metrics_s']:.2f} | {r['epoch_total_s']:.2f} | {est:.1f} |"
                if mode == r["best_mode"]
                else "| | | | | | |"
            )
            print(
                f"| {arch} | {r['params']:,} | {mode} | {m['samples_per_s']:,.0f} | {m['step_ms']:.2f} "
                f"| {m['compile_s']:.1f} " + epoch,
                flush=True,
            )


if __name__ == "__main__":
    main()
