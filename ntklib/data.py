"""Input pipeline: datasets as in-memory arrays and exactly balanced, class-sorted batches (paper §6).

Every dataset is held as NHWC float32 arrays with pixels in [0, 1] (pixels / 255; the digits'
0–16 grey levels / 16) and integer labels. Training batches follow the paper's protocol:

- every batch holds exactly ``batch_size / K`` samples of each class (12 of 10 classes → 120);
- an epoch uses ``min-class-count`` samples of every class (the rest of the larger classes is
  left out that epoch), split into ``min-class-count // (batch_size / K)`` batches;
- the shuffle of epoch ``e`` depends only on ``(seed, e)``, so a resumed run sees the same batches;
- inside a batch the samples are *sorted by class* (class k owns rows k·m … (k+1)·m − 1), the
  order the NTK statistics and block kernels (:mod:`ntklib.block_kernel`) expect.

Datasets:

- ``"digits"``: scikit-learn's 8×8 handwritten digits (1 797 real images, shipped with the
  package, no download) with a deterministic stratified 75/25 train/test split — the default of
  the CPU book.
- ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``: read with ``tfds.data_source`` from
  ArrayRecord files, which needs ``tensorflow-datasets`` but not TensorFlow. Preparing the files
  the first time (download and conversion) does need TensorFlow: ``pip install ntklib[prepare]``
  and ``tfds build mnist --file_format=array_record`` once (``tfds.data_source`` also prepares a
  missing dataset itself when TensorFlow is installed, as on Colab), or copy a prepared ``data_dir``.
  Without TensorFlow, an unprepared dataset raises :class:`DatasetNotPreparedError` with the exact
  commands. The decoded arrays are cached as ``.npz`` beside the tfds files so later runs start in
  seconds.

Image sizes: ``image_size=None`` keeps the native size (28×28 for MNIST/FashionMNIST, 32×32 for
CIFAR-10, 8×8 for digits); any other size resizes bilinearly. The paper resizes MNIST and
FashionMNIST to 32×32 for VGG11 (:func:`default_image_size`); ResNet20 and DenseNet40 see the
native 28×28 (their global average pool makes d independent of the input size).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")
"""Datasets :func:`load_dataset` knows."""

_TFDS_NATIVE_SIZE = {"mnist": 28, "fashion_mnist": 28, "cifar10": 32}


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and test arrays of one dataset.

    Attributes:
        train_images: (N_train, S, S, C) float32 in [0, 1].
        train_labels: (N_train,) int32 in [0, K).
        test_images: (N_test, S, S, C) float32.
        test_labels: (N_test,) int32.
        num_classes: K.
        name: the dataset's name.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    name: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(S, S, C) of one image."""
        return tuple(self.train_images.shape[1:])

    def min_class_count(self) -> int:
        """The size of the smallest class of the training set: samples per class per epoch."""
        return int(np.bincount(self.train_labels, minlength=self.num_classes).min())


def check_dataset(dataset: str) -> None:
    """Raise a ValueError naming ``dataset`` if it is not one of :data:`DATASETS`."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid choices: {', '.join(DATASETS)}")


def default_image_size(arch: str, dataset: str) -> int | None:
    """The paper's input size: 32×32 for VGG on MNIST/FashionMNIST, else native (None)."""
    if arch.startswith("vgg") and dataset in ("mnist", "fashion_mnist"):
        return 32
    return None


def resize_images(images: np.ndarray, size: int, chunk: int = 4096) -> np.ndarray:
    """Bilinear resize of (N, S, S, C) images to (N, size, size, C), float32."""
    if images.shape[1] == size and images.shape[2] == size:
        return images.astype(np.float32)
    import jax

    out = []
    for i in range(0, len(images), chunk):
        part = images[i : i + chunk]
        out.append(np.asarray(jax.image.resize(part, (len(part), size, size, part.shape[3]), "bilinear")))
    return np.concatenate(out).astype(np.float32)


