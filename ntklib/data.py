"""Input pipeline: datasets as in-memory arrays and exactly balanced, class-sorted batches (paper §6).

Every dataset is held as NHWC float32 arrays with pixels in [0, 1] (pixels / 255; the digits'
0–16 grey levels / 16) and integer labels. Training batches follow the paper's protocol:

- every batch holds exactly ``batch_size / K`` samples of each class (12 of 10 classes → 120);
- an epoch uses ``min-class-count`` samples of every class (the rest of the larger classes is
  left out that epoch), split into ``min-class-count // (batch_size / K)`` batches;
- the shuffle of epoch ``e`` depends only on ``(seed, e)``, so a resumed run sees the same batches;
- inside a batch the samples are *sorted by class* (class k owns rows k·m … (k+1)·m − 1), the
  order the NTK statistics and block kernels (:mod:`ntklib.block_kernel`) expect.

Beyond the paper, an imbalance ratio ρ ≥ 1 (``TrainConfig.imbalance``, :func:`epoch_batches`) trains
on a fixed *step-imbalanced* subset of the training set, the profile of Fang et al. (PNAS 2021):
the first ⌈K/2⌉ classes (the majority) keep n_max samples, the other ⌊K/2⌋ (the minority)
⌊n_max / ρ⌋, where n_max is the smallest class count and every class keeps its first samples in the
dataset's order (:func:`imbalanced_class_counts`, :func:`imbalanced_indices`); the test set is never
subsampled. Every batch then holds b_k samples of class k, proportional to the subset's class sizes
and rounded by largest remainders so that Σ b_k = batch_size (:func:`proportional_batch_counts`),
still sorted by class and reshuffled by ``(seed, epoch)``. ρ = 1 is the protocol above, unchanged.

Datasets:

- ``"digits"``: scikit-learn's 8×8 handwritten digits (1 797 real images, shipped with the
  package, no download) with a deterministic stratified 75/25 train/test split — the default of
  the CPU book.
- ``"mnist"``, ``"fashion_mnist"``: from their original IDX files when ``data_dir`` (or, for
  FashionMNIST, the Debian package's directory) holds them, else through tensorflow-datasets;
  ``"cifar10"`` through tensorflow-datasets. Where the uint8 arrays come from, and how to get them
  without a download at run time, is :mod:`ntklib.sources`; here they become pixels / 255 in
  float32. Both routes give the same arrays up to the order of the samples.

Image sizes: ``image_size=None`` keeps the native size (28×28 for MNIST/FashionMNIST, 32×32 for
CIFAR-10, 8×8 for digits); any other size resizes bilinearly. The paper resizes MNIST and
FashionMNIST to 32×32 for VGG11 (:func:`default_image_size`); ResNet20 and DenseNet40 see the
native 28×28 (their global average pool makes d independent of the input size).
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np
from numpy.typing import ArrayLike

from ntklib import sources

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")
"""Datasets :func:`load_dataset` knows."""


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

    def imbalanced(self, imbalance: float) -> Dataset:
        """The step-imbalanced training set of ratio ``imbalance`` (:func:`imbalanced_indices`); the
        test set is kept whole. ``imbalance=1`` returns the dataset itself.

        Raises:
            ValueError: naming ``imbalance`` if it is below 1 or leaves a minority class empty.
        """
        keep = imbalanced_indices(self.train_labels, num_classes=self.num_classes, imbalance=imbalance)
        return dataclasses.replace(self, train_images=self.train_images[keep], train_labels=self.train_labels[keep])


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


def _from_uint8(name: str, train: sources.Split, test: sources.Split, source: str) -> Dataset:
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


def load_dataset(
    dataset: str, *, data_dir: str | None = None, image_size: int | None = None, cache: bool = True
) -> Dataset:
    """Load ``dataset`` (one of :data:`DATASETS`) as float32 NHWC arrays in [0, 1].

    Args:
        dataset: ``"digits"``, ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
        data_dir: a directory of IDX files (MNIST, FashionMNIST) or the tfds data directory
            (ignored for digits). None: FashionMNIST from the Debian package's directory if it is
            installed, else tfds's default directory (:func:`ntklib.sources.idx_data_dir`).
        image_size: resize (bilinear) to ``image_size × image_size``; None keeps the native size.
        cache: cache decoded tfds arrays as .npz (see :func:`ntklib.sources.load_tfds_split`).

    Raises:
        ValueError: naming ``dataset`` if it is unknown.
        FileNotFoundError: naming the missing file and how to get it
            (:class:`ntklib.sources.DatasetNotPreparedError` when tfds has no prepared copy).
        ntklib.idx.IdxError: naming an IDX file that is corrupt, truncated or mismatched.
    """
    check_dataset(dataset)
    idx_dir = sources.idx_data_dir(dataset, data_dir)
    if dataset == "digits":
        ds = load_digits_dataset()
    elif idx_dir is not None:
        train, test = (sources.load_idx_split(dataset, split, idx_dir) for split in ("train", "test"))
        ds = _from_uint8(dataset, train, test, source=str(idx_dir))
    else:
        train, test = sources.load_tfds_splits(dataset, data_dir, cache=cache)
        ds = _from_uint8(dataset, train, test, source="tfds")
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


def steps_per_epoch(labels: np.ndarray, *, batch_size: int, num_classes: int, imbalance: float = 1.0) -> int:
    """The number of batches in one epoch: min-class-count // (batch_size / K) for balanced batches,
    min_k ⌊n_k / b_k⌋ over the step-imbalanced subset's counts n_k under ``imbalance`` > 1
    (:func:`batch_class_counts`)."""
    pools = class_pools(labels, num_classes=num_classes, imbalance=imbalance)
    per_batch = batch_class_counts(labels, batch_size=batch_size, num_classes=num_classes, imbalance=imbalance)
    return min(len(pool) // int(b) for pool, b in zip(pools, per_batch, strict=True))


def check_imbalance(imbalance: float) -> None:
    """Raise a ValueError naming ``imbalance`` unless it is a finite real number ≥ 1."""
    if isinstance(imbalance, bool) or not isinstance(imbalance, numbers.Real) or not 1 <= imbalance < math.inf:
        raise ValueError(f"imbalance must be a finite number >= 1, got {imbalance!r}")


def imbalanced_class_counts(class_counts: ArrayLike, imbalance: float) -> np.ndarray:
    """Per-class sizes of the step-imbalanced training set of ratio ρ = ``imbalance`` (Fang et al.,
    PNAS 2021, step imbalance), from the dataset's class counts c_k, k = 0 … K−1::

        n_max = min_k c_k
        n_k   = n_max              for k < ⌈K/2⌉     (majority)
        n_k   = ⌊n_max / ρ⌋        for k ≥ ⌈K/2⌉     (minority)

    ρ = 1 keeps the counts as they are (no subsample: the balanced protocol balances each epoch).

    Raises:
        ValueError: naming ``imbalance`` if it is not a finite number ≥ 1 or ⌊n_max / ρ⌋ < 1.

    Example:
        >>> imbalanced_class_counts([133, 136, 131, 137], 4.0).tolist()
        [131, 131, 32, 32]
    """
    check_imbalance(imbalance)
    counts = np.asarray(class_counts, dtype=np.int64)
    if imbalance == 1:
        return counts.copy()
    n_max = int(counts.min())
    n_min = math.floor(n_max / imbalance + 1e-9)  # 1e-9: 120 / 1.2 is 100, not 99
    if n_min < 1:
        raise ValueError(f"imbalance={imbalance} leaves the minority classes ⌊{n_max}/{imbalance}⌋ = 0 samples")
    majority = len(counts) - len(counts) // 2
    return np.array([n_max] * majority + [n_min] * (len(counts) - majority), dtype=np.int64)


def class_pools(labels: np.ndarray, *, num_classes: int, imbalance: float = 1.0) -> list[np.ndarray]:
    """For every class k, the indices of its samples that training draws from: all of them at
    ``imbalance`` 1, else its first n_k (:func:`imbalanced_class_counts`) in the dataset's order."""
    labels = np.asarray(labels)
    pools = [np.flatnonzero(labels == k) for k in range(num_classes)]
    counts = imbalanced_class_counts([len(pool) for pool in pools], imbalance)
    return [pool[:n] for pool, n in zip(pools, counts, strict=True)]


