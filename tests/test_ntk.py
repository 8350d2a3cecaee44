"""The empirical-NTK engine against the plain per-sample, per-output gradient reference, and the
kernel statistics of a record computed from it (:func:`ntklib.measure.kernel_statistics`)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ntklib import kernel_stats as ks
from ntklib.measure import kernel_statistics
from ntklib.models import MLP, Classifier
from ntklib.ntk import block_ntk, block_ntk_fn, feature_norms_fn, split_classifier


class SmallCNN(nn.Module):
    """Conv-BN-ReLU ×2, global average pool: d = width."""

    width: int = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        for _ in range(2):
            x = nn.Conv(self.width, (3, 3), use_bias=False)(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        return x.mean(axis=(1, 2))


def _randomise_batch_stats(variables, key):
    """Non-trivial running statistics, so that eval mode is actually exercised."""
    if "batch_stats" not in variables:
        return variables
    leaves, tree = jax.tree_util.tree_flatten_with_path(variables["batch_stats"])
    keys = jax.random.split(key, len(leaves))
    new = [
        jax.random.uniform(k, v.shape, v.dtype, 0.5, 2.0)
        if path[-1].key == "var"
        else 0.3 * jax.random.normal(k, v.shape, v.dtype)
        for (path, v), k in zip(leaves, keys, strict=True)
    ]
    return {**variables, "batch_stats": jax.tree_util.tree_unflatten(tree, new)}


@functools.cache
def _setup(arch, k, m, dtype=jnp.float64):
    """A Classifier with BatchNorm, its variables and a batch of N = k m inputs, in ``dtype``.

    Everything is drawn in float32 once; the float64 version is its exact upcast, so one float64
    reference serves both precisions.
    """
    n = k * m
    if arch == "mlp":
        model = Classifier(features=MLP(widths=(6, 5)), num_classes=k)
        shape = (n, 7)
    else:
        model = Classifier(features=SmallCNN(width=4), num_classes=k)
        shape = (n, 5, 5, 2)
    if dtype != jnp.float32:
        _, variables, x = _setup(arch, k, m, jnp.float32)
        return model, jax.tree.map(lambda a: a.astype(dtype), variables), x.astype(dtype)

    @jax.jit
    def init(key):
        x = jax.random.normal(key, shape, jnp.float32)
        variables = _randomise_batch_stats(model.init(jax.random.key(0), x), jax.random.key(2))
        # Nonzero classifier bias: every term of Θ_cc' = W Θʰ Wᵀ + δ(⟨h, h'⟩ + 1) matters.
        bias = variables["params"]["classifier"]["bias"]
        variables["params"]["classifier"]["bias"] = bias + jax.random.normal(jax.random.key(3), bias.shape, bias.dtype)
        return x, variables

    x, variables = init(jax.random.key(1))
    return model, variables, x


def _reference(model, variables, x):
    """Naive kernels: one jax.grad per sample and output, then all dot products (float64 numpy)."""
    with jax.default_matmul_precision("highest"):
        flat, unravel = ravel_pytree(variables["params"])
        rest = {key: val for key, val in variables.items() if key != "params"}

        def logit(p, xi, c):
            return model.apply({**rest, "params": unravel(p)}, xi[None])[0, c]

        split = split_classifier(model, variables)
        flat_f, unravel_f = ravel_pytree(split.feature_params)

        def feature(p, xi, j):
            return split.features(unravel_f(p), xi[None])[0, j]

        g_logit = jax.jit(jax.grad(logit))  # one compilation: sample and output index are traced
        g_feat = jax.jit(jax.grad(feature))
        n = x.shape[0]
        num_classes = model.num_classes
        d = split.features(split.feature_params, x).shape[1]
        gl = np.stack([[np.asarray(g_logit(flat, x[i], c), np.float64) for c in range(num_classes)] for i in range(n)])
        gf = np.stack([[np.asarray(g_feat(flat_f, x[i], j), np.float64) for j in range(d)] for i in range(n)])
    return np.einsum("acp,bep->ceab", gl, gl), np.einsum("ajp,bkp->jkab", gf, gf)


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


CASES = [("mlp", 2, 2), ("mlp", 3, 3), ("cnn", 2, 3), ("cnn", 3, 2)]


@pytest.mark.parametrize("arch, k, m", CASES)
def test_block_ntk_matches_naive_reference(arch, k, m):
    """Agreement ≤ 1e-5 relative in float32 and ≤ 1e-10 in float64, for every returned block."""
    ref_logits, ref_features = _reference(*_setup(arch, k, m, jnp.float64))
    d = ref_features.shape[0]
    for dtype, tol in ((jnp.float32, 1e-5), (jnp.float64, 1e-10)):
        model, variables, x = _setup(arch, k, m, dtype)
        ntk = block_ntk(model, variables, x, offdiag="full")
        assert ntk.logits.dtype == dtype
        assert ntk.logits.shape == (k, k * m, k * m) and ntk.features.shape == (d, k * m, k * m)
        assert _rel(ntk.logits_full, ref_logits) < tol
        assert _rel(ntk.features_full, ref_features) < tol
        assert _rel(ntk.logits, np.einsum("ccab->cab", ref_logits)) < tol
        assert _rel(ntk.features, np.einsum("jjab->jab", ref_features)) < tol
        assert _rel(ntk.logits_norms, np.linalg.norm(ref_logits, axis=(-2, -1))) < tol
        assert _rel(ntk.features_norms, np.linalg.norm(ref_features, axis=(-2, -1))) < tol
        assert _rel(ntk.logits_trace, np.einsum("ccab->ab", ref_logits)) < tol


@pytest.mark.parametrize("arch, k, m", CASES[1:3])
@pytest.mark.parametrize("neurons", [[0], [3, 1], [0, 1, 2, 3]])
def test_feature_norms_of_a_neuron_subset_match_the_naive_reference(arch, k, m, neurons):
    """‖Θʰ_{jj'}‖_F on a subset of neurons, in its order, against per-sample jax.grad dot products."""
    _, ref_features = _reference(*_setup(arch, k, m, jnp.float64))
    ref = np.linalg.norm(ref_features, axis=(-2, -1))[np.ix_(neurons, neurons)]
    for dtype, tol in ((jnp.float32, 1e-5), (jnp.float64, 1e-10)):
        model, variables, x = _setup(arch, k, m, dtype)
        for chunk in (None, 2):
            norms = feature_norms_fn(model, neurons, sample_chunk_size=chunk)(variables, x)
            assert norms.shape == (len(neurons), len(neurons)) and norms.dtype == dtype
            assert _rel(norms, ref) < tol


def test_feature_norms_reject_bad_neurons_naming_the_parameter():
    model, variables, x = _setup(*CASES[0])  # d = 5
    for bad in ([], [[0, 1]], [-1], [0.5], [1, 1]):
        with pytest.raises(ValueError, match="neurons"):
            feature_norms_fn(model, bad)
    with pytest.raises(ValueError, match="neurons must lie in \\[0, d = 5\\)"):
        feature_norms_fn(model, [5])(variables, x)
    with pytest.raises(ValueError, match="sample_chunk_size"):
        feature_norms_fn(model, [0], sample_chunk_size=0)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_kernels_are_symmetric_and_psd(arch):
    model, variables, x = _setup(*{"mlp": CASES[1], "cnn": CASES[3]}[arch])
    ntk = block_ntk(model, variables, x, offdiag="full")
    for kern in (ntk.logits, ntk.features):
        kern = np.asarray(kern)
        np.testing.assert_allclose(kern, kern.transpose(0, 2, 1), atol=1e-12 * np.abs(kern).max())
        assert np.linalg.eigvalsh(kern).min() >= -1e-10 * np.abs(kern).max()
    # The full kernels, as (C N, C N) and (d N, d N) matrices, are Gram matrices too.
    for full in (ntk.logits_full, ntk.features_full):
        c, _, n, _ = full.shape
        mat = np.asarray(full).transpose(0, 2, 1, 3).reshape(c * n, c * n)
        assert np.linalg.eigvalsh(mat).min() >= -1e-10 * np.abs(mat).max()


@pytest.mark.parametrize("chunk_size, sample_chunk_size", [(1, None), (2, 4), (4, 1)])
def test_chunked_equals_unchunked(chunk_size, sample_chunk_size):
    # d = 5 for this MLP: chunk sizes 2 and 4 leave a padded last chunk.
    model, variables, x = _setup(*CASES[1])  # N = 9
    full = block_ntk(model, variables, x, offdiag="full")
    chunked = block_ntk_fn(model, offdiag="full", chunk_size=chunk_size, sample_chunk_size=sample_chunk_size)(
        variables, x
    )
    for name in ("logits", "features", "h", "logits_norms", "features_norms", "logits_full", "features_full"):
        np.testing.assert_allclose(getattr(chunked, name), getattr(full, name), rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("offdiag", ["full", "none"])
@pytest.mark.parametrize(
    "case, chunk_size, sample_chunk_size",
    [(CASES[1], 2, None), (CASES[3], 3, 2)],  # MLP d = 5: chunks 2, 2, 1; CNN d = 4: chunks 3, 1
)
def test_rolled_loop_equals_unrolled_loop(offdiag, case, chunk_size, sample_chunk_size):
    """The rolled chunk loop (lax.scan) gives the unrolled loop's blocks to float32 rounding, for the
    diagonal and the off-diagonal blocks, with an uneven last chunk."""
    model, variables, x = _setup(*case, jnp.float32)
    kernels = {
        loop: block_ntk_fn(
            model, offdiag=offdiag, chunk_size=chunk_size, sample_chunk_size=sample_chunk_size, loop=loop
        )(variables, x)
        for loop in ("unrolled", "rolled")
    }
    unrolled, rolled = kernels["unrolled"], kernels["rolled"]
    names = ("logits", "features", "h")
    names += ("logits_norms", "features_norms", "logits_full", "features_full") if offdiag == "full" else ()
    for name in names:
        got, want = getattr(rolled, name), getattr(unrolled, name)
        assert got.dtype == jnp.float32 and got.shape == want.shape, name
        assert _rel(got, np.asarray(want, np.float64)) < 1e-6, name
    if offdiag == "none":
        assert rolled.features_full is None and rolled.logits_norms is None


def test_loop_auto_unrolls_on_the_cpu_and_rolls_on_accelerators():
    from ntklib.ntk import ChunkLoop, resolve_loop

    assert resolve_loop("auto", "cpu") is ChunkLoop.UNROLLED
    assert resolve_loop("auto", "gpu") is ChunkLoop.ROLLED and resolve_loop("auto", "tpu") is ChunkLoop.ROLLED
    assert resolve_loop("rolled", "cpu") is ChunkLoop.ROLLED and resolve_loop("unrolled", "gpu") is ChunkLoop.UNROLLED
    assert resolve_loop("auto") is (ChunkLoop.UNROLLED if jax.default_backend() == "cpu" else ChunkLoop.ROLLED)
    model = _setup(*CASES[0])[0]
    with pytest.raises(ValueError, match="unknown loop 'scan'; valid choices: auto, unrolled, rolled"):
        block_ntk_fn(model, loop="scan")


def test_offdiag_none_returns_only_diagonal_blocks():
    model, variables, x = _setup(*CASES[0])
    ntk = block_ntk(model, variables, x)
    assert ntk.logits_norms is None and ntk.features_full is None
    np.testing.assert_allclose(ntk.logits, block_ntk(model, variables, x, offdiag="full").logits, rtol=1e-13)


def test_offdiag_logits_returns_logit_blocks_without_feature_cross_blocks():
    model, variables, x = _setup(*CASES[1])
    full = block_ntk(model, variables, x, offdiag="full")
    ntk = block_ntk(model, variables, x, offdiag="logits")
    assert ntk.features_norms is None and ntk.features_full is None
    for name in ("logits", "features", "logits_norms", "logits_full"):
        np.testing.assert_allclose(getattr(ntk, name), getattr(full, name), rtol=1e-12, err_msg=name)


def test_eval_mode_uses_running_statistics():
    model, variables, x = _setup(*CASES[2])
    split = split_classifier(model, variables)
    h = split.features(split.feature_params, x)
    z = model.apply(variables, x, train=False)
    np.testing.assert_allclose(z, h @ split.weights.T + split.bias[None, :], rtol=1e-12)
    # h of one sample does not depend on the rest of the batch (no batch coupling).
    np.testing.assert_allclose(split.features(split.feature_params, x[:1])[0], h[0], rtol=1e-12)


def test_kernel_statistics_consistent_with_kernels():
    _, k, m = CASES[3]
    model, variables, x = _setup(*CASES[3])
    labels = np.repeat(np.arange(k), m)
    stats = kernel_statistics(model, variables, x, labels)
    ntk = block_ntk(model, variables, x, offdiag="norms")
    gamma = ks.block_statistics(ntk.logits, labels)
    assert stats.gamma == gamma
    assert stats.kappa == ks.block_statistics(ntk.features, labels)
    assert stats.align_ntk == pytest.approx(ks.label_alignment(ntk.logits, labels))
    assert stats.features.shape == (4, k * m) and stats.weights.shape == (k, 4) and stats.bias.shape == (k,)
    record = stats.as_dict()
    for key in (
        "gamma_d",
        "gamma_c",
        "gamma_n",
        "kappa_d",
        "kappa_c",
        "kappa_n",
        "align_ntk",
        "align_feat",
        "block_fit_ntk",
        "block_fit_feat",
        "offdiag_ratio_ntk",
        "diag_norm_feat",
        "gamma_lam0",
    ):
        assert isinstance(record[key], float) and np.isfinite(record[key]), key
    assert record["gamma_d"] == gamma.diag
    assert 0 < record["offdiag_norm_ntk"] < record["diag_norm_ntk"]
    assert record["diag_norm_ntk"] == pytest.approx(np.mean(np.linalg.norm(ntk.logits, axis=(1, 2))), rel=1e-6)
    # The feature cross-blocks (d²N²P flops) are measured only on request.
    assert "offdiag_norm_feat" not in record and stats.offdiag_norm_feat is None
    with_features = kernel_statistics(model, variables, x, labels, offdiag="norms").as_dict()
    assert with_features["diag_norm_feat"] == pytest.approx(record["diag_norm_feat"], rel=1e-6)
    assert with_features["offdiag_ratio_feat"] == pytest.approx(
        ks.block_norms(ntk.features_norms)[1] / ks.block_norms(ntk.features_norms)[0], rel=1e-6
    )
    assert "offdiag_norm_ntk" not in kernel_statistics(model, variables, x, labels, offdiag="none").as_dict()
    assert record["probe_per_class"] == m
    assert "invariant_norm" not in record  # the invariant needs the whole batch: ntklib.measure.measure_batch


def test_bad_inputs_raise_naming_the_parameter():
    model, variables, x = _setup(*CASES[0])
    with pytest.raises(ValueError, match="labels.*sorted"):
        kernel_statistics(model, variables, x, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="labels.*balanced"):
        kernel_statistics(model, variables, x, [0, 0, 0, 1])
    with pytest.raises(ValueError, match="per_class"):
        kernel_statistics(model, variables, x[:2], [0, 1])
    with pytest.raises(ValueError, match="inputs"):
        kernel_statistics(model, variables, x, [0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="variables"):
        split_classifier(model, {"params": variables["params"]["features"]})
    with pytest.raises(ValueError, match="chunk_size"):
        block_ntk_fn(model, chunk_size=0)
    with pytest.raises(ValueError, match="offdiag|OffDiagonal"):
        block_ntk_fn(model, offdiag="some")


def test_an_unknown_offdiag_lists_the_valid_choices():
    from ntklib.ntk import OffDiagonal

    with pytest.raises(ValueError, match="unknown offdiag 'some'; valid choices: none, logits, norms, full"):
        OffDiagonal("some")
    assert OffDiagonal("norms") is OffDiagonal.NORMS
