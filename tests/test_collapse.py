"""Tests of ntklib.collapse against naive numpy loops, exact simplex-ETF geometry, and (for the
equal-bias angles) a simulation of the Theorem 4.1 flow to the end of training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    centring,
    naive_centre,
    naive_centred_class_means,
    naive_class_block_kernel,
    naive_one_hot,
    naive_unsorted_class_means,
)

from ntklib import measure
from ntklib.block_kernel import BlockKernel, ClassBlockKernel
from ntklib.collapse import (
    CENTRES,
    centred_class_means,
    centred_end_of_training_collapse,
    centred_end_of_training_grams,
    class_means,
    end_of_training_collapse,
    end_of_training_grams,
    end_of_training_weight,
    equal_bias_cosines,
    nc1_trace,
    nc1_within_class_std,
    nc2_etf_distance,
    nc3_self_duality,
    nc4_ncc_mismatch,
    off_diagonal,
    pairwise_cosines,
    simplex_etf_gram,
)
from ntklib.dynamics import FlowState, integrate, residual, theorem41_vector_field
from ntklib.invariant import (
    decompose_features,
    invariant,
    kernel_flow_vector_field,
    kernel_invariant,
    zero_invariant_state,
)

KS = [2, 3, 5]
PER_CLASS = 4  # samples per class (on average for the unbalanced data)


# ---------------------------------------------------------------- data and naive references


def random_unsorted_data(k, seed, balanced=False):
    """Random features (d, N), d = K + 1, N = 4K, with shuffled labels (unequal class sizes unless
    ``balanced``; every class present)."""
    rng = np.random.default_rng(seed)
    n = PER_CLASS * k
    if balanced:
        counts = np.full(k, PER_CLASS)
    else:
        counts = np.ones(k, dtype=int) + rng.multinomial(n - k, np.ones(k) / k)
        if np.all(counts == counts[0]):  # make sure the classes are unbalanced
            counts[0] += 1
            counts[1] -= 1
    labels = rng.permutation(np.repeat(np.arange(k), counts))
    features = rng.normal(size=(k + 1, n))
    w = rng.normal(size=(k, k + 1))
    b = rng.normal(size=k)
    return features, labels, w, b


naive_means = naive_unsorted_class_means


def naive_nc1_std(h, labels, k):
    values = []
    for c in range(k):
        for j in range(h.shape[0]):
            xs = [h[j, i] for i in range(len(labels)) if labels[i] == c]
            mu = sum(xs) / len(xs)
            values.append(np.sqrt(sum((x - mu) ** 2 for x in xs) / len(xs)))
    return np.mean(values)


def naive_nc1_trace(h, labels, k, centre="class_means"):
    d, n = h.shape
    means = naive_means(h, labels, k)
    hbar = naive_centre(h, labels, k, centre)
    sigma_w = np.zeros((d, d))
    for i in range(n):
        v = h[:, i] - means[:, labels[i]]
        sigma_w += np.outer(v, v) / n
    sigma_b = np.zeros((d, d))
    for c in range(k):
        v = means[:, c] - hbar
        sigma_b += np.outer(v, v) / k
    return np.trace(sigma_w @ np.linalg.pinv(sigma_b)) / k


def naive_nc2(h, labels, k, centre="class_means"):
    centred = naive_centred_class_means(h, labels, k, centre)
    gram = centred.T @ centred
    target = (np.eye(k) - np.ones((k, k)) / k) / np.sqrt(k - 1)
    return np.linalg.norm(gram / np.linalg.norm(gram) - target)


def naive_nc3(w, h, labels, k, centre="class_means"):
    centred = naive_centred_class_means(h, labels, k, centre)
    return np.linalg.norm(centred / np.linalg.norm(centred) - w.T / np.linalg.norm(w))


def naive_nc4(w, b, h, labels, k):
    means = naive_means(h, labels, k)
    mismatches = 0
    for i in range(h.shape[1]):
        logits = [w[c] @ h[:, i] + b[c] for c in range(k)]
        dists = [np.sum((h[:, i] - means[:, c]) ** 2) for c in range(k)]
        mismatches += int(np.argmax(logits) != np.argmin(dists))
    return mismatches / h.shape[1]


def etf_data(k, seed, scale=2.0, classifier_scale=0.7):
    """Exactly collapsed features: every sample equals its class mean, the centred class means form a
    simplex ETF (randomly rotated, plus a global offset outside their span), W ∝ M̃ᵀ, equal biases.
    Labels are balanced but shuffled."""
    rng = np.random.default_rng(seed)
    d = k + 1
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    etf = scale * basis[:, :k] @ (np.eye(k) - np.ones((k, k)) / k)  # (d, K), columns sum to 0
    offset = 3.0 * basis[:, k]  # orthogonal to the span of the ETF
    labels = rng.permutation(np.repeat(np.arange(k), PER_CLASS))
    features = offset[:, None] + etf[:, labels]
    return features, labels, classifier_scale * etf.T, np.full(k, 0.3), etf


# ---------------------------------------------------------------- class means


@pytest.mark.parametrize("k", KS)
def test_class_means_vs_loop(k):
    h, labels, _, _ = random_unsorted_data(k, seed=k)
    means = np.asarray(class_means(jnp.asarray(h), jnp.asarray(labels)))
    np.testing.assert_allclose(means, naive_means(h, labels, k), atol=1e-14)
    for centre in CENTRES:
        centred = np.asarray(centred_class_means(jnp.asarray(h), labels, centre=centre))
        np.testing.assert_allclose(centred, naive_centred_class_means(h, labels, k, centre), atol=1e-14)
    centred = np.asarray(centred_class_means(jnp.asarray(h), labels))  # the default: mean of the class means
    np.testing.assert_allclose(centred, naive_means(h, labels, k) - naive_means(h, labels, k).mean(axis=1)[:, None])
    np.testing.assert_allclose(centred.sum(axis=1), 0.0, atol=1e-13)


# ---------------------------------------------------------------- NC1–NC4 vs naive loops


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("balanced", [False, True])
@pytest.mark.parametrize("centre", [*CENTRES, None])
def test_nc_metrics_vs_naive_on_random_data(k, balanced, centre):
    h, labels, w, b = random_unsorted_data(k, seed=10 + k, balanced=balanced)
    hj, lj = jnp.asarray(h), jnp.asarray(labels)
    kw = {} if centre is None else {"centre": centre}  # None: the default, the mean of the class means
    naive_centre_name = centre or "class_means"
    expected = {
        "nc1_std": naive_nc1_std(h, labels, k),
        "nc1_trace": naive_nc1_trace(h, labels, k, naive_centre_name),
        "nc2": naive_nc2(h, labels, k, naive_centre_name),
        "nc3": naive_nc3(w, h, labels, k, naive_centre_name),
        "nc4": naive_nc4(w, b, h, labels, k),
    }
    got = {
        "nc1_std": nc1_within_class_std(hj, lj),
        "nc1_trace": nc1_trace(hj, lj, **kw),
        "nc2": nc2_etf_distance(hj, lj, **kw),
        "nc3": nc3_self_duality(jnp.asarray(w), hj, lj, **kw),
        "nc4": nc4_ncc_mismatch(jnp.asarray(w), jnp.asarray(b), hj, lj),
    }
    for key, value in expected.items():
        assert np.ndim(got[key]) == 0, key
        if key == "nc4":  # a fraction of N samples (jnp.mean of a bool array is float32 even with x64)
            assert round(float(got[key]) * h.shape[1]) == round(value * h.shape[1])
            np.testing.assert_allclose(float(got[key]), value, rtol=1e-6)
        else:
            np.testing.assert_allclose(float(got[key]), value, rtol=1e-10, atol=1e-14, err_msg=key)
    # far from collapse
    for key in ("nc1_std", "nc1_trace", "nc2", "nc3"):
        if key == "nc2" and k == 2 and (balanced or naive_centre_name == "class_means"):
            # two means centred at their midpoint are always antipodal: a 2-class simplex ETF
            assert float(got[key]) < 1e-12
        else:
            assert float(got[key]) > 1e-2, key


@pytest.mark.parametrize("k", KS)
def test_nc_metrics_under_jit_with_explicit_num_classes(k):
    h, labels, w, b = random_unsorted_data(k, seed=20 + k, balanced=False)
    hj, lj, wj, bj = (jnp.asarray(a) for a in (h, labels, w, b))
    metrics = {
        "nc1_trace_samples": lambda h, y, **kw: nc1_trace(h, y, centre="samples", **kw),
        "nc2_samples": lambda h, y, **kw: nc2_etf_distance(h, y, centre="samples", **kw),
        "nc3_samples": lambda h, y, **kw: nc3_self_duality(wj, h, y, centre="samples", **kw),
        "nc1_std": lambda h, y, **kw: nc1_within_class_std(h, y, **kw),
        "nc1_trace": lambda h, y, **kw: nc1_trace(h, y, **kw),
        "nc2": lambda h, y, **kw: nc2_etf_distance(h, y, **kw),
        "nc3": lambda h, y, **kw: nc3_self_duality(wj, h, y, **kw),
        "nc4": lambda h, y, **kw: nc4_ncc_mismatch(wj, bj, h, y, **kw),
    }
    for key, metric in metrics.items():
        eager = metric(hj, lj)
        jitted = jax.jit(lambda h, y, metric=metric: metric(h, y, num_classes=k))(hj, lj)
        np.testing.assert_allclose(float(jitted), float(eager), rtol=1e-10, atol=1e-14, err_msg=key)
    # Without num_classes the labels must be concrete: tracing them fails instead of guessing K.
    with pytest.raises(jax.errors.TracerArrayConversionError):
        jax.jit(nc2_etf_distance)(hj, lj)
    with pytest.raises(ValueError, match="num_classes"):
        nc2_etf_distance(hj, lj, num_classes=1)


@pytest.mark.parametrize("k", KS)
def test_nc_metrics_vanish_on_exact_simplex_etf(k):
    h, labels, w, b, etf = etf_data(k, seed=20 + k)
    hj, lj = jnp.asarray(h), jnp.asarray(labels)
    np.testing.assert_allclose(np.asarray(centred_class_means(hj, lj)), etf, atol=1e-13)
    assert abs(float(nc1_within_class_std(hj, lj))) < 1e-12
    assert abs(float(nc1_trace(hj, lj))) < 1e-12
    assert abs(float(nc2_etf_distance(hj, lj))) < 1e-12
    assert abs(float(nc3_self_duality(jnp.asarray(w), hj, lj))) < 1e-12
    assert float(nc4_ncc_mismatch(jnp.asarray(w), jnp.asarray(b), hj, lj)) == 0.0
    # the ETF: equal norms, pairwise cosines −1/(K − 1)
    cos = np.asarray(pairwise_cosines(jnp.asarray(etf)))
    np.testing.assert_allclose(off_diagonal(cos), -1.0 / (k - 1), atol=1e-13)
    # small perturbations make every metric positive
    rng = np.random.default_rng(k)
    noisy = h + 0.05 * rng.normal(size=h.shape)
    assert float(nc1_within_class_std(jnp.asarray(noisy), lj)) > 1e-3
    assert float(nc1_trace(jnp.asarray(noisy), lj)) > 1e-5
    if k > 2:  # for K = 2 every balanced pair of centred means is an ETF
        assert float(nc2_etf_distance(jnp.asarray(noisy), lj)) > 1e-4
    assert float(nc3_self_duality(jnp.asarray(w + 0.05 * rng.normal(size=w.shape)), hj, lj)) > 1e-3


@pytest.mark.parametrize("k", KS)
def test_nc4_counts_mismatches(k):
    h, labels, w, b, _ = etf_data(k, seed=30 + k)
    hj, lj = jnp.asarray(h), jnp.asarray(labels)
    swapped = w.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # classes 0 and 1 are now always confused
    n = len(labels)
    expected = int(np.sum((labels == 0) | (labels == 1)))
    got = float(nc4_ncc_mismatch(jnp.asarray(swapped), jnp.asarray(b), hj, lj))
    assert round(got * n) == expected == round(naive_nc4(swapped, b, h, labels, k) * n)
    assert got == pytest.approx(expected / n, rel=1e-6)
    # a huge bias on class 2 (or 0 for K = 2) sends every sample there
    c = 2 if k > 2 else 0
    biased = b.copy()
    biased[c] += 1e6
    got = float(nc4_ncc_mismatch(jnp.asarray(w), jnp.asarray(biased), hj, lj))
    assert round(got * n) == int(np.sum(labels != c))
    assert got == pytest.approx(np.mean(labels != c), rel=1e-6)


# ---------------------------------------------------------------- helpers


@pytest.mark.parametrize("k", KS)
def test_pairwise_cosines_and_off_diagonal_vs_loop(k):
    rng = np.random.default_rng(40 + k)
    v = rng.normal(size=(k + 1, k))
    cos = np.asarray(pairwise_cosines(jnp.asarray(v)))
    expected = np.array(
        [[v[:, i] @ v[:, j] / (np.linalg.norm(v[:, i]) * np.linalg.norm(v[:, j])) for j in range(k)] for i in range(k)]
    )
    np.testing.assert_allclose(cos, expected, atol=1e-14)
    np.testing.assert_allclose(np.diag(cos), 1.0, atol=1e-14)
    a = rng.normal(size=(k, k))
    off = np.asarray(off_diagonal(jnp.asarray(a)))
    assert off.shape == (k * (k - 1),)
    np.testing.assert_array_equal(off, [a[i, j] for i in range(k) for j in range(k) if i != j])
    np.testing.assert_array_equal(np.asarray(off_diagonal(a)), off)


@pytest.mark.parametrize("k", KS)
def test_simplex_etf_gram(k):
    g = np.asarray(simplex_etf_gram(k))
    assert g.shape == (k, k)
    np.testing.assert_allclose(np.linalg.norm(g), 1.0, atol=1e-14)
    expected = np.array([[(1.0 if i == j else 0.0) - 1.0 / k for j in range(k)] for i in range(k)]) / np.sqrt(k - 1)
    np.testing.assert_allclose(g, expected, atol=1e-15)
    # it is the normalised Gram matrix of a simplex ETF (any rotation / scale)
    _, _, _, _, etf = etf_data(k, seed=50 + k)
    gram = etf.T @ etf
    np.testing.assert_allclose(gram / np.linalg.norm(gram), g, atol=1e-13)
    assert simplex_etf_gram(k, jnp.float32).dtype == jnp.float32


# ---------------------------------------------------------------- bad input


def test_bad_labels_and_features():
    h = jnp.ones((3, 6))
    w, b = jnp.ones((2, 3)), jnp.zeros(2)
    good = np.array([0, 1, 0, 1, 0, 1])
    for bad in (good[:5], good[:, None], np.zeros((2, 6), dtype=int)):
        with pytest.raises(ValueError, match="labels"):
            class_means(h, bad)
        with pytest.raises(ValueError, match="labels"):
            nc1_within_class_std(h, bad)
        with pytest.raises(ValueError, match="labels"):
            nc1_trace(h, bad)
        with pytest.raises(ValueError, match="labels"):
            nc2_etf_distance(h, bad)
        with pytest.raises(ValueError, match="labels"):
            nc3_self_duality(w, h, bad)
        with pytest.raises(ValueError, match="labels"):
            nc4_ncc_mismatch(w, b, h, bad)
    with pytest.raises(ValueError, match="labels"):  # a single class
        class_means(h, np.zeros(6, dtype=int))
    with pytest.raises(ValueError, match="features"):
        class_means(jnp.ones(6), good)


# ---------------------------------------------------------------- equal-bias angles (App. B.4)


@pytest.mark.parametrize("k", KS)
def test_equal_bias_cosines_raises_at_one_over_k(k):
    kern = BlockKernel(3.0, 1.0, 0.2, num_classes=k, per_class=2)
    with pytest.raises(ValueError, match="bias_value"):
        equal_bias_cosines(1.0 / k, kern)
    # the limit β → 1/K is the simplex ETF for both frames
    for beta in (1.0 / k + 1e-7, 1.0 / k - 1e-7):
        cos_m, cos_w = equal_bias_cosines(beta, kern)
        assert cos_m == pytest.approx(-1.0 / (k - 1), abs=1e-5)
        assert cos_w == pytest.approx(-1.0 / (k - 1), abs=1e-5)


def test_equal_bias_cosines_rejects_non_positive_definite_kernel():
    with pytest.raises(ValueError, match="lam0"):
        equal_bias_cosines(0.0, BlockKernel(1.0, 2.0, 0.1, num_classes=3, per_class=2))


def test_equal_bias_cosines_vs_simulation():
    """Uncentred flow of Theorem 4.1 from an E = 0 initial state with the biases frozen at β 1:
    at the end of training (R → 0, H₂ → 0) the class means and the classifier rows meet at the
    closed-form angles (one diffrax compilation, several β)."""
    k, m, d = 3, 2, 4
    kern = BlockKernel(3.0, 1.0, 0.2, num_classes=k, per_class=m)
    h0, w0, _ = zero_invariant_state(jax.random.key(0), kern, d, scale=1.0, centred=False)
    field = theorem41_vector_field(kern, form="block", centred=False, train_bias=False)
    times = jnp.array([0.0, 60.0])
    for beta in (0.0, 0.6, -0.25):
        b0 = jnp.full(k, beta)
        traj = integrate(field, FlowState(h0, w0, b0), times)
        h, w, b = (x[-1] for x in traj.states)
        np.testing.assert_array_equal(np.asarray(b), beta)
        # end of training reached, invariant still 0
        assert float(jnp.linalg.norm(residual(w, h, b, k, m))) < 1e-8
        means, within = decompose_features(h, k, m)
        assert float(jnp.linalg.norm(within)) < 1e-8
        assert float(jnp.linalg.norm(invariant(w, h, kern))) < 1e-9 * float(jnp.linalg.norm(w.T @ w))
        cos_m, cos_w = equal_bias_cosines(beta, kern)
        np.testing.assert_allclose(
            off_diagonal(np.asarray(pairwise_cosines(means))), cos_m, atol=1e-7, err_msg=str(beta)
        )
        np.testing.assert_allclose(off_diagonal(np.asarray(pairwise_cosines(w.T))), cos_w, atol=1e-7, err_msg=str(beta))
        # NC2 holds for the centred means; NC3 fails for β ≠ 1/K
        labels = np.repeat(np.arange(k), m)
        assert float(nc2_etf_distance(h, labels)) < 1e-7
        assert float(nc3_self_duality(w, h, labels)) > 1e-3


def test_nc4_propagates_nan_like_nc1_to_nc3():
    labels = jnp.array([0, 0, 1, 1, 2, 2])
    features = (jnp.eye(3) - 1 / 3)[:, labels].at[0, 0].set(jnp.nan)
    weights, bias = jnp.eye(3), jnp.zeros(3)
    assert np.isnan(float(nc2_etf_distance(features, labels)))
    assert np.isnan(float(nc4_ncc_mismatch(weights, bias, features, labels)))
    # a class without samples (only possible with an explicit num_classes): NaN, not a plausible fraction
    clean = (jnp.eye(3) - 1 / 3)[:, labels]
    missing = jnp.array([0, 0, 1, 1, 1, 1])
    assert np.isnan(float(nc4_ncc_mismatch(weights, bias, clean, missing, num_classes=3)))
    assert np.isnan(float(nc2_etf_distance(clean, missing, num_classes=3)))


@pytest.mark.parametrize("bad", [3, -1])
def test_labels_outside_the_classes_are_refused(bad):
    features = jnp.ones((2, 4))
    labels = jnp.array([0, 1, 2, bad])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, num_classes\) = \[0, 3\)"):
        nc1_within_class_std(features, labels, num_classes=3)
    if bad < 0:
        with pytest.raises(ValueError, match="labels must be >= 0"):
            nc1_within_class_std(features, labels)


# ---------------------------------------------------------------- general biases (App. B.4)


def _psd_sqrt(matrix):
    evals, evecs = np.linalg.eigh(matrix)
    return (evecs * np.sqrt(np.where(evals > 1e-12 * evals.max(), evals, 0.0))) @ evecs.T


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("kappa", [(3.0, 1.0, 0.2), (2.0, 0.8, 0.0), (11.0, 10.0, 10.0)])
def test_end_of_training_grams_solve_the_defining_equations(k, kappa):
    """G ⪰ 0 solves G (I − αJ) G = (λ_c/m) BᵀB with B = I − b1ᵀ; W Wᵀ = B G⁻¹ Bᵀ; and a factor
    M = G^{1/2}, W = B G⁻¹ M satisfies W M = B and WᵀW = (m/λ_c) M (I − αJ) Mᵀ."""
    m = 3
    kern = BlockKernel(*kappa, num_classes=k, per_class=m)
    lamc, alpha = kern.eigenvalues().lamc, kern.alpha()
    rng = np.random.default_rng(k)
    bias = rng.uniform(-0.3, 0.6, size=k)
    grams = end_of_training_grams(bias, kern)
    g, wwt = np.asarray(grams.means), np.asarray(grams.classifier)
    bmat = np.eye(k) - np.outer(bias, np.ones(k))
    aj = np.eye(k) - alpha * np.ones((k, k))
    assert np.linalg.eigvalsh(g).min() > 0
    np.testing.assert_allclose(g @ aj @ g, (lamc / m) * bmat.T @ bmat, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(wwt, bmat @ np.linalg.inv(g) @ bmat.T, rtol=1e-10, atol=1e-12)
    means = _psd_sqrt(g)  # any M with MᵀM = G, here (K, K)
    w = bmat @ np.linalg.inv(g) @ means.T
    check_factor(w, means, bmat, (m / lamc) * aj)


def check_factor(w, means, bmat, weight):
    """W M = B and WᵀW = M (weight) Mᵀ: the two relations of the end of training."""
    np.testing.assert_allclose(w @ means, bmat, atol=1e-10)
    np.testing.assert_allclose(w.T @ w, means @ weight @ means.T, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("k", KS)
def test_end_of_training_grams_biases_summing_to_one(k):
    """1ᵀb = 1 (e.g. b = 1/K): G is singular with kernel span{b}; b = 1/K gives Theorem 5.2."""
    m = 3
    kern = BlockKernel(3.0, 1.0, 0.2, num_classes=k, per_class=m)
    lamc, alpha = kern.eigenvalues().lamc, kern.alpha()
    a, centring = np.sqrt(lamc / m), np.eye(k) - np.ones((k, k)) / k
    grams = end_of_training_grams(np.full(k, 1.0 / k), kern)
    np.testing.assert_allclose(np.asarray(grams.means), a * centring, atol=1e-12)
    np.testing.assert_allclose(np.asarray(grams.classifier), centring / a, atol=1e-12)
    bias = np.random.default_rng(k).uniform(-0.3, 0.6, size=k)
    bias += (1 - bias.sum()) / k
    g = np.asarray(end_of_training_grams(bias, kern).means)
    np.testing.assert_allclose(g @ bias, 0.0, atol=1e-12)
    bmat = np.eye(k) - np.outer(bias, np.ones(k))
    means = _psd_sqrt(g)
    check_factor(bmat @ np.linalg.pinv(g) @ means.T, means, bmat, (m / lamc) * (np.eye(k) - alpha * np.ones((k, k))))


@pytest.mark.parametrize("k", KS)
def test_end_of_training_grams_equal_biases_match_closed_form_angles(k):
    kern = BlockKernel(3.0, 1.0, 0.2, num_classes=k, per_class=2)
    for beta in (-0.5, 0.0, 1.0 / k + 0.1, 1.0):
        grams = end_of_training_grams(np.full(k, beta), kern)
        cos_m, cos_w = equal_bias_cosines(beta, kern)
        g, wwt = np.asarray(grams.means), np.asarray(grams.classifier)
        np.testing.assert_allclose(off_diagonal(g / np.sqrt(np.outer(np.diag(g), np.diag(g)))), cos_m, atol=1e-12)
        np.testing.assert_allclose(off_diagonal(wwt / np.sqrt(np.outer(np.diag(wwt), np.diag(wwt)))), cos_w, atol=1e-12)


def test_equal_bias_cosines_equal_iff_alpha_zero():
    """The two frames meet at the same angle for every β when κ_n = 0 (α = 0), and never otherwise."""
    for beta in (-0.5, 0.0, 0.1, 0.6):
        cos_m, cos_w = equal_bias_cosines(beta, BlockKernel(2.0, 0.8, 0.0, num_classes=4, per_class=5))
        assert cos_m == pytest.approx(cos_w, abs=1e-14)
        cos_m, cos_w = equal_bias_cosines(beta, BlockKernel(2.0, 0.8, 0.01, num_classes=4, per_class=5))
        assert abs(cos_m - cos_w) > 1e-4


def test_end_of_training_collapse_vs_simulation_and_limits():
    """Frozen unequal biases, uncentred flow from E = 0: the simulated NC2 and NC3 at the end of
    training equal the closed form; the closed form vanishes at b = 1/K and as α → 1/K."""
    k, m, d = 3, 2, 4
    kern = BlockKernel(3.0, 1.0, 0.2, num_classes=k, per_class=m)
    labels = np.repeat(np.arange(k), m)
    h0, w0, _ = zero_invariant_state(jax.random.key(1), kern, d, scale=1.0, centred=False)
    field = theorem41_vector_field(kern, centred=False, train_bias=False)
    bias = jnp.array([-0.1, 0.2, 0.5])
    traj = integrate(field, FlowState(h0, w0, bias), jnp.array([0.0, 60.0]))
    h, w, b = (x[-1] for x in traj.states)
    assert float(jnp.linalg.norm(residual(w, h, b, k, m))) < 1e-8
    nc2, nc3 = end_of_training_collapse(bias, kern)
    assert nc2 > 1e-3 and nc3 > 1e-2
    assert float(nc2_etf_distance(h, labels)) == pytest.approx(nc2, abs=1e-7)
    assert float(nc3_self_duality(w, h, labels)) == pytest.approx(nc3, abs=1e-7)
    assert max(end_of_training_collapse(np.full(k, 1.0 / k), kern)) < 1e-7  # Theorem 5.2
    near = BlockKernel(1.0 + 1e6, 1e6, 1e6, num_classes=k, per_class=m)  # 1 − Kα ≈ 2e-7
    nc2_near, nc3_near = end_of_training_collapse(bias, near)
    assert nc2_near < 1e-5 * nc2 and nc3_near < 0.1 * nc3


def test_end_of_training_grams_rejects_bad_bias():
    kern = BlockKernel(3.0, 1.0, 0.2, num_classes=3, per_class=2)
    with pytest.raises(ValueError, match="bias must have shape"):
        end_of_training_grams(np.zeros(2), kern)
    with pytest.raises(ValueError, match="lam0"):
        end_of_training_grams(np.zeros(3), BlockKernel(1.0, 2.0, 0.1, num_classes=3, per_class=2))


# ---------------------------------------------------------------- the centre of the class means


def etf_with_counts(counts, seed, noise=1e-9):
    """Features whose class means form an exact simplex ETF (rotated, plus an offset outside its
    span), class c repeated counts[c] times (sorted), plus Gaussian noise; W = the ETF's rows."""
    k = len(counts)
    rng = np.random.default_rng(seed)
    d = k + 2
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    etf = basis[:, :k] @ (np.eye(k) - np.ones((k, k)) / k)
    labels = np.repeat(np.arange(k), counts)
    features = 2.0 * basis[:, k][:, None] + etf[:, labels] + noise * rng.normal(size=(d, len(labels)))
    return features, labels, etf.T