def imbalanced_indices(labels: np.ndarray, *, num_classes: int, imbalance: float) -> np.ndarray:
    """Sorted indices of the step-imbalanced training set (:func:`imbalanced_class_counts`): the
    first n_k samples of every class k in the dataset's order, a deterministic subset.

    Example:
        >>> imbalanced_indices(np.array([0, 1, 1, 0, 0, 1, 1]), num_classes=2, imbalance=3.0).tolist()  # 3 and 1
        [0, 1, 3, 4]
    """
    return np.sort(np.concatenate(class_pools(labels, num_classes=num_classes, imbalance=imbalance)))


def proportional_batch_counts(class_counts: ArrayLike, batch_size: int) -> np.ndarray:
    """Per-class samples b_k of a batch of B = ``batch_size`` in the proportions of the class
    sizes n_k, N = Σ n_k, by largest remainders (Hamilton's apportionment)::

        q_k = B n_k / N,    b_k = ⌊q_k⌋ + (1 for the B − Σ_j ⌊q_j⌋ classes of largest q_k − ⌊q_k⌋)

    ties going to the lower class index, so Σ b_k = B exactly and every b_k is within 1 of q_k.
    Equal sizes give b_k = B / K when K divides B.

    Raises:
        ValueError: naming ``batch_size`` if it is < 1 or a class gets no sample (b_k = 0).

    Example:
        >>> proportional_batch_counts([131, 131, 32, 32], 20).tolist()  # q = 7.99, 7.99, 1.95, 1.95
        [8, 8, 2, 2]
    """
    counts = np.asarray(class_counts, dtype=np.int64)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    scaled = batch_size * counts
    total = int(counts.sum())
    per_batch, remainder = scaled // total, scaled % total
    seats = batch_size - int(per_batch.sum())
    per_batch[np.lexsort((np.arange(len(counts)), -remainder))[:seats]] += 1
    empty = np.flatnonzero(per_batch == 0)
    if empty.size:
        k = int(empty[0])
        raise ValueError(
            f"batch_size={batch_size} gives class {k} ({int(counts[k])} of {total} samples) no sample per batch "
            "in the classes' proportions; raise batch_size or lower imbalance"
        )
    return per_batch


