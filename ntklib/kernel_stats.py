"""Block statistics of measured kernel matrices (paper §3, Definition 3.1, and §6).

Given per-output kernels ``Θ_c`` (C, N, N) on a class-sorted balanced batch (K classes, m samples
each, N = K m), this module measures how close they are to the block structure of
:class:`ntklib.block_kernel.BlockKernel`::

    K_κ = (κ_d − κ_c) I_N + (κ_c − κ_n)(I_K ⊗ 1_m 1_mᵀ) + κ_n 1_N 1_Nᵀ        # (N, N)

All means are *exact* means over all pairs of the batch (the paper's released code subsampled
pairs of half-batches):

* κ_d: mean of Θ_c(x, x) over the N samples,
* κ_c: mean of Θ_c(x, x') over the K m (m − 1) ordered pairs of distinct samples of one class,
* κ_n: mean of Θ_c(x, x') over the N² − K m² ordered pairs of samples of different classes,

each averaged over the C outputs. Because the three pair sets are disjoint, these three means are
also the least-squares fit of a block matrix to Θ_c (the orthogonal projection onto
span{I, S − I, 1 1ᵀ − S} with S = I_K ⊗ 1 1ᵀ), so :func:`block_fit_error` is the relative norm of
what that projection leaves out (with ``centred=True``, relative to the kernel minus its constant
background).

The label alignment A(Σ_c Θ_c, YᵀY) is measured exactly (:func:`label_alignment`) and, as the
released code estimates it, for a *virtual* batch of k samples per class assembled from the block
means of the entries and of their squares (:func:`virtual_batch_alignment`,
:func:`virtual_label_alignment`); A depends on the per-class count, so the two differ.

Everything here runs on the host in float64 numpy: the kernels are small ((C, N, N) with N ≈ 120)
and exact recovery of constructed block kernels is part of the tests.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ntklib.block_kernel import BlockKernel

__all__ = [
    "balanced_batch_sizes",
    "block_means",
    "block_statistics",
    "per_class_block_statistics",
    "block_fit_error",
    "kernel_alignment",
    "label_alignment",
    "virtual_batch_alignment",
    "virtual_label_alignment",
    "block_norms",
]


def balanced_batch_sizes(
    labels: ArrayLike | None = None,
    *,
    num_classes: int | None = None,
    per_class: int | None = None,
    num_samples: int | None = None,
) -> tuple[int, int]:
    """Validate a class-sorted balanced batch and return (K, m).

    Args:
        labels: (N,) integer labels, sorted by class, every class present equally often. The class
            identities themselves are free (e.g. [3, 3, 7, 7] is K = 2, m = 2).
        num_classes: K; alternative to ``labels`` (or a consistency check when both are given).
        per_class: m; alternative to ``labels`` (or a consistency check when both are given).
        num_samples: N of the kernels to be analysed; checked against K m.

    Returns:
        (K, m) with K ≥ 2 and m ≥ 2.

    Raises:
        ValueError: naming ``labels`` (not 1-D, not sorted, unequal class counts), ``num_classes``
            / ``per_class`` (missing, below 2, inconsistent with ``labels``) or ``kernels``
            (size N ≠ K m).
    """
    if labels is not None:
        lab = np.asarray(labels)
        if lab.ndim != 1:
            raise ValueError(f"labels must be 1-D (N,), got shape {lab.shape}")
        if lab.size and not np.issubdtype(lab.dtype, np.integer):
            if not np.all(lab == np.round(lab)):
                raise ValueError("labels must be integer class labels")
        if np.any(np.diff(lab) < 0):
            raise ValueError("labels must be sorted by class (class-sorted batch: class k owns a contiguous block)")
        classes, counts = np.unique(lab, return_counts=True)
        if np.any(counts != counts[0]):
            raise ValueError(
                f"labels must describe a balanced batch (equal counts per class), got counts {counts.tolist()}"
            )
        k, m = int(classes.size), int(counts[0])
        if num_classes is not None and num_classes != k:
            raise ValueError(f"num_classes={num_classes} does not match the {k} classes in labels")
        if per_class is not None and per_class != m:
            raise ValueError(f"per_class={per_class} does not match the {m} samples per class in labels")
    else:
        if num_classes is None or per_class is None:
            raise ValueError("give either labels or both num_classes and per_class")
        k, m = num_classes, per_class
    if int(k) != k or k < 2:
        raise ValueError(f"num_classes (K) must be an integer >= 2, got {k!r}")
    if int(m) != m or m < 2:
        raise ValueError(f"per_class (m) must be an integer >= 2 samples per class, got {m!r}")
    k, m = int(k), int(m)
    if num_samples is not None and num_samples != k * m:
        raise ValueError(
            f"kernels (or inputs) have N={num_samples} samples but labels describe K*m = {k}*{m} = {k * m}"
        )
    return k, m


def _stack(kernels: ArrayLike) -> np.ndarray:
    """(C, N, N) float64 view of one kernel (N, N) or a stack; raises naming ``kernels``."""
    a = np.asarray(kernels, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"kernels must be square, shape (N, N) or (C, N, N); got shape {np.shape(kernels)}")
    return a


def _prepare(
    kernels: ArrayLike, labels: ArrayLike | None, num_classes: int | None, per_class: int | None
) -> tuple[np.ndarray, int, int]:
    a = _stack(kernels)
    k, m = balanced_batch_sizes(labels, num_classes=num_classes, per_class=per_class, num_samples=a.shape[-1])
    return a, k, m


def block_means(
    kernels: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    num_classes: int | None = None,
    per_class: int | None = None,
) -> np.ndarray:
    """Exact block means (κ_d, κ_c, κ_n) of every output's kernel.

    Args:
        kernels: (C, N, N) per-output kernels Θ_c (or one (N, N) kernel) on a class-sorted balanced
            batch.
        labels, num_classes, per_class: the batch, see :func:`balanced_batch_sizes`.

    Returns:
        (C, 3) array; row c is (mean diagonal, mean same-class off-diagonal, mean other-class) of Θ_c.
    """
    a, k, m = _prepare(kernels, labels, num_classes, per_class)
    n = k * m
    blocks = a.reshape(a.shape[0], k, m, k, m)
    total = a.sum(axis=(1, 2))
    trace = np.trace(a, axis1=1, axis2=2)
    same = np.einsum("ckikj->c", blocks)  # sum over the K diagonal (m, m) blocks
    d = trace / n
    c = (same - trace) / (k * m * (m - 1))
    nn_ = (total - same) / (n * n - k * m * m)
    return np.stack([d, c, nn_], axis=1)


def block_statistics(
    kernels: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    num_classes: int | None = None,
    per_class: int | None = None,
) -> BlockKernel:
    """Block statistics (κ_d, κ_c, κ_n) averaged over the outputs, as a :class:`~ntklib.block_kernel.BlockKernel`.

    Averaging the per-output means equals taking the means of Σ_c Θ_c / C (the means are linear).

    Example:
        >>> bk = BlockKernel(3.0, 1.0, 0.2, num_classes=4, per_class=5)
        >>> stats = block_statistics(bk.matrix(), num_classes=4, per_class=5)
        >>> [round(v, 6) for v in (stats.diag, stats.same_class, stats.other_class)], stats.num_classes
        ([3.0, 1.0, 0.2], 4)
    """
    a, k, m = _prepare(kernels, labels, num_classes, per_class)
    d, c, n = block_means(a, num_classes=k, per_class=m).mean(axis=0)
    return BlockKernel(float(d), float(c), float(n), num_classes=k, per_class=m)


def per_class_block_statistics(
    kernels: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    num_classes: int | None = None,
    per_class: int | None = None,
) -> np.ndarray:
    """Block statistics restricted to each class ("specialisation"), averaged over the outputs.

    For class k with sample set S_k:

    * d_k: mean of Θ(x, x) over x ∈ S_k,
    * c_k: mean of Θ(x, x') over distinct x, x' ∈ S_k,
    * n_k: mean of Θ(x, x') over pairs with exactly one sample in S_k (x ∈ S_k, x' ∉ S_k, and the
      transposed pairs; for symmetric kernels both halves agree).

    With this choice every class carries the same number of pairs in each set, so the mean over k
    of row k equals :func:`block_statistics` exactly.

    Returns:
        (K, 3) array, row k = (d_k, c_k, n_k).
    """
    a, k, m = _prepare(kernels, labels, num_classes, per_class)
    n = k * m
    mean = a.mean(axis=0).reshape(k, m, k, m)
    diag_blocks = np.einsum("kikj->kij", mean)  # (K, m, m)
    trace_k = np.einsum("kii->k", diag_blocks)
    same_k = diag_blocks.sum(axis=(1, 2))
    rows_k = mean.sum(axis=(1, 2, 3))  # all pairs with x in S_k
    cols_k = mean.sum(axis=(0, 1, 3))  # all pairs with x' in S_k
    d = trace_k / m
    c = (same_k - trace_k) / (m * (m - 1))
    other = (rows_k - same_k + cols_k - same_k) / (2 * m * (n - m))
    return np.stack([d, c, other], axis=1)


def block_fit_error(
    kernels: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    num_classes: int | None = None,
    per_class: int | None = None,
    centred: bool = False,
) -> float:
    """Relative distance to the best block-structured kernel, over all outputs.

    For each output c, K_c is the block matrix built from Θ_c's *own* block means (its least-squares
    block fit). The error is the norm-weighted average of the per-output relative errors
    ‖Θ_c − K_c‖_F / ‖Θ_c‖_F, i.e. Σ_c ‖Θ_c − K_c‖_F / Σ_c ‖Θ_c‖_F, so that outputs with a
    (near-)zero kernel — dead ReLU features — neither divide by zero nor dominate. It is 0 exactly
    when every Θ_c is block-structured (possibly with different values per output) and lies in
    [0, 1]. Returns 0 for an all-zero stack.

    With ``centred`` the error is relative to the *non-constant part* of each kernel: every Θ_c is
    first replaced by Θ_c − mean(Θ_c) (the mean over all N² entries), so the error is
    Σ_c ‖Θ_c − K_c‖_F / Σ_c ‖Θ_c − mean(Θ_c)‖_F. The residual Θ_c − K_c is the same either way (a
    constant is itself a block matrix), but a large constant background, as at initialisation, no
    longer makes every kernel look block-structured.

    Args:
        kernels: (C, N, N) per-output kernels Θ_c (or one (N, N) kernel) on a class-sorted balanced
            batch.
        labels, num_classes, per_class: the batch, see :func:`balanced_batch_sizes`.
        centred: measure relative to each Θ_c − mean(Θ_c) instead of Θ_c (default False, the
            record columns ``block_fit_*``).

    Example:
        A constant background and a texture with no block form (its block means are 0):

        >>> theta = 10.0 + np.diag([1.0, -1.0, 1.0, -1.0])
        >>> round(block_fit_error(theta, num_classes=2, per_class=2), 4)
        0.0499
        >>> round(block_fit_error(theta, num_classes=2, per_class=2, centred=True), 12)
        1.0
    """
    a, k, m = _prepare(kernels, labels, num_classes, per_class)
    if centred:
        a = a - a.mean(axis=(1, 2), keepdims=True)
    means = block_means(a, num_classes=k, per_class=m)
    n = k * m
    same = np.kron(np.eye(k), np.ones((m, m)))
    eye = np.eye(n)
    fitted = (
        means[:, 0, None, None] * eye + means[:, 1, None, None] * (same - eye) + means[:, 2, None, None] * (1.0 - same)
    )
    num = np.linalg.norm((a - fitted).reshape(a.shape[0], -1), axis=1).sum()
    den = np.linalg.norm(a.reshape(a.shape[0], -1), axis=1).sum()
    return float(num / den) if den > 0 else 0.0


def kernel_alignment(a: ArrayLike, b: ArrayLike) -> float:
    """Kernel alignment A(a, b) = ⟨a, b⟩_F / (‖a‖_F ‖b‖_F) of two (N, N) matrices (1 iff a ∝ b, a > 0)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"kernels must be square and of equal shape, got {a.shape} and {b.shape}")
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def label_alignment(
    kernels: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    num_classes: int | None = None,
    per_class: int | None = None,
) -> float:
    """Alignment A(Θ_tr, YᵀY) of the traced kernel Θ_tr = Σ_c Θ_c with the labels.

    YᵀY = I_K ⊗ 1_m 1_mᵀ is the same-class indicator. The paper plots 1 − A ("distance to Y").

    Args:
        kernels: (C, N, N) per-output kernels (summed over c) or one (N, N) kernel (used as is).
    """
    a, k, m = _prepare(kernels, labels, num_classes, per_class)
    return kernel_alignment(a.sum(axis=0), np.kron(np.eye(k), np.ones((m, m))))