def centred_metrics(w, h, labels, centre):
    hj, lj = jnp.asarray(h), jnp.asarray(labels)
    return {
        "nc1_trace": float(nc1_trace(hj, lj, centre=centre)),
        "nc2": float(nc2_etf_distance(hj, lj, centre=centre)),
        "nc3": float(nc3_self_duality(jnp.asarray(w), hj, lj, centre=centre)),
    }


def test_exact_etf_under_imbalance_is_collapsed_only_about_the_class_means():
    """The issue's example: class counts 20, 20, 2, 2 on an exact simplex ETF (noise 1e-9). About
    the sample mean NC2 ≈ 0.65 and NC3 ≈ 0.44; about the mean of the class means both are ≈ 1e-9."""
    h, labels, w = etf_with_counts([20, 20, 2, 2], seed=0)
    by_samples = centred_metrics(w, h, labels, "samples")
    by_means = centred_metrics(w, h, labels, "class_means")
    assert by_samples["nc2"] > 0.1 and by_samples["nc3"] > 0.1, by_samples
    assert by_samples["nc2"] == pytest.approx(0.6455, abs=1e-3)  # independent of the rotation and offset
    assert by_samples["nc3"] == pytest.approx(0.4377, abs=1e-3)
    assert by_means["nc2"] < 1e-6 and by_means["nc3"] < 1e-6, by_means
    assert by_means["nc1_trace"] < 1e-12  # NC1: noise² / ETF scale², either centre
    default = centred_metrics(w, h, labels, "class_means")
    hj = jnp.asarray(h)
    assert float(nc2_etf_distance(hj, labels)) == default["nc2"]
    assert float(nc3_self_duality(jnp.asarray(w), hj, labels)) == default["nc3"]
    # balanced counts: both centres see the collapse
    h, labels, w = etf_with_counts([6, 6, 6, 6], seed=0)
    for centre in CENTRES:
        values = centred_metrics(w, h, labels, centre)
        assert values["nc2"] < 1e-6 and values["nc3"] < 1e-6, (centre, values)


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_centres_agree_on_balanced_data(k, offset):
    """n_k = N/K: the sample mean is the mean of the class means, so every centred metric is the
    same number (to 1e-12) either way, and no record measured on a balanced batch changes."""
    h, labels, w, _ = random_unsorted_data(k, seed=60 + k, balanced=True)
    h = h + offset
    hj, lj = jnp.asarray(h), jnp.asarray(labels)
    np.testing.assert_allclose(
        np.asarray(centred_class_means(hj, lj)), np.asarray(centred_class_means(hj, lj, centre="samples")), atol=1e-12
    )
    by_samples, by_means = centred_metrics(w, h, labels, "samples"), centred_metrics(w, h, labels, "class_means")
    for key, value in by_samples.items():
        assert abs(by_means[key] - value) <= 1e-12 * max(1.0, abs(value)), (key, value, by_means[key])
    # an unbalanced batch: the centres differ, and so do the metrics
    h, labels, w, _ = random_unsorted_data(k, seed=60 + k, balanced=False)
    by_samples, by_means = centred_metrics(w, h, labels, "samples"), centred_metrics(w, h, labels, "class_means")
    assert abs(by_means["nc3"] - by_samples["nc3"]) > 1e-6


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_measure_collapse_metrics_unchanged_on_balanced_batches(dtype):
    """ntklib.measure.collapse_metrics (the record's NC columns) uses the default centre; on a
    balanced batch it equals the sample-mean form measured before the keyword existed, to rounding
    of the dtype."""
    k = 4
    h, labels, w, b = random_unsorted_data(k, seed=70, balanced=True)
    hj, wj, bj = (jnp.asarray(a, dtype=dtype) for a in (h, w, b))
    got = measure.collapse_metrics(wj, bj, hj, jnp.asarray(labels), num_classes=k)
    before = {
        "nc1_trace": nc1_trace(hj, labels, centre="samples"),
        "nc2": nc2_etf_distance(hj, labels, centre="samples"),
        "nc3": nc3_self_duality(wj, hj, labels, centre="samples"),
    }
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for key, value in before.items():
        np.testing.assert_allclose(float(got[key]), float(value), rtol=rtol, err_msg=key)


