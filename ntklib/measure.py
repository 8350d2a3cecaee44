"""What one record measures: the metrics of a class-sorted balanced batch (paper §2, §3, §5, §6).

A training run (:mod:`ntklib.train`) writes one *record* per evaluation. This module owns what goes
in it:

- :data:`COLUMNS`, the one definition of every record column (name, meaning, where its formula is
  derived), which :mod:`ntklib.train`, :mod:`ntklib.plots` and the chapters use;
- :func:`extract_features`, the eval-mode features H (d, N) of a batch;
- :func:`collapse_metrics`, NC1–NC4 (:mod:`ntklib.collapse`), jit-able and vmappable along a
  trajectory with ``num_classes`` given;
- :class:`KernelStatistics` and :func:`kernel_statistics`, the exact block statistics of the NTK Θ
  and of the feature kernel Θʰ (:mod:`ntklib.ntk`, :mod:`ntklib.kernel_stats`);
- :func:`batch_kernel` and :func:`batch_invariant_metrics`, the invariant metrics of a whole batch
  with the κ measured on a probe (:func:`ntklib.invariant.invariant_metrics`);
- :func:`subsample_per_class`, a balanced probe batch;
- :func:`measure_batch`, all of the above for one batch, as record columns.

Which samples. As in the paper's released code, a record measures the epoch's last training batch
(m samples of each class, ``batch_per_class``): NC1–NC4 and the invariant with its terms use all of
it. The kernels Θ and Θʰ, whose cost grows with N², use a *probe*, the first ``probe_per_class``
samples of every class of that batch (all of them by default, 4 for VGG); the invariant's K_κ is the
block kernel of the whole batch built from the κ's measured on the probe. Besides the probe's exact
label alignments ``align_ntk``, ``align_feat``, the columns ``align_ntk_virtual``,
``align_feat_virtual`` give the released code's estimate: the alignment of a virtual batch of
``batch_per_class // 2`` samples per class with the probe's exact block means
(:func:`ntklib.kernel_stats.virtual_label_alignment`).

Example:
    >>> stats = kernel_statistics(model, variables, x, labels=[0, 0, 1, 1, 2, 2])  # doctest: +SKIP
    >>> stats.as_dict()["gamma_d"], column("align_ntk").meaning  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import Array
from numpy.typing import ArrayLike

from ntklib import collapse, kernel_stats
from ntklib.block_kernel import BlockKernel, ClassBlockKernel
from ntklib.invariant import invariant_metrics, kernel_invariant_metrics
from ntklib.ntk import BlockNTK, OffDiagonal, block_ntk, frobenius_norms

__all__ = [
    "Column",
    "COLUMNS",
    "column",
    "column_names",
    "timing_columns",
    "NC_COLUMNS",
    "INVARIANT_COLUMNS",
    "extract_features",
    "collapse_metrics",
    "KernelStatistics",
    "statistics_from_ntk",
    "kernel_statistics",
    "batch_kernel",
    "batch_invariant_metrics",
    "subsample_per_class",
    "batch_class_sizes",
    "unequal_batch_invariant_metrics",
    "measure_batch",
]

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of a record.

    ``name`` may end in ``{k}``: a per-class column, one key per class (``gamma_d_class{k}`` →
    ``gamma_d_class0``, ``gamma_d_class1``, …)."""

    name: str
    meaning: str
    reference: str
    """Where the quantity is defined (the paper's section or equation, or a book chapter)."""
    timing: bool = False
    """True for a wall-time column, which differs between two runs of the same config; comparisons
    of runs leave these out (:func:`timing_columns`)."""


