"""Tests of ntklib.invariant against naive references: dense numpy.linalg.inv, explicit loops,
random orthonormal bases of 1^⊥ (QR)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import naive_block_kernel, naive_class_means, naive_labels, naive_projectors, random_within_basis

from ntklib.block_kernel import BlockKernel
from ntklib.invariant import (
    InvariantTerms,
    compose_features,
    decompose_features,
    end_of_training_invariant,
    invariant,
    invariant_from_terms,
    invariant_metrics,
    invariant_terms,
    paper_scaled_invariant,
    psd_invariant_state,
    within_class_basis,
    zero_invariant_state,
)

GRID = [(k, m) for k in (2, 3, 5) for m in (2, 4)]
KAPPAS = [(3.0, 1.0, 0.2), (2.0, 0.5, -0.05)]  # positive definite on GRID; κ_n < 0 in the second
METRIC_KEYS = {"invariant_norm", "invariant_alignment", "wtw_norm", "mmt_norm", "h2h2t_norm", "mean_outer_norm"}


def random_hw(rng, k, m, d):
    return rng.normal(size=(d, k * m)), rng.normal(size=(k, d))


def dense_invariant(w, h, kappa, k, m):
    return w.T @ w - h @ np.linalg.inv(naive_block_kernel(*kappa, k, m)) @ h.T


# ---------------------------------------------------------------- basis and decomposition


@pytest.mark.parametrize("m", [2, 3, 4, 7])
def test_within_class_basis_orthonormal_and_orthogonal_to_ones(m):
    q = np.asarray(within_class_basis(m))
    assert q.shape == (m, m - 1)
    np.testing.assert_allclose(q.T @ q, np.eye(m - 1), atol=1e-14)
    np.testing.assert_allclose(np.ones(m) @ q, 0.0, atol=1e-14)
    np.testing.assert_allclose(q @ q.T, np.eye(m) - np.ones((m, m)) / m, atol=1e-14)
    assert within_class_basis(m, jnp.float32).dtype == jnp.float32


@pytest.mark.parametrize("k,m", GRID)
def test_decompose_vs_naive_and_round_trip(k, m):
    rng = np.random.default_rng(0)
    d = k + 1
    h = rng.normal(size=(d, k * m))
    means, within = decompose_features(jnp.asarray(h), k, m)
    assert means.shape == (d, k) and within.shape == (d, k * (m - 1))
    np.testing.assert_allclose(np.asarray(means), naive_class_means(h, k, m), atol=1e-14)
    np.testing.assert_allclose(np.asarray(within @ within.T), h @ naive_projectors(k, m).within @ h.T, atol=1e-13)
    # compose ∘ decompose = id on H, decompose ∘ compose = id on (M, H₂)
    np.testing.assert_allclose(np.asarray(compose_features(means, within, m)), h, atol=1e-13)
    m2, h2 = rng.normal(size=(d, k)), rng.normal(size=(d, k * (m - 1)))
    back_m, back_h2 = decompose_features(compose_features(jnp.asarray(m2), jnp.asarray(h2), m), k, m)
    np.testing.assert_allclose(np.asarray(back_m), m2, atol=1e-13)
    np.testing.assert_allclose(np.asarray(back_h2), h2, atol=1e-13)
    # H = M Y + H₂ V₂ᵀ explicitly
    y = naive_labels(k, m)
    v2 = np.kron(np.eye(k), np.asarray(within_class_basis(m)))
    np.testing.assert_allclose(np.asarray(means) @ y + np.asarray(within) @ v2.T, h, atol=1e-13)


@pytest.mark.parametrize("k,m", GRID)
def test_h2h2t_independent_of_basis(k, m):
    rng = np.random.default_rng(1)
    d = k + 1
    h = rng.normal(size=(d, k * m))
    _, within_default = decompose_features(jnp.asarray(h), k, m)
    for _ in range(2):
        q = random_within_basis(rng, m)
        np.testing.assert_allclose(q.T @ q, np.eye(m - 1), atol=1e-13)
        means, within = decompose_features(jnp.asarray(h), k, m, basis=jnp.asarray(q))
        np.testing.assert_allclose(np.asarray(means), naive_class_means(h, k, m), atol=1e-14)
        np.testing.assert_allclose(
            np.asarray(within @ within.T), np.asarray(within_default @ within_default.T), atol=1e-12
        )
        np.testing.assert_allclose(np.asarray(compose_features(means, within, m, basis=jnp.asarray(q))), h, atol=1e-13)


def test_h2_vanishes_iff_samples_equal_class_means():
    rng = np.random.default_rng(2)
    k, m, d = 3, 4, 4
    collapsed = np.repeat(rng.normal(size=(d, k)), m, axis=1)
    _, within = decompose_features(jnp.asarray(collapsed), k, m)
    np.testing.assert_allclose(np.asarray(within), 0.0, atol=1e-14)
    perturbed = collapsed.copy()
    perturbed[0, 1] += 1e-3
    _, within = decompose_features(jnp.asarray(perturbed), k, m)
    assert np.abs(np.asarray(within)).max() > 1e-4


# ---------------------------------------------------------------- the invariant E


@pytest.mark.parametrize("k,m", GRID)
@pytest.mark.parametrize("kappa", KAPPAS)
def test_invariant_vs_dense_inverse(k, m, kappa):
    rng = np.random.default_rng(3)
    kern = BlockKernel(*kappa, num_classes=k, per_class=m)
    h, w = random_hw(rng, k, m, k + 1)
    expected = dense_invariant(w, h, kappa, k, m)
    e = np.asarray(invariant(jnp.asarray(w), jnp.asarray(h), kern))
    assert e.shape == (k + 1, k + 1)
    np.testing.assert_allclose(e, expected, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("k,m", GRID)
@pytest.mark.parametrize("kappa", KAPPAS)
def test_invariant_terms_and_closed_form(k, m, kappa):
    rng = np.random.default_rng(4)
    kern = BlockKernel(*kappa, num_classes=k, per_class=m)
    h, w = random_hw(rng, k, m, k + 1)
    terms = invariant_terms(jnp.asarray(w), jnp.asarray(h), kern)
    assert isinstance(terms, InvariantTerms)
    means = naive_class_means(h, k, m)
    hbar = h.mean(axis=1)
    np.testing.assert_allclose(np.asarray(terms.wtw), w.T @ w, atol=1e-13)
    np.testing.assert_allclose(np.asarray(terms.mmt), means @ means.T, atol=1e-13)
    np.testing.assert_allclose(np.asarray(terms.h2h2t), h @ naive_projectors(k, m).within @ h.T, atol=1e-12)
    np.testing.assert_allclose(np.asarray(terms.mean_outer), np.outer(hbar, hbar), atol=1e-14)
    closed = np.asarray(invariant_from_terms(terms, kern))
    np.testing.assert_allclose(closed, dense_invariant(w, h, kappa, k, m), rtol=1e-11, atol=1e-11)
    # the paper's normalisation: λ_c E
    lamc = kern.eigenvalues().lamc
    scaled = np.asarray(paper_scaled_invariant(jnp.asarray(w), jnp.asarray(h), kern))
    np.testing.assert_allclose(scaled, lamc * dense_invariant(w, h, kappa, k, m), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("k,m", GRID)
def test_end_of_training_invariant_formula(k, m):
    rng = np.random.default_rng(5)
    h, w = random_hw(rng, k, m, k + 1)
    lam0 = 1.7
    e = np.asarray(end_of_training_invariant(jnp.asarray(w), jnp.asarray(h), lam0))
    np.testing.assert_allclose(e, w.T @ w - h @ h.T / lam0, atol=1e-12)
    # it is the invariant of the kernel λ_0 I (κ_d = λ_0, κ_c = κ_n = 0)
    kern = BlockKernel(lam0, 0.0, 0.0, num_classes=k, per_class=m)
    np.testing.assert_allclose(e, np.asarray(invariant(jnp.asarray(w), jnp.asarray(h), kern)), atol=1e-12)


def test_invariant_rejects_wrong_feature_shape():
    kern = BlockKernel(3.0, 1.0, 0.2, num_classes=3, per_class=2)
    w = jnp.ones((3, 4))
    with pytest.raises(ValueError, match="features"):
        invariant(w, jnp.ones((4, 7)), kern)
    with pytest.raises(ValueError, match="features"):
        invariant_terms(w, jnp.ones((4, 5)), kern)
    with pytest.raises(ValueError, match="features"):
        invariant_metrics(w, jnp.ones((6,)), kern)


def test_invariant_rejects_non_positive_definite_kernel():
    kern = BlockKernel(1.0, 1.0, 0.2, num_classes=3, per_class=2)  # λ_0 = 0
    h, w = jnp.ones((4, 6)), jnp.ones((3, 4))
    with pytest.raises(ValueError, match="lam0"):
        invariant(w, h, kern)
    with pytest.raises(ValueError, match="lam0"):
        invariant_from_terms(invariant_terms(w, h, kern), kern)
    with pytest.raises(ValueError, match="lam0"):
        paper_scaled_invariant(w, h, kern)


# ---------------------------------------------------------------- metrics


@pytest.mark.parametrize("k,m", GRID)
def test_invariant_metrics_vs_naive(k, m):
    rng = np.random.default_rng(6)
    kappa = KAPPAS[0]
    kern = BlockKernel(*kappa, num_classes=k, per_class=m)
    h, w = random_hw(rng, k, m, k + 1)
    metrics = invariant_metrics(jnp.asarray(w), jnp.asarray(h), kern)
    assert set(metrics) == METRIC_KEYS
    assert all(isinstance(v, float) for v in metrics.values())
    wtw = w.T @ w
    feat = h @ np.linalg.inv(naive_block_kernel(*kappa, k, m)) @ h.T
    means = naive_class_means(h, k, m)
    hbar = h.mean(axis=1)
    expected = {
        "invariant_norm": np.linalg.norm(wtw - feat),
        "invariant_alignment": np.sum(wtw * feat) / (np.linalg.norm(wtw) * np.linalg.norm(feat)),
        "wtw_norm": np.linalg.norm(wtw),
        "mmt_norm": np.linalg.norm(means @ means.T),
        "h2h2t_norm": np.linalg.norm(h @ naive_projectors(k, m).within @ h.T),
        "mean_outer_norm": np.linalg.norm(np.outer(hbar, hbar)),
    }
    for key, value in expected.items():
        np.testing.assert_allclose(metrics[key], value, rtol=1e-10, err_msg=key)
    assert metrics["invariant_alignment"] < 1 - 1e-6


# ---------------------------------------------------------------- zero-invariant initial state


@pytest.mark.parametrize("k,m", GRID)
@pytest.mark.parametrize("centred", [True, False])
def test_zero_invariant_state(k, m, centred):
    kappa = KAPPAS[1]
    kern = BlockKernel(*kappa, num_classes=k, per_class=m)
    d = k + 1
    h, w, b = zero_invariant_state(jax.random.key(k * 10 + m), kern, d, scale=0.5, centred=centred)
    assert h.shape == (d, k * m) and w.shape == (k, d) and b.shape == (k,)
    assert h.dtype == jnp.float64
    h, w, b = (np.asarray(x) for x in (h, w, b))
    np.testing.assert_array_equal(b, 0.0)
    wtw = w.T @ w
    e = dense_invariant(w, h, kappa, k, m)
    assert np.linalg.norm(wtw) > 1e-3
    assert np.linalg.norm(e) <= 1e-10 * np.linalg.norm(wtw)
    # H₀ = A Z has rank K
    assert np.linalg.matrix_rank(h, tol=1e-8 * np.abs(h).max()) == k
    if centred:
        np.testing.assert_allclose(h.mean(axis=1), 0.0, atol=1e-14)
    else:
        assert np.abs(h.mean(axis=1)).max() > 1e-4
    metrics = invariant_metrics(jnp.asarray(w), jnp.asarray(h), kern)
    np.testing.assert_allclose(metrics["invariant_alignment"], 1.0, atol=1e-10)
    assert metrics["invariant_norm"] <= 1e-10 * metrics["wtw_norm"]


def test_zero_invariant_state_scale_and_dtype():
    kern = BlockKernel(3.0, 1.0, 0.2, num_classes=3, per_class=2)
    key = jax.random.key(0)
    h1, w1, _ = zero_invariant_state(key, kern, 4, scale=1.0)
    h2, w2, _ = zero_invariant_state(key, kern, 4, scale=2.0)
    np.testing.assert_allclose(np.asarray(h2), 2 * np.asarray(h1), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(w2), 2 * np.asarray(w1), rtol=1e-12, atol=1e-14)
    h, w, b = zero_invariant_state(key, kern, 4, dtype=jnp.float32)
    assert h.dtype == w.dtype == b.dtype == jnp.float32


def test_zero_invariant_state_bad_feature_dim():
    kern = BlockKernel(3.0, 1.0, 0.2, num_classes=3, per_class=2)
    with pytest.raises(ValueError, match="feature_dim"):
        zero_invariant_state(jax.random.key(0), kern, 2)


def test_zero_invariant_state_rejects_non_positive_definite_kernel():
    kern = BlockKernel(1.0, 2.0, 0.2, num_classes=3, per_class=2)
    with pytest.raises(ValueError, match="lam0"):
        zero_invariant_state(jax.random.key(0), kern, 4)


# ---------------------------------------------------------------- positive semidefinite invariant (remark 5)


def _random_psd(rng, k, rank):
    b = rng.normal(size=(k, rank))
    return b @ b.T


@pytest.mark.parametrize("k,m", GRID)
@pytest.mark.parametrize("centred", [True, False])
def test_psd_invariant_state(k, m, centred):
    """E = A D Aᵀ: positive semidefinite, of the rank of D, linear in D (same key, same H₀),
    checked with the dense inverse; D = 0 gives exactly the zero-invariant state."""
    kappa = KAPPAS[0]
    kern = BlockKernel(*kappa, num_classes=k, per_class=m)
    d, key = k + 2, jax.random.key(k * 10 + m)
    rng = np.random.default_rng(k + m)
    zero = zero_invariant_state(key, kern, d, scale=0.5, centred=centred)
    same = psd_invariant_state(key, kern, d, np.zeros((k, k)), scale=0.5, centred=centred)
    for x, y in zip(zero, same, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for rank in range(1, k + 1):
        excess = _random_psd(rng, k, rank)
        h, w, b = (np.asarray(x) for x in psd_invariant_state(key, kern, d, excess, scale=0.5, centred=centred))
        np.testing.assert_array_equal(h, np.asarray(zero[0]))
        np.testing.assert_array_equal(b, 0.0)
        e = dense_invariant(w, h, kappa, k, m)
        evals = np.linalg.eigvalsh(e)
        assert evals.min() > -1e-10 * evals.max()
        assert np.sum(evals > 1e-8 * evals.max()) == rank
        _, w2, _ = psd_invariant_state(key, kern, d, 2 * excess, scale=0.5, centred=centred)
        np.testing.assert_allclose(dense_invariant(np.asarray(w2), h, kappa, k, m), 2 * e, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(
    "excess, message",
    [
        (np.eye(2), "excess must be .K, K."),
        (np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), "excess must be symmetric"),
        (np.diag([1.0, -0.1, 0.0]), "excess must be positive semidefinite"),
    ],
)
def test_psd_invariant_state_rejects_bad_excess(excess, message):
    kern = BlockKernel(3.0, 1.0, 0.2, num_classes=3, per_class=2)
    with pytest.raises(ValueError, match=message):
        psd_invariant_state(jax.random.key(0), kern, 4, excess)
    with pytest.raises(ValueError, match="feature_dim"):
        psd_invariant_state(jax.random.key(0), kern, 2, np.eye(3))
