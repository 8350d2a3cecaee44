"""Tests of ntklib.invariant against naive references: dense numpy.linalg.inv, explicit loops,
random orthonormal bases of 1^⊥ (QR)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    centring,
    naive_block_kernel,
    naive_class_block_kernel,
    naive_class_means,
    naive_labels,
    naive_one_hot,
    naive_projectors,
    random_within_basis,
)
from scipy.integrate import solve_ivp

from ntklib.block_kernel import BlockKernel, ClassBlockKernel
from ntklib.dynamics import FlowState, integrate, theorem41_vector_field
from ntklib.invariant import (
    InvariantTerms,
    compose_features,
    decompose_features,
    end_of_training_invariant,
    invariant,
    invariant_from_terms,
    invariant_metrics,
    invariant_terms,
    kernel_flow_vector_field,
    kernel_invariant,
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


# ---------------------------------------------------------------- any positive definite kernel


def random_spd(rng, n):
    g = rng.normal(size=(n, n))
    return g @ g.T / n + 0.5 * np.eye(n)


def sorted_labels(sizes):
    return np.repeat(np.arange(len(sizes)), sizes)


# (name, K (N, N), class sizes): a random SPD kernel, an unbalanced block kernel, a class-specialised one
KERNELS = {
    "random_spd": (random_spd(np.random.default_rng(0), 9), (5, 3, 1)),
    "unbalanced_block": (naive_class_block_kernel(3.0, 1.0, 0.2, (6, 3, 2)), (6, 3, 2)),
    "specialised_block": (naive_class_block_kernel((3.0, 2.5, 4.0), (1.0, 1.5, 0.5), 0.2, (4, 4, 3)), (4, 4, 3)),
}


def random_state(rng, n, k, d, centred=False):
    h = rng.normal(size=(d, n))
    if centred:
        h = h @ centring(n)
    return h, 0.5 * rng.normal(size=(k, d)), 0.1 * rng.normal(size=k)


def naive_invariant(w, h, kmat, centred=False):
    if centred:  # E_c = WᵀW − H (P K P)⁺ Hᵀ
        p = centring(kmat.shape[0])
        return w.T @ w - h @ np.linalg.pinv(p @ kmat @ p, hermitian=True) @ h.T
    return w.T @ w - h @ np.linalg.inv(kmat) @ h.T


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("centred", [False, True])
def test_kernel_invariant_vs_dense_inverse(name, centred):
    kmat, sizes = KERNELS[name]
    rng = np.random.default_rng(1)
    h, w, _ = random_state(rng, kmat.shape[0], len(sizes), 4)
    got = np.asarray(kernel_invariant(jnp.asarray(w), jnp.asarray(h), kmat, centred=centred))
    expected = naive_invariant(w, h, kmat, centred)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12 * np.abs(expected).max())
    np.testing.assert_allclose(got, got.T, atol=1e-14 * np.abs(got).max())


@pytest.mark.parametrize("k,m", GRID)
@pytest.mark.parametrize("kappa", KAPPAS)
def test_kernel_invariant_is_invariant_for_block_kernels(k, m, kappa):
    """For a balanced block kernel the dense-kernel invariant is Theorem 5.1's, and (features with
    h̄ = 0) the centred one is too, since K 1 = λ_max 1 makes (P K P)⁺ = K⁻¹ P."""
    kernel = BlockKernel(*kappa, num_classes=k, per_class=m)
    rng = np.random.default_rng(k * m)
    h, w = random_hw(rng, k, m, k + 1)
    h, w = jnp.asarray(h), jnp.asarray(w)
    closed = np.asarray(invariant(w, h, kernel))
    scale = np.abs(closed).max()
    np.testing.assert_allclose(np.asarray(kernel_invariant(w, h, kernel.matrix())), closed, atol=1e-12 * scale)
    hc = h - h.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(
        np.asarray(kernel_invariant(w, hc, kernel.matrix(), centred=True)),
        np.asarray(invariant(w, hc, kernel)),
        atol=1e-12 * scale,
    )


@pytest.mark.parametrize("k,m", [(2, 2), (3, 4)])
@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize("train_bias", [False, True])
def test_kernel_flow_is_theorem41_flow_for_block_kernels(k, m, centred, train_bias):
    kernel = BlockKernel(3.0, 1.0, 0.2, num_classes=k, per_class=m)
    rng = np.random.default_rng(7)
    h, w, b = (jnp.asarray(a) for a in random_state(rng, k * m, k, 3))
    state = FlowState(h, w, b)
    field = kernel_flow_vector_field(kernel.matrix(), naive_labels(k, m), centred=centred, train_bias=train_bias)
    reference = theorem41_vector_field(kernel, centred=centred, train_bias=train_bias)
    got, expected = field(0.0, state, None), reference(0.0, state, None)
    assert isinstance(got, FlowState)  # the container of the state comes back
    for name, a, e in zip(FlowState._fields, got, expected, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), atol=1e-13, err_msg=name)
    plain = field(0.0, (h, w, b), None)
    assert type(plain) is tuple and len(plain) == 3


def relative_drift(path, e0):
    """max over the saved times of ‖E(t) − E(0)‖_F / ‖E(0)‖_F."""
    return max(np.linalg.norm(e - e0) for e in path) / np.linalg.norm(e0)


def check_flow_moves(h0, w0, h, w):
    """The flow changes WᵀW and H by O(1), so a small drift is not a state that stood still."""
    assert np.linalg.norm(w.T @ w - w0.T @ w0) > 0.1 * np.linalg.norm(w0.T @ w0)
    assert np.linalg.norm(h - h0) > 0.1 * np.linalg.norm(h0)


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("train_bias", [True, False])
def test_kernel_flow_conserves_invariant_diffrax(name, train_bias):
    """Integrate the flow with diffrax (Dopri8, rtol 1e-12) in float64: E drifts by ≤ 1e-10
    relative for a random SPD kernel, an unbalanced and a class-specialised block kernel."""
    kmat, sizes = KERNELS[name]
    n, k, d = kmat.shape[0], len(sizes), 5
    rng = np.random.default_rng(3)
    h0, w0, b0 = random_state(rng, n, k, d)
    field = kernel_flow_vector_field(kmat, naive_one_hot(sorted_labels(sizes), k), train_bias=train_bias)
    times = jnp.array([0.0, 0.5, 1.5, 4.0])
    traj = integrate(field, FlowState(*(jnp.asarray(a) for a in (h0, w0, b0))), times, rtol=1e-12, atol=1e-12)
    hs, ws = np.asarray(traj.states.features), np.asarray(traj.states.weights)
    path = [naive_invariant(w, h, kmat) for h, w in zip(hs, ws, strict=True)]
    e0 = naive_invariant(w0, h0, kmat)
    assert np.linalg.norm(e0) > 1.0
    assert relative_drift(path, e0) <= 1e-10
    check_flow_moves(h0, w0, hs[-1], ws[-1])
    if not train_bias:
        np.testing.assert_array_equal(np.asarray(traj.states.bias[-1]), b0)


def test_kernel_flow_conserves_invariant_scipy():
    """The same conservation with an independent integrator: scipy's DOP853 on the flow written
    out in numpy (no library code in the integration), then the library's flow to the same state."""
    kmat, sizes = KERNELS["specialised_block"]
    n, k, d = kmat.shape[0], len(sizes), 5
    y = naive_one_hot(sorted_labels(sizes), k)
    h0, w0, b0 = random_state(np.random.default_rng(4), n, k, d)

    def rhs(t, flat):
        h, w, b = flat[: d * n].reshape(d, n), flat[d * n : d * n + k * d].reshape(k, d), flat[-k:]
        r = w @ h + b[:, None] - y
        return np.concatenate([(-w.T @ r @ kmat).ravel(), (-r @ h.T).ravel(), -r.sum(axis=1)])

    sol = solve_ivp(rhs, (0.0, 4.0), np.concatenate([h0.ravel(), w0.ravel(), b0]), "DOP853", rtol=1e-13, atol=1e-13)
    assert sol.success
    h, w = sol.y[: d * n, -1].reshape(d, n), sol.y[d * n : d * n + k * d, -1].reshape(k, d)
    e0 = naive_invariant(w0, h0, kmat)
    assert relative_drift([naive_invariant(w, h, kmat)], e0) <= 1e-10
    check_flow_moves(h0, w0, h, w)
    # the library's flow ends at the same state
    field = kernel_flow_vector_field(kmat, y)
    traj = integrate(field, tuple(jnp.asarray(a) for a in (h0, w0, b0)), jnp.array([0.0, 4.0]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(traj.states[0][-1]), h, atol=1e-8)
    np.testing.assert_allclose(np.asarray(traj.states[1][-1]), w, atol=1e-8)


@pytest.mark.parametrize("name", ["unbalanced_block", "specialised_block"])
def test_centred_kernel_flow_conserves_centred_invariant(name):
    """Centred flow dH/dt = −Wᵀ R P K P from H 1 = 0: h̄ stays 0 and E_c = WᵀW − H (PKP)⁺ Hᵀ
    drifts ≤ 1e-10. Here K 1 is not ∝ 1 (unequal class sizes or values), and then E (with K⁻¹)
    is not conserved, nor is either by the flow centred after the kernel, −Wᵀ R K P."""
    kmat, sizes = KERNELS[name]
    n, k, d = kmat.shape[0], len(sizes), 5
    y = naive_one_hot(sorted_labels(sizes), k)
    assert np.ptp(kmat.sum(axis=1)) > 0.1  # 1 is not an eigenvector of K
    h0, w0, b0 = random_state(np.random.default_rng(5), n, k, d, centred=True)
    start = FlowState(*(jnp.asarray(a) for a in (h0, w0, b0)))
    times = jnp.array([0.0, 1.0, 4.0])
    traj = integrate(kernel_flow_vector_field(kmat, y, centred=True), start, times, rtol=1e-12, atol=1e-12)
    hs, ws = np.asarray(traj.states.features), np.asarray(traj.states.weights)
    assert np.abs(hs.mean(axis=2)).max() < 1e-12
    ec0 = naive_invariant(w0, h0, kmat, centred=True)
    path = [naive_invariant(w, h, kmat, centred=True) for h, w in zip(hs, ws, strict=True)]
    assert relative_drift(path, ec0) <= 1e-10
    np.testing.assert_allclose(
        np.asarray(kernel_invariant(traj.states.weights[-1], traj.states.features[-1], kmat, centred=True)),
        naive_invariant(ws[-1], hs[-1], kmat, centred=True),
        atol=1e-10,
    )
    check_flow_moves(h0, w0, hs[-1], ws[-1])
    e0 = naive_invariant(w0, h0, kmat)
    assert relative_drift([naive_invariant(ws[-1], hs[-1], kmat)], e0) > 1e-4
    p = centring(n)

    def after_kernel(t, state, args):  # −Wᵀ R K P: centring applied after the kernel
        h, w, b = state
        r = w @ h + b[:, None] - y
        return FlowState(-w.T @ r @ kmat @ p, -r @ h.T, -r.sum(axis=1))

    other = integrate(after_kernel, start, times, rtol=1e-12, atol=1e-12)
    h, w = np.asarray(other.states.features[-1]), np.asarray(other.states.weights[-1])
    assert relative_drift([naive_invariant(w, h, kmat)], e0) > 1e-4
    assert relative_drift([naive_invariant(w, h, kmat, centred=True)], ec0) > 1e-4


def test_kernel_invariant_and_flow_reject_bad_input():
    w, h = jnp.ones((2, 3)), jnp.ones((3, 4))
    good = np.eye(4)
    bad_kernels = {
        "must be \\(N, N\\)": np.eye(3),
        "must be symmetric": good + np.triu(np.ones((4, 4)), 1),
        "must be positive definite": np.diag([1.0, 1.0, 0.0, 1.0]),
    }
    for message, kmat in bad_kernels.items():
        with pytest.raises(ValueError, match="kernel_matrix " + message):
            kernel_invariant(w, h, kmat)
        with pytest.raises(ValueError, match="kernel_matrix " + message):
            kernel_flow_vector_field(kmat, np.ones((2, 4)))
    with pytest.raises(ValueError, match="features"):
        kernel_invariant(w, jnp.ones(4), good)
    with pytest.raises(ValueError, match="weights"):
        kernel_invariant(jnp.ones((2, 2)), h, good)
    with pytest.raises(ValueError, match="targets"):
        kernel_flow_vector_field(good, np.ones(4))


@pytest.mark.parametrize("sizes", [(5, 3, 2), (6, 6, 2, 2)])
@pytest.mark.parametrize("centred", [False, True])
def test_zero_invariant_state_of_unequal_classes(sizes, centred):
    """A ClassBlockKernel: E = 0 (uncentred), or h̄ = 0 and E_c = 0 (centred), the invariant each
    flow conserves; with unequal classes E_c = 0 and E = 0 are different states."""
    kern = ClassBlockKernel((3.0, 2.5, 3.5, 3.0)[: len(sizes)], 1.0, 0.2, class_sizes=sizes)
    h, w, b = zero_invariant_state(jax.random.key(2), kern, 5, centred=centred)
    kmat = np.asarray(kern.matrix())
    scale = np.linalg.norm(np.asarray(w.T @ w))
    got = naive_invariant(np.asarray(w), np.asarray(h), kmat, centred)
    assert np.linalg.norm(got) < 1e-12 * scale
    np.testing.assert_array_equal(np.asarray(b), 0.0)
    if centred:
        assert float(jnp.abs(h.mean(axis=1)).max()) < 1e-14
        assert np.linalg.norm(naive_invariant(np.asarray(w), np.asarray(h), kmat)) > 1e-4 * scale


@pytest.mark.parametrize("sizes", [(5, 3, 2), (6, 6, 2, 2), (4, 4, 4)])
def test_zero_invariant_state_of_lower_rank(sizes):
    """rank = K − 1 with centred: H₀ has rank K − 1 and H₀ 1 = 0, and E_c = WᵀW − H (P K P)⁺ Hᵀ
    = 0 against the dense loop-built kernel's pseudo-inverse; rank = None draws the default state."""
    k, n = len(sizes), sum(sizes)
    kern = ClassBlockKernel(3.0, 1.0, 0.2, class_sizes=sizes)
    key = jax.random.key(k)
    h, w, _ = (np.asarray(x) for x in zero_invariant_state(key, kern, k + 2, scale=0.5, rank=k - 1))
    assert np.linalg.matrix_rank(h, tol=1e-8 * np.abs(h).max()) == k - 1
    np.testing.assert_allclose(h.sum(axis=1), 0.0, atol=1e-13)
    p = centring(n)
    dense = naive_class_block_kernel(3.0, 1.0, 0.2, sizes)
    e_c = w.T @ w - h @ np.linalg.pinv(p @ dense @ p, hermitian=True) @ h.T
    assert np.linalg.norm(w.T @ w) > 1e-3 and np.linalg.norm(e_c) < 1e-12 * np.linalg.norm(w.T @ w)
    # W₀ has rank K − 1 too (no spurious direction from the square root of a rounding error)
    assert np.linalg.svd(w, compute_uv=False)[k - 1] < 1e-12 * np.linalg.norm(w)
    default = zero_invariant_state(key, kern, k + 2, scale=0.5)
    for got, expected in zip(default, zero_invariant_state(key, kern, k + 2, scale=0.5, rank=None), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    assert np.linalg.matrix_rank(np.asarray(default[0]), tol=1e-8) == k
    for bad in (0, k + 1):
        with pytest.raises(ValueError, match="rank"):
            zero_invariant_state(key, kern, k + 2, rank=bad)