def test_bad_centre_is_refused():
    h, labels = jnp.ones((2, 4)), jnp.array([0, 0, 1, 1])
    for call in (
        lambda: centred_class_means(h, labels, centre="global"),
        lambda: nc1_trace(h, labels, centre="mean"),
        lambda: nc2_etf_distance(h, labels, centre=None),
        lambda: nc3_self_duality(jnp.ones((2, 2)), h, labels, centre="sample"),
    ):
        with pytest.raises(ValueError, match="centre must be one of"):
            call()


# ---------------------------------------------------------------- end of training, unequal classes


UNEQUAL = [(5, 3, 2), (6, 6, 2, 2), (8, 2), (4, 3, 3, 1)]


def dense_weight(kern, centred=False):
    """C = Y K⁻¹ Yᵀ, or C_c = Y (P K P)⁺ Yᵀ, from the dense loop-built kernel."""
    sizes = kern.class_sizes
    dense = naive_class_block_kernel(kern.diag, kern.same_class, kern.other_class, sizes)
    y = naive_one_hot(np.repeat(np.arange(len(sizes)), sizes), len(sizes))
    if centred:
        p = centring(dense.shape[0])
        return y @ np.linalg.pinv(p @ dense @ p, hermitian=True) @ y.T
    return y @ np.linalg.inv(dense) @ y.T