def virtual_batch_alignment(means: ArrayLike, square_means: ArrayLike, *, num_classes: int, per_class: int) -> float:
    """Label alignment A(T, YᵀY) of a virtual class-sorted batch, K classes of k samples each, whose
    kernel T has the given means of its entries and of their squares in each kind of pair.

    Follows the paper's released code (mselezniova/ntk_collapse, ``compute_metrics`` of
    resnet_ntk_collapse.py, vgg_ntk_collapse.py and densenet_ntk_collapse.py, whose
    ``gamma_dist_to_Y`` and ``kappa_dist_to_Y`` are 1 − A for T = Σ_c Θ_cc and T = Σ_j Θʰ_jj),
    which counts the entries of each kind of the virtual batch (N = K k)::

        ⟨T, YᵀY⟩_F = K k μ_d + K k (k − 1) μ_c
        ‖T‖_F²    = K k q_d + K k (k − 1) q_c + K (K − 1) k² q_n
        ‖YᵀY‖_F   = √(K k²)
        A         = ⟨T, YᵀY⟩_F / (‖T‖_F ‖YᵀY‖_F)

    with μ the means and q the means of the squares over the pairs of a sample with itself (d), of
    two distinct samples of one class (c) and of samples of two classes (n). It is the exact
    alignment of every kernel on such a batch with these means. The released code takes them from
    sampled entries of its m kernel samples per class (d: all m; c: the first k = m // 2 against the
    other m − k of the same class; n: the first k of class i against the last m − k of class j > i)
    and divides T by the mean diagonal, which cancels in A.

    Args:
        means: (3,) means (μ_d, μ_c, μ_n) of the entries of T, e.g. a row of :func:`block_means`.
        square_means: (3,) means (q_d, q_c, q_n) of the squared entries of T.
        num_classes: K ≥ 2.
        per_class: k ≥ 1, the samples per class of the virtual batch.

    Raises:
        ValueError: naming ``means`` (not 3 values), ``num_classes`` or ``per_class``.
    """
    mu, q = (np.asarray(v, dtype=np.float64) for v in (means, square_means))
    if mu.shape != (3,) or q.shape != (3,):
        raise ValueError(f"means and square_means must be (3,) (d, c, n), got {mu.shape} and {q.shape}")
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes (K) must be an integer >= 2, got {num_classes!r}")
    if int(per_class) != per_class or per_class < 1:
        raise ValueError(f"per_class (k) must be a positive integer, got {per_class!r}")
    big_k, k = int(num_classes), int(per_class)
    counts = np.array([big_k * k, big_k * k * (k - 1), big_k * (big_k - 1) * k * k], dtype=np.float64)
    inner = counts[:2] @ mu[:2]
    return float(inner / (np.sqrt(counts @ q) * np.sqrt(big_k * k * k)))