def _kernel_columns(prefix: str, symbol: str, kernel: str) -> tuple[Column, ...]:
    """Block values, eigenvalues and per-class block values of one kernel (Θ as γ, Θʰ as κ)."""
    ref = "§3, Definition 3.1; ntklib.kernel_stats"
    parts = {"d": "diagonal (a sample with itself)", "c": "same class", "n": "different classes"}
    values = [
        Column(f"{prefix}_{p}", f"{symbol}_{p}: mean of {kernel} over the probe's pairs of {what}", ref)
        for p, what in parts.items()
    ]
    eigen = [
        Column(
            f"{prefix}_lam0", f"λ_0 = {symbol}_d − {symbol}_c, eigenvalue of K_{symbol}, within-class", "§4.1, Table 1"
        ),
        Column(
            f"{prefix}_lamc", f"λ_c, eigenvalue of K_{symbol} on the class means, m = probe_per_class", "§4.1, Table 1"
        ),
        Column(
            f"{prefix}_lammax",
            f"λ_max, eigenvalue of K_{symbol} on the global mean, m = probe_per_class",
            "§4.1, Table 1",
        ),
    ]
    per_class = [
        Column(f"{prefix}_{p}_class{{k}}", f"{symbol}_{p} of class k alone ({what}), on the probe", ref)
        for p, what in parts.items()
    ]
    return (*values, *eigen, *per_class)


def _pair_columns(suffix: str, kernel: str) -> tuple[Column, ...]:
    """Alignment, block fit and block norms of one kernel (``ntk``: Θ_cc, ``feat``: Θʰ_jj)."""
    return (
        Column(f"align_{suffix}", f"label alignment A(Σ {kernel}, YᵀY) on the probe", "§3; chapter 02"),
        Column(
            f"align_{suffix}_virtual",
            f"released code's estimate of A(Σ {kernel}, YᵀY) for a virtual batch of k = m // 2 per class "
            "(m = batch_per_class), from exact block means of the entries and their squares on the probe",
            "§3; ntklib.kernel_stats.virtual_batch_alignment",
        ),
        Column(
            f"block_fit_{suffix}",
            f"‖{kernel} − best block fit‖_F / ‖{kernel}‖_F on the probe",
            "§3, Definition 3.1; chapter 02",
        ),
        Column(f"diag_norm_{suffix}", f"mean ‖{kernel}‖_F over the probe's diagonal blocks", "§3, Assumption 3.2"),
        Column(
            f"offdiag_norm_{suffix}", "mean ‖·‖_F over the off-diagonal blocks (when measured)", "§3, Assumption 3.2"
        ),
        Column(
            f"offdiag_ratio_{suffix}", "offdiag_norm / diag_norm: departure from Assumption 3.2", "§3, Assumption 3.2"
        ),
    )