def kernel_id(kern):
    return "-".join(map(str, kern.class_sizes)) + ("" if len(set(kern.diag)) == 1 else "-specialised")


def unequal_kernels():
    for sizes in UNEQUAL:
        yield ClassBlockKernel(3.0, 1.0, 0.2, class_sizes=sizes)
        rng = np.random.default_rng(len(sizes))
        kc = rng.uniform(0.2, 1.0, size=len(sizes))
        yield ClassBlockKernel(tuple(kc + rng.uniform(1.0, 2.0, size=len(sizes))), tuple(kc), 0.1, class_sizes=sizes)


@pytest.mark.parametrize("kern", list(unequal_kernels()), ids=kernel_id)
def test_end_of_training_weight_vs_dense(kern):
    for centred in (False, True):
        got = np.asarray(end_of_training_weight(kern, centred=centred))
        np.testing.assert_allclose(got, dense_weight(kern, centred), atol=1e-13, err_msg=str(centred))
    np.testing.assert_allclose(np.asarray(end_of_training_weight(kern, centred=True)).sum(axis=1), 0.0, atol=1e-13)


@pytest.mark.parametrize("k", KS)
def test_end_of_training_weight_and_grams_of_equal_sizes_are_the_block_formulas(k):
    m = 3
    block = BlockKernel(3.0, 1.0, 0.2, num_classes=k, per_class=m)
    kern = ClassBlockKernel.from_block_kernel(block)
    lamc, alpha = block.eigenvalues().lamc, block.alpha()
    eye, ones = np.eye(k), np.ones((k, k))
    np.testing.assert_allclose(np.asarray(end_of_training_weight(kern)), m / lamc * (eye - alpha * ones), atol=1e-14)
    np.testing.assert_allclose(
        np.asarray(end_of_training_weight(kern, centred=True)), m / lamc * (eye - ones / k), atol=1e-14
    )
    bias = np.random.default_rng(k).uniform(-0.3, 0.6, size=k)
    for got, expected in zip(end_of_training_grams(bias, kern), end_of_training_grams(bias, block), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-12)
    assert end_of_training_collapse(bias, kern) == pytest.approx(end_of_training_collapse(bias, block), abs=1e-12)
    # the centred flow: Theorem 5.2 (b = 1/K, G = a C, W Wᵀ = C/a), NC2 = NC3 = 0
    a = np.sqrt(lamc / m)
    for kernel in (block, kern):
        grams = centred_end_of_training_grams(kernel)
        np.testing.assert_allclose(np.asarray(grams.means), a * (eye - ones / k), atol=1e-12)
        np.testing.assert_allclose(np.asarray(grams.classifier), (eye - ones / k) / a, atol=1e-12)
        assert max(centred_end_of_training_collapse(kernel)) < 1e-7


