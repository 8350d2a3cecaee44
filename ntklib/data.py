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
- ``"mnist"``, ``"fashion_mnist"``: read from the four original IDX files
  (``train-images-idx3-ubyte.gz`` …, gzipped or not; :mod:`ntklib.idx`) when ``data_dir`` holds
  them. Without ``data_dir``, FashionMNIST is read from the Debian package's directory
  :data:`DEBIAN_DATA_DIRS` (``apt-get install dataset-fashion-mnist``) when it is installed. Both
  give exactly what the tfds route gives: the same uint8 pixels / 255 as float32, 28×28×1, the same
  class indices. Only the order of the samples differs (the files' order; tfds stores a shuffled
  order), which changes which samples share a batch, not the protocol.
- ``"mnist"``, ``"fashion_mnist"`` otherwise, and ``"cifar10"``: read with ``tfds.data_source`` from
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

from ntklib import idx

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")
"""Datasets :func:`load_dataset` knows."""

_TFDS_NATIVE_SIZE = {"mnist": 28, "fashion_mnist": 28, "cifar10": 32}

IDX_DATASETS = ("mnist", "fashion_mnist")
"""Datasets that can be read from their original IDX files."""

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""(images, labels) file names of each split, as published; each may end in ``.gz``."""

DEBIAN_DATA_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}
"""Where a Debian package installs a dataset's IDX files (``apt-get install dataset-fashion-mnist``)."""

IDX_IMAGE_SHAPE = (28, 28)


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
        source: where it was read from (a directory of IDX files, ``"tfds"``, ``"scikit-learn"``).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    name: str
    source: str | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(S, S, C) of one image."""
        return tuple(self.train_images.shape[1:])

    def min_class_count(self) -> int:
        """The size of the smallest class of the training set: samples per class per epoch."""
        return int(np.bincount(self.train_labels, minlength=self.num_classes).min())

    def subset(self, train_per_class: int, test_per_class: int | None = None) -> Dataset:
        """The first ``train_per_class`` (and ``test_per_class``; None: the whole test set) samples of
        every class, in the dataset's order: a balanced subset for CPU-scale runs.

        Raises:
            ValueError: naming the argument if a class has fewer samples than asked for.
        """
        train = first_per_class(self.train_labels, train_per_class, self.num_classes, "train_per_class")
        test = (
            np.arange(len(self.test_labels))
            if test_per_class is None
            else first_per_class(self.test_labels, test_per_class, self.num_classes, "test_per_class")
        )
        return dataclasses.replace(
            self,
            train_images=self.train_images[train],
            train_labels=self.train_labels[train],
            test_images=self.test_images[test],
            test_labels=self.test_labels[test],
        )


def first_per_class(labels: np.ndarray, per_class: int, num_classes: int, name: str = "per_class") -> np.ndarray:
    """Sorted indices of the first ``per_class`` samples of each of ``num_classes`` classes.

    Raises:
        ValueError: naming ``name`` if it is < 1 or a class has fewer samples.
    """
    counts = np.bincount(labels, minlength=num_classes)
    if per_class < 1 or counts.min() < per_class:
        raise ValueError(f"{name}={per_class} must be in [1, {int(counts.min())}] (the smallest class)")
    return np.sort(np.concatenate([np.flatnonzero(labels == k)[:per_class] for k in range(num_classes)]))


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
    return Dataset(x_tr, y_tr, x_te, y_te, 10, "digits", "scikit-learn")


class DatasetNotPreparedError(FileNotFoundError):
    """A dataset with neither IDX files nor a prepared (readable) tfds copy in its data directory;
    the message gives the commands that prepare it."""


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


def how_to_get(dataset: str) -> str:
    """One sentence on how to obtain ``dataset`` without a download at run time."""
    tfds_route = (
        f"or prepare it for tfds once (pip install 'ntklib[prepare]'; tfds build {dataset} "
        f"--file_format=array_record) and pass that data_dir"
    )
    if dataset == "fashion_mnist":
        return (
            f"install the Debian package (apt-get install dataset-fashion-mnist, which puts the four IDX "
            f"files in {DEBIAN_DATA_DIRS['fashion_mnist']}), {tfds_route}"
        )
    if dataset in IDX_DATASETS:
        names = ", ".join(f"{n}.gz" for pair in IDX_FILES.values() for n in pair)
        return f"copy the original IDX files ({names}) into one directory and pass it as data_dir, {tfds_route}"
    return tfds_route.removeprefix("or ")


def _idx_path(data_dir: Path, stem: str) -> Path | None:
    """``stem.gz`` or ``stem`` in ``data_dir`` (also the ``train-images.idx3-ubyte`` spelling), or None."""
    variants = (stem, stem.replace("-idx", ".idx"))
    for name in (f"{v}{suffix}" for v in variants for suffix in (".gz", "")):
        if (data_dir / name).is_file():
            return data_dir / name
    return None


def has_idx_files(data_dir: str | Path | None) -> bool:
    """Whether ``data_dir`` holds at least one of the IDX files of :data:`IDX_FILES`."""
    if data_dir is None or not Path(data_dir).expanduser().is_dir():
        return False
    root = Path(data_dir).expanduser()
    return any(_idx_path(root, stem) is not None for pair in IDX_FILES.values() for stem in pair)


def idx_data_dir(dataset: str, data_dir: str | Path | None) -> Path | None:
    """The directory to read ``dataset``'s IDX files from, or None for the tfds route.

    ``data_dir`` if it holds IDX files; without ``data_dir``, the Debian package's directory
    (:data:`DEBIAN_DATA_DIRS`) if it holds them; else None.
    """
    if dataset not in IDX_DATASETS:
        return None
    candidate = data_dir if data_dir is not None else DEBIAN_DATA_DIRS.get(dataset)
    if candidate is None or not has_idx_files(candidate):
        return None
    return Path(candidate).expanduser()


def _existing_idx_path(root: Path, stem: str, dataset: str, split: str) -> Path:
    path = _idx_path(root, stem)
    if path is None:
        raise FileNotFoundError(
            f"{dataset} {split} split: {root / stem}.gz (or {stem}) is missing; {how_to_get(dataset)}"
        )
    return path


def load_idx_split(
    dataset: str, split: str, data_dir: str | Path, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28, 1) and int32 labels (N,) of one split from IDX files in ``data_dir``.

    Raises:
        FileNotFoundError: naming the missing file and how to get it (:func:`how_to_get`).
        ntklib.idx.IdxError: naming the file if it is corrupt, truncated, of the wrong kind or
            shape, if images and labels differ in number, or a label is not in [0, num_classes).
    """
    root = Path(data_dir).expanduser()
    image_stem, label_stem = IDX_FILES[split]
    image_path, label_path = (_existing_idx_path(root, stem, dataset, split) for stem in (image_stem, label_stem))
    images = idx.read_idx(image_path, ndim=3, shape=(None, *IDX_IMAGE_SHAPE))
    labels = idx.read_idx(label_path, ndim=1)
    if len(images) != len(labels):
        raise idx.IdxError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels; "
            f"the two files of one split must match ({how_to_get(dataset)})"
        )
    if len(labels) and labels.max() >= num_classes:
        raise idx.IdxError(f"{label_path}: label {int(labels.max())} is not in [0, {num_classes})")
    return images[..., None], labels.astype(np.int32)


