"""Compile time against run time: the NTK chunk loop unrolled or rolled, and what a sweep compiles.

Three measurements, each selected by ``--part``:

* ``ntk``: :func:`ntklib.ntk.block_ntk_fn` loops over neuron chunks either unrolled (a Python
  loop: XLA sees one copy of the vmapped backward pass per chunk) or rolled (one ``lax.scan``),
  chosen by its ``loop`` argument. This part times ``lower`` and ``compile`` separately, then the
  median run, of ntklib's program with each loop, and checks that the two agree. Both run at
  ``highest`` precision, as the engine does. The workload is chapter 7's probe: ResNet20, flax
  init, 3 samples per class of the 8×8 digits (N = 30), ``--offdiag none`` (``norms`` adds the
  feature cross-blocks, an inner loop over chunks). The chunk sizes include ``None``, a single
  chunk, which is what chapter 7 uses; there the two programs are the same. ``--gpu-shape`` uses
  ``bench/ntk_speed.py``'s GPU workload instead (N = 120, 32×32×3); add ``--compile-only`` on a
  CPU, where running it takes minutes and GBs.
* ``sweep``: trains ``--tiny`` runs on the digits that differ only in learning rate and init, in
  one process. For each run it counts XLA compilations, with :class:`ntklib.compilation.CompileLog`
  (JAX's ``/jax/core/compile/backend_compile_duration`` event), and their seconds.
* ``cache``: runs the same tiny CLI command four times, each a fresh process: a first and a
  second invocation with ``--no-compile-cache``, and a first (cold) and second (warm) one with
  ``--compile-cache DIR`` on a fresh directory, alternated. It reports the wall time of each, and,
  from JAX's ``JAX_LOG_COMPILES`` log, the number and seconds of compilations (a cache hit counts
  as one, with its loading time) and the persistent cache hits, and the sum of the run's
  ``compile_seconds`` column.

Usage:
    python bench/compile_time.py --part ntk --chunk-sizes 16 8 --repeats 2   # ≈ 7 min on 2 busy CPU cores
    python bench/compile_time.py --part ntk --gpu-shape --chunk-sizes 16 8     # on a GPU
    python bench/compile_time.py --part ntk --gpu-shape --chunk-sizes 16 --compile-only   # on a CPU
    python bench/compile_time.py --part sweep
    python bench/compile_time.py --part cache
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from ntklib import ntk as ntk_module
from ntklib.compilation import CompileLog
from ntklib.data import load_dataset
from ntklib.measure import subsample_per_class
from ntklib.models import build_model

# ---------------------------------------------------------------------------------------------
# Part "ntk": the chunk loop of ntklib's NTK, unrolled against rolled
# ---------------------------------------------------------------------------------------------


def ntklib_block_ntk(model, variables, x, *, chunk_size: int | None, loop: str, offdiag: str):
    """ntklib's program (``ntklib.ntk._block_ntk``) with the chunk loop ``loop``, as a tuple of its
    returned blocks: (logits, features, h[, logits_norms, features_norms])."""
    out = ntk_module._block_ntk(
        model,
        variables,
        x,
        offdiag=ntk_module.OffDiagonal(offdiag),
        chunk_size=chunk_size,
        sample_chunk_size=None,
        loop=ntk_module.ChunkLoop(loop),
    )
    return tuple(block for block in out if block is not None)


def time_program(fn, variables, x, repeats: int, run: bool):
    """(lower s, compile s, median run s or None, outputs or None), all at 'highest' precision."""
    with jax.default_matmul_precision("highest"):
        jitted = jax.jit(fn)
        t0 = time.perf_counter()
        lowered = jitted.lower(variables, x)
        t_lower = time.perf_counter() - t0
        t0 = time.perf_counter()
        compiled = lowered.compile()
        t_compile = time.perf_counter() - t0
        if not run:
            return t_lower, t_compile, None, None
        out = jax.block_until_ready(compiled(variables, x))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(variables, x))
            times.append(time.perf_counter() - t0)
    return t_lower, t_compile, float(np.median(times)), out


def part_ntk(args) -> None:
    if args.gpu_shape:
        n_per_class, shape = 12, (32, 32, 3)
        x = jax.random.normal(jax.random.key(0), (10 * n_per_class, *shape), jnp.float32)
        where = f"ntk_speed's GPU workload: N = {x.shape[0]}, {shape[0]}x{shape[1]}x{shape[2]}"
    else:
        data = load_dataset("digits")
        x, _ = subsample_per_class(data.train_images, data.train_labels, args.per_class)
        x = jnp.asarray(x, jnp.float32)
        where = f"chapter 7's probe: digits 8x8, N = {x.shape[0]} ({args.per_class} per class)"
    model = build_model(args.arch, 10, "flax")
    variables = jax.jit(lambda k: model.init(k, x[:2], train=False))(jax.random.key(0))
    print(f"workload: {args.arch} (flax init) on {where}; offdiag {args.offdiag}; repeats {args.repeats}")
    print(f"{'chunk_size':>10s} {'chunks':>6s} {'loop':>9s} {'lower s':>8s} {'compile s':>9s} {'run s':>8s}  agreement")
    d = int(variables["params"]["classifier"]["kernel"].shape[0])
    for chunk in args.chunk_sizes:
        chunk = None if chunk == 0 else chunk
        n_chunks = 1 if chunk is None else -(-d // chunk)
        outs = {}
        for name in ("unrolled", "rolled"):
            fn = functools.partial(ntklib_block_ntk, model, chunk_size=chunk, loop=name, offdiag=args.offdiag)
            t_lower, t_compile, t_run, outs[name] = time_program(fn, variables, x, args.repeats, not args.compile_only)
            run = "-" if t_run is None else f"{t_run:8.3f}"
            agree = ""
            if name == "rolled" and outs["unrolled"] is not None:
                rel = max(
                    float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
                    for a, b in zip(outs["unrolled"], outs["rolled"], strict=True)
                )
                agree = f"max |diff| / max|value| {rel:.1e}"
            print(f"{chunk!s:>10s} {n_chunks:6d} {name:>9s} {t_lower:8.2f} {t_compile:9.2f} {run:>8s}  {agree}")


# ---------------------------------------------------------------------------------------------
# Part "sweep": compilations per run of an lr × init sweep in one process
# ---------------------------------------------------------------------------------------------


def part_sweep(args) -> None:
    from ntklib.config import TrainConfig
    from ntklib.train import train_and_evaluate

    counter = CompileLog().__enter__()  # for the whole process
    dataset = load_dataset("digits")
    print(
        f"workload: TrainConfig.tiny(arch={args.sweep_arch!r}, dataset='digits', epochs=2, ntk_per_class=2), "
        "one process"
    )
    print(f"{'init':>15s} {'lr':>6s} {'compilations':>12s} {'compile s':>9s} {'wall s':>7s}")
    for init in args.inits:
        for lr in args.lrs:
            start = len(counter.events)
            t0 = time.perf_counter()
            config = TrainConfig.tiny(
                arch=args.sweep_arch, dataset="digits", init=init, lr=lr, epochs=2, ntk_per_class=2
            )
            result = train_and_evaluate(config, dataset=dataset, progress=False)
            wall = time.perf_counter() - t0
            events = counter.events[start:]
            by_name = collections.defaultdict(float)
            for name, seconds in events:
                by_name[name] += seconds
            top = ", ".join(f"{name} {sec:.1f}s" for name, sec in sorted(by_name.items(), key=lambda kv: -kv[1])[:4])
            print(
                f"{init:>15s} {lr:6.3g} {len(events):12d} {sum(sec for _, sec in events):9.2f} {wall:7.2f}  "
                f"({result.status}) slowest: {top}"
            )


# ---------------------------------------------------------------------------------------------
# Part "cache": the persistent compilation cache across two processes
# ---------------------------------------------------------------------------------------------


def run_cli(cli: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ntklib.experiment", *cli], env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"CLI failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, proc.stderr


def part_cache(args) -> None:
    # log every compilation (and persistent-cache load) at WARNING; the CLI's flags choose the cache
    env = {**os.environ, "JAX_LOG_COMPILES": "1"}
    env.pop("NTKLIB_COMPILE_CACHE", None)
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = os.path.join(tmp, "jax_cache")
        print(f"command: python -m ntklib.experiment {' '.join(args.cli)} --out <fresh dir> [cache flag]")
        print(
            "| run | cache flag | wall s | XLA compilations | their seconds | persistent cache hits | compile_seconds |"
        )
        runs = (
            ("first, no cache", False),
            ("first, cache (cold)", True),
            ("second, no cache", False),
            ("second, cache (warm)", True),
        )
        for label, cached in runs:
            flag = ["--compile-cache", cache_dir] if cached else ["--no-compile-cache"]
            out = tempfile.mkdtemp(dir=tmp)
            wall, log = run_cli([*args.cli, "--out", out, *flag], env)
            hits = len(re.findall(r"Persistent compilation cache hit", log))
            compiles = [float(x) for x in re.findall(r"Finished XLA compilation of .* in ([0-9.]+) sec", log)]
            records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
            recorded = sum(r.get("compile_seconds") or 0.0 for r in records)
            shown = " ".join(flag[:1]) + (" DIR" if cached else "")
            print(
                f"| {label} | `{shown}` | {wall:.2f} | {len(compiles)} | {sum(compiles):.1f} | "
                f"{hits if cached else '–'} | {recorded:.1f} |"
            )
        files = os.listdir(cache_dir)
        size = sum(os.path.getsize(os.path.join(cache_dir, f)) for f in files)
        print(f"cache dir after the runs: {len(files)} files, {size / 2**20:.1f} MiB")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=("ntk", "sweep", "cache"), required=True)
    p.add_argument("--arch", default="resnet20", help="part ntk: architecture")
    p.add_argument("--per-class", type=int, default=3, help="part ntk: probe samples per class (chapter 7: 3)")
    p.add_argument(
        "--chunk-sizes",
        type=int,
        nargs="+",
        default=[0, 16, 8],
        help="part ntk: neuron chunk sizes (0: one chunk, chapter 7's setting)",
    )
    p.add_argument("--repeats", type=int, default=3, help="part ntk: timed runs after the first")
    p.add_argument("--gpu-shape", action="store_true", help="part ntk: ntk_speed's GPU workload (N = 120, 32x32x3)")
    p.add_argument("--compile-only", action="store_true", help="part ntk: lower and compile, do not run")
    p.add_argument(
        "--offdiag",
        choices=[mode.value for mode in ntk_module.OffDiagonal],
        default="none",
        help="part ntk: the blocks computed (norms: with the feature cross-blocks)",
    )
    p.add_argument("--sweep-arch", default="resnet20", help="part sweep: architecture")
    p.add_argument("--lrs", type=float, nargs="+", default=[0.05, 0.02], help="part sweep: learning rates")
    p.add_argument("--inits", nargs="+", default=["flax", "torch"], help="part sweep: inits")
    p.add_argument(
        "--cli",
        nargs="+",
        default=[
            "--tiny",
            "--dataset",
            "digits",
            "--arch",
            "resnet20",
            "--epochs",
            "2",
            "--ntk-per-class",
            "2",
            "--no-progress",
        ],
        help="part cache: arguments of python -m ntklib.experiment (without --out)",
    )
    args = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    print(f"# compile_time  {' '.join(sys.argv[1:])}")
    print(f"jax {jax.__version__}, devices {jax.devices()}, python {platform.python_version()}")
    {"ntk": part_ntk, "sweep": part_sweep, "cache": part_cache}[args.part](args)


if __name__ == "__main__":
    main()