@pytest.mark.parametrize("kern", list(unequal_kernels()), ids=kernel_id)
def test_unequal_end_of_training_grams_solve_the_defining_equations(kern):
    """G C G = BᵀB and W Wᵀ = B G⁺ Bᵀ (any biases); centred: b = n/N, G n = 0, G C_c G = BᵀB;
    a factor M = G^{1/2}, W = B G⁺ Mᵀ satisfies W M = B and WᵀW = M C Mᵀ."""
    k = kern.num_classes
    bias = np.random.default_rng(k).uniform(-0.3, 0.6, size=k)
    sizes = np.asarray(kern.class_sizes, dtype=float)
    for centred, b in ((False, bias), (True, sizes / sizes.sum())):
        grams = centred_end_of_training_grams(kern) if centred else end_of_training_grams(b, kern)
        g, wwt = np.asarray(grams.means), np.asarray(grams.classifier)
        weight = dense_weight(kern, centred)
        bmat = np.eye(k) - np.outer(b, np.ones(k))
        assert np.linalg.eigvalsh(g).min() > -1e-12
        np.testing.assert_allclose(g @ weight @ g, bmat.T @ bmat, atol=1e-11)
        np.testing.assert_allclose(wwt, bmat @ np.linalg.pinv(g, hermitian=True) @ bmat.T, atol=1e-10)
        if centred:
            np.testing.assert_allclose(g @ sizes, 0.0, atol=1e-12)
        means = _psd_sqrt(g)
        check_factor(bmat @ np.linalg.pinv(g, hermitian=True) @ means.T, means, bmat, weight)