def _from_uint8(name: str, train: tuple, test: tuple, source: str) -> Dataset:
    """A :class:`Dataset` from uint8 (N, S, S, C) images and integer labels: pixels / 255, float32."""
    (x_tr, y_tr), (x_te, y_te) = train, test
    return Dataset(
        (x_tr / np.float32(255)).astype(np.float32),
        np.asarray(y_tr, np.int32),
        (x_te / np.float32(255)).astype(np.float32),
        np.asarray(y_te, np.int32),
        10,
        name,
        source,
    )


def _load_tfds(dataset: str, data_dir: str | None, cache: bool) -> Dataset:
    try:
        train, test = (load_tfds_split(dataset, split, data_dir, cache=cache) for split in ("train", "test"))
    except DatasetNotPreparedError as err:  # say every way to get the data, not only tfds's
        if dataset not in IDX_DATASETS:
            raise
        where = f" in {data_dir}" if data_dir is not None else ""
        raise DatasetNotPreparedError(
            f"{dataset}: no IDX files and no prepared tfds dataset{where}: {how_to_get(dataset)}. {err}"
        ) from err
    return _from_uint8(dataset, train, test, source="tfds")


def load_dataset(
    dataset: str, *, data_dir: str | None = None, image_size: int | None = None, cache: bool = True
) -> Dataset:
    """Load ``dataset`` (one of :data:`DATASETS`) as float32 NHWC arrays in [0, 1].

    Args:
        dataset: ``"digits"``, ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
        data_dir: a directory of IDX files (MNIST, FashionMNIST) or the tfds data directory
            (ignored for digits). None: FashionMNIST from the Debian package's directory if it is
            installed, else tfds's default directory.
        image_size: resize (bilinear) to ``image_size × image_size``; None keeps the native size.
        cache: cache decoded tfds arrays as .npz (see :func:`load_tfds_split`).

    Raises:
        ValueError: naming ``dataset`` if it is unknown.
        FileNotFoundError: naming the missing file and how to get it.
        ntklib.idx.IdxError: naming an IDX file that is corrupt, truncated or mismatched.
    """
    check_dataset(dataset)
    idx_dir = idx_data_dir(dataset, data_dir)
    if dataset == "digits":
        ds = load_digits_dataset()
    elif idx_dir is not None:
        train, test = (load_idx_split(dataset, split, idx_dir) for split in ("train", "test"))
        ds = _from_uint8(dataset, train, test, source=str(idx_dir))
    else:
        ds = _load_tfds(dataset, data_dir, cache)
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
