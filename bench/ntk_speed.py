"""Exact block statistics (ntklib) against the per-pair method of the paper's released code.

Both methods run on the same model and the same class-sorted balanced batch in one process.

* ntklib (:func:`ntklib.ntk.block_ntk_fn`): one feature Jacobian, then contractions; gives the
  exact means (γ_d, γ_c, γ_n) of Θ_cc and (κ_d, κ_c, κ_n) of Θʰ_jj over *all* pairs of the batch.
* per-pair (the released code's cost model): for one output (logit c, or feature j) and one pair
  of samples (x, x') it takes two fresh gradients — ∂z_c(x)/∂θ_all and ∂z_c(x')/∂θ_all (or the
  feature's, w.r.t. the extractor's parameters) — and their dot product; nothing is reused across
  pairs. Its pair set ("released-code pairs") splits each class into two halves A and B of m/2:
  d from the N self-pairs (x, x), c from same-class pairs (x ∈ A, x' ∈ B), n from different-class
  pairs (x ∈ A, x' ∈ B); every output is evaluated on every pair.

Running the per-pair method over its whole pair set takes hours (e.g. ResNet20: 3720 pairs × 74
outputs × 2 gradients ≈ 0.55 M gradients), so by default it evaluates a random subset of
(output, pair) items for every statistic, measures its time per item and *extrapolates* its total
time (printed as such); ``--full-per-pair`` evaluates everything. Correctness is checked on the
identical items: the per-pair means over the subset must equal ntklib's kernel entries averaged over
the same items to within ``AGREEMENT_RTOL`` (1e-5) relative; the script prints a PASS or FAIL line
for it. The difference between the per-pair sampled means and ntklib's exact all-pair means is
printed separately: it is sampling, not error.

Precision: both sides run at ``highest`` matmul precision. ntklib's engine always does (see
:mod:`ntklib.ntk`); the per-pair reference is traced and run under
``jax.default_matmul_precision("highest")`` too. At a GPU's default precision (TF32 matmuls and
convolutions) the reference's own gradients are off by about 1e-4 relative, which would show as a
false disagreement (H200, 2026-11-28: 3e-4 on the statistics at default precision, 2.3e-6 at
``highest``). On a CPU the default is already full float32, so there it changes nothing.

Usage:
    python bench/ntk_speed.py                          # GPU workload: ResNet20, 10 × 12 CIFAR-sized
    python bench/ntk_speed.py --device-scale cpu       # reduced workload, < 3 min on 2 CPU cores
    python bench/ntk_speed.py --arch mlp --device-scale cpu   # quick check of the script itself
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ntklib import kernel_stats
from ntklib.measure import kernel_statistics
from ntklib.models import build_model
from ntklib.ntk import ChunkLoop, block_ntk_fn, resolve_loop, split_classifier

# Relative tolerance on the shared statistics (identical items) for the PASS/FAIL line.
AGREEMENT_RTOL = 1e-5

STATS = ("gamma_d", "gamma_c", "gamma_n", "kappa_d", "kappa_c", "kappa_n")

# Reduced workload for --device-scale cpu (overrides the GPU defaults unless given explicitly).
CPU_SCALE = {"n_per_class": 4, "image": 16, "channels": 1, "pair_samples": 24, "chunk_size": 16, "all_metrics": 0}
GPU_SCALE = {"n_per_class": 12, "image": 32, "channels": 3, "pair_samples": 200, "chunk_size": 16, "all_metrics": 1}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="resnet20", help="ntklib.models.build_model architecture")
    p.add_argument("--classes", type=int, default=10, help="K (= C logits)")
    p.add_argument("--n-per-class", type=int, default=None, help="m (even); default 12 (gpu) / 4 (cpu)")
    p.add_argument("--image", type=int, default=None, help="image side; default 32 (gpu) / 16 (cpu)")
    p.add_argument("--channels", type=int, default=None, help="input channels; default 3 (gpu) / 1 (cpu)")
    p.add_argument("--device-scale", choices=("gpu", "cpu"), default="gpu", help="workload preset")
    p.add_argument("--chunk-size", type=int, default=None, help="feature neurons per Jacobian chunk (0: all)")
    p.add_argument("--pair-samples", type=int, default=None, help="per-pair items evaluated per statistic")
    p.add_argument("--full-per-pair", action="store_true", help="evaluate the per-pair method on all its pairs")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of ntklib (median reported)")
    p.add_argument(
        "--all-metrics",
        type=int,
        choices=(0, 1),
        default=None,
        help="also time kernel_statistics (off-diagonal feature norms cost d²N²P flops); default 1 (gpu) / 0 (cpu)",
    )
    p.add_argument(
        "--loop",
        choices=[mode.value for mode in ChunkLoop],
        default="auto",
        help="block_ntk_fn's loop over neuron chunks (auto: unrolled on the CPU, rolled on accelerators)",
    )
    p.add_argument("--init", default="flax")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    scale = CPU_SCALE if args.device_scale == "cpu" else GPU_SCALE
    for key, value in scale.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.chunk_size == 0:
        args.chunk_size = None
    if args.n_per_class < 2 or args.n_per_class % 2:
        p.error("--n-per-class must be even and >= 2 (the per-pair method splits classes in halves)")
    return args


def released_code_pairs(num_classes: int, per_class: int) -> dict[str, np.ndarray]:
    """The per-pair method's pair sets, each an (n_pairs, 2) array of sample indices."""
    half = per_class // 2
    labels = np.repeat(np.arange(num_classes), per_class)
    pos = np.tile(np.arange(per_class), num_classes)
    a, b = np.flatnonzero(pos < half), np.flatnonzero(pos >= half)
    aa, bb = np.meshgrid(a, b, indexing="ij")
    aa, bb = aa.ravel(), bb.ravel()
    same = labels[aa] == labels[bb]
    n = num_classes * per_class
    return {
        "d": np.stack([np.arange(n), np.arange(n)], axis=1),
        "c": np.stack([aa[same], bb[same]], axis=1),
        "n": np.stack([aa[~same], bb[~same]], axis=1),
    }