def rank_deficient_centred_state(kern, d, seed):
    """(H₀, W₀, b₀ = 0) with H₀ 1 = 0, E_c = WᵀW − H (PKP)⁺ Hᵀ = 0 and rank H₀ = K − 1 (the rank of
    the class means at the end of the centred flow, so that no direction of H₂ is left with a
    vanishing WᵀW, which would make NC1 converge only polynomially)."""
    k, n = kern.num_classes, kern.num_samples
    rng = np.random.default_rng(seed)
    dense = np.asarray(kern.matrix())
    p = centring(n)
    a = rng.normal(size=(d, k))
    z = rng.normal(size=(k, k - 1)) @ rng.normal(size=(k - 1, n)) @ p
    w0 = _psd_sqrt(z @ np.linalg.pinv(p @ dense @ p, hermitian=True) @ z.T) @ a.T
    return a @ z, w0, np.zeros(k)


def simulate_to_the_end(kern, state, *, centred, train_bias, t_end):
    field = kernel_flow_vector_field(kern.matrix(), kern.one_hot(), centred=centred, train_bias=train_bias)
    traj = integrate(field, FlowState(*(jnp.asarray(x) for x in state)), jnp.array([0.0, t_end]))
    h, w, b = (np.asarray(x[-1]) for x in traj.states)
    labels = kern.labels()
    means = naive_means(h, labels, kern.num_classes)
    assert np.linalg.norm(w @ h + b[:, None] - np.asarray(kern.one_hot())) < 1e-8  # zero loss
    assert np.linalg.norm(h - means[:, labels]) < 1e-6  # H₂ → 0 (NC1)
    return h, w, b, means, labels