RUN_COLUMNS = (
    Column("epoch", "epochs trained (0: the initial state)", "§6"),
    Column("step", "optimiser steps taken", "§6"),
    Column("status", '"ok", or "diverged" for a NaN/inf loss', "ntklib.train"),
    Column("current_lr", "learning rate of the last step", "Appendix C"),
    Column("train_loss", "epoch-mean training loss (train mode)", "Appendix C"),
    Column("train_accuracy", "epoch-mean training accuracy (train mode)", "Appendix C"),
    Column("test_loss", "loss on the test set (eval mode)", "Appendix C"),
    Column("test_accuracy", "accuracy on the test set (eval mode)", "§6, Figure 2"),
    Column("epoch_seconds", "wall time of the epoch", "ntklib.train", timing=True),
    Column("metrics_seconds", "wall time of the batch's metrics", "ntklib.train", timing=True),
    Column(
        "compile_seconds",
        "seconds of XLA compilation (or loading from the persistent cache) in this process since the previous "
        "record: the first record's include the initialisation, evaluation and NTK programs",
        "ntklib.compilation",
        timing=True,
    ),
    Column(
        "batch_per_class",
        "samples per class of the measured batch (the epoch's last training batch): the NC and invariant columns "
        "use all of them; align_*_virtual are for a virtual batch of half as many",
        "§6; ntklib.measure",
    ),
    Column(
        "batch_count_class{k}",
        "samples of class k in the measured batch, recorded when the classes differ in size (imbalance > 1); "
        "batch_per_class is then the smallest",
        "ntklib.data.epoch_batches; ntklib.measure",
    ),
    Column(
        "probe_per_class",
        "samples per class of the probe, the first of every class of the batch: the kernel columns "
        "(gamma_*, kappa_*, align_*, align_*_virtual, block_fit_*, *_norm_ntk, *_norm_feat) use them "
        "(kernel records only)",
        "§6; ntklib.measure",
    ),
)
NC_COLUMNS = (
    Column(
        "nc1",
        "NC1 (all NC columns: whole batch), within-class std of the features, mean over features and classes",
        "§2.1, NC1; chapter 01",
    ),
    Column("nc1_trace", "NC1, tr(Σ_W Σ_B⁺)/K", "§2.1, NC1; chapter 01"),
    Column("nc2", "NC2, distance of the class means to a simplex ETF", "§2.1, NC2; chapter 01"),
    Column("nc3", "NC3, distance between W and the centred class means", "§2.1, NC3; chapter 01"),
    Column("nc4", "NC4, fraction where the classifier and nearest class mean disagree", "§2.1, NC4; chapter 01"),
)
KERNEL_COLUMNS = (
    *_kernel_columns("gamma", "γ", "Θ_cc"),
    *_kernel_columns("kappa", "κ", "Θʰ_jj"),
    *_pair_columns("ntk", "Θ_cc"),
    *_pair_columns("feat", "Θʰ_jj"),
)
INVARIANT_COLUMNS = (
    Column(
        "invariant_norm",
        "‖E‖_F, E = WᵀW − H K_κ⁻¹ Hᵀ, H of the whole batch, K_κ its block kernel with the probe's κ",
        "§5.2, Theorem 5.1",
    ),
    Column("invariant_alignment", "cosine of WᵀW and H K_κ⁻¹ Hᵀ (1 when E = 0), whole batch", "§5.2; chapter 05"),
    Column("wtw_norm", "‖WᵀW‖_F", "§5.2"),
    Column(
        "mmt_norm",
        "‖M Mᵀ‖_F, class-mean term of E, class means of the whole batch (the three terms: balanced batches only; "
        "with unequal classes E uses the class-block K_κ of the batch's class sizes)",
        "§5.2; chapter 05",
    ),
    Column("h2h2t_norm", "‖H₂ H₂ᵀ‖_F, within-class term of E, whole batch", "§5.2; chapter 05"),
    Column("mean_outer_norm", "‖h̄ h̄ᵀ‖_F, global-mean term of E, whole batch", "§5.2; chapter 05"),
)
COLUMNS: tuple[Column, ...] = (*RUN_COLUMNS, *NC_COLUMNS, *KERNEL_COLUMNS, *INVARIANT_COLUMNS)
"""Every column a record can have, each defined once."""

_BY_NAME = {c.name: c for c in COLUMNS}
_PER_CLASS = re.compile(r"^(.*_class)(\d+)$")


def column(key: str) -> Column:
    """The :class:`Column` of a record key (``gamma_d_class3`` → the column ``gamma_d_class{k}``).

    Raises:
        KeyError: naming ``key`` when no column defines it.
    """
    if key in _BY_NAME:
        return _BY_NAME[key]
    match = _PER_CLASS.match(key)
    if match and f"{match.group(1)}{{k}}" in _BY_NAME:
        return _BY_NAME[f"{match.group(1)}{{k}}"]
    raise KeyError(f"key {key!r} is not a record column (see ntklib.measure.COLUMNS)")


def column_names(columns: tuple[Column, ...] = COLUMNS) -> tuple[str, ...]:
    """The names of ``columns``."""
    return tuple(c.name for c in columns)


def timing_columns(columns: tuple[Column, ...] = COLUMNS) -> tuple[str, ...]:
    """The names of the wall-time columns of ``columns`` (:attr:`Column.timing`), which two runs
    of the same config do not share.

    Example:
        >>> timing_columns()
        ('epoch_seconds', 'metrics_seconds', 'compile_seconds')
    """
    return tuple(c.name for c in columns if c.timing)


# ---------------------------------------------------------------------------------------------
# Features and neural collapse
# ---------------------------------------------------------------------------------------------


def extract_features(model, variables: PyTree, images: Array) -> Array:
    """Eval-mode last-layer features H of shape (d, N) (one column per sample)."""
    h = model.apply(variables, images, method=lambda m, x: m.features(x, train=False))
    return h.T