def make_per_pair_fns(model, variables):
    """Jitted per-pair kernel values; each call takes two gradients and one dot product.

    The returned functions trace and run under ``jax.default_matmul_precision("highest")``, so the
    gradients (not only the final dot product) are exact float32 on a GPU as well.
    """
    rest = {key: val for key, val in variables.items() if key != "params"}
    flat_all, unravel_all = ravel_pytree(variables["params"])
    split = split_classifier(model, variables)
    flat_f, unravel_f = ravel_pytree(split.feature_params)

    def logit(p, xi, c):
        return model.apply({**rest, "params": unravel_all(p)}, xi[None])[0, c]

    def feature(p, xi, j):
        return split.features(unravel_f(p), xi[None])[0, j]

    hi = jax.lax.Precision.HIGHEST

    # The batch stays on the device and the pair is indexed inside the jitted call, so that one
    # (output, pair) item costs one dispatch: the per-pair method's best case.
    @jax.jit
    def logit_pair(x, i, j, c):
        g1 = jax.grad(logit)(flat_all, x[i], c)
        g2 = jax.grad(logit)(flat_all, x[j], c)
        return jnp.dot(g1, g2, precision=hi)

    @jax.jit
    def feature_pair(x, i, j, c):
        g1 = jax.grad(feature)(flat_f, x[i], c)
        g2 = jax.grad(feature)(flat_f, x[j], c)
        return jnp.dot(g1, g2, precision=hi)

    def at_highest(fn):
        def call(*args):
            with jax.default_matmul_precision("highest"):
                return fn(*args)

        return call

    return at_highest(logit_pair), at_highest(feature_pair)