@pytest.mark.parametrize("train_bias", [False, True])
def test_unequal_end_of_training_vs_simulation(train_bias):
    """Uncentred flow from E = 0 with sizes (5, 3, 2): the class-mean and classifier Grams at zero
    loss and NC2/NC3 (about the mean of the class means) equal the closed form for the final biases
    (frozen unequal ones, or where the trained biases end)."""
    kern = ClassBlockKernel(3.0, 1.0, 0.2, class_sizes=(5, 3, 2))
    h0, w0, _ = zero_invariant_state(jax.random.key(0), kern, 4, scale=1.0, centred=False)
    bias0 = np.array([-0.1, 0.2, 0.5])
    h, w, b, means, labels = simulate_to_the_end(
        kern, (h0, w0, bias0), centred=False, train_bias=train_bias, t_end=60.0
    )
    grams = end_of_training_grams(b, kern)
    np.testing.assert_allclose(means.T @ means, np.asarray(grams.means), atol=1e-8)
    np.testing.assert_allclose(w @ w.T, np.asarray(grams.classifier), atol=1e-8)
    nc2, nc3 = end_of_training_collapse(b, kern)
    assert float(nc2_etf_distance(jnp.asarray(h), labels)) == pytest.approx(nc2, abs=1e-8)
    assert float(nc3_self_duality(jnp.asarray(w), jnp.asarray(h), labels)) == pytest.approx(nc3, abs=1e-8)
    assert nc3 > 1e-2