def load_digits_dataset(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's 8×8 digits, grey levels / 16, stratified deterministic train/test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return Dataset(x_tr, y_tr, x_te, y_te, 10, "digits")


class DatasetNotPreparedError(RuntimeError):
    """A tfds dataset that is not prepared (or cannot be read) in its data directory; the message
    gives the commands that prepare it."""


def _tfds_root(data_dir: str | None) -> Path:
    return Path(data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()


def _not_prepared(name: str, data_dir: str | None, reason: str) -> DatasetNotPreparedError:
    root = _tfds_root(data_dir)
    return DatasetNotPreparedError(
        f"dataset {name!r} is not prepared in {root} ({reason}). Prepare it once (needs TensorFlow and a network): "
        f'python -m pip install -e ".[prepare]" && tfds build {name} --file_format=array_record --data_dir {root}'
    )


def _read_prepared_tfds_split(name: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_read_tfds_split`, with a :class:`DatasetNotPreparedError` that gives the commands
    instead of a deep traceback (without TensorFlow, tfds cannot prepare a missing dataset)."""
    try:
        return _read_tfds_split(name, split, data_dir)
    except Exception as error:
        raise _not_prepared(name, data_dir, f"reading it failed with {type(error).__name__}: {error}") from error


def _read_tfds_split(name: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    source = tfds.data_source(name, split=split, data_dir=data_dir)
    n = len(source)
    first = source[0]
    images = np.empty((n, *np.shape(first["image"])), np.uint8)
    labels = np.empty((n,), np.int32)
    for i in range(n):
        record = first if i == 0 else source[i]
        images[i] = record["image"]
        labels[i] = record["label"]
    return images, labels


def load_tfds_split(
    name: str, split: str, data_dir: str | None = None, *, cache: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, S, S, C) and int32 labels of one tfds split, read without TensorFlow.

    With ``cache`` the arrays are stored as ``<data_dir>/ntklib_cache/<name>_<split>.npz``
    (written atomically) and read from there next time. ``data_dir=None`` is tfds's default
    (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    """
    cache_file = None
    if cache:
        root = Path(data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()
        cache_file = root / "ntklib_cache" / f"{name}_{split}.npz"
        if cache_file.exists():
            with np.load(cache_file) as f:
                return f["images"], f["labels"]
    images, labels = _read_prepared_tfds_split(name, split, data_dir)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, images=images, labels=labels)
        os.replace(tmp, cache_file)
    return images, labels


def load_dataset(
    dataset: str, *, data_dir: str | None = None, image_size: int | None = None, cache: bool = True
) -> Dataset:
    """Load ``dataset`` (one of :data:`DATASETS`) as float32 NHWC arrays in [0, 1].

    Args:
        dataset: ``"digits"``, ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
        data_dir: the tfds data directory (ignored for digits).
        image_size: resize (bilinear) to ``image_size × image_size``; None keeps the native size.
        cache: cache decoded tfds arrays as .npz (see :func:`load_tfds_split`).

    Raises:
        ValueError: naming ``dataset`` if it is unknown.
    """
    check_dataset(dataset)
    if dataset == "digits":
        ds = load_digits_dataset()
    else:
        (x_tr, y_tr), (x_te, y_te) = (
            load_tfds_split(dataset, split, data_dir, cache=cache) for split in ("train", "test")
        )
        ds = Dataset(
            (x_tr / np.float32(255)).astype(np.float32),
            y_tr,
            (x_te / np.float32(255)).astype(np.float32),
            y_te,
            10,
            dataset,
        )
    if image_size is not None and image_size != ds.train_images.shape[1]:
        ds = dataclasses.replace(
            ds,
            train_images=resize_images(ds.train_images, image_size),
            test_images=resize_images(ds.test_images, image_size),
        )
    return ds


def per_class_batch(batch_size: int, num_classes: int) -> int:
    """m = batch_size / K; raises a ValueError naming ``batch_size`` unless K divides it."""
    if batch_size <= 0 or batch_size % num_classes:
        raise ValueError(
            f"batch_size must be a positive multiple of the number of classes ({num_classes}) so that "
            f"every batch is exactly balanced; got batch_size={batch_size}"
        )
    return batch_size // num_classes


def steps_per_epoch(labels: np.ndarray, *, batch_size: int, num_classes: int) -> int:
    """min-class-count // (batch_size / K): the number of balanced batches in one epoch."""
    m = per_class_batch(batch_size, num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    return int(counts.min()) // m


def balanced_batches(labels: np.ndarray, *, batch_size: int, num_classes: int, seed: int, epoch: int) -> np.ndarray:
    """Indices of the exactly balanced, class-sorted batches of one epoch.

    Each class is permuted with a generator seeded by ``(seed, epoch)`` and its first
    ``min-class-count`` samples are dealt into ``steps`` batches of ``m = batch_size / K``.

    Args:
        labels: (N,) integer labels in [0, K).
        batch_size: K·m.
        num_classes: K.
        seed, epoch: the shuffle is a deterministic function of both.

    Returns:
        (steps, batch_size) int32 indices into ``labels``; row s is batch s, its entries
        k·m … (k+1)·m − 1 are samples of class k.

    Raises:
        ValueError: naming ``batch_size`` if K does not divide it or a class has fewer than m samples.
    """
    m = per_class_batch(batch_size, num_classes)
    labels = np.asarray(labels)
    steps = steps_per_epoch(labels, batch_size=batch_size, num_classes=num_classes)
    if steps == 0:
        raise ValueError(
            f"batch_size={batch_size} needs {m} samples of every class, but the smallest class has "
            f"{int(np.bincount(labels, minlength=num_classes).min())}"
        )
    rng = np.random.default_rng([seed, epoch])
    per_class = [rng.permutation(np.flatnonzero(labels == k))[: steps * m] for k in range(num_classes)]
    # (K, steps, m) → (steps, K, m) → (steps, K·m): class-sorted rows
    batches = np.stack([p.reshape(steps, m) for p in per_class]).transpose(1, 0, 2)
    return batches.reshape(steps, batch_size).astype(np.int32)