def collapse_metrics(
    weights: Array, bias: Array, features: Array, labels: Array, *, num_classes: int | None = None
) -> dict[str, Array]:
    """NC1 (std form ``nc1`` and trace form ``nc1_trace``), ``nc2``, ``nc3``, ``nc4`` of W (K, d),
    b (K,), H (d, N) and labels (N,), as scalar arrays (:mod:`ntklib.collapse`).

    With ``num_classes`` given nothing depends on label values, so the function can be jitted and
    vmapped along a trajectory: ``jax.vmap(lambda h, w, b: collapse_metrics(w, b, h, labels,
    num_classes=K))(H, W, B)`` gives one (T,) array per column.
    """
    k = num_classes
    return {
        "nc1": collapse.nc1_within_class_std(features, labels, num_classes=k),
        "nc1_trace": collapse.nc1_trace(features, labels, num_classes=k),
        "nc2": collapse.nc2_etf_distance(features, labels, num_classes=k),
        "nc3": collapse.nc3_self_duality(weights, features, labels, num_classes=k),
        "nc4": collapse.nc4_ncc_mismatch(weights, bias, features, labels, num_classes=k),
    }


# ---------------------------------------------------------------------------------------------
# Kernel and invariant metrics
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KernelStatistics:
    """Block statistics of the NTK Θ (γ) and the feature kernel Θʰ (κ) on one balanced batch.

    γ comes from Θ_cc (averaged over the C logits), κ from Θʰ_jj (averaged over the d features);
    see :mod:`ntklib.kernel_stats` for the exact definitions. Norms are means of Frobenius norms:
    ``diag_norm_*`` over the diagonal blocks, ``offdiag_norm_*`` over the off-diagonal ones, so
    ``offdiag_norm / diag_norm`` measures the departure from Assumption 3.2. The off-diagonal norms
    are None when the kernel was computed without those blocks (see :func:`kernel_statistics`).
    Scalar fields carry the names of their record columns (:data:`COLUMNS`).
    """

    gamma: BlockKernel
    kappa: BlockKernel
    gamma_per_class: np.ndarray
    """(K, 3) per-class (d, c, n) of Θ_cc, see :func:`ntklib.kernel_stats.per_class_block_statistics`."""
    kappa_per_class: np.ndarray
    """(K, 3) per-class (d, c, n) of Θʰ_jj."""
    align_ntk: float
    """A(Σ_c Θ_cc, YᵀY)."""
    align_feat: float
    """A(Σ_j Θʰ_jj, YᵀY)."""
    align_ntk_virtual: float
    """A(Σ_c Θ_cc, YᵀY) of a virtual batch of ``virtual_per_class`` per class, from the exact block
    means (:func:`ntklib.kernel_stats.virtual_label_alignment`)."""
    align_feat_virtual: float
    """The same for Σ_j Θʰ_jj."""
    virtual_per_class: int
    """The k of the virtual batch, half the measured batch's samples per class."""
    block_fit_ntk: float
    block_fit_feat: float
    diag_norm_ntk: float
    offdiag_norm_ntk: float | None
    diag_norm_feat: float
    offdiag_norm_feat: float | None
    features: np.ndarray
    """H (d, N), the batch features (eval mode)."""
    weights: np.ndarray
    """W (C, d)."""
    bias: np.ndarray
    """b (C,)."""

    def as_dict(self) -> dict[str, float]:
        """Flat scalars for a record: the kernel columns of :data:`COLUMNS` (the off-diagonal ones
        only when measured) and ``probe_per_class``."""
        out: dict[str, float] = {"probe_per_class": self.kappa.per_class}
        for name, bk, per_class in (
            ("gamma", self.gamma, self.gamma_per_class),
            ("kappa", self.kappa, self.kappa_per_class),
        ):
            out[f"{name}_d"], out[f"{name}_c"], out[f"{name}_n"] = bk.diag, bk.same_class, bk.other_class
            for key, value in bk.eigenvalues()._asdict().items():
                out[f"{name}_{key}"] = value
            for k, row in enumerate(np.asarray(per_class)):
                for j, part in enumerate("dcn"):
                    out[f"{name}_{part}_class{k}"] = row[j]
        for suffix in ("ntk", "feat"):
            for name in (f"align_{suffix}", f"align_{suffix}_virtual", f"block_fit_{suffix}", f"diag_norm_{suffix}"):
                out[name] = getattr(self, name)
            off = getattr(self, f"offdiag_norm_{suffix}")
            if off is not None:
                out[f"offdiag_norm_{suffix}"] = off
                out[f"offdiag_ratio_{suffix}"] = off / out[f"diag_norm_{suffix}"]
        return {key: float(value) for key, value in out.items()}