def virtual_label_alignment(
    kernels: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    num_classes: int | None = None,
    per_class: int | None = None,
    virtual_per_class: int,
) -> float:
    """:func:`virtual_batch_alignment` of the traced kernel T = Σ_c Θ_c for ``virtual_per_class``
    samples per class, from the exact means of T's entries and squared entries over all pairs of
    each kind of the measured batch (:func:`block_means`). With ``virtual_per_class`` equal to the
    batch's m it is :func:`label_alignment`.

    Args:
        kernels: (C, N, N) per-output kernels (summed over c) or one (N, N) kernel (used as is).
        labels, num_classes, per_class: the measured batch, see :func:`balanced_batch_sizes`.
        virtual_per_class: k, the samples per class of the virtual batch.
    """
    a, k, m = _prepare(kernels, labels, num_classes, per_class)
    traced = a.sum(axis=0)
    means, square_means = block_means(np.stack([traced, traced**2]), num_classes=k, per_class=m)
    return virtual_batch_alignment(means, square_means, num_classes=k, per_class=virtual_per_class)


def block_norms(norms: ArrayLike) -> tuple[float, float]:
    """Mean Frobenius norms of the diagonal and off-diagonal blocks of a full per-output kernel.

    Args:
        norms: (C, C) matrix of ‖Θ_{cc'}‖_F (from :func:`ntklib.ntk.block_ntk_fn` with
            ``offdiag="norms"``).

    Returns:
        (mean over c of ‖Θ_cc‖_F, mean over c ≠ c' of ‖Θ_{cc'}‖_F). Assumption 3.2 says the ratio
        of the second to the first is 0.
    """
    a = np.asarray(norms, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 2:
        raise ValueError(f"norms must be a square (C, C) matrix with C >= 2, got shape {a.shape}")
    c = a.shape[0]
    diag = float(np.trace(a) / c)
    off = float((a.sum() - np.trace(a)) / (c * (c - 1)))
    return diag, off
