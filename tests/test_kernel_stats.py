"""Block statistics of kernel matrices: exact recovery, alignment, fit error, input validation."""

import itertools

import numpy as np
import pytest
from helpers import naive_block_kernel, naive_class_indicator

from ntklib import kernel_stats as ks
from ntklib.block_kernel import BlockKernel, class_indicator, one_hot_labels


@pytest.mark.parametrize("k, m", [(2, 2), (3, 4), (10, 12)])
def test_exact_block_kernel_recovers_its_values(k, m):
    bk = BlockKernel(3.5, 1.25, -0.4, num_classes=k, per_class=m)
    mat = np.asarray(bk.matrix(np.float64))
    labels = np.repeat(np.arange(k), m)
    got = ks.block_statistics(mat, labels)
    assert (got.num_classes, got.per_class) == (k, m)
    np.testing.assert_allclose([got.diag, got.same_class, got.other_class], [3.5, 1.25, -0.4], rtol=1e-13)
    np.testing.assert_allclose(
        ks.per_class_block_statistics(mat, labels), np.tile([3.5, 1.25, -0.4], (k, 1)), rtol=1e-13
    )
    assert ks.block_fit_error(mat, labels) < 1e-14


def test_stack_of_block_kernels_averages_over_outputs_and_fits_each_output():
    k, m = 3, 2
    values = np.array([[2.0, 1.0, 0.1], [4.0, 0.5, -0.2]])
    stack = np.stack([np.asarray(BlockKernel(*v, num_classes=k, per_class=m).matrix(np.float64)) for v in values])
    np.testing.assert_allclose(ks.block_means(stack, num_classes=k, per_class=m), values, rtol=1e-13)
    got = ks.block_statistics(stack, num_classes=k, per_class=m)
    np.testing.assert_allclose([got.diag, got.same_class, got.other_class], values.mean(0), rtol=1e-13)
    assert ks.block_fit_error(stack, num_classes=k, per_class=m) < 1e-14  # each output fitted on its own


def test_per_class_values_match_brute_force_and_average_to_global():
    rng = np.random.default_rng(0)
    k, m = 3, 3
    a = rng.normal(size=(2, k * m, k * m))
    a = a + a.transpose(0, 2, 1)
    labels = np.repeat(np.arange(k), m)
    per = ks.per_class_block_statistics(a, labels)
    mean = a.mean(0)
    for c in range(k):
        inside = labels == c
        block = mean[np.ix_(inside, inside)]
        np.testing.assert_allclose(per[c, 0], np.mean(np.diag(block)))
        np.testing.assert_allclose(per[c, 1], block[~np.eye(m, dtype=bool)].mean())
        np.testing.assert_allclose(per[c, 2], mean[np.ix_(inside, ~inside)].mean())
    glob = ks.block_statistics(a, labels)
    np.testing.assert_allclose(per.mean(0), [glob.diag, glob.same_class, glob.other_class], rtol=1e-12)


def test_block_means_match_brute_force_on_random_kernel():
    rng = np.random.default_rng(1)
    k, m = 4, 3
    n = k * m
    a = rng.normal(size=(n, n))
    labels = np.repeat(np.arange(k), m)
    same = labels[:, None] == labels[None, :]
    eye = np.eye(n, dtype=bool)
    expected = [a[eye].mean(), a[same & ~eye].mean(), a[~same].mean()]
    np.testing.assert_allclose(ks.block_means(a, labels)[0], expected, rtol=1e-12)


def test_alignment_of_labels_with_themselves_is_one():
    k, m = 4, 3
    yty = np.asarray(one_hot_labels(k, m).T @ one_hot_labels(k, m))
    assert ks.label_alignment(yty, num_classes=k, per_class=m) == pytest.approx(1.0, abs=1e-14)
    # A stack is traced first: C copies of YᵀY / C is still perfectly aligned.
    assert ks.label_alignment(np.stack([yty, 2 * yty]), num_classes=k, per_class=m) == pytest.approx(1.0, abs=1e-14)
    assert ks.label_alignment(np.eye(k * m), num_classes=k, per_class=m) < 1.0


def test_block_fit_error_positive_on_random_and_bounded():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 6, 6))
    err = ks.block_fit_error(a + a.transpose(0, 2, 1), num_classes=2, per_class=3)
    assert 0.1 < err <= 1.0
    assert ks.block_fit_error(np.zeros((2, 4, 4)), num_classes=2, per_class=2) == 0.0


def test_block_norms():
    norms = np.array([[2.0, 0.5], [0.3, 4.0]])
    assert ks.block_norms(norms) == pytest.approx((3.0, 0.4))


def test_class_indicator_is_yty():
    y = np.asarray(one_hot_labels(3, 2))
    np.testing.assert_array_equal(y.T @ y, np.asarray(class_indicator(3, 2)))


@pytest.mark.parametrize(
    "labels, match",
    [
        ([0, 1, 0, 1], "labels.*sorted"),
        ([0, 0, 0, 1, 1, 1, 2, 2], "labels.*balanced"),
        ([0, 1, 2], "per_class"),
        ([0, 0, 0], "num_classes"),
        ([[0, 0], [1, 1]], "labels.*1-D"),
    ],
)
def test_bad_labels_raise_naming_the_parameter(labels, match):
    n = np.asarray(labels).size
    with pytest.raises(ValueError, match=match):
        ks.block_statistics(np.eye(n), labels)