def _block_norm_means(diagonal_blocks: Array, norms: Array | None) -> tuple[float, float | None]:
    """(mean ‖diagonal block‖_F, mean ‖off-diagonal block‖_F or None when ``norms`` is None)."""
    if norms is None:
        return float(np.mean(np.asarray(frobenius_norms(diagonal_blocks), dtype=np.float64))), None
    return kernel_stats.block_norms(norms)


def statistics_from_ntk(
    ntk: BlockNTK, labels: ArrayLike, weights: ArrayLike, bias: ArrayLike, *, batch_per_class: int | None = None
) -> KernelStatistics:
    """:class:`KernelStatistics` of an already computed :class:`~ntklib.ntk.BlockNTK`.

    The off-diagonal block norms are those the kernel was computed with: ``offdiag`` "logits"
    gives the NTK's, "norms" or "full" also the feature kernel's; the others are None.
    ``batch_per_class`` is the m of the batch the kernel's samples (``labels``) were taken from,
    which sets the virtual batch of the ``align_*_virtual`` columns, k = m // 2 per class as in the
    released code; None: the kernel's samples are the batch.
    """
    k, m = kernel_stats.balanced_batch_sizes(labels, num_samples=ntk.logits.shape[-1])
    sizes = {"num_classes": k, "per_class": m}
    virtual = (m if batch_per_class is None else batch_per_class) // 2
    logits, features = np.asarray(ntk.logits), np.asarray(ntk.features)
    gamma = kernel_stats.block_statistics(logits, **sizes)
    kappa = kernel_stats.block_statistics(features, **sizes)
    diag_l, off_l = _block_norm_means(ntk.logits, ntk.logits_norms)
    diag_f, off_f = _block_norm_means(ntk.features, ntk.features_norms)
    return KernelStatistics(
        gamma=gamma,
        kappa=kappa,
        gamma_per_class=kernel_stats.per_class_block_statistics(logits, **sizes),
        kappa_per_class=kernel_stats.per_class_block_statistics(features, **sizes),
        align_ntk=kernel_stats.label_alignment(logits, **sizes),
        align_feat=kernel_stats.label_alignment(features, **sizes),
        align_ntk_virtual=kernel_stats.virtual_label_alignment(logits, **sizes, virtual_per_class=virtual),
        align_feat_virtual=kernel_stats.virtual_label_alignment(features, **sizes, virtual_per_class=virtual),
        virtual_per_class=virtual,
        block_fit_ntk=kernel_stats.block_fit_error(logits, num_classes=k, per_class=m),
        block_fit_feat=kernel_stats.block_fit_error(features, num_classes=k, per_class=m),
        diag_norm_ntk=diag_l,
        offdiag_norm_ntk=off_l,
        diag_norm_feat=diag_f,
        offdiag_norm_feat=off_f,
        features=np.asarray(ntk.h).T,
        weights=np.asarray(weights),
        bias=np.asarray(bias),
    )


