"""Input pipeline: datasets (digits embedded, tfds mocked), exactly balanced class-sorted batches, and
the step-imbalanced subset with its proportional batches."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ntklib.data import (
    DATASETS,
    balanced_batches,
    batch_class_counts,
    default_image_size,
    epoch_batches,
    imbalanced_class_counts,
    imbalanced_indices,
    load_dataset,
    per_class_batch,
    proportional_batch_counts,
    steps_per_epoch,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits(digits):
    assert digits.train_images.shape[1:] == (8, 8, 1) and digits.train_images.dtype == np.float32
    assert len(digits.train_labels) + len(digits.test_labels) == 1797
    assert 0.0 <= digits.train_images.min() and digits.train_images.max() <= 1.0
    assert digits.num_classes == 10
    # stratified: every class in the test set in proportion (each has 174–183 samples in total)
    assert np.all(np.bincount(digits.test_labels, minlength=10) >= 43)
    again = load_dataset("digits")
    np.testing.assert_array_equal(again.train_labels, digits.train_labels)
    np.testing.assert_array_equal(again.test_images, digits.test_images)


def test_digits_resized():
    ds = load_dataset("digits", image_size=16)
    assert ds.train_images.shape[1:] == (16, 16, 1) and ds.test_images.shape[1:] == (16, 16, 1)
    assert ds.train_images.dtype == np.float32


def test_balanced_batches_protocol(digits):
    labels = digits.train_labels
    idx = balanced_batches(labels, batch_size=120, num_classes=10, seed=0, epoch=1)
    steps = digits.min_class_count() // 12
    assert idx.shape == (steps, 120) == (steps_per_epoch(labels, batch_size=120, num_classes=10), 120)
    expected = np.repeat(np.arange(10), 12)  # class-sorted, exactly 12 of every class
    for row in idx:
        np.testing.assert_array_equal(labels[row], expected)
    assert len(np.unique(idx)) == idx.size  # no sample twice in one epoch
    # deterministic in (seed, epoch), different across epochs and seeds
    np.testing.assert_array_equal(idx, balanced_batches(labels, batch_size=120, num_classes=10, seed=0, epoch=1))
    assert not np.array_equal(idx, balanced_batches(labels, batch_size=120, num_classes=10, seed=0, epoch=2))
    assert not np.array_equal(idx, balanced_batches(labels, batch_size=120, num_classes=10, seed=1, epoch=1))


def test_batch_size_must_be_divisible():
    with pytest.raises(ValueError, match="batch_size"):
        per_class_batch(125, 10)
    with pytest.raises(ValueError, match="batch_size"):
        balanced_batches(np.repeat(np.arange(10), 3), batch_size=125, num_classes=10, seed=0, epoch=0)
    with pytest.raises(ValueError, match="batch_size=40"):  # a class smaller than m
        balanced_batches(np.repeat(np.arange(10), 3), batch_size=40, num_classes=10, seed=0, epoch=0)


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"dataset 'svhn'.*digits, mnist, fashion_mnist, cifar10"):
        load_dataset("svhn")
    assert "cifar10" in DATASETS


def test_default_image_size():
    assert default_image_size("vgg11", "mnist") == 32
    assert default_image_size("vgg11", "fashion_mnist") == 32
    assert default_image_size("resnet20", "mnist") is None
    assert default_image_size("vgg16", "cifar10") is None


@pytest.mark.parametrize(
    "name, image_size, shape",
    [("mnist", None, (28, 28, 1)), ("fashion_mnist", 32, (32, 32, 1)), ("cifar10", None, (32, 32, 3))],
)
def test_tfds_datasets_mocked(tmp_path, name, image_size, shape):
    """The tfds path reads ArrayRecord data sources (mocked: nothing downloads, no TensorFlow)."""
    with tfds.testing.mock_data(num_examples=60, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = load_dataset(name, data_dir=str(tmp_path), image_size=image_size)
    assert ds.train_images.shape == (60, *shape) and ds.test_images.shape == (60, *shape)
    assert ds.train_images.dtype == np.float32
    assert 0.0 <= ds.train_images.min() and ds.train_images.max() <= 1.0
    assert ds.train_labels.dtype == np.int32 and ds.num_classes == 10
    # the decoded arrays were cached; a second load reads the cache, without tfds
    assert (tmp_path / "ntklib_cache" / f"{name}_train.npz").exists()
    cached = load_dataset(name, data_dir=str(tmp_path), image_size=image_size)
    np.testing.assert_array_equal(cached.train_images, ds.train_images)


# ---------------------------------------------------------------------------------------------
# Imbalance
# ---------------------------------------------------------------------------------------------


def balanced_batches_before(labels, *, batch_size, num_classes, seed, epoch):
    """balanced_batches as it was before the imbalance option (commit 7178787), the reference."""
    m = batch_size // num_classes
    steps = int(np.bincount(labels, minlength=num_classes).min()) // m
    rng = np.random.default_rng([seed, epoch])
    per_class = [rng.permutation(np.flatnonzero(labels == k))[: steps * m] for k in range(num_classes)]
    batches = np.stack([p.reshape(steps, m) for p in per_class]).transpose(1, 0, 2)
    return batches.reshape(steps, batch_size).astype(np.int32)


def hamilton(counts, batch_size):
    """Largest remainders by a loop over seats, with fractions: the reference apportionment."""
    from fractions import Fraction

    quotas = [Fraction(batch_size * n, sum(counts)) for n in counts]
    seats = [int(q) for q in quotas]
    for _ in range(batch_size - sum(seats)):
        best = max(
            range(len(counts)),
            key=lambda k: (quotas[k] - int(quotas[k]), -k) if seats[k] == int(quotas[k]) else (-1, 0),
        )
        seats[best] += 1
    return seats


@pytest.mark.parametrize(("batch_size", "seed", "epoch"), [(120, 0, 1), (40, 3, 7), (10, 1, 0)])
def test_imbalance_one_gives_todays_batches_exactly(digits, batch_size, seed, epoch):
    labels = digits.train_labels
    before = balanced_batches_before(labels, batch_size=batch_size, num_classes=10, seed=seed, epoch=epoch)
    for imbalance in (1, 1.0):
        now = epoch_batches(labels, batch_size=batch_size, num_classes=10, seed=seed, epoch=epoch, imbalance=imbalance)
        np.testing.assert_array_equal(now, before)
        assert now.dtype == np.int32
    balanced = balanced_batches(labels, batch_size=batch_size, num_classes=10, seed=seed, epoch=epoch)
    np.testing.assert_array_equal(balanced, before)
    assert steps_per_epoch(labels, batch_size=batch_size, num_classes=10, imbalance=1.0) == len(before)
    assert digits.imbalanced(1.0) is not None and len(digits.imbalanced(1.0).train_labels) == len(labels)


def test_step_imbalance_counts_and_subset(digits):
    counts = np.bincount(digits.train_labels, minlength=10)  # 131 … 137
    assert imbalanced_class_counts(counts, 4.0).tolist() == [131] * 5 + [32] * 5
    assert imbalanced_class_counts(counts, 1.2).tolist() == [131] * 5 + [109] * 5
    assert imbalanced_class_counts([120, 130, 125], 1.2).tolist() == [120, 120, 100]  # ⌈K/2⌉ = 2 majority
    np.testing.assert_array_equal(imbalanced_class_counts(counts, 1.0), counts)
    keep = imbalanced_indices(digits.train_labels, num_classes=10, imbalance=4.0)
    expected = np.sort(
        np.concatenate([np.flatnonzero(digits.train_labels == k)[: 131 if k < 5 else 32] for k in range(10)])
    )
    np.testing.assert_array_equal(keep, expected)  # the first samples of each class, deterministic
    sub = digits.imbalanced(4.0)
    assert np.bincount(sub.train_labels).tolist() == [131] * 5 + [32] * 5
    np.testing.assert_array_equal(sub.train_images, digits.train_images[keep])
    np.testing.assert_array_equal(sub.test_images, digits.test_images)  # the test set is never subsampled
    np.testing.assert_array_equal(sub.test_labels, digits.test_labels)


@pytest.mark.parametrize(
    ("counts", "batch_size"),
    [
        ([131, 131, 32, 32], 20),
        ([131] * 5 + [32] * 5, 40),
        ([131] * 5 + [32] * 5, 100),
        ([7, 5, 3, 3, 3], 9),
        ([10, 10, 10], 7),
        ([12, 12, 12, 12], 8),
    ],
)
def test_proportional_batch_counts_are_largest_remainders(counts, batch_size):
    per_batch = proportional_batch_counts(counts, batch_size)
    assert per_batch.tolist() == hamilton(counts, batch_size)
    assert per_batch.sum() == batch_size
    quotas = batch_size * np.asarray(counts) / sum(counts)
    assert np.all(np.abs(per_batch - quotas) < 1)


def test_imbalanced_batches_keep_the_proportions(digits):
    labels = digits.train_labels
    kwargs = dict(batch_size=40, num_classes=10, imbalance=4.0)
    per_batch = batch_class_counts(labels, **kwargs)
    assert per_batch.tolist() == [6] * 5 + [2] * 5  # q = 6.43, 1.57: the five larger remainders are the minority's
    idx = epoch_batches(labels, seed=0, epoch=1, **kwargs)
    assert idx.shape == (16, 40) == (steps_per_epoch(labels, **kwargs), 40)  # min(131 // 6, 32 // 2)
    expected = np.repeat(np.arange(10), per_batch)
    for row in idx:
        np.testing.assert_array_equal(labels[row], expected)  # class-sorted, b_k of every class
    assert len(np.unique(idx)) == idx.size
    assert set(idx.ravel()) <= set(imbalanced_indices(labels, num_classes=10, imbalance=4.0))
    np.testing.assert_array_equal(idx, epoch_batches(labels, seed=0, epoch=1, **kwargs))
    assert not np.array_equal(idx, epoch_batches(labels, seed=0, epoch=2, **kwargs))
    assert not np.array_equal(idx, epoch_batches(labels, seed=1, epoch=1, **kwargs))
    # over the epochs every sample of the subset is drawn
    seen = np.unique(np.concatenate([epoch_batches(labels, seed=0, epoch=e, **kwargs).ravel() for e in range(30)]))
    np.testing.assert_array_equal(seen, imbalanced_indices(labels, num_classes=10, imbalance=4.0))
    # no multiple of K is needed: the first four classes give counts 133, 133, 33, 33, q = 8.41, 8.41, 2.09,
    # 2.09, and the one seat left goes to the tie's lower class
    four = labels[labels < 4]
    assert batch_class_counts(four, batch_size=21, num_classes=4, imbalance=4.0).tolist() == [9, 8, 2, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"imbalance": 0.5}, r"imbalance must be a finite number >= 1, got 0.5"),
        ({"imbalance": float("inf")}, r"imbalance must be a finite number >= 1"),
        ({"imbalance": 200.0}, r"imbalance=200.0 leaves the minority classes"),
        ({"imbalance": 40.0, "batch_size": 20}, r"batch_size=20 gives class 5 \(3 of 670 samples\) no sample"),
        ({"imbalance": 4.0, "batch_size": 900}, r"batch_size=900 needs 145 samples of class 0 per batch"),
    ],
)
def test_imbalance_errors_name_the_parameter(digits, kwargs, message):
    kwargs = {"batch_size": 40, "num_classes": 10, "seed": 0, "epoch": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        epoch_batches(digits.train_labels, **kwargs)