def test_bad_sizes_raise_naming_the_parameter():
    with pytest.raises(ValueError, match="kernels.*square"):
        ks.block_statistics(np.zeros((4, 5)), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="kernels.*square"):
        ks.block_means(np.zeros((2, 2, 4, 4)), num_classes=2, per_class=2)
    with pytest.raises(ValueError, match="kernels"):
        ks.block_statistics(np.eye(6), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="per_class"):
        ks.block_statistics(np.eye(4), num_classes=4, per_class=1)
    with pytest.raises(ValueError, match="num_classes"):
        ks.block_statistics(np.eye(4), [0, 0, 1, 1], num_classes=3)
    with pytest.raises(ValueError, match="num_classes and per_class"):
        ks.block_statistics(np.eye(4))


# ---------------------------------------------------------------------------------------------
# The released code's virtual-batch alignment
# ---------------------------------------------------------------------------------------------

GAMMA_TRAINED = (1069.201, 300.185, 229.905)  # chapter 02's block values of the trained NTK, K = 10


@pytest.mark.parametrize("k, per_class", [(10, 1), (3, 4), (10, 6)])
def test_virtual_alignment_is_that_of_the_explicit_block_kernel(k, per_class):
    # Block-constant kernel: the mean of the squares is the square of the mean.
    values = np.array(GAMMA_TRAINED)
    labels = np.repeat(np.arange(k), per_class)
    same = labels[:, None] == labels[None, :]
    mat = np.where(np.eye(k * per_class, dtype=bool), values[0], np.where(same, values[1], values[2]))
    expected = ks.kernel_alignment(mat, same.astype(float))
    got = ks.virtual_batch_alignment(values, values**2, num_classes=k, per_class=per_class)
    assert got == pytest.approx(expected, rel=1e-13)


def test_virtual_alignment_of_the_measured_batch_size_is_the_exact_alignment():
    rng = np.random.default_rng(3)
    k, m = 3, 5
    a = rng.normal(size=(4, k * m, k * m)) + 1.0
    a = a + a.transpose(0, 2, 1)
    labels = np.repeat(np.arange(k), m)
    exact = ks.label_alignment(a, labels)
    assert ks.virtual_label_alignment(a, labels, virtual_per_class=m) == pytest.approx(exact, rel=1e-13)
    assert ks.virtual_label_alignment(a, labels, virtual_per_class=2) != pytest.approx(exact, rel=1e-3)


def _released_code_alignment(kernels, num_classes):
    """1 − ``gamma_dist_to_Y`` of ``compute_metrics`` in the released code's resnet_ntk_collapse.py,
    transcribed with numpy for (C, N, N) kernels on ``num_classes`` classes of m samples each."""
    big_k = num_classes
    m = kernels.shape[-1] // big_k
    k = int(m / 2)
    sample = [slice(c * m, (c + 1) * m) for c in range(big_k)]
    comb_list = list(itertools.combinations(range(big_k), 2))
    gamma_d_vals = np.array([[np.diag(th)[s] for s in sample] for th in kernels])
    gamma_c_vals = np.array([[th[s][:k, s][:, k:] for s in sample] for th in kernels])
    gamma_n_vals = np.array([[th[sample[i]][:k, sample[j]][:, k:] for i, j in comb_list] for th in kernels])
    gamma_d = np.mean(gamma_d_vals)
    y_norm = np.sqrt(k * k * big_k)
    gamma_d_vals_scaled = np.sum(gamma_d_vals, axis=0) / gamma_d
    gamma_c_vals_scaled = np.sum(gamma_c_vals, axis=0) / gamma_d
    gamma_n_vals_scaled = np.sum(gamma_n_vals, axis=0) / gamma_d
    gamma_norm_scaled = np.sqrt(
        np.mean(gamma_d_vals_scaled**2) * k * big_k
        + np.mean(gamma_c_vals_scaled**2) * k * (k - 1) * big_k
        + np.mean(gamma_n_vals_scaled**2) * k * k * big_k * (big_k - 1)
    )
    tr_gamma_y_scaled = np.mean(gamma_d_vals_scaled) * k * big_k + np.mean(gamma_c_vals_scaled) * k * (k - 1) * big_k
    sampled = [v.sum(axis=0) for v in (gamma_d_vals, gamma_c_vals, gamma_n_vals)]
    return tr_gamma_y_scaled / gamma_norm_scaled / y_norm, sampled