def batch_class_counts(labels: np.ndarray, *, batch_size: int, num_classes: int, imbalance: float = 1.0) -> np.ndarray:
    """(K,) samples of every class in each batch of an epoch: m = batch_size / K for every class at
    ``imbalance`` 1 (:func:`per_class_batch`), else :func:`proportional_batch_counts` of the
    step-imbalanced subset's class sizes.

    Raises:
        ValueError: naming ``batch_size`` or ``imbalance`` (see the functions above).
    """
    if imbalance == 1:
        return np.full(num_classes, per_class_batch(batch_size, num_classes), dtype=np.int64)
    pools = class_pools(labels, num_classes=num_classes, imbalance=imbalance)
    return proportional_batch_counts([len(pool) for pool in pools], batch_size)


def _deal(pools: list[np.ndarray], per_batch: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """(steps, Σ b_k) class-sorted batches: each pool permuted by one generator seeded with
    ``(seed, epoch)`` (class 0 first), its first steps·b_k entries dealt b_k to each batch."""
    steps = min(len(pool) // int(b) for pool, b in zip(pools, per_batch, strict=True))
    rng = np.random.default_rng([seed, epoch])
    parts = [rng.permutation(pool)[: steps * b].reshape(steps, b) for pool, b in zip(pools, per_batch, strict=True)]
    return np.concatenate(parts, axis=1).astype(np.int32)


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

    Example:
        >>> labels = np.array([1, 0, 1, 0, 1, 0, 0])  # class 0 has 4 samples, class 1 has 3
        >>> batches = balanced_batches(labels, batch_size=2, num_classes=2, seed=0, epoch=0)
        >>> batches.shape  # 3 steps (the smallest class) of m = 1 sample per class
        (3, 2)
        >>> labels[batches].tolist()  # every batch sorted by class
        [[0, 1], [0, 1], [0, 1]]
    """
    m = per_class_batch(batch_size, num_classes)
    labels = np.asarray(labels)
    steps = steps_per_epoch(labels, batch_size=batch_size, num_classes=num_classes)
    if steps == 0:
        raise ValueError(
            f"batch_size={batch_size} needs {m} samples of every class, but the smallest class has "
            f"{int(np.bincount(labels, minlength=num_classes).min())}"
        )
    return _deal(class_pools(labels, num_classes=num_classes), np.full(num_classes, m), seed, epoch)


def epoch_batches(
    labels: np.ndarray, *, batch_size: int, num_classes: int, seed: int, epoch: int, imbalance: float = 1.0
) -> np.ndarray:
    """Indices of the class-sorted batches of one epoch of training with ``imbalance`` ρ.

    ρ = 1: :func:`balanced_batches`, exactly. ρ > 1: the step-imbalanced subset
    (:func:`imbalanced_indices`, fixed across epochs); every batch holds b_k samples of class k
    (:func:`proportional_batch_counts`, the same b_k in every batch), in class order, and the
    epoch has min_k ⌊n_k / b_k⌋ batches (the rest of each class is left out that epoch; at least
    one when batch_size ≤ Σ n_k, since b_k ≤ ⌈B n_k / N⌉ ≤ n_k). Each
    class's subset is permuted by one generator seeded with ``(seed, epoch)``, as for balanced
    batches, so a resumed run sees the same batches.

    Returns:
        (steps, batch_size) int32 indices into ``labels``; class k owns the entries
        Σ_{j<k} b_j … Σ_{j≤k} b_j − 1 of every row.

    Raises:
        ValueError: naming ``batch_size`` or ``imbalance``: a class gets no sample per batch, or
            the minority classes no sample at all.

    Example:
        >>> labels = np.repeat([0, 1, 2, 3], 12)
        >>> batches = epoch_batches(labels, batch_size=8, num_classes=4, seed=0, epoch=1, imbalance=3.0)
        >>> labels[batches].tolist()  # subset counts 12, 12, 4, 4 → b = 3, 3, 1, 1, 4 batches
        [[0, 0, 0, 1, 1, 1, 2, 3], [0, 0, 0, 1, 1, 1, 2, 3], [0, 0, 0, 1, 1, 1, 2, 3], [0, 0, 0, 1, 1, 1, 2, 3]]
    """
    if imbalance == 1:
        return balanced_batches(labels, batch_size=batch_size, num_classes=num_classes, seed=seed, epoch=epoch)
    pools = class_pools(labels, num_classes=num_classes, imbalance=imbalance)
    per_batch = batch_class_counts(labels, batch_size=batch_size, num_classes=num_classes, imbalance=imbalance)
    batches = _deal(pools, per_batch, seed, epoch)
    if len(batches) == 0:
        short = next(k for k, (pool, b) in enumerate(zip(pools, per_batch, strict=True)) if len(pool) < b)
        raise ValueError(
            f"batch_size={batch_size} needs {int(per_batch[short])} samples of class {short} per batch, but "
            f"imbalance={imbalance} leaves it {len(pools[short])}"
        )
    return batches
