"""Input pipeline: datasets (digits embedded, tfds mocked), exactly balanced class-sorted batches."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ntklib.data import (
    DATASETS,
    balanced_batches,
    default_image_size,
    load_dataset,
    per_class_batch,
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
