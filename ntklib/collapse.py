"""Neural-collapse metrics NC1–NC4 (paper §2.1; Papyan, Han & Donoho 2020) and frame angles.

Conventions: features ``H`` are (d, N) with one column per sample, ``labels`` are (N,) integers in
``0 … K−1`` (any order), the classifier is ``W`` (K, d) with bias ``b`` (K,). Every metric is 0
under exact neural collapse and grows as the geometry moves away from it.

Every metric takes an optional ``num_classes``. Without it, K is read off the labels, which are
checked to cover every class; that needs concrete labels. With it, nothing depends on the label
values, so the metrics can be traced by ``jax.jit`` (with ``num_classes`` static); the caller then
vouches that every class occurs. Concrete labels outside ``0 … K−1`` are refused either way; a
class without samples makes every metric NaN.

Centring. NC1 (trace form), NC2 and NC3 measure the class means M = [μ_1 … μ_K] about a centre
c (d,), M̃ = M − c 1ᵀ, chosen by the keyword ``centre``:

- ``"class_means"`` (the default): c = (1/K) Σ_k μ_k, the mean of the class means, as the paper's
  released code centres them. An exact simplex ETF of class means is centred at this point
  whatever the class sizes n_k, so the metrics read 0 on it under imbalance too.
- ``"samples"``: c = h̄ = (1/N) Σ_i h_i = Σ_k (n_k/N) μ_k, the sample mean. Under imbalance it is
  pulled toward the larger classes and an exact collapse scores far from 0 (class counts
  20, 20, 2, 2 on an exact ETF: NC2 ≈ 0.65, NC3 ≈ 0.44).

The two centres are equal when every class has the same number of samples (n_k = N/K), so on a
balanced batch both forms give the same numbers (to rounding). NC1 in the standard-deviation
form and NC4 measure samples against their own class means and need no centre.

Example:
    Three classes whose features sit exactly on a simplex ETF are collapsed (NC1 = NC2 = 0); with a
    static ``num_classes`` the metric compiles under ``jax.jit``:

    >>> import functools, jax
    >>> import jax.numpy as jnp
    >>> labels = jnp.array([0, 0, 1, 1, 2, 2])
    >>> features = (jnp.eye(3) - 1 / 3)[:, labels]  # (d, N) = (3, 6)
    >>> float(nc1_within_class_std(features, labels))
    0.0
    >>> nc2 = jax.jit(functools.partial(nc2_etf_distance, num_classes=3))
    >>> round(float(nc2(features, labels)), 6)
    0.0
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike, DTypeLike
from numpy.typing import NDArray

from ntklib.block_kernel import BlockKernel, ClassBlockKernel

Centre = Literal["class_means", "samples"]
"""Which centre the class means are measured about, ``"class_means"`` or ``"samples"`` (module docstring)."""

CENTRES: tuple[Centre, ...] = ("class_means", "samples")
"""The accepted values of ``centre``, the default first."""


def _check_centre(centre: str) -> None:
    if centre not in CENTRES:
        raise ValueError(f"centre must be one of {CENTRES}, got {centre!r}")


def _check_labels(features: Array, labels: Array, num_classes: int | None = None) -> tuple[Array, int]:
    labels = jnp.asarray(labels)
    if features.ndim != 2:
        raise ValueError(f"features must be (d, N), got shape {features.shape}")
    if labels.shape != (features.shape[1],):
        raise ValueError(f"labels must have shape (N,) = ({features.shape[1]},), got {labels.shape}")
    if num_classes is not None:
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if not isinstance(labels, jax.core.Tracer) and labels.size:
            concrete = np.asarray(labels)
            low, high = int(concrete.min()), int(concrete.max())
            if low < 0 or high >= num_classes:
                raise ValueError(
                    f"labels must lie in [0, num_classes) = [0, {num_classes}), got labels in [{low}, {high}]"
                )
        return labels, int(num_classes)
    concrete = np.asarray(labels)
    if concrete.size and concrete.min() < 0:
        raise ValueError(f"labels must be >= 0, got {int(concrete.min())}")
    counts = np.bincount(concrete)
    if counts.size < 2 or np.any(counts == 0):
        raise ValueError(f"labels must cover every class 0 … K−1 (K >= 2); samples per class: {counts.tolist()}")
    num_classes = counts.size
    return labels, num_classes


def _class_indicator(labels: Array, num_classes: int, dtype: DTypeLike | None) -> Array:
    """(N, K) one-hot rows of the labels."""
    return jnp.eye(num_classes, dtype=dtype)[labels]


def class_means(features: Array, labels: Array, *, num_classes: int | None = None) -> Array:
    """Class means M = [μ_1 … μ_K], shape (d, K), with μ_k the mean of the columns of class k."""
    labels, num_classes = _check_labels(features, labels, num_classes)
    onehot = _class_indicator(labels, num_classes, features.dtype)
    return features @ onehot / onehot.sum(axis=0, keepdims=True)


def centred_class_means(
    features: Array, labels: Array, *, num_classes: int | None = None, centre: Centre = "class_means"
) -> Array:
    """M̃ = M − c 1ᵀ, shape (d, K): the class means M (d, K) about the centre c (d,)::

        c = (1/K) Σ_k μ_k              (centre="class_means", the default; the paper's code)
        c = h̄ = (1/N) Σ_i h_i          (centre="samples", the sample mean)

    Both are the same point when the classes are balanced.

    Raises:
        ValueError: naming ``centre`` when it is not one of :data:`CENTRES`.

    Example:
        Two classes of 3 and 1 samples at ±1: the class means are centred at 0, the sample mean
        is 0.5.

        >>> import jax.numpy as jnp
        >>> features, labels = jnp.array([[1.0, 1.0, 1.0, -1.0]]), jnp.array([0, 0, 0, 1])
        >>> centred_class_means(features, labels).tolist()
        [[1.0, -1.0]]
        >>> centred_class_means(features, labels, centre="samples").tolist()
        [[0.5, -1.5]]
    """
    _check_centre(centre)
    means = class_means(features, labels, num_classes=num_classes)
    if centre == "samples":
        return means - features.mean(axis=1, keepdims=True)
    return means - means.mean(axis=1, keepdims=True)


def nc1_within_class_std(features: Array, labels: Array, *, num_classes: int | None = None) -> Array:
    """NC1 as the paper's code measures it: the within-class standard deviation of every feature,
    averaged over the d features and the K classes. 0 iff every sample equals its class mean.

    The standard deviation of feature j in class k is √(Σ_{i: y_i = k} (H_ji − μ_kj)² / n_k).
    """
    labels, num_classes = _check_labels(features, labels, num_classes)
    onehot = _class_indicator(labels, num_classes, features.dtype)  # (N, K)
    counts = onehot.sum(axis=0, keepdims=True)  # (1, K)
    means = features @ onehot / counts
    deviations = features - means[:, labels]  # (d, N)
    variances = jnp.square(deviations) @ onehot / counts  # (d, K)
    return jnp.mean(jnp.sqrt(variances))


def nc1_trace(
    features: Array, labels: Array, *, num_classes: int | None = None, centre: Centre = "class_means"
) -> Array:
    """NC1 in the trace form of Papyan et al. (2020): tr(Σ_W Σ_B⁺) / K, with the within-class and
    between-class covariances::

        Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ,   Σ_B = (1/K) Σ_k (μ_k − c)(μ_k − c)ᵀ,

    where the centre c is the mean of the class means (``centre="class_means"``, the default) or
    the sample mean h̄ (``centre="samples"``); see :func:`centred_class_means`.
    """
    labels, num_classes = _check_labels(features, labels, num_classes)
    means = class_means(features, labels, num_classes=num_classes)
    within = features - means[:, labels]
    sigma_w = within @ within.T / features.shape[1]
    centred = centred_class_means(features, labels, num_classes=num_classes, centre=centre)
    sigma_b = centred @ centred.T / num_classes
    return jnp.trace(sigma_w @ jnp.linalg.pinv(sigma_b, hermitian=True)) / num_classes


def simplex_etf_gram(num_classes: int, dtype: DTypeLike | None = None) -> Array:
    """The normalised Gram matrix of a simplex ETF, (I_K − 1 1ᵀ/K)/√(K − 1) (unit Frobenius norm)."""
    k = num_classes
    return (jnp.eye(k, dtype=dtype) - jnp.ones((k, k), dtype=dtype) / k) / jnp.sqrt(k - 1.0)


def nc2_etf_distance(
    features: Array, labels: Array, *, num_classes: int | None = None, centre: Centre = "class_means"
) -> Array:
    """NC2: ‖ M̃ᵀM̃/‖M̃ᵀM̃‖_F − (I_K − 1 1ᵀ/K)/√(K − 1) ‖_F, the distance of the centred class means
    M̃ (:func:`centred_class_means` with ``centre``) from a simplex equiangular tight frame (equal
    norms, pairwise angles arccos(−1/(K−1)))."""
    centred = centred_class_means(features, labels, num_classes=num_classes, centre=centre)
    gram = centred.T @ centred
    return jnp.linalg.norm(gram / jnp.linalg.norm(gram) - simplex_etf_gram(gram.shape[0], gram.dtype))


def nc3_self_duality(
    weights: Array,
    features: Array,
    labels: Array,
    *,
    num_classes: int | None = None,
    centre: Centre = "class_means",
) -> Array:
    """NC3: ‖ M̃/‖M̃‖_F − Wᵀ/‖W‖_F ‖_F for W of shape (K, d): classifier rows align with the
    centred class means M̃ (:func:`centred_class_means` with ``centre``)."""
    centred = centred_class_means(features, labels, num_classes=num_classes, centre=centre)
    return jnp.linalg.norm(centred / jnp.linalg.norm(centred) - weights.T / jnp.linalg.norm(weights))


def nc4_ncc_mismatch(
    weights: Array, bias: Array, features: Array, labels: Array, *, num_classes: int | None = None
) -> Array:
    """NC4: the fraction of samples on which the classifier, argmax_k (W h + b)_k, disagrees with
    the nearest-class-centre rule, argmin_k ‖h − μ_k‖. NaN, like NC1–NC3, when a logit or a class
    mean is not finite (NaN features, or a class without samples)."""
    means = class_means(features, labels, num_classes=num_classes)
    logits = weights @ features + bias[:, None]  # (K, N)
    distances = jnp.sum((features[:, None, :] - means[:, :, None]) ** 2, axis=0)  # (K, N)
    mismatch = jnp.argmax(logits, axis=0) != jnp.argmin(distances, axis=0)
    finite = jnp.all(jnp.isfinite(logits)) & jnp.all(jnp.isfinite(means))
    return jnp.where(finite, jnp.mean(mismatch.astype(features.dtype)), jnp.nan)


def pairwise_cosines(vectors: Array) -> Array:
    """Cosines of the angles between the columns of ``vectors`` (d, K): the (K, K) matrix
    ⟨v_k, v_l⟩ / (‖v_k‖ ‖v_l‖)."""
    unit = vectors / jnp.linalg.norm(vectors, axis=0, keepdims=True)
    return unit.T @ unit


def off_diagonal(matrix: Array) -> Array:
    """The K(K − 1) off-diagonal entries of a square matrix, as a flat array."""
    k = matrix.shape[0]
    return matrix[~np.eye(k, dtype=bool)]


def _ratio(z: float, num_classes: int) -> float:
    """f(z) = (z − 1)/(z + K − 1), the pairwise cosine of a Gram matrix ∝ I + ((z − 1)/K) 1 1ᵀ."""
    return (z - 1) / (z + num_classes - 1)


def equal_bias_cosines(bias_value: float, kernel: BlockKernel) -> tuple[float, float]:
    """Closed-form angles of the end-of-training geometry with equal biases b = β 1 (App. B.4).

    At the end of training with H₂ = 0 and E = 0 the class means M and classifier W satisfy
    W M = I_K − β 1 1ᵀ and WᵀW = (m/λ_c) M (I_K − α 1 1ᵀ) Mᵀ with α = m κ_n / λ_max
    (:meth:`~ntklib.block_kernel.BlockKernel.alpha`). Writing MᵀM = a (I + x 1 1ᵀ) with
    a = √(λ_c/m), these give, with u = 1 − α K = λ_c/λ_max::

        x = (|1 − K β| / √u − 1) / K,
        W Wᵀ = a⁻¹ (I − q 1 1ᵀ),  q = p + y − K p y,  p = 2β − K β²,  y = x / (1 + K x).

    Both simplify with s = abs(1 − K β) / √u: K x = s − 1 and K q = 1 − u s, so that, with
    f(z) = (z − 1)/(z + K − 1), strictly increasing for z ≥ 0::

        cos(class means) = x/(1 + x) = f(s),    cos(classifier rows) = −q/(1 − q) = f(u s).

    At β = 1/K (s = 0) both are the simplex ETF, f(0) = −1/(K − 1). Otherwise they are equal iff
    u = 1, i.e. α = 0 (κ_n = 0), and even then NC3 fails, since x describes the non-centred means.
    The derivation is in the chapter "Neural collapse from NTK alignment".

    Args:
        bias_value: β, with β ≠ 1/K (at β = 1/K, MᵀM is singular and the formula for W degenerates).
        kernel: the feature kernel (κ_d, κ_c, κ_n), a :class:`~ntklib.block_kernel.BlockKernel`.

    Returns:
        (cosine between two class means, cosine between two classifier rows).
    """
    k = kernel.num_classes
    if abs(1 - k * bias_value) < 1e-12:
        raise ValueError(f"bias_value must differ from 1/K = {1 / k}; there both frames are the simplex ETF")
    _, lamc, lammax = kernel.check_positive_definite().eigenvalues()
    u = lamc / lammax
    s = abs(1 - k * bias_value) / u**0.5
    return _ratio(s, k), _ratio(u * s, k)


class EndOfTrainingGrams(NamedTuple):
    """Gram matrices of the end-of-training geometry with general biases, each (K, K)."""

    means: Array
    """G = MᵀM, the Gram matrix of the (non-centred) class means."""
    classifier: Array
    """W Wᵀ, the Gram matrix of the classifier rows."""


def _symmetric_sqrt(matrix: Array) -> Array:
    """The positive semidefinite square root; eigenvalues at rounding level count as 0."""
    evals, evecs = jnp.linalg.eigh(matrix)
    floor = matrix.shape[0] * float(np.finfo(np.dtype(matrix.dtype)).eps) * jnp.abs(evals).max()
    return (evecs * jnp.sqrt(jnp.where(evals > floor, evals, 0.0))[None, :]) @ evecs.T


def end_of_training_grams(bias: ArrayLike, kernel: BlockKernel | ClassBlockKernel) -> EndOfTrainingGrams:
    """The class-mean and classifier Gram matrices at the end of training for any biases (App. B.4).

    With H₂ = 0, E = 0 and zero loss, B := W M = I_K − b 1ᵀ and
    WᵀW = (m/λ_c) M (I − α 1 1ᵀ) Mᵀ (α = :meth:`~ntklib.block_kernel.BlockKernel.alpha`), so
    G = MᵀM solves G (I − α J) G = a² BᵀB with a = √(λ_c/m), J = 1 1ᵀ. With
    S = (I − α J)^{1/2} = C + √u J/K (C = I − J/K, u = 1 − K α), its positive semidefinite
    solution is unique::

        G = a S⁻¹ (S BᵀB S)^{1/2} S⁻¹,        W Wᵀ = B G⁺ Bᵀ       # (K, K) each

    (the rows of W lie in the span of the class means, so W = B G⁺ Mᵀ; G is singular, with
    kernel span{b}, exactly when 1ᵀb = 1, e.g. for b = 1/K, where G = a C and W Wᵀ = C/a as in
    Theorem 5.2). For equal biases the angles are :func:`equal_bias_cosines`. The geometry depends
    on the kernel only through a (a scale) and α.

    Unequal classes (a :class:`~ntklib.block_kernel.ClassBlockKernel`, sizes n_k, per-class
    blocks): the same two relations hold with H K⁻¹ Hᵀ = M C Mᵀ for H = M Y, where
    C = Y K⁻¹ Yᵀ = S A⁻¹ S (K, K), S = diag(√n_k) and A the kernel's reduced matrix, so::

        G = C^{-1/2} (C^{1/2} BᵀB C^{1/2})^{1/2} C^{-1/2},        W Wᵀ = B G⁺ Bᵀ

    (:func:`end_of_training_weight`); for equal sizes C = (m/λ_c)(I − α J) and this is the
    formula above.

    Args:
        bias: b (K,), any real values.
        kernel: the positive definite feature kernel.

    Returns:
        EndOfTrainingGrams(means = MᵀM, classifier = W Wᵀ).
    """
    k = kernel.num_classes
    b = jnp.asarray(bias, dtype=jnp.result_type(float))
    if b.shape != (k,):
        raise ValueError(f"bias must have shape (K,) = ({k},), got {b.shape}")
    if isinstance(kernel, ClassBlockKernel):
        bmat = jnp.eye(k, dtype=b.dtype) - jnp.outer(b, jnp.ones(k, dtype=b.dtype))
        return _grams_from_weight(end_of_training_weight(kernel), bmat, jnp.eye(k, dtype=b.dtype))
    _, lamc, lammax = kernel.check_positive_definite().eigenvalues()
    a, u = (lamc / kernel.per_class) ** 0.5, lamc / lammax
    eye, avg = jnp.eye(k, dtype=b.dtype), jnp.full((k, k), 1.0 / k, dtype=b.dtype)
    s, s_inv = (eye - avg) + u**0.5 * avg, (eye - avg) + avg / u**0.5
    bmat = eye - jnp.outer(b, jnp.ones(k, dtype=b.dtype))
    means = a * s_inv @ _symmetric_sqrt(s @ bmat.T @ bmat @ s) @ s_inv
    means = (means + means.T) / 2
    return EndOfTrainingGrams(means, bmat @ jnp.linalg.pinv(means, hermitian=True) @ bmat.T)


def end_of_training_collapse(bias: ArrayLike, kernel: BlockKernel | ClassBlockKernel) -> tuple[float, float]:
    """NC2 and NC3 of the end-of-training geometry of :func:`end_of_training_grams`, in closed form.

    With C = I − J/K the centred means M̃ = M C have Gram C G C, and tr(W M̃) = tr(B C) = K − 1, so::

        NC2 = ‖ C G C/‖C G C‖_F − C/√(K − 1) ‖_F,
        NC3 = (2 − 2 (K − 1) / √(tr(C G C) tr(W Wᵀ)))^{1/2}.

    Both depend on the biases and on α only; they vanish for b = 1/K and tend to 0 as α → 1/K for
    any biases (remark on α → 1/K in App. B.4). tr(B C) = K − 1 holds for any b, so the formula
    holds for a :class:`~ntklib.block_kernel.ClassBlockKernel` too.

    Returns:
        (NC2, NC3) as :func:`nc2_etf_distance` and :func:`nc3_self_duality` measure them with the
        default ``centre="class_means"`` (C centres at the mean of the class means; on the block
        model's balanced batch either centre).
    """
    return _collapse_of_grams(end_of_training_grams(bias, kernel))


def _collapse_of_grams(grams: EndOfTrainingGrams) -> tuple[float, float]:
    """(NC2, NC3) of Grams G = MᵀM and W Wᵀ with W M = I − b 1ᵀ (:func:`end_of_training_collapse`)."""
    k = grams.means.shape[0]
    centring = jnp.eye(k) - jnp.ones((k, k)) / k
    centred = centring @ grams.means @ centring
    nc2 = jnp.linalg.norm(centred / jnp.linalg.norm(centred) - simplex_etf_gram(k, centred.dtype))
    cosine = (k - 1) / jnp.sqrt(jnp.trace(centred) * jnp.trace(grams.classifier))
    return float(nc2), float(jnp.sqrt(jnp.clip(2 - 2 * cosine, 0.0)))


def _orthonormal_complement(vector: NDArray[np.float64]) -> NDArray[np.float64]:
    """Q (K, K − 1), an orthonormal basis of the vectors orthogonal to ``vector`` (K,)."""
    return np.linalg.svd(vector[None, :])[2][1:].T


def _inverse_sqrt_and_sqrt(matrix: Array) -> tuple[Array, Array]:
    """(M^{-1/2}, M^{1/2}) of a symmetric positive definite matrix, by eigh."""
    evals, evecs = jnp.linalg.eigh(matrix)
    return (evecs / jnp.sqrt(evals)[None, :]) @ evecs.T, (evecs * jnp.sqrt(evals)[None, :]) @ evecs.T


def _grams_from_weight(weight: Array, bmat: Array, basis: Array) -> EndOfTrainingGrams:
    """G = Q Ĝ Qᵀ, the positive semidefinite solution with range in span(Q) of G C G = BᵀB, where
    Ĝ = Ĉ^{-1/2}(Ĉ^{1/2} B̂ Ĉ^{1/2})^{1/2}Ĉ^{-1/2}, Ĉ = QᵀCQ ≻ 0, B̂ = Qᵀ BᵀB Q; and W Wᵀ = B G⁺ Bᵀ."""
    inv_sqrt, sqrt = _inverse_sqrt_and_sqrt(basis.T @ weight @ basis)
    reduced = inv_sqrt @ _symmetric_sqrt(sqrt @ basis.T @ bmat.T @ bmat @ basis @ sqrt) @ inv_sqrt
    means = basis @ reduced @ basis.T
    means = (means + means.T) / 2
    return EndOfTrainingGrams(means, bmat @ jnp.linalg.pinv(means, hermitian=True) @ bmat.T)


def end_of_training_weight(kernel: ClassBlockKernel, *, centred: bool = False) -> Array:
    """C (K, K) with H K⁻¹ Hᵀ = M C Mᵀ for features H = M Y with no within-class part::

        C = Y K⁻¹ Yᵀ = S A⁻¹ S,          S = diag(√n_k), A = kernel.reduced_matrix()
        C_c = Y K̃⁺ Yᵀ = S (Π A Π)⁺ S,    K̃ = P K P, Π = I − s sᵀ/N, s = (√n_k)   (centred)

    (Y = S Lᵀ with L = ``kernel.class_basis()``, K⁻¹ = L A⁻¹ Lᵀ on the class-constant vectors, and
    Lᵀ P L = Π.) The centred C_c is singular, with kernel span{1_K}. Balanced: C = (m/λ_c)(I − αJ),
    C_c = (m/λ_c)(I − J/K).

    Example:
        >>> from ntklib.block_kernel import BlockKernel, ClassBlockKernel
        >>> block = BlockKernel(3.0, 1.0, 0.2, num_classes=2, per_class=3)  # λ_c = 4.4, α = 0.6/5.6
        >>> c = end_of_training_weight(ClassBlockKernel.from_block_kernel(block))
        >>> [round(v, 6) for v in c[0].tolist()], round(3 / 4.4 * (1 - block.alpha()), 6)
        ([0.608766, -0.073052], 0.608766)
    """
    sizes = np.asarray(kernel.class_sizes, dtype=np.float64)
    root = np.sqrt(sizes)
    reduced = kernel.check_positive_definite().reduced_matrix()
    if centred:
        q = _orthonormal_complement(root)
        inverse = q @ np.linalg.inv(q.T @ reduced @ q) @ q.T
    else:
        inverse = np.linalg.inv(reduced)
    return jnp.asarray(root[:, None] * inverse * root[None, :])


def centred_end_of_training_grams(kernel: BlockKernel | ClassBlockKernel) -> EndOfTrainingGrams:
    """The end-of-training Grams of the centred flow (features kept at h̄ = 0, as BatchNorm does).

    With the centred flow (``ntklib.invariant.kernel_flow_vector_field(..., centred=True)``) from
    h̄ = 0 and E_c = WᵀW − H K̃⁺ Hᵀ = 0, at zero loss with H₂ = 0:

    - h̄ = M n / N = 0 and W M + b 1ᵀ = I give b = n/N, the class proportions (1/K if balanced);
    - B = W M = I − b 1ᵀ, WᵀW = M C_c Mᵀ (:func:`end_of_training_weight` with ``centred``), so
      G = MᵀM solves G C_c G = BᵀB with G n = 0. On n^⊥ (basis Q) Ĉ = Qᵀ C_c Q is positive definite
      (1_K, the kernel of C_c, is not in n^⊥), and G = Q Ĝ Qᵀ is unique::

          Ĝ = Ĉ^{-1/2} (Ĉ^{1/2} Qᵀ BᵀB Q Ĉ^{1/2})^{1/2} Ĉ^{-1/2},        W Wᵀ = B G⁺ Bᵀ

    For equal sizes this is Theorem 5.2: G = √(λ_c/m)(I − J/K), W Wᵀ = √(m/λ_c)(I − J/K), NC2 = NC3 = 0.

    Returns:
        EndOfTrainingGrams(means = MᵀM, classifier = W Wᵀ); the bias is n/N.

    Example:
        >>> from ntklib.block_kernel import BlockKernel
        >>> grams = centred_end_of_training_grams(BlockKernel(3.0, 1.0, 0.2, num_classes=3, per_class=4))
        >>> [round(v, 6) for v in grams.means[0].tolist()]  # √(λ_c/m)(I − J/K), λ_c = 5.2
        [0.760117, -0.380058, -0.380058]
    """
    if isinstance(kernel, BlockKernel):
        kernel = ClassBlockKernel.from_block_kernel(kernel)
    k = kernel.num_classes
    sizes = np.asarray(kernel.class_sizes, dtype=np.float64)
    bias = sizes / sizes.sum()
    bmat = jnp.eye(k) - jnp.asarray(np.outer(bias, np.ones(k)))
    basis = jnp.asarray(_orthonormal_complement(sizes))
    return _grams_from_weight(end_of_training_weight(kernel, centred=True), bmat, basis)


def centred_end_of_training_collapse(kernel: BlockKernel | ClassBlockKernel) -> tuple[float, float]:
    """(NC2, NC3) of :func:`centred_end_of_training_grams`, as the default ``centre="class_means"``
    measures them (the formulas of :func:`end_of_training_collapse`). 0 for equal class sizes."""
    return _collapse_of_grams(centred_end_of_training_grams(kernel))
