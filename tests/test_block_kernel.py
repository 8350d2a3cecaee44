"""Tests of ntklib.block_kernel against naive dense references (numpy.linalg.eigh / inv, loops)."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from helpers import (
    naive_block_kernel,
    naive_class_block_kernel,
    naive_class_indicator,
    naive_labels,
    naive_one_hot,
    naive_projectors,
)

from ntklib.block_kernel import (
    BlockEigenvalues,
    BlockKernel,
    BlockProjectors,
    ClassBlockComponents,
    ClassBlockKernel,
    ClassBlockSpectrum,
    block_projectors,
    class_average,
    class_indicator,
    one_hot_labels,
)

GRID = [(k, m) for k in (2, 3, 5) for m in (2, 4)]
# (κ_d, κ_c, κ_n): positive definite on the whole grid, with three distinct eigenvalues;
# the second has κ_n < 0, so that λ_max < λ_c.
KAPPAS = [(3.0, 1.0, 0.2), (2.0, 0.5, -0.05)]


def table1(kd, kc, kn, k, m):
    lam0 = kd - kc
    lamc = kd - kc + m * (kc - kn)
    return lam0, lamc, lamc + k * m * kn


@pytest.mark.parametrize("k,m", GRID)
@pytest.mark.parametrize("kappa", KAPPAS)
def test_matrix_matches_definition(k, m, kappa):
    kern = BlockKernel(*kappa, num_classes=k, per_class=m)
    assert kern.num_samples == k * m
    np.testing.assert_allclose(np.asarray(kern.matrix()), naive_block_kernel(*kappa, k, m), rtol=0, atol=1e-14)


def test_matrix_dtype():
    kern = BlockKernel(3.0, 1.0, 0.2, num_classes=3, per_class=2)
    assert kern.matrix(jnp.float32).dtype == jnp.float32
    assert kern.inverse(jnp.float32).dtype == jnp.float32
    assert kern.matrix(jnp.float64).dtype == jnp.float64


@pytest.mark.parametrize("k,m", GRID)
@pytest.mark.parametrize("kappa", KAPPAS)
def test_eigenvalues_and_multiplicities_vs_eigh(k, m, kappa):
    kern = BlockKernel(*kappa, num_classes=k, per_class=m)
    ev = kern.eigenvalues()
    assert isinstance(ev, BlockEigenvalues)
    np.testing.assert_allclose(ev, table1(*kappa, k, m), rtol=1e-14)
    evals = np.linalg.eigh(naive_block_kernel(*kappa, k, m))[0]
    expected = np.sort([ev.lam0] * (k * (m - 1)) + [ev.lamc] * (k - 1) + [ev.lammax])
    np.testing.assert_allclose(evals, expected, rtol=0, atol=1e-12)
    # multiplicities, counted from eigh
    assert np.sum(np.isclose(evals, ev.lam0, atol=1e-10)) == k * (m - 1)
    assert np.sum(np.isclose(evals, ev.lamc, atol=1e-10)) == k - 1
    assert np.sum(np.isclose(evals, ev.lammax, atol=1e-10)) == 1


@pytest.mark.parametrize("k,m", GRID)
@pytest.mark.parametrize("kappa", KAPPAS)
def test_alpha_vs_paper_formula_and_dense_inverse(k, m, kappa):
    """α = κ_n/(λ_0/m + κ_c + (K − 1)κ_n) (the paper's form), 1 − Kα = λ_c/λ_max, and on features
    H = M Y without within-class part, H K⁻¹ Hᵀ = (m/λ_c) M (I − α 1 1ᵀ) Mᵀ with the dense inverse."""
    kd, kc, kn = kappa
    kern = BlockKernel(*kappa, num_classes=k, per_class=m)
    alpha = kern.alpha()
    assert alpha == pytest.approx(kn / ((kd - kc) / m + kc + (k - 1) * kn), rel=1e-13)
    lam0, lamc, lammax = table1(*kappa, k, m)
    assert 1 - k * alpha == pytest.approx(lamc / lammax, rel=1e-13)
    rng = np.random.default_rng(k * 10 + m)
    means = rng.normal(size=(k + 2, k))
    h = np.repeat(means, m, axis=1)  # every sample on its class mean
    dense = h @ np.linalg.inv(naive_block_kernel(*kappa, k, m)) @ h.T
    folded = (m / lamc) * means @ (np.eye(k) - alpha * np.ones((k, k))) @ means.T
    np.testing.assert_allclose(folded, dense, rtol=1e-10, atol=1e-12)


def test_alpha_limits():
    """α = 0 iff κ_n = 0; α → 1/K when the kernel stops telling same-class from other-class pairs."""
    assert BlockKernel(2.0, 0.8, 0.0, num_classes=4, per_class=5).alpha() == 0.0
    alphas = [BlockKernel(c + 1.0, c, c, num_classes=4, per_class=5).alpha() for c in (1.0, 1e2, 1e4)]
    assert alphas[0] < alphas[1] < alphas[2] < 0.25
    assert 0.25 - alphas[2] < 1e-5


@pytest.mark.parametrize("k,m", GRID)
@pytest.mark.parametrize("kappa", KAPPAS)
def test_eigenvectors_of_table1(k, m, kappa):
    """K_κ 1 = λ_max 1; K_κ (v ⊗ 1) = λ_c (v ⊗ 1), v ⊥ 1; K_κ (e_k ⊗ u) = λ_0 (e_k ⊗ u), u ⊥ 1."""
    rng = np.random.default_rng(0)
    kern = BlockKernel(*kappa, num_classes=k, per_class=m)
    lam0, lamc, lammax = kern.eigenvalues()
    mat = naive_block_kernel(*kappa, k, m)
    ones = np.ones(k * m)
    np.testing.assert_allclose(mat @ ones, lammax * ones, atol=1e-12)
    v = rng.normal(size=k)
    v -= v.mean()
    x = np.kron(v, np.ones(m))
    np.testing.assert_allclose(mat @ x, lamc * x, atol=1e-12)
    u = rng.normal(size=m)
    u -= u.mean()
    for c in range(k):
        x = np.kron(np.eye(k)[c], u)
        np.testing.assert_allclose(mat @ x, lam0 * x, atol=1e-12)


@pytest.mark.parametrize("k,m", GRID)
@pytest.mark.parametrize("kappa", KAPPAS)
def test_projectors_match_eigh_eigenspaces(k, m, kappa):
    kern = BlockKernel(*kappa, num_classes=k, per_class=m)
    ev = kern.eigenvalues()
    evals, evecs = np.linalg.eigh(naive_block_kernel(*kappa, k, m))
    p = block_projectors(k, m)
    for value, proj in ((ev.lam0, p.within), (ev.lamc, p.cls), (ev.lammax, p.glob)):
        u = evecs[:, np.isclose(evals, value, atol=1e-10)]
        np.testing.assert_allclose(np.asarray(proj), u @ u.T, atol=1e-12)


@pytest.mark.parametrize("k,m", GRID)
def test_projectors_algebra(k, m):
    p = block_projectors(k, m)
    assert isinstance(p, BlockProjectors)
    n = k * m
    mats = [np.asarray(x) for x in p]
    for a, proj in enumerate(mats):
        assert proj.shape == (n, n)
        np.testing.assert_allclose(proj, proj.T, atol=1e-15)  # orthogonal projector: symmetric
        np.testing.assert_allclose(proj @ proj, proj, atol=1e-14)  # idempotent
        for b, other in enumerate(mats):
            if a != b:
                np.testing.assert_allclose(proj @ other, 0.0, atol=1e-14)  # mutually orthogonal
    np.testing.assert_allclose(sum(mats), np.eye(n), atol=1e-14)
    np.testing.assert_allclose([np.trace(x) for x in mats], [1, k - 1, k * (m - 1)], atol=1e-12)
    # explicit formulas
    for got, expected in zip(mats, naive_projectors(k, m), strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-15)


@pytest.mark.parametrize("k,m", GRID)
@pytest.mark.parametrize("kappa", KAPPAS)
def test_spectral_decomposition(k, m, kappa):
    kern = BlockKernel(*kappa, num_classes=k, per_class=m)
    lam0, lamc, lammax = kern.eigenvalues()
    p = block_projectors(k, m)
    np.testing.assert_allclose(
        np.asarray(lam0 * p.within + lamc * p.cls + lammax * p.glob), naive_block_kernel(*kappa, k, m), atol=1e-13
    )


@pytest.mark.parametrize("k,m", GRID)
@pytest.mark.parametrize("kappa", KAPPAS)
def test_inverse_vs_dense_inv(k, m, kappa):
    kern = BlockKernel(*kappa, num_classes=k, per_class=m)
    expected = np.linalg.inv(naive_block_kernel(*kappa, k, m))
    np.testing.assert_allclose(np.asarray(kern.inverse()), expected, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.asarray(kern.inverse()) @ naive_block_kernel(*kappa, k, m), np.eye(k * m), atol=1e-12)


@pytest.mark.parametrize("k,m", GRID)
@pytest.mark.parametrize("kappa", KAPPAS)
def test_apply_vs_matmul(k, m, kappa):
    rng = np.random.default_rng(1)
    kern = BlockKernel(*kappa, num_classes=k, per_class=m)
    mat = naive_block_kernel(*kappa, k, m)
    shapes = ((k * m,), (2, 3, k * m)) if (k, m) == (3, 2) else ((2, 3, k * m),)
    for shape in shapes:
        x = rng.normal(size=shape)
        out = np.asarray(kern.apply(jnp.asarray(x)))
        assert out.shape == shape
        np.testing.assert_allclose(out, x @ mat, rtol=1e-12, atol=1e-12)


def test_is_positive_definite_vs_eigh():
    rng = np.random.default_rng(2)
    cases = [(3.0, 1.0, 0.2), (1.0, 1.0, 0.2), (1.0, 2.0, 0.0), (2.0, 0.5, -0.5), (2.0, 0.5, -0.05), (1.0, -1.0, 0.0)]
    cases += [tuple(rng.normal(size=3)) for _ in range(20)]
    for k, m in ((2, 2), (3, 4), (5, 2)):
        for kappa in cases:
            kern = BlockKernel(*kappa, num_classes=k, per_class=m)
            expected = np.linalg.eigh(naive_block_kernel(*kappa, k, m))[0].min() > 1e-12
            assert kern.is_positive_definite() == expected, (kappa, k, m)
            if expected:
                assert kern.check_positive_definite() is kern


@pytest.mark.parametrize(
    "kappa,name",
    [
        ((1.0, 1.0, 0.2), "lam0"),  # λ_0 = 0
        ((1.0, 2.0, 0.0), "lam0"),  # λ_0 < 0
        ((3.0, -1.0, 0.5), "lamc"),  # λ_0 = 4 > 0, λ_c = 4 + 3(-1.5) < 0
        ((2.0, 0.5, -0.5), "lammax"),  # λ_c = 4.5, λ_max = 4.5 - 4.5 = 0
    ],
)
def test_not_positive_definite_raises_naming_eigenvalue(kappa, name):
    kern = BlockKernel(*kappa, num_classes=3, per_class=3)
    assert not kern.is_positive_definite()
    with pytest.raises(ValueError, match=name):
        kern.check_positive_definite()
    with pytest.raises(ValueError, match=name):
        kern.inverse()


@pytest.mark.parametrize("bad", [1, 0, -2, 2.5])
def test_bad_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes"):
        BlockKernel(3.0, 1.0, 0.2, num_classes=bad, per_class=3)
    with pytest.raises(ValueError, match="num_classes"):
        block_projectors(bad, 3)
    with pytest.raises(ValueError, match="num_classes"):
        one_hot_labels(bad, 3)


@pytest.mark.parametrize("bad", [1, 0, -1, 3.5])
def test_bad_per_class(bad):
    with pytest.raises(ValueError, match="per_class"):
        BlockKernel(3.0, 1.0, 0.2, num_classes=3, per_class=bad)
    with pytest.raises(ValueError, match="per_class"):
        block_projectors(3, bad)
    with pytest.raises(ValueError, match="per_class"):
        one_hot_labels(3, bad)


def test_block_kernel_is_frozen():
    kern = BlockKernel(3.0, 1.0, 0.2, num_classes=3, per_class=2)
    with pytest.raises(AttributeError):
        kern.diag = 4.0


@pytest.mark.parametrize("k,m", GRID)
def test_class_indicator_vs_loop(k, m):
    np.testing.assert_array_equal(np.asarray(class_indicator(k, m)), naive_class_indicator(k, m))


@pytest.mark.parametrize("k,m", GRID)
def test_class_average_vs_loop(k, m):
    rng = np.random.default_rng(3)
    n = k * m
    x = rng.normal(size=(2, 3, n))
    expected = np.empty_like(x)
    for idx in np.ndindex(*x.shape[:-1]):
        for i in range(n):
            c = i // m
            expected[idx + (i,)] = np.mean(x[idx + (slice(c * m, (c + 1) * m),)])
    out = np.asarray(class_average(jnp.asarray(x), k))
    assert out.shape == x.shape
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-14)
    # equals x (I_K ⊗ 1 1ᵀ)/m
    np.testing.assert_allclose(out, x @ np.kron(np.eye(k), np.ones((m, m))) / m, atol=1e-13)
    # 1-D input
    np.testing.assert_allclose(np.asarray(class_average(jnp.asarray(x[0, 0]), k)), expected[0, 0], atol=1e-14)


@pytest.mark.parametrize("k,m", GRID)
def test_one_hot_labels_vs_loop(k, m):
    y = np.asarray(one_hot_labels(k, m))
    assert y.shape == (k, k * m)
    np.testing.assert_array_equal(y, naive_labels(k, m))
    assert one_hot_labels(k, m, jnp.float32).dtype == jnp.float32


# ---------------------------------------------------------------- unequal classes, specialised blocks

SIZES = [(3, 1), (5, 3, 1), (7, 2), (20, 20, 2, 2), (4, 4, 2, 2, 1), (6, 5, 4, 3, 2), (3, 3, 3)]
# (κ_d, κ_c, κ_n), one value per block; positive definite for every size vector above
CLASS_KAPPAS = [(3.0, 1.0, 0.2), (2.0, 0.5, -0.01), (2.0, 0.8, 0.0)]


def specialised(sizes, seed):
    """Per-class κ_d^(k), κ_c^(k) drawn at random (positive definite: κ_c^(k) ∈ (0.2, 1),
    κ_d^(k) − κ_c^(k) ∈ (1, 2), κ_n = 0.1)."""
    rng = np.random.default_rng(seed)
    kc = rng.uniform(0.2, 1.0, size=len(sizes))
    return tuple(kc + rng.uniform(1.0, 2.0, size=len(sizes))), tuple(kc), 0.1


def kernel_cases():
    for sizes in SIZES:
        for kappa in CLASS_KAPPAS:
            yield sizes, kappa
        yield sizes, specialised(sizes, seed=len(sizes) + sum(sizes))


CASES = list(kernel_cases())


@pytest.mark.parametrize("sizes,kappa", CASES)
def test_class_block_matrix_matches_definition(sizes, kappa):
    kern = ClassBlockKernel(*kappa, class_sizes=sizes)
    assert kern.num_classes == len(sizes) and kern.num_samples == sum(sizes)
    np.testing.assert_allclose(np.asarray(kern.matrix()), naive_class_block_kernel(*kappa, sizes), rtol=0, atol=1e-15)
    np.testing.assert_array_equal(np.asarray(kern.one_hot()), naive_one_hot(kern.labels(), len(sizes)))
    assert kern.matrix(jnp.float32).dtype == jnp.float32


@pytest.mark.parametrize("sizes,kappa", CASES)
def test_class_block_eigenvalues_vs_eigh(sizes, kappa):
    """Every eigenvalue, with its multiplicity, against numpy.linalg.eigvalsh of the dense matrix;
    the class-level ones also against eigvalsh of the reduced K×K matrix."""
    kern = ClassBlockKernel(*kappa, class_sizes=sizes)
    dense = naive_class_block_kernel(*kappa, sizes)
    scale = np.abs(np.linalg.eigvalsh(dense)).max()
    np.testing.assert_allclose(kern.all_eigenvalues(), np.linalg.eigvalsh(dense), rtol=0, atol=1e-12 * scale)
    spectrum = kern.eigenvalues()
    assert isinstance(spectrum, ClassBlockSpectrum)
    np.testing.assert_array_equal(spectrum.within_multiplicity, np.asarray(sizes) - 1)
    np.testing.assert_allclose(spectrum.within, np.asarray(kappa[0]) - np.asarray(kappa[1]) + np.zeros(len(sizes)))
    np.testing.assert_allclose(
        spectrum.class_level, np.linalg.eigvalsh(kern.reduced_matrix()), rtol=0, atol=1e-12 * scale
    )
    assert np.all(np.diff(spectrum.class_level) >= 0)


@pytest.mark.parametrize("sizes,kappa", CASES)
def test_class_block_reduced_matrix_and_eigenvectors(sizes, kappa):
    """Lᵀ K L is the reduced matrix; the class-level eigenvectors are orthonormal, constant on
    every class, orthogonal to the within-class space, and K v = μ v."""
    kern = ClassBlockKernel(*kappa, class_sizes=sizes)
    dense = naive_class_block_kernel(*kappa, sizes)
    basis = np.asarray(kern.class_basis())
    np.testing.assert_allclose(basis.T @ basis, np.eye(len(sizes)), atol=1e-14)
    np.testing.assert_allclose(basis.T @ dense @ basis, kern.reduced_matrix(), atol=1e-12)
    vectors = np.asarray(kern.class_eigenvectors())
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(len(sizes)), atol=1e-13)
    np.testing.assert_allclose(dense @ vectors, vectors * kern.eigenvalues().class_level[None, :], atol=1e-11)
    labels = kern.labels()
    for c in range(len(sizes)):
        block = vectors[labels == c]
        np.testing.assert_allclose(block, np.broadcast_to(block[:1], block.shape), atol=1e-14)
    within = np.asarray(kern.within_projector())
    np.testing.assert_allclose(within @ vectors, 0.0, atol=1e-13)
    np.testing.assert_allclose(within @ within, within, atol=1e-13)
    assert round(np.trace(within)) == sum(sizes) - len(sizes)


@pytest.mark.parametrize("k,m", GRID)
@pytest.mark.parametrize("kappa", KAPPAS)
def test_class_block_equal_sizes_is_table1(k, m, kappa):
    """n_k = m and one value per block: the within eigenvalue λ_0 (K(m − 1) times), λ_c (K − 1
    times) and λ_max, exactly BlockKernel.eigenvalues(); the same matrix; the top eigenvector is 1_N/√N
    (λ_max > λ_c here when κ_n > 0, the bottom one when κ_n < 0)."""
    block = BlockKernel(*kappa, num_classes=k, per_class=m)
    kern = ClassBlockKernel.from_block_kernel(block)
    assert kern == ClassBlockKernel(*kappa, class_sizes=[m] * k)
    np.testing.assert_allclose(np.asarray(kern.matrix()), np.asarray(block.matrix()), atol=0)
    lam0, lamc, lammax = block.eigenvalues()
    spectrum = kern.eigenvalues()
    np.testing.assert_allclose(spectrum.within, lam0, rtol=1e-14)
    assert int(spectrum.within_multiplicity.sum()) == k * (m - 1)
    np.testing.assert_allclose(np.sort(spectrum.class_level), np.sort([lamc] * (k - 1) + [lammax]), rtol=1e-13)
    np.testing.assert_allclose(kern.class_values(), lamc, rtol=1e-14)
    top = int(np.argmin(np.abs(spectrum.class_level - lammax)))
    v = np.asarray(kern.class_eigenvectors())[:, top]
    np.testing.assert_allclose(np.abs(v), 1 / np.sqrt(k * m), atol=1e-13)
    np.testing.assert_allclose(np.asarray(kern.inverse()), np.asarray(block.inverse()), atol=1e-12)


@pytest.mark.parametrize("kappa", [(3.0, 1.0, 0.2), (2.0, 0.5, 0.05), (2.0, 0.8, 0.0), (2.0, 0.5, -0.01)])
@pytest.mark.parametrize("groups", [((3, 20), (2, 2)), ((1, 9), (4, 3)), ((2, 5), (2, 12))])
def test_class_block_two_sizes_closed_form(kappa, groups):
    """K_a classes of n_a and K_b of n_b samples: Table 1's λ_c splits into λ_a = λ_0 + n_a(κ_c − κ_n)
    (K_a − 1 times), λ_b (K_b − 1 times) and μ_−, λ_max becomes μ_+, with
    μ_± = (a_1 + a_2)/2 ± ½√((a_1 − a_2)² + 4κ_n² T_a T_b), a_j = λ_j + κ_n T_j, T_j = K_j n_j;
    checked against eigvalsh of the dense matrix. For κ_n > 0 they interlace, λ_low < μ_− < λ_high < μ_+;
    the eigenvectors of μ_± are ∝ 1/(μ − λ_j) on group j, not ∝ 1_N."""
    kd, kc, kn = kappa
    (ka, na), (kb, nb) = groups
    sizes = (na,) * ka + (nb,) * kb
    lam0 = kd - kc
    lam = np.array([lam0 + na * (kc - kn), lam0 + nb * (kc - kn)])
    weights = np.array([ka * na, kb * nb], dtype=float)
    a = lam + kn * weights
    half = 0.5 * np.sqrt((a[0] - a[1]) ** 2 + 4 * kn**2 * weights[0] * weights[1])
    mu = np.array([a.mean() - half, a.mean() + half])
    expected = np.sort(
        np.concatenate([[lam0] * (sum(sizes) - len(sizes)), [lam[0]] * (ka - 1), [lam[1]] * (kb - 1), mu])
    )
    dense = naive_class_block_kernel(kd, kc, kn, sizes)
    evals, evecs = np.linalg.eigh(dense)
    np.testing.assert_allclose(evals, expected, rtol=0, atol=1e-12 * np.abs(evals).max())
    kern = ClassBlockKernel(kd, kc, kn, class_sizes=sizes)
    np.testing.assert_allclose(kern.all_eigenvalues(), expected, rtol=0, atol=1e-12 * np.abs(evals).max())
    if kn > 0:
        low, high = np.sort(lam)
        assert low < mu[0] < high < mu[1]
    group = np.repeat([0] * ka + [1] * kb, sizes)
    for value in mu:
        v = evecs[:, int(np.argmin(np.abs(evals - value)))]
        if kn == 0 or min(np.abs(value - lam)) < 1e-9:
            continue  # at κ_n = 0 the eigenspaces of μ_± and λ_j merge
        pattern = 1.0 / (value - lam[group])
        np.testing.assert_allclose(np.abs(v), np.abs(pattern) / np.linalg.norm(pattern), atol=1e-10)
        assert np.ptp(np.abs(v)) > 1e-3  # not the constant vector 1_N/√N


@pytest.mark.parametrize("sizes,kappa", CASES)
def test_class_block_functions_inverse_apply(sizes, kappa):
    kern = ClassBlockKernel(*kappa, class_sizes=sizes)
    dense = naive_class_block_kernel(*kappa, sizes)
    np.testing.assert_allclose(np.asarray(kern.inverse()), np.linalg.inv(dense), rtol=1e-10, atol=1e-12)
    t = 0.7
    np.testing.assert_allclose(
        np.asarray(kern.matrix_function(lambda x: np.exp(-t * x))), scipy.linalg.expm(-t * dense), atol=1e-12
    )
    np.testing.assert_allclose(np.asarray(kern.matrix_function(lambda x: x)), dense, atol=1e-12)
    x = np.random.default_rng(len(sizes)).normal(size=(2, 3, sum(sizes)))
    np.testing.assert_allclose(np.asarray(kern.apply(jnp.asarray(x))), x @ dense, atol=1e-12)
    assert kern.is_positive_definite()


def test_class_block_not_positive_definite():
    kern = ClassBlockKernel((3.0, 1.0), (1.0, 1.5), 0.2, class_sizes=(3, 2))  # λ_0 of class 1 = −0.5
    assert not kern.is_positive_definite()
    with pytest.raises(ValueError, match="within-class λ_0 of class 1"):
        kern.check_positive_definite()
    with pytest.raises(ValueError, match="within-class"):
        kern.inverse()
    single = ClassBlockKernel((3.0, 1.0), (1.0, 1.5), 0.2, class_sizes=(3, 1))  # class 1 has no within part
    assert single.is_positive_definite() == bool(np.linalg.eigvalsh(np.asarray(single.matrix())).min() > 0)
    negative = ClassBlockKernel(2.0, 1.0, -2.0, class_sizes=(4, 4, 1))  # λ_0 = 1 > 0, A not ≻ 0
    assert not negative.is_positive_definite()
    assert np.linalg.eigvalsh(np.asarray(negative.matrix())).min() < 0
    with pytest.raises(ValueError, match="class-level eigenvalue"):
        negative.check_positive_definite()


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(class_sizes=(3,)), "class_sizes"),
        (dict(class_sizes=(3, 0)), "class_sizes"),
        (dict(class_sizes=(3, 2.5)), "class_sizes"),
        (dict(class_sizes=(3, 2), diag=(1.0, 2.0, 3.0)), "diag"),
        (dict(class_sizes=(3, 2), same_class=((1.0, 2.0),)), "same_class"),
    ],
)
def test_class_block_bad_input(kwargs, name):
    args = dict(diag=3.0, same_class=1.0, other_class=0.2) | kwargs
    with pytest.raises(ValueError, match=name):
        ClassBlockKernel(**args)


def test_class_block_kernel_is_frozen_and_hashable():
    kern = ClassBlockKernel(3.0, (1.0, 0.5), 0.2, class_sizes=[3, 2])
    assert kern.diag == (3.0, 3.0) and kern.same_class == (1.0, 0.5) and kern.class_sizes == (3, 2)
    assert hash(kern) == hash(ClassBlockKernel((3.0, 3.0), (1.0, 0.5), 0.2, class_sizes=(3, 2)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        kern.other_class = 0.0


@pytest.mark.parametrize("sizes,kappa", CASES[::3])
def test_class_block_components_are_the_phases(sizes, kappa):
    """R(t) = R(0) exp(−t K) (scipy expm of the dense matrix): each within-class norm decays as
    e^{−λ_0^(k) t} and each class-level coordinate as e^{−μ_j t}; the parts are the loop-computed
    within norms and the projections on orthonormal eigenvectors, and they account for all of ‖R‖."""
    kern = ClassBlockKernel(*kappa, class_sizes=sizes)
    dense = naive_class_block_kernel(*kappa, sizes)
    k, n = len(sizes), sum(sizes)
    rng = np.random.default_rng(n)
    r0 = rng.normal(size=(3, n))
    parts = kern.components(jnp.asarray(r0))
    assert isinstance(parts, ClassBlockComponents)
    assert parts.within.shape == (3, k) and parts.class_level.shape == (3, k)
    labels = np.repeat(np.arange(k), sizes)
    for c in range(k):
        block = r0[:, labels == c]
        expected = np.sqrt(((block - block.mean(axis=1, keepdims=True)) ** 2).sum(axis=1))
        np.testing.assert_allclose(np.asarray(parts.within[:, c]), expected, atol=1e-13)
    total = np.sum(np.asarray(parts.within) ** 2) + np.sum(np.asarray(parts.class_level) ** 2)
    assert total == pytest.approx(np.sum(r0**2), rel=1e-12)
    spectrum = kern.eigenvalues()
    for t in (0.3, 1.1):
        later = kern.components(jnp.asarray(r0 @ scipy.linalg.expm(-t * dense)))
        np.testing.assert_allclose(
            np.asarray(later.within), np.asarray(parts.within) * np.exp(-t * spectrum.within)[None, :], atol=1e-12
        )
        np.testing.assert_allclose(
            np.asarray(later.class_level),
            np.asarray(parts.class_level) * np.exp(-t * spectrum.class_level)[None, :],
            atol=1e-12,
        )
