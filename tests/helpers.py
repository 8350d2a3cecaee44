"""Naive references shared by the tests: one home for each, numpy only, entry by entry or from the
explicit formula, never calling the ntklib code they check.

A batch of N = K m samples is sorted by class: sample i belongs to class i // m.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def naive_block_kernel(kd: float, kc: float, kn: float, k: int, m: int) -> np.ndarray:
    """K_κ (N, N) entry by entry from Definition 3.1: κ_d on the diagonal, κ_c between two samples
    of one class, κ_n between classes."""
    n = k * m
    out = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            if i == j:
                out[i, j] = kd
            elif i // m == j // m:
                out[i, j] = kc
            else:
                out[i, j] = kn
    return out


def naive_labels(k: int, m: int) -> np.ndarray:
    """Y = I_K ⊗ 1_mᵀ (K, N) entry by entry: Y[c, i] = 1 if sample i is of class c."""
    y = np.zeros((k, k * m))
    for i in range(k * m):
        y[i // m, i] = 1.0
    return y


def naive_class_indicator(k: int, m: int) -> np.ndarray:
    """YᵀY (N, N) entry by entry: 1 between two samples of one class (the diagonal included), else 0."""
    n = k * m
    return np.array([[1.0 if i // m == j // m else 0.0 for j in range(n)] for i in range(n)])


class Projectors(NamedTuple):
    """The three projectors of Table 1, each (N, N)."""

    glob: np.ndarray
    cls: np.ndarray
    within: np.ndarray


def naive_projectors(k: int, m: int) -> Projectors:
    """The projectors of Table 1, each (N, N), from their formulas::

    P_glob = 1 1ᵀ / N,   P_cls = (I_K ⊗ 1_m 1_mᵀ) / m − P_glob,   P_within = I_N − (I_K ⊗ 1_m 1_mᵀ) / m
    """
    n = k * m
    glob = np.ones((n, n)) / n
    same = np.kron(np.eye(k), np.ones((m, m))) / m
    return Projectors(glob, same - glob, np.eye(n) - same)


def naive_class_means(h: np.ndarray, k: int, m: int) -> np.ndarray:
    """M (d, K): column c is the mean of the columns c m … (c + 1) m − 1 of the sorted features h (d, N)."""
    return np.stack([h[:, c * m : (c + 1) * m].mean(axis=1) for c in range(k)], axis=1)


def centring(n: int) -> np.ndarray:
    """P = I_N − 1 1ᵀ / N (N, N): x P removes the mean of every row of x."""
    return np.eye(n) - np.ones((n, n)) / n


def random_within_basis(rng: np.random.Generator, m: int) -> np.ndarray:
    """A random orthonormal basis (m, m − 1) of 1_m^⊥: QR of a centred Gaussian matrix."""
    q, _ = np.linalg.qr(centring(m) @ rng.normal(size=(m, m - 1)))
    return q


def naive_unsorted_class_means(h: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """M (d, K) for labels in any order: column c is the mean of the columns i of h with labels[i] == c."""
    out = np.zeros((h.shape[0], k))
    for c in range(k):
        cols = [i for i in range(len(labels)) if labels[i] == c]
        out[:, c] = sum(h[:, i] for i in cols) / len(cols)
    return out


def naive_centre(h: np.ndarray, labels: np.ndarray, k: int, centre: str) -> np.ndarray:
    """The centre c (d,) of the class means, by explicit sums::

    "class_means": c = (1/K) Σ_c μ_c,    "samples": c = (1/N) Σ_i h_i
    """
    if centre == "class_means":
        means = naive_unsorted_class_means(h, labels, k)
        return sum(means[:, c] for c in range(k)) / k
    if centre == "samples":
        return sum(h[:, i] for i in range(h.shape[1])) / h.shape[1]
    raise ValueError(f"centre must be 'class_means' or 'samples', got {centre!r}")


def naive_centred_class_means(h: np.ndarray, labels: np.ndarray, k: int, centre: str) -> np.ndarray:
    """M̃ (d, K): column c is μ_c − c with the centre of :func:`naive_centre`."""
    means = naive_unsorted_class_means(h, labels, k)
    c = naive_centre(h, labels, k, centre)
    return np.stack([means[:, j] - c for j in range(k)], axis=1)


def naive_class_block_kernel(kd, kc, kn: float, sizes) -> np.ndarray:
    """K (N, N), N = Σ n_k, entry by entry for class-sorted samples, class k owning sizes[k]
    consecutive samples: κ_d^(k) on the diagonal of class k, κ_c^(k) between two distinct samples
    of class k, κ_n between classes. ``kd`` and ``kc`` are one value for every class or one per class."""
    k = len(sizes)
    kd = np.broadcast_to(np.asarray(kd, dtype=float), (k,))
    kc = np.broadcast_to(np.asarray(kc, dtype=float), (k,))
    cls = [c for c in range(k) for _ in range(sizes[c])]
    n = len(cls)
    out = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            if i == j:
                out[i, j] = kd[cls[i]]
            elif cls[i] == cls[j]:
                out[i, j] = kc[cls[i]]
            else:
                out[i, j] = kn
    return out


def naive_one_hot(labels, k: int) -> np.ndarray:
    """Y (K, N) entry by entry: Y[c, i] = 1 if labels[i] == c."""
    y = np.zeros((k, len(labels)))
    for i, c in enumerate(labels):
        y[c, i] = 1.0
    return y