def kernel_statistics(
    model,
    variables: PyTree,
    x: ArrayLike,
    labels: ArrayLike,
    *,
    chunk_size: int | None = None,
    offdiag: OffDiagonal | str = OffDiagonal.LOGITS,
    batch_per_class: int | None = None,
) -> KernelStatistics:
    """All kernel metrics of a record on one class-sorted balanced batch (§3, §5.2, §6).

    Computes Θ_cc, Θʰ_jj and the off-diagonal blocks that ``offdiag`` asks for
    (:func:`ntklib.ntk.block_ntk`), then their exact block statistics, per-class values, label
    alignments, block-fit errors and diagonal / off-diagonal norms. The invariant metrics, which
    need the whole batch, are :func:`batch_invariant_metrics`.

    Args:
        model: a :class:`~ntklib.models.Classifier`.
        variables: its variables (BatchNorm running statistics are used: eval mode).
        x: (N, ...) inputs, sorted by class, balanced.
        labels: (N,) class labels (sorted, equal counts, at least 2 per class).
        chunk_size: feature neurons per Jacobian chunk (memory bound, see :mod:`ntklib.ntk`).
        offdiag: which off-diagonal norms to measure. "logits" (default) gives ‖Θ_{cc'}‖ for
            C²N²P flops; "norms" adds the feature cross-blocks ‖Θʰ_{jj'}‖, which cost d²N²P flops,
            d times the diagonal blocks' dN²P (64 times for ResNet20); "none" gives neither.
        batch_per_class: m of the batch ``x`` was taken from, for the ``align_*_virtual`` columns
            (see :func:`statistics_from_ntk`); None: ``x`` is the batch.

    Raises:
        ValueError: naming ``labels`` for an unsorted or unbalanced batch, ``variables`` without a
            features/classifier split.
    """
    x = jnp.asarray(x)
    kernel_stats.balanced_batch_sizes(labels, num_samples=x.shape[0])
    ntk = block_ntk(model, variables, x, offdiag=OffDiagonal(offdiag), chunk_size=chunk_size)
    head = variables["params"]["classifier"]
    return statistics_from_ntk(
        ntk, labels, np.asarray(head["kernel"]).T, np.asarray(head["bias"]), batch_per_class=batch_per_class
    )


def batch_kernel(kappa: BlockKernel, labels: ArrayLike) -> BlockKernel:
    """K_κ of a class-sorted balanced batch with ``labels`` (N,), from the κ's measured on a probe.

    The block values (κ_d, κ_c, κ_n) are means over pairs, so they carry over from the probe (m' per
    class) to the whole batch (m per class); the eigenvalues do not, λ_c = λ_0 + m(κ_c − κ_n) and
    λ_max = λ_c + N κ_n depend on m.

    Raises:
        ValueError: naming ``labels`` for an unsorted or unbalanced batch, or ``num_classes`` when
            it has not the probe's classes.
    """
    k, m = kernel_stats.balanced_batch_sizes(labels, num_classes=kappa.num_classes)
    return dataclasses.replace(kappa, num_classes=k, per_class=m)


def batch_class_sizes(labels: ArrayLike) -> tuple[int, ...]:
    """(n_1, …, n_K) of a class-sorted batch whose classes may differ in size (``imbalance`` > 1).

    Raises:
        ValueError: naming ``labels`` when they are not 1-D and sorted by class.
    """
    lab = np.asarray(labels)
    if lab.ndim != 1 or np.any(np.diff(lab) < 0):
        raise ValueError("labels must be 1-D and sorted by class (class k owns a contiguous block)")
    return tuple(int(n) for n in np.unique(lab, return_counts=True)[1])


def unequal_batch_invariant_metrics(
    weights: ArrayLike, features: ArrayLike, class_sizes: tuple[int, ...], kappa: BlockKernel
) -> dict[str, float] | None:
    """``invariant_norm``, ``invariant_alignment`` and ``wtw_norm`` of a class-sorted batch with
    classes of ``class_sizes``: E = WᵀW − H K⁻¹ Hᵀ with K the
    :class:`~ntklib.block_kernel.ClassBlockKernel` of those sizes and the probe's κ
    (:func:`ntklib.invariant.kernel_invariant`). None when K is not positive definite."""
    kernel = ClassBlockKernel(kappa.diag, kappa.same_class, kappa.other_class, class_sizes=class_sizes)
    if not kernel.is_positive_definite():
        return None
    h = jnp.asarray(features)
    return kernel_invariant_metrics(jnp.asarray(weights, h.dtype), h, kernel.matrix(h.dtype))


