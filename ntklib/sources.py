"""Data sources: where the raw uint8 arrays of MNIST, FashionMNIST and CIFAR-10 come from.

A source gives one split as uint8 images ``(N, S, S, C)`` and int32 labels ``(N,)``; turning them
into the float32 :class:`ntklib.data.Dataset` and into batches is the pipeline's job
(:mod:`ntklib.data`). This module never imports the pipeline, so the import graph stays
``data → sources → idx``.

Two routes:

- **IDX files** (``"mnist"``, ``"fashion_mnist"``): the four original files
  (``train-images-idx3-ubyte.gz`` …, gzipped or not, :data:`IDX_FILES`) read by
  :func:`ntklib.idx.read_idx`, from ``data_dir`` when it holds them. Without ``data_dir``,
  FashionMNIST is read from the Debian package's directory :data:`DEBIAN_DATA_DIRS`
  (``apt-get install dataset-fashion-mnist``) when it is installed (:func:`idx_data_dir`). Both
  give exactly what the tfds route gives: the same uint8 pixels, 28×28×1, the same class indices.
  Only the order of the samples differs (the files' order; tfds stores a shuffled order), which
  changes which samples share a batch, not the protocol.
- **tensorflow-datasets** (``"mnist"``, ``"fashion_mnist"`` otherwise, and ``"cifar10"``): read
  with ``tfds.data_source`` from ArrayRecord files, which needs ``tensorflow-datasets`` but not
  TensorFlow. Preparing the files the first time (download and conversion) does need TensorFlow:
  ``pip install ntklib[prepare]`` and ``tfds build mnist --file_format=array_record`` once
  (``tfds.data_source`` also prepares a missing dataset itself when TensorFlow is installed, as on
  Colab), or copy a prepared ``data_dir``. Without TensorFlow, an unprepared dataset raises
  :class:`DatasetNotPreparedError` with the exact commands. The decoded arrays are cached as
  ``.npz`` beside the tfds files so later runs start in seconds (:func:`load_tfds_split`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ntklib import idx

Split = tuple[np.ndarray, np.ndarray]
"""uint8 images (N, S, S, C) and int32 labels (N,), one split of a dataset."""

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
"""(height, width) of an MNIST or FashionMNIST image in its IDX file."""


class DatasetNotPreparedError(FileNotFoundError):
    """A dataset with neither IDX files nor a prepared (readable) tfds copy in its data directory;
    the message gives the commands that prepare it."""


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


# --- IDX files ---------------------------------------------------------------------------------


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


def load_idx_split(dataset: str, split: str, data_dir: str | Path, num_classes: int = 10) -> Split:
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


# --- tensorflow-datasets -----------------------------------------------------------------------


def _tfds_root(data_dir: str | None) -> Path:
    return Path(data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()


def _not_prepared(name: str, data_dir: str | None, reason: str) -> DatasetNotPreparedError:
    root = _tfds_root(data_dir)
    return DatasetNotPreparedError(
        f"dataset {name!r} is not prepared in {root} ({reason}). Prepare it once (needs TensorFlow and a network): "
        f'python -m pip install -e ".[prepare]" && tfds build {name} --file_format=array_record --data_dir {root}'
    )


def _read_prepared_tfds_split(name: str, split: str, data_dir: str | None) -> Split:
    """:func:`_read_tfds_split`, with a :class:`DatasetNotPreparedError` that gives the commands
    instead of a deep traceback (without TensorFlow, tfds cannot prepare a missing dataset)."""
    try:
        return _read_tfds_split(name, split, data_dir)
    except Exception as error:
        raise _not_prepared(name, data_dir, f"reading it failed with {type(error).__name__}: {error}") from error


def _read_tfds_split(name: str, split: str, data_dir: str | None) -> Split:
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


def load_tfds_split(name: str, split: str, data_dir: str | None = None, *, cache: bool = True) -> Split:
    """uint8 images (N, S, S, C) and int32 labels of one tfds split, read without TensorFlow.

    With ``cache`` the arrays are stored as ``<data_dir>/ntklib_cache/<name>_<split>.npz``
    (written atomically) and read from there next time. ``data_dir=None`` is tfds's default
    (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    """
    cache_file = None
    if cache:
        cache_file = _tfds_root(data_dir) / "ntklib_cache" / f"{name}_{split}.npz"
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


def load_tfds_splits(dataset: str, data_dir: str | None = None, *, cache: bool = True) -> tuple[Split, Split]:
    """The (train, test) splits of ``dataset`` through tfds (:func:`load_tfds_split`).

    Raises:
        DatasetNotPreparedError: for a dataset with an IDX route, the message names every way to
            get it (:func:`how_to_get`), not only tfds's.
    """
    try:
        train, test = (load_tfds_split(dataset, split, data_dir, cache=cache) for split in ("train", "test"))
    except DatasetNotPreparedError as err:
        if dataset not in IDX_DATASETS:
            raise
        where = f" in {data_dir}" if data_dir is not None else ""
        raise DatasetNotPreparedError(
            f"{dataset}: no IDX files and no prepared tfds dataset{where}: {how_to_get(dataset)}. {err}"
        ) from err
    return train, test