CENTRED_CASES = {
    "5-3-2": ClassBlockKernel(3.0, 1.0, 0.2, class_sizes=(5, 3, 2)),
    "6-6-2-2": ClassBlockKernel(3.0, 1.0, 0.2, class_sizes=(6, 6, 2, 2)),
    "4-4-4-specialised": ClassBlockKernel((3.0, 3.5, 4.0), (1.0, 1.5, 2.0), 0.2, class_sizes=(4, 4, 4)),
}


@pytest.mark.parametrize("name", CENTRED_CASES)
def test_unequal_centred_end_of_training_vs_simulation(name):
    """Centred flow (kernel P K P) from h̄ = 0 and E_c = 0: the biases end at the class proportions
    n/N, and the Grams and NC2/NC3 at zero loss equal centred_end_of_training_grams. Unlike the
    balanced Theorem 5.2, the class means are not a simplex ETF (NC2 > 0.01), with unequal sizes
    or with balanced classes whose blocks differ (a specialised kernel)."""
    kern = CENTRED_CASES[name]
    sizes = kern.class_sizes
    state = rank_deficient_centred_state(kern, kern.num_classes + 1, seed=0)
    h0, w0, _ = (jnp.asarray(x) for x in state)
    assert float(jnp.linalg.norm(kernel_invariant(w0, h0, kern.matrix(), centred=True))) < 1e-12
    h, w, b, means, labels = simulate_to_the_end(kern, state, centred=True, train_bias=True, t_end=100.0)
    np.testing.assert_allclose(b, np.asarray(sizes) / sum(sizes), atol=1e-9)
    grams = centred_end_of_training_grams(kern)
    np.testing.assert_allclose(means.T @ means, np.asarray(grams.means), atol=1e-8)
    np.testing.assert_allclose(w @ w.T, np.asarray(grams.classifier), atol=1e-8)
    nc2, nc3 = centred_end_of_training_collapse(kern)
    assert float(nc2_etf_distance(jnp.asarray(h), labels)) == pytest.approx(nc2, abs=1e-8)
    assert float(nc3_self_duality(jnp.asarray(w), jnp.asarray(h), labels)) == pytest.approx(nc3, abs=1e-8)
    assert nc2 > 1e-2 and nc3 > 1e-2
