"""Block statistics of kernel matrices: exact recovery, alignment, fit error, input validation."""

import numpy as np
import pytest

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
