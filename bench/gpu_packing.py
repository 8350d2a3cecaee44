"""How many runs to put on one GPU: aggregate training samples/s of k runs packed onto a GPU.

Three ways of running k training runs on one GPU, for k = 1, 2, 4, 8:

* ``ray``: k Ray actors, each a separate process with ``num_gpus=1/k`` (what ``sweep --engine ray
  --gpus-per-run 1/k`` does), the GPU time-sliced between the processes;
* ``ray+mps``: the same with a CUDA MPS daemon (``nvidia-cuda-mps-control -d``) that this script
  starts before Ray and stops afterwards, so that the k processes' kernels run concurrently;
* ``vmap``: k runs inside one process, one program: the epoch function vmapped over k training
  states (k seeds) and k learning rates of one architecture.

Every actor builds the paper's training step (:func:`ntklib.train.make_train_epoch`: SGD with
Nesterov momentum, weight decay, batches of 120, BatchNorm in train mode) on CIFAR-shaped random
data, compiles it (not timed), waits for the others, then trains for ``--seconds``. The aggregate
is the sum over runs of samples/s; the ratio is to one run alone (``ray``, k = 1). JAX gets
``0.9/k`` of the GPU's memory in each process.

Usage::

    python bench/gpu_packing.py                 # on a GPU machine: ResNet20, k = 1 2 4 8, ray, ray+mps, vmap
    python bench/gpu_packing.py --smoke         # CPU, seconds: the MLP on 8×8 inputs, k = 1 2, no MPS

The earlier measurement that motivates it (issue 13): four processes on one H200 without MPS
reached 53.8k samples/s together against 51.8k for one alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import ray

BATCH = 120
MODES = ("ray", "ray+mps", "vmap")


class Trainer:
    """``runs`` training runs of ``arch`` in one process (vmapped when ``runs`` > 1)."""

    def __init__(self, arch: str, shape: tuple[int, ...], steps: int, runs: int, memory_fraction: float | None):
        if memory_fraction is not None:  # before JAX starts its GPU backend in this process
            os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{memory_fraction:.3f}"
        import jax
        import jax.numpy as jnp
        import numpy as np

        from ntklib.config import TrainConfig
        from ntklib.train import _build_model, create_train_state, make_train_epoch

        rng = np.random.default_rng(0)
        labels = np.repeat(np.arange(10, dtype=np.int32), steps * BATCH // 10)
        self.images = jnp.asarray(rng.random((len(labels), *shape), dtype=np.float32))
        self.labels = jnp.asarray(labels)
        self.idx = jnp.asarray(rng.permutation(len(labels)).reshape(steps, BATCH).astype(np.int32))
        model = _build_model(arch, 10, "flax")
        states = [
            create_train_state(TrainConfig(arch=arch, dataset="digits", seed=seed), model, shape, steps)
            for seed in range(runs)
        ]
        lrs = jnp.asarray(np.geomspace(1e-3, 1e-1, runs), jnp.float32)
        epoch = make_train_epoch("mse", "scan")
        if runs == 1:
            self.state, self.lr, self.epoch = states[0], lrs[0], epoch
        else:
            self.state = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
            self.lr, self.epoch = lrs, jax.jit(jax.vmap(epoch, in_axes=(0, None, None, None, 0)))
        self.samples_per_call = runs * steps * BATCH
        self.device = str(jax.devices()[0].device_kind)

    def _call(self) -> None:
        import jax

        self.state, losses, _ = self.epoch(self.state, self.images, self.labels, self.idx, self.lr)
        jax.block_until_ready(losses)

    def warmup(self) -> tuple[float, str]:
        """Compile and run once; (seconds, the device)."""
        t0 = time.perf_counter()
        self._call()
        return time.perf_counter() - t0, self.device

    def measure(self, seconds: float) -> float:
        """Train for ``seconds`` (whole epochs); samples/s."""
        calls, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or calls == 0:
            self._call()
            calls += 1
        return calls * self.samples_per_call / (time.perf_counter() - t0)


def aggregate(args: argparse.Namespace, k: int, mode: str) -> tuple[float, str]:
    """Aggregate samples/s of k runs in ``mode`` (Ray must be started); (samples/s, device)."""
    vmapped = mode == "vmap"
    processes = 1 if vmapped else k
    gpus = (1.0 / processes) if args.gpus else 0.0
    fraction = 0.9 / processes if args.gpus else None
    actor = ray.remote(Trainer).options(num_gpus=gpus, num_cpus=args.cpus / processes)
    trainers = [
        actor.remote(args.arch, tuple(args.shape), args.steps, k if vmapped else 1, fraction) for _ in range(processes)
    ]
    warm = ray.get([t.warmup.remote() for t in trainers])  # all compiled before any is timed
    rates = ray.get([t.measure.remote(args.seconds) for t in trainers])
    for t in trainers:
        ray.kill(t)
    return float(sum(rates)), warm[0][1]


def start_mps(directory: str) -> dict[str, str] | None:
    """Start an MPS control daemon with its pipe and log in ``directory``; its environment, or
    None when MPS is not available."""
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        print("ray+mps: skipped, nvidia-cuda-mps-control not found", file=sys.stderr)
        return None
    env = {"CUDA_MPS_PIPE_DIRECTORY": f"{directory}/pipe", "CUDA_MPS_LOG_DIRECTORY": f"{directory}/log"}
    for path in env.values():
        os.makedirs(path, exist_ok=True)
    done = subprocess.run([control, "-d"], env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"ray+mps: skipped, the MPS daemon did not start: {done.stderr.strip()}", file=sys.stderr)
        return None
    time.sleep(1.0)
    return env


def stop_mps(env: dict[str, str]) -> None:
    subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", env={**os.environ, **env}, text=True, check=False)


def run_mode(args: argparse.Namespace, mode: str, table: list[dict]) -> None:
    """Every k of ``args.ks`` in ``mode``, each in a fresh Ray session (MPS must start before the
    processes that use it, so Ray starts after it)."""
    with tempfile.TemporaryDirectory(prefix="mps_") as directory:
        mps_env = start_mps(directory) if mode == "ray+mps" else {}
        if mps_env is None:
            return
        saved = {name: os.environ.get(name) for name in mps_env}
        os.environ.update(mps_env)  # the Ray workers inherit it
        try:
            ray.init(num_cpus=args.cpus, num_gpus=1 if args.gpus else 0, include_dashboard=False, log_to_driver=False)
            for k in args.ks:
                t0 = time.perf_counter()
                rate, device = aggregate(args, k, mode)
                row = {"mode": mode, "k": k, "samples_per_s": rate, "device": device}
                row["wall_s"] = time.perf_counter() - t0
                table.append(row)
                print(f"{mode:8s} k={k}: {rate:12.0f} samples/s  ({row['wall_s']:.0f} s)", file=sys.stderr, flush=True)
        finally:
            ray.shutdown()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            if mps_env:
                stop_mps(mps_env)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU, seconds: mlp, 8×8×1, k = 1 2, no MPS")
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 32, 3], help="input H W C (CIFAR-shaped)")
    parser.add_argument("--steps", type=int, default=50, help="steps of 120 per timed call")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8], help="runs per GPU")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--seconds", type=float, default=20.0, help="timed training per measurement")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs Ray may use")
    parser.add_argument("--json", help="also write the table to this file")
    args = parser.parse_args(argv)
    args.gpus = not args.smoke
    if args.smoke:
        args.arch, args.shape, args.steps, args.ks, args.seconds = "mlp", [8, 8, 1], 4, [1, 2], 1.0
        args.modes = [m for m in args.modes if m != "ray+mps"]
        args.cpus = min(args.cpus, 2)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH")) if p
    )
    print(f"host {platform.node()}, ray {ray.__version__}; {args.arch} on {args.shape}, batches of {BATCH}")
    table: list[dict] = []
    for mode in args.modes:
        run_mode(args, mode, table)
    base = next((r["samples_per_s"] for r in table if r["mode"] == "ray" and r["k"] == 1), None)
    print(f"device: {table[0]['device'] if table else '?'}")
    print(f"{'mode':8s} {'k':>2s} {'samples/s':>12s} {'ratio to one run':>17s}")
    for row in table:
        row["ratio"] = row["samples_per_s"] / base if base else None
        ratio = f"{row['ratio']:.2f}" if base else "-"
        print(f"{row['mode']:8s} {row['k']:2d} {row['samples_per_s']:12.0f} {ratio:>17s}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