def peak_memory() -> str:
    dev = jax.devices()[0]
    parts = []
    try:
        stats = dev.memory_stats()
    except Exception:  # noqa: BLE001 — CPU backends may not implement it
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        parts.append(f"device peak {stats['peak_bytes_in_use'] / 2**30:.2f} GiB (memory_stats)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_bytes = rss if sys.platform == "darwin" else rss * 1024
    parts.append(f"host peak RSS {rss_bytes / 2**30:.2f} GiB")
    return ", ".join(parts)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None) -> None:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    k, m = args.classes, args.n_per_class
    n = k * m
    print(f"# ntk_speed  {' '.join(sys.argv[1:]) or '(defaults)'}")
    print(f"jax {jax.__version__}, devices {jax.devices()}, python {platform.python_version()}")
    print(
        f"workload: arch={args.arch} K={k} m={m} N={n} input={args.image}x{args.image}x{args.channels} "
        f"scale={args.device_scale} chunk_size={args.chunk_size} loop={resolve_loop(args.loop).value}"
    )

    model = build_model(args.arch, k, args.init)
    key_x, key_p = jax.random.split(jax.random.key(args.seed))
    x = jax.random.normal(key_x, (n, args.image, args.image, args.channels), jnp.float32)
    labels = np.repeat(np.arange(k), m)
    variables = jax.jit(model.init)(key_p, x)
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(variables["params"]))
    n_feat = sum(a.size for a in jax.tree_util.tree_leaves(variables["params"]["features"]))
    d = int(variables["params"]["classifier"]["kernel"].shape[0])
    chunk = d if args.chunk_size is None else min(args.chunk_size, d)
    est = (chunk + k) * n * n_feat * 4
    print(f"parameters: {n_params} (feature extractor {n_feat}), d={d}, C={k}")
    print(
        f"estimated peak of the Jacobian buffers (chunk + C)·N·P·4 B = {est / 2**30:.2f} GiB "
        f"(unchunked J alone: N·d·P·4 B = {n * d * n_feat * 4 / 2**30:.2f} GiB)"
    )

    # ---- ntklib: exact block statistics over all pairs ---------------------------------------
    ntk_fn = block_ntk_fn(model, chunk_size=args.chunk_size, loop=args.loop)

    def exact_stats():
        ntk = ntk_fn(variables, x)
        return (
            ntk,
            kernel_stats.block_statistics(np.asarray(ntk.logits), labels),
            kernel_stats.block_statistics(np.asarray(ntk.features), labels),
        )

    t0 = time.perf_counter()
    ntk, gamma, kappa = exact_stats()
    first = time.perf_counter() - t0
    t_ntk = median_time(lambda: exact_stats()[0].logits, args.repeats)
    print(
        f"\nntklib block_ntk_fn (diagonal blocks) + exact block statistics: {t_ntk:.3f} s "
        f"(median of {args.repeats}; first call incl. compile {first:.2f} s, compile ≈ {first - t_ntk:.2f} s)"
    )
    print(f"memory after ntklib: {peak_memory()}")
    exact = {
        "gamma_d": gamma.diag,
        "gamma_c": gamma.same_class,
        "gamma_n": gamma.other_class,
        "kappa_d": kappa.diag,
        "kappa_c": kappa.same_class,
        "kappa_n": kappa.other_class,
    }

    if args.all_metrics:
        t0 = time.perf_counter()
        stats = kernel_statistics(model, variables, x, labels, chunk_size=args.chunk_size, offdiag="norms")
        first_all = time.perf_counter() - t0
        t_all = median_time(
            lambda: kernel_statistics(model, variables, x, labels, chunk_size=args.chunk_size, offdiag="norms").gamma,
            1,
        )
        record = stats.as_dict()
        print(
            f"ntklib kernel_statistics (all kernel columns of a record, incl. off-diagonal norms): {t_all:.3f} s "
            f"(first call {first_all:.2f} s); offdiag/diag norm ratio NTK {record['offdiag_ratio_ntk']:.3g}, "
            f"features {record['offdiag_ratio_feat']:.3g}; memory: {peak_memory()}"
        )

    # ---- per-pair method ---------------------------------------------------------------------
    logit_pair, feature_pair = make_per_pair_fns(model, variables)
    pairs = released_code_pairs(k, m)
    n_rel_pairs = sum(len(v) for v in pairs.values())
    rng = np.random.default_rng(args.seed)
    items = {}  # stat -> (outputs, pair indices)
    for stat in STATS:
        kind, part = stat.split("_")
        n_out = k if kind == "gamma" else d
        p = pairs[part]
        total = n_out * len(p)
        if args.full_per_pair or args.pair_samples >= total:
            flat = np.arange(total)
        else:
            flat = rng.choice(total, size=args.pair_samples, replace=False)
        items[stat] = (flat // len(p), p[flat % len(p)])

    # Warm-up (compile) both per-pair functions.
    t0 = time.perf_counter()
    jax.block_until_ready((logit_pair(x, 0, 1, 0), feature_pair(x, 0, 1, 0)))
    compile_pp = time.perf_counter() - t0

    values, per_item = {}, {"gamma": [], "kappa": []}
    for stat in STATS:
        kind = stat.split("_")[0]
        fn = logit_pair if kind == "gamma" else feature_pair
        outs, idx = items[stat]
        t0 = time.perf_counter()
        vals = [
            fn(x, i, j, o) for o, (i, j) in zip(outs.tolist(), idx.tolist(), strict=True)
        ]  # async; one sync at the end
        vals = np.asarray(jax.block_until_ready(jnp.stack(vals)), np.float64)
        per_item[kind].append((time.perf_counter() - t0, len(vals)))
        values[stat] = vals
    t_logit = sum(t for t, _ in per_item["gamma"]) / sum(c for _, c in per_item["gamma"])
    t_feat = sum(t for t, _ in per_item["kappa"]) / sum(c for _, c in per_item["kappa"])
    n_items = sum(len(v) for v in values.values())
    t_rel = n_rel_pairs * (k * t_logit + d * t_feat)
    t_allpairs = n * (n + 1) / 2 * (k * t_logit + d * t_feat)
    measured = "measured" if args.full_per_pair else "extrapolated"
    print(
        f"\nper-pair method: {n_items} (output, pair) items evaluated, compile {compile_pp:.2f} s; "
        f"{t_logit * 1e3:.2f} ms per logit item, {t_feat * 1e3:.2f} ms per feature item"
    )
    print(
        f"per-pair on the released-code pair set ({n_rel_pairs} pairs × ({k} logits + {d} features)): "
        f"{t_rel:.1f} s ({measured} from the time per item)"
    )
    print(
        f"per-pair on all N(N+1)/2 = {n * (n + 1) // 2} pairs (what exact means would need): "
        f"{t_allpairs:.1f} s (extrapolated)"
    )

    # ---- comparison on identical items -------------------------------------------------------
    logits, features = np.asarray(ntk.logits, np.float64), np.asarray(ntk.features, np.float64)
    print(
        f"\n{'stat':8s} {'ntklib exact (all pairs)':>24s} {'per-pair (its items)':>21s} "
        f"{'ntklib (same items)':>20s} {'rel diff same items':>20s} {'sampled vs exact':>17s}"
    )
    worst = 0.0
    worst_entry = 0.0
    for stat in STATS:
        kind = stat.split("_")[0]
        kern = logits if kind == "gamma" else features
        outs, idx = items[stat]
        same_items = kern[outs, idx[:, 0], idx[:, 1]]
        pp_mean, nt_mean = values[stat].mean(), same_items.mean()
        rel_same = abs(pp_mean - nt_mean) / max(abs(nt_mean), 1e-30)
        rel_sampled = abs(pp_mean - exact[stat]) / max(abs(exact[stat]), 1e-30)
        worst = max(worst, rel_same)
        worst_entry = max(worst_entry, float(np.max(np.abs(values[stat] - same_items)) / np.max(np.abs(kern))))
        print(f"{stat:8s} {exact[stat]:24.6g} {pp_mean:21.6g} {nt_mean:20.6g} {rel_same:20.2e} {rel_sampled:17.2e}")
    print(
        f"max relative difference of the shared statistics on identical items: {worst:.2e}; "
        f"max entry difference / max|Θ|: {worst_entry:.2e}"
    )
    verdict = "PASS" if worst <= AGREEMENT_RTOL else "FAIL"
    print(
        f"AGREEMENT {verdict}: max relative difference of the statistics on identical items {worst:.2e} "
        f"{'<=' if worst <= AGREEMENT_RTOL else '>'} {AGREEMENT_RTOL:g} (both sides at 'highest' matmul precision)"
    )
    print(
        "('sampled vs exact' = per-pair mean over its sampled items vs ntklib's exact all-pair mean: "
        "sampling, not error)"
    )

    print(
        f"\nSPEEDUP vs per-pair on the released-code pair set: {t_rel / t_ntk:.1f}x "
        f"({measured}; ntklib computes exact means over all {n * n} ordered pairs)"
    )
    print(f"SPEEDUP vs per-pair computing the same exact all-pair means: {t_allpairs / t_ntk:.1f}x (extrapolated)")
    print(f"peak memory: {peak_memory()}")


if __name__ == "__main__":
    main()