def batch_invariant_metrics(
    weights: ArrayLike, features: ArrayLike, labels: ArrayLike, kappa: BlockKernel
) -> dict[str, float] | None:
    """The invariant columns (``INVARIANT_COLUMNS``) of a whole batch, as the paper's released code
    measures them: H (d, N) of the whole class-sorted batch, W (K, d), and K_κ the block kernel of
    that batch (:func:`batch_kernel`) with the κ's of a probe. None when that K_κ is not positive
    definite (E is then undefined)."""
    kernel = batch_kernel(kappa, labels)
    if not kernel.is_positive_definite():
        return None
    h = jnp.asarray(features)
    return invariant_metrics(jnp.asarray(weights, h.dtype), h, kernel)


def subsample_per_class(images: np.ndarray | Array, labels: ArrayLike, per_class: int):
    """The first ``per_class`` samples of every class, sorted by class: a balanced probe batch from
    any labelled set (the last training batch, or a whole dataset).

    Raises:
        ValueError: naming ``per_class`` when it is below 1 or a class has fewer samples.
    """
    label_array = np.asarray(labels)
    if int(per_class) != per_class or per_class < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class!r}")
    picks = [np.flatnonzero(label_array == k)[:per_class] for k in range(int(label_array.max()) + 1)]
    short = [k for k, p in enumerate(picks) if len(p) < per_class]
    if short:
        raise ValueError(f"per_class={per_class} exceeds the samples of classes {short}")
    keep = np.concatenate(picks)
    return images[keep], label_array[keep]


def measure_batch(
    model,
    variables: PyTree,
    images: Array,
    labels: Array,
    *,
    kernels: bool = True,
    per_class: int | None = None,
    chunk_size: int | None = None,
    offdiag: OffDiagonal | str = OffDiagonal.LOGITS,
) -> dict[str, float]:
    """The columns of one class-sorted batch, all in eval mode.

    - NC columns and ``batch_per_class``: the whole batch. Its classes may differ in size
      (``imbalance`` > 1): the NC metrics centre the class means at their mean (:mod:`ntklib.collapse`),
      ``batch_per_class`` is the smallest class and ``batch_count_class{k}`` every class's size;
      the probe then defaults to the smallest class's count of every class, a balanced batch, and
      the invariant uses the class-block K_κ of the batch's sizes
      (:func:`unequal_batch_invariant_metrics`; no ``mmt_norm``, ``h2h2t_norm``, ``mean_outer_norm``).
    - With ``kernels``, the kernel columns and ``probe_per_class``: the probe, the first
      ``per_class`` samples of every class (None: the whole batch), with ``chunk_size`` and
      ``offdiag`` as in :func:`kernel_statistics` (``align_*_virtual`` for k = m // 2 per class, m of
      the whole batch);
    - and the invariant columns: the whole batch, with the probe's κ (:func:`batch_invariant_metrics`),
      when its K_κ is positive definite.
    """
    sizes = batch_class_sizes(labels)
    balanced = len(set(sizes)) == 1
    if balanced:
        _, m = kernel_stats.balanced_batch_sizes(labels)
    else:
        m = min(sizes)
    features = extract_features(model, variables, images)
    head = variables["params"]["classifier"]
    weights = head["kernel"].T
    values = {k: float(v) for k, v in collapse_metrics(weights, head["bias"], features, labels).items()}
    values["batch_per_class"] = m
    if not balanced:
        values.update({f"batch_count_class{k}": n for k, n in enumerate(sizes)})
    if kernels:
        probe_images, probe_labels = images, labels
        probe = per_class if per_class is not None or balanced else m
        if probe is not None:
            probe_images, probe_labels = subsample_per_class(images, labels, probe)
        stats = kernel_statistics(
            model, variables, probe_images, probe_labels, chunk_size=chunk_size, offdiag=offdiag, batch_per_class=m
        )
        values.update(stats.as_dict())
        if balanced:
            values.update(batch_invariant_metrics(weights, features, labels, stats.kappa) or {})
        else:
            values.update(unequal_batch_invariant_metrics(weights, features, sizes, stats.kappa) or {})
    return values