def test_virtual_alignment_is_the_released_codes_formula_on_its_sampled_means():
    rng = np.random.default_rng(4)
    c, k, m = 3, 4, 6
    x = rng.normal(size=(c, k * m, 7))
    a = np.einsum("cif,cjf->cij", x, x) + np.kron(np.eye(k), np.ones((m, m)))  # non-constant, PSD
    released, sampled = _released_code_alignment(a, k)
    means = [v.mean() for v in sampled]
    square_means = [np.mean(v**2) for v in sampled]
    got = ks.virtual_batch_alignment(means, square_means, num_classes=k, per_class=m // 2)
    assert got == pytest.approx(released, rel=1e-12)
    # Exact means over all pairs instead of the sampled ones: the same formula, another estimate.
    exact = ks.virtual_label_alignment(a, num_classes=k, per_class=m, virtual_per_class=m // 2)
    assert exact == pytest.approx(released, rel=0.2) and exact != pytest.approx(released, rel=1e-6)


def test_virtual_alignment_depends_on_the_per_class_count():
    values = np.array(GAMMA_TRAINED)
    got = [ks.virtual_batch_alignment(values, values**2, num_classes=10, per_class=k) for k in (3, 6, 12)]
    np.testing.assert_allclose(got, [0.58, 0.50, 0.45], atol=0.005)
    assert got[0] > got[1] > got[2]  # γ_c < γ_d: the diagonal's weight falls as k grows
    # without that gap (γ_c = γ_d, γ_n = 0) the kernel is ∝ YᵀY for every k
    ideal = np.array([2.0, 2.0, 0.0])
    for k in (1, 3, 12):
        assert ks.virtual_batch_alignment(ideal, ideal**2, num_classes=10, per_class=k) == pytest.approx(1.0)


def test_virtual_alignment_bad_inputs_raise_naming_the_parameter():
    ones = np.ones(3)
    with pytest.raises(ValueError, match="means"):
        ks.virtual_batch_alignment(np.ones(2), ones, num_classes=2, per_class=2)
    with pytest.raises(ValueError, match="per_class"):
        ks.virtual_batch_alignment(ones, ones, num_classes=2, per_class=0)
    with pytest.raises(ValueError, match="num_classes"):
        ks.virtual_batch_alignment(ones, ones, num_classes=1, per_class=2)
    with pytest.raises(ValueError, match="per_class"):
        ks.virtual_label_alignment(np.eye(4), num_classes=2, per_class=2, virtual_per_class=0)


# ---------------------------------------------------------------------------------------------
# Block fit of the non-constant part (centred=True)
# ---------------------------------------------------------------------------------------------


def _naive_block_fit_error(kernels, k, m, centred):
    """Σ_c ‖Θ_c − K_c‖_F / Σ_c ‖Θ_c (− mean Θ_c)‖_F, K_c entry by entry from Θ_c's pair means."""
    num = den = 0.0
    for theta in kernels:
        base = theta - theta.mean() if centred else theta
        same = naive_class_indicator(k, m).astype(bool)
        eye = np.eye(k * m, dtype=bool)
        means = [theta[eye].mean(), theta[same & ~eye].mean(), theta[~same].mean()]
        fit = naive_block_kernel(*means, k, m)
        num += np.linalg.norm(theta - fit)
        den += np.linalg.norm(base)
    return num / den


@pytest.mark.parametrize("centred", [False, True])
def test_block_fit_error_matches_the_naive_reference(centred):
    rng = np.random.default_rng(5)
    k, m = 3, 4
    a = rng.normal(size=(2, k * m, k * m)) + np.array([3.0, -1.0])[:, None, None]
    a = a + a.transpose(0, 2, 1)
    got = ks.block_fit_error(a, num_classes=k, per_class=m, centred=centred)
    assert got == pytest.approx(_naive_block_fit_error(a, k, m, centred), rel=1e-12)


def test_centred_block_fit_ignores_each_outputs_constant_background():
    rng = np.random.default_rng(6)
    k, m = 2, 3
    a = rng.normal(size=(2, k * m, k * m))
    a = a + a.transpose(0, 2, 1)
    shifted = a + np.array([50.0, -20.0])[:, None, None]  # a different constant per output
    sizes = {"num_classes": k, "per_class": m}
    centred = ks.block_fit_error(a, **sizes, centred=True)
    assert ks.block_fit_error(shifted, **sizes, centred=True) == pytest.approx(centred, rel=1e-12)
    # ... while the raw error shrinks under the background: it makes the kernel look block-like
    assert ks.block_fit_error(shifted, **sizes) < 0.2 * ks.block_fit_error(a, **sizes)


def test_centred_block_fit_of_block_and_constant_kernels_is_zero():
    k, m = 3, 2
    block = naive_block_kernel(4.0, 1.5, 0.5, k, m)
    assert ks.block_fit_error(block, num_classes=k, per_class=m, centred=True) < 1e-14
    constant = np.full((2, k * m, k * m), 7.0)  # nothing is left once the mean is removed
    assert ks.block_fit_error(constant, num_classes=k, per_class=m, centred=True) == 0.0


def test_texture_without_block_form_is_all_of_the_non_constant_part():
    theta = 10.0 + np.diag([1.0, -1.0, 1.0, -1.0])  # block means 10: the fit is the constant
    assert ks.block_fit_error(theta, num_classes=2, per_class=2, centred=True) == pytest.approx(1.0)
    assert ks.block_fit_error(theta, num_classes=2, per_class=2) == pytest.approx(2 / np.linalg.norm(theta))
