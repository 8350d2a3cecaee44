"""The training invariant of Theorem 5.1 (paper §5.1–§5.2) and the feature decomposition.

Shapes: features ``H`` (d, N) of a class-sorted balanced batch (N = K m), class means ``M``
(d, K), within-class part ``H₂`` (d, K(m − 1)), classifier ``W`` (K, d).

Decomposition. With ``Q`` (m, m − 1) any orthonormal basis of 1_m^⊥ and ``V₂ = I_K ⊗ Q``::

    H = M Y + H₂ V₂ᵀ,   M = H Yᵀ / m,   H₂ = H V₂.

Invariant. Along the gradient flow of Theorem 4.1 (any constant block kernel with K_κ ≻ 0)::

    E = WᵀW − H K_κ⁻¹ Hᵀ
      = WᵀW − (m/λ_c) M Mᵀ − (1/λ_0) H₂H₂ᵀ + (N² κ_n / (λ_c λ_max)) h̄ h̄ᵀ      # (d, d)

is constant in time.

General kernels. The block structure is not needed for the conservation: for any symmetric
positive definite (N, N) kernel K shared by all feature neurons (Assumption 3.2 (ii)) and any
labels, E = WᵀW − H K⁻¹ Hᵀ is constant along dH/dt = −Wᵀ R K, dW/dt = −R Hᵀ
(:func:`kernel_invariant`, :func:`kernel_flow_vector_field`). What does need the block structure
is the step from E = 0 to collapse (Theorem 5.2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np
from jax import Array
from jax.typing import ArrayLike, DTypeLike

from ntklib.block_kernel import BlockKernel, ClassBlockKernel, one_hot_labels


def within_class_basis(per_class: int, dtype: DTypeLike | None = None) -> Array:
    """An orthonormal basis Q (m, m − 1) of the vectors orthogonal to 1_m (Helmert contrasts)."""
    m = per_class
    q = np.zeros((m, m - 1))
    for j in range(1, m):
        q[:j, j - 1] = 1.0
        q[j, j - 1] = -j
        q[:, j - 1] /= np.sqrt(j * (j + 1))
    return jnp.asarray(q, dtype=dtype)


def _sizes(features: Array, kernel: BlockKernel) -> None:
    if features.ndim != 2 or features.shape[1] != kernel.num_samples:
        raise ValueError(f"features must be (d, N) with N = K m = {kernel.num_samples}, got shape {features.shape}")


def _label_and_within_bases(
    num_classes: int, per_class: int, basis: Array | None, dtype: DTypeLike | None
) -> tuple[Array, Array]:
    """Y = I_K ⊗ 1_mᵀ (K, N) and V₂ = I_K ⊗ Q (N, K(m − 1))."""
    q = within_class_basis(per_class, dtype) if basis is None else basis
    return one_hot_labels(num_classes, per_class, dtype), jnp.kron(jnp.eye(num_classes, dtype=dtype), q)


def decompose_features(
    features: Array, num_classes: int, per_class: int, basis: Array | None = None
) -> tuple[Array, Array]:
    """Split H (d, N) into class means M (d, K) and the within-class part H₂ (d, K(m − 1)).

    Args:
        features: H, columns sorted by class.
        basis: Q (m, m − 1), any orthonormal basis of 1_m^⊥; defaults to :func:`within_class_basis`.
            H₂H₂ᵀ does not depend on this choice.

    Returns:
        (M, H₂) with H = M Y + H₂ V₂ᵀ.
    """
    y, v2 = _label_and_within_bases(num_classes, per_class, basis, features.dtype)
    return features @ y.T / per_class, features @ v2


def compose_features(class_means: Array, within: Array, per_class: int, basis: Array | None = None) -> Array:
    """The inverse of :func:`decompose_features`: H = M Y + H₂ V₂ᵀ, shape (d, K m)."""
    y, v2 = _label_and_within_bases(class_means.shape[1], per_class, basis, class_means.dtype)
    return class_means @ y + within @ v2.T


def invariant(weights: Array, features: Array, kernel: BlockKernel) -> Array:
    """E = WᵀW − H K_κ⁻¹ Hᵀ, shape (d, d), with the closed-form inverse of K_κ."""
    _sizes(features, kernel)
    return weights.T @ weights - features @ kernel.inverse(features.dtype) @ features.T


class InvariantTerms(NamedTuple):
    """The four matrices that make up E in Theorem 5.1, each (d, d)."""

    wtw: Array
    """WᵀW."""
    mmt: Array
    """M Mᵀ (class means)."""
    h2h2t: Array
    """H₂H₂ᵀ (within-class part; independent of the basis Q)."""
    mean_outer: Array
    """h̄ h̄ᵀ (global mean)."""


def invariant_terms(weights: Array, features: Array, kernel: BlockKernel) -> InvariantTerms:
    """The four matrices that make up E (see :class:`InvariantTerms`)."""
    _sizes(features, kernel)
    means, within = decompose_features(features, kernel.num_classes, kernel.per_class)
    mean = features.mean(axis=1, keepdims=True)
    return InvariantTerms(
        wtw=weights.T @ weights, mmt=means @ means.T, h2h2t=within @ within.T, mean_outer=mean @ mean.T
    )


def invariant_from_terms(terms: InvariantTerms, kernel: BlockKernel) -> Array:
    """E = WᵀW − (m/λ_c) M Mᵀ − (1/λ_0) H₂H₂ᵀ + (N² κ_n / (λ_c λ_max)) h̄ h̄ᵀ."""
    lam0, lamc, lammax = kernel.check_positive_definite().eigenvalues()
    m, n = kernel.per_class, kernel.num_samples
    return (
        terms.wtw
        - (m / lamc) * terms.mmt
        - terms.h2h2t / lam0
        + (n**2 * kernel.other_class / (lamc * lammax)) * terms.mean_outer
    )


def paper_scaled_invariant(weights: Array, features: Array, kernel: BlockKernel) -> Array:
    """λ_c E as the paper writes it (eq. 26):
    λ_c WᵀW − m M Mᵀ − (λ_c/λ_0) H₂H₂ᵀ + α K² m h̄ h̄ᵀ, with α = κ_n/(λ_0/m + κ_c + (K − 1)κ_n)."""
    t = invariant_terms(weights, features, kernel)
    lam0, lamc, _ = kernel.check_positive_definite().eigenvalues()
    k, m = kernel.num_classes, kernel.per_class
    return lamc * t.wtw - m * t.mmt - (lamc / lam0) * t.h2h2t + kernel.alpha() * k**2 * m * t.mean_outer


def end_of_training_invariant(weights: Array, features: Array, lam0: float) -> Array:
    """E_eot = WᵀW − H Hᵀ / λ_0, conserved by the end-of-training flow dH/dt = −λ_0 WᵀR, dW/dt = −R Hᵀ."""
    return weights.T @ weights - features @ features.T / lam0


def _cosine(a: Array, b: Array) -> Array:
    return jnp.vdot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b))


def _alignment_values(wtw: Array, feature_term: Array) -> dict[str, Array]:
    """``invariant_norm`` ‖WᵀW − HK⁻¹Hᵀ‖_F, ``invariant_alignment`` (their cosine) and ``wtw_norm``."""
    return {
        "invariant_norm": jnp.linalg.norm(wtw - feature_term),
        "invariant_alignment": _cosine(wtw, feature_term),
        "wtw_norm": jnp.linalg.norm(wtw),
    }


def invariant_metrics(weights: Array, features: Array, kernel: BlockKernel) -> dict[str, float]:
    """The invariant columns of a record (``ntklib.measure.INVARIANT_COLUMNS``, §5.2), from measured κ.

    Returns:
        ``invariant_norm`` ‖E‖_F; ``invariant_alignment`` ⟨WᵀW, HK⁻¹Hᵀ⟩/(‖WᵀW‖‖HK⁻¹Hᵀ‖), which is 1
        when E = 0; ``wtw_norm`` ‖WᵀW‖_F; ``mmt_norm`` ‖MMᵀ‖_F; ``h2h2t_norm`` ‖H₂H₂ᵀ‖_F;
        ``mean_outer_norm`` ‖h̄h̄ᵀ‖_F.
    """
    terms = invariant_terms(weights, features, kernel)
    feature_term = terms.wtw - invariant_from_terms(terms, kernel)  # H K⁻¹ Hᵀ
    values = {
        **_alignment_values(terms.wtw, feature_term),
        "mmt_norm": jnp.linalg.norm(terms.mmt),
        "h2h2t_norm": jnp.linalg.norm(terms.h2h2t),
        "mean_outer_norm": jnp.linalg.norm(terms.mean_outer),
    }
    return {name: float(value) for name, value in values.items()}


def zero_invariant_state(
    key: Array,
    kernel: BlockKernel | ClassBlockKernel,
    feature_dim: int,
    *,
    scale: float = 0.1,
    centred: bool = True,
    rank: int | None = None,
    dtype: DTypeLike = jnp.float64,
) -> tuple[Array, Array, Array]:
    """An initial (H₀, W₀, b₀) with E = 0 exactly (the set-up of Theorem 5.2).

    H₀ = A Z with A (d, K) and Z (K, N) Gaussian (Z P with P = I − 1 1ᵀ/N when ``centred``, so that
    h̄ = 0), and W₀ = (Z K_κ⁻¹ Zᵀ)^{1/2} Aᵀ, so that W₀ᵀW₀ = H₀ K_κ⁻¹ H₀ᵀ. b₀ = 0.
    :func:`psd_invariant_state` with ``excess = 0`` returns the same state.

    For a :class:`~ntklib.block_kernel.ClassBlockKernel` (unequal classes) with ``centred``,
    K_κ⁻¹ is replaced by K̃⁺ = (P K P)⁺, so that E_c = 0 (``kernel_invariant(..., centred=True)``),
    the invariant of the centred flow; for a balanced kernel the two agree when h̄ = 0.

    ``rank`` (see :func:`psd_invariant_state`) gives features of rank ``rank`` < K, e.g. K − 1 for
    the centred flow, whose final class means have rank K − 1: a rank-K start leaves one feature
    direction that only H₂ occupies, and NC1 then converges only polynomially.

    Returns:
        (H₀ (d, N), W₀ (K, d), b₀ (K,)).
    """
    excess = jnp.zeros((kernel.num_classes, kernel.num_classes), dtype)
    return psd_invariant_state(key, kernel, feature_dim, excess, scale=scale, centred=centred, rank=rank, dtype=dtype)


def _check_excess(excess: Array, num_classes: int) -> None:
    if excess.shape != (num_classes, num_classes):
        raise ValueError(f"excess must be (K, K) = ({num_classes}, {num_classes}), got shape {excess.shape}")
    concrete = np.asarray(excess, dtype=np.float64)
    scale = max(1.0, float(np.abs(concrete).max()))
    if not np.allclose(concrete, concrete.T, rtol=0.0, atol=1e-12 * scale):
        raise ValueError("excess must be symmetric")
    low = float(np.linalg.eigvalsh(concrete).min())
    if low < -1e-12 * scale:
        raise ValueError(f"excess must be positive semidefinite, got smallest eigenvalue {low:.3g}")


def _state_kernel_inverse(kernel: BlockKernel | ClassBlockKernel, centred: bool, dtype: DTypeLike) -> Array:
    """K⁻¹, or (P K P)⁺ = Q (Qᵀ K Q)⁻¹ Qᵀ for a ClassBlockKernel with ``centred`` (N, N)."""
    if centred and isinstance(kernel, ClassBlockKernel):
        q, kq = _centred_kernel_parts(kernel.check_positive_definite().matrix(dtype))
        return q @ jnp.linalg.inv(kq) @ q.T
    return kernel.inverse(dtype)


def psd_invariant_state(
    key: Array,
    kernel: BlockKernel | ClassBlockKernel,
    feature_dim: int,
    excess: Array,
    *,
    scale: float = 0.1,
    centred: bool = True,
    rank: int | None = None,
    dtype: DTypeLike = jnp.float64,
) -> tuple[Array, Array, Array]:
    """An initial (H₀, W₀, b₀) with a positive semidefinite invariant E = A D Aᵀ (remark (5) of §5.3).

    H₀ = A Z as in :func:`zero_invariant_state`, and W₀ = (Z K_κ⁻¹ Zᵀ + D)^{1/2} Aᵀ, so that::

        E = W₀ᵀW₀ − H₀ K_κ⁻¹ H₀ᵀ = A (Z K_κ⁻¹ Zᵀ + D − Z K_κ⁻¹ Zᵀ) Aᵀ = A D Aᵀ ⪰ 0,   # (d, d)

    of the rank of D (A has full column rank almost surely). b₀ = 0. (For a
    :class:`~ntklib.block_kernel.ClassBlockKernel` with ``centred`` it is E_c that equals A D Aᵀ; see
    :func:`zero_invariant_state`.)

    Args:
        key: PRNG key; the same key gives the same H₀ (and A, Z) for every D.
        excess: D (K, K), symmetric positive semidefinite. D = 0 gives E = 0.
        scale: standard deviation of the entries of A.
        centred: centre Z, so that h̄ = 0.
        rank: None (Z Gaussian, of rank K), or 1 ≤ r ≤ K: Z = Z₁ Z₂ with Gaussian Z₁ (K, r) and
            Z₂ (r, N), so that H₀ has rank r (before centring; K − 1 with ``centred`` keeps rank
            K − 1 almost surely). The default draws the same Z as before this option existed.

    Returns:
        (H₀ (d, N), W₀ (K, d), b₀ (K,)).

    Raises:
        ValueError: naming ``feature_dim`` when it is below K, ``rank`` when it is not in
            1 … K, or ``excess`` when it is not a symmetric positive semidefinite (K, K) matrix.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> jax.config.update("jax_enable_x64", True)
        >>> kernel = BlockKernel(2.0, 0.8, 0.1, num_classes=3, per_class=4)
        >>> h, w, b = psd_invariant_state(jax.random.key(0), kernel, 5, jnp.diag(jnp.array([1.0, 0, 0])))
        >>> e = np.linalg.eigvalsh(invariant(w, h, kernel))
        >>> bool(e.min() > -1e-12), int(np.sum(e > 1e-9))  # E ⪰ 0, of rank 1
        (True, 1)
    """
    if feature_dim < kernel.num_classes:
        raise ValueError(f"feature_dim must be >= num_classes = {kernel.num_classes}, got {feature_dim}")
    excess = jnp.asarray(excess, dtype)
    _check_excess(excess, kernel.num_classes)
    if rank is not None and not 1 <= rank <= kernel.num_classes:
        raise ValueError(f"rank must be in 1 … num_classes = {kernel.num_classes}, got {rank}")
    k_a, k_z = jax.random.split(key)
    a = scale * jax.random.normal(k_a, (feature_dim, kernel.num_classes), dtype)
    if rank is None:
        z = jax.random.normal(k_z, (kernel.num_classes, kernel.num_samples), dtype)
    else:
        k_left, k_right = jax.random.split(k_z)
        left = jax.random.normal(k_left, (kernel.num_classes, rank), dtype)
        z = left @ jax.random.normal(k_right, (rank, kernel.num_samples), dtype)
    if centred:
        z = z - z.mean(axis=1, keepdims=True)
    s = z @ _state_kernel_inverse(kernel, centred, dtype) @ z.T + excess
    evals, evecs = jnp.linalg.eigh(s)
    # eigenvalues at rounding level count as 0: with rank < K (or a singular D) S is singular, and
    # the square root of a rounding error (~1e-8 of the scale) would give W₀ a spurious direction
    floor = kernel.num_classes * float(np.finfo(np.dtype(dtype)).eps) * jnp.abs(evals).max()
    sqrt_s = (evecs * jnp.sqrt(jnp.where(evals > floor, evals, 0.0))[None, :]) @ evecs.T
    return a @ z, sqrt_s @ a.T, jnp.zeros(kernel.num_classes, dtype)


# ---------------------------------------------------------------- any positive definite kernel


def _check_kernel_matrix(kernel_matrix: ArrayLike, num_samples: int) -> Array:
    """The (N, N) kernel as an array; symmetric positive definite when concrete, else ValueError."""
    kmat = jnp.asarray(kernel_matrix)
    if kmat.shape != (num_samples, num_samples):
        raise ValueError(f"kernel_matrix must be (N, N) = ({num_samples}, {num_samples}), got shape {kmat.shape}")
    if not isinstance(kmat, jax.core.Tracer):
        concrete = np.asarray(kmat, dtype=np.float64)
        scale = max(float(np.abs(concrete).max()), np.finfo(np.float64).tiny)
        if not np.allclose(concrete, concrete.T, rtol=0.0, atol=1e-12 * scale):
            raise ValueError("kernel_matrix must be symmetric")
        low = float(np.linalg.eigvalsh(concrete).min())
        if not low > 0:
            raise ValueError(f"kernel_matrix must be positive definite, got smallest eigenvalue {low:.3g}")
    return kmat


def _centred_kernel_parts(kmat: Array) -> tuple[Array, Array]:
    """Q (N, N − 1), an orthonormal basis of 1_N^⊥, and Qᵀ K Q (N − 1, N − 1)."""
    q = within_class_basis(kmat.shape[0], kmat.dtype)
    return q, q.T @ kmat @ q


def kernel_invariant(weights: Array, features: Array, kernel_matrix: ArrayLike, *, centred: bool = False) -> Array:
    """E = WᵀW − H K⁻¹ Hᵀ, shape (d, d), for any symmetric positive definite kernel K (N, N).

    W is (K, d), H is (d, N) in any sample order (K's order). H K⁻¹ Hᵀ = XᵀX with
    X = L⁻¹Hᵀ and K = L Lᵀ (Cholesky), so it is positive semidefinite to rounding. For a
    :class:`~ntklib.block_kernel.BlockKernel` matrix this is :func:`invariant`.

    With ``centred`` the feature kernel is the kernel of centred features, K̃ = P K P
    (P = I − 1 1ᵀ/N, singular), and::

        E_c = WᵀW − H K̃⁺ Hᵀ,    K̃⁺ = Q (Qᵀ K Q)⁻¹ Qᵀ   (Q orthonormal basis of 1^⊥),   # (d, d)

    conserved by the centred flow of :func:`kernel_flow_vector_field` while H 1 = 0. When
    K 1 ∝ 1 (a balanced block kernel) K̃⁺ = K⁻¹ P, so E_c = E on features with H 1 = 0; otherwise
    they differ.

    Raises:
        ValueError: naming ``kernel_matrix`` when it is not (N, N), symmetric and positive
            definite, or ``features`` / ``weights`` when their shapes do not fit.

    Example:
        >>> import jax.numpy as jnp
        >>> kmat = jnp.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 1.5]])
        >>> h = jnp.array([[1.0, 0.0, -1.0]])  # d = 1, N = 3
        >>> w = jnp.array([[0.3], [0.4]])  # K = 2
        >>> e = kernel_invariant(w, h, kmat)
        >>> bool(jnp.allclose(e, w.T @ w - h @ jnp.linalg.inv(kmat) @ h.T)), e.shape
        (True, (1, 1))
    """
    if features.ndim != 2:
        raise ValueError(f"features must be (d, N), got shape {features.shape}")
    if weights.ndim != 2 or weights.shape[1] != features.shape[0]:
        raise ValueError(f"weights must be (K, d) with d = {features.shape[0]}, got shape {weights.shape}")
    kmat = _check_kernel_matrix(kernel_matrix, features.shape[1]).astype(features.dtype)
    if centred:
        q, kq = _centred_kernel_parts(kmat)
        features, kmat = features @ q, kq
    chol = jnp.linalg.cholesky(kmat)
    x = jax.scipy.linalg.solve_triangular(chol, features.T, lower=True)  # (N, d)
    return weights.T @ weights - x.T @ x


def kernel_flow_vector_field(
    kernel_matrix: ArrayLike, targets: ArrayLike, *, centred: bool = False, train_bias: bool = True
) -> Callable[[Array | float, Any, object], Any]:
    """The gradient flow of ½‖R‖²_F with one feature kernel K (N, N) shared by all neurons::

        R = W H + b 1ᵀ − Y                      # (K, N); Y = targets, any labels
        dH/dt = −Wᵀ R K,   dW/dt = −R Hᵀ,   db/dt = −R 1_N (0 if not train_bias)

    (the flow of Theorem 4.1 with any symmetric positive definite K in place of K_κ). It conserves
    E = WᵀW − H K⁻¹ Hᵀ (:func:`kernel_invariant`), whatever b does, since b enters only through R::

        d(WᵀW)/dt    = ẆᵀW + WᵀẆ = −(H RᵀW + WᵀR Hᵀ),
        d(HK⁻¹Hᵀ)/dt = Ḣ K⁻¹Hᵀ + H K⁻¹Ḣᵀ = −(WᵀR K K⁻¹ Hᵀ + H K⁻¹ K RᵀW) = −(WᵀR Hᵀ + H RᵀW).

    With ``centred`` K is replaced by K̃ = P K P (P = I − 1 1ᵀ/N), the kernel of centred features,
    as BatchNorm makes them: dH/dt = −Wᵀ R P K P. Then H 1 stays constant (K̃ 1 = 0) and, while
    H 1 = 0 (so that H K̃⁺K̃ = H P = H), the same two lines with K̃⁺ conserve
    E_c = WᵀW − H K̃⁺ Hᵀ (``kernel_invariant(..., centred=True)``). For a balanced block kernel
    K̃ = K P, which is ``ntklib.dynamics.theorem41_vector_field(kernel, centred=True)``. Centring
    with P after K, −Wᵀ R K P, conserves neither E nor E_c unless K 1 ∝ 1.

    Args:
        kernel_matrix: K (N, N), symmetric positive definite.
        targets: Y (K, N), e.g. one-hot labels of any class sizes.
        centred: use P K P (see above).
        train_bias: if False the bias keeps its initial value.

    Returns:
        ``f(t, state, args)`` for diffrax (``ntklib.dynamics.integrate``), on a state (H, W, b) of
        shapes (d, N), (K, d), (K,): a tuple or ``ntklib.dynamics.FlowState``; it returns the
        time derivatives in the same container.

    Example:
        >>> import jax.numpy as jnp
        >>> kmat, y = jnp.array([[2.0, 0.5], [0.5, 1.0]]), jnp.eye(2)
        >>> field = kernel_flow_vector_field(kmat, y)
        >>> h, w, b = jnp.eye(2), jnp.zeros((2, 2)), jnp.zeros(2)
        >>> dh, dw, db = field(0.0, (h, w, b), None)  # R = −Y: dW/dt = Y Hᵀ, db/dt = Y 1
        >>> dw.tolist(), db.tolist()
        ([[1.0, 0.0], [0.0, 1.0]], [1.0, 1.0])
    """
    y = jnp.asarray(targets)
    if y.ndim != 2:
        raise ValueError(f"targets must be (K, N), got shape {y.shape}")
    kmat = _check_kernel_matrix(kernel_matrix, y.shape[1])
    if centred:
        kmat = kmat - kmat.mean(axis=0, keepdims=True)
        kmat = kmat - kmat.mean(axis=1, keepdims=True)

    def vector_field(t: Array | float, state: Any, args: object) -> Any:
        h, w, b = state
        res = w @ h + b[:, None] - y.astype(h.dtype)
        dh = -w.T @ (res @ kmat.astype(h.dtype))
        db = -res.sum(axis=1) if train_bias else jnp.zeros_like(b)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(state), [dh, -res @ h.T, db])

    return vector_field


def kernel_invariant_metrics(weights: Array, features: Array, kernel_matrix: ArrayLike) -> dict[str, float]:
    """``invariant_norm``, ``invariant_alignment`` and ``wtw_norm`` (as :func:`invariant_metrics`) for
    any symmetric positive-definite N×N feature kernel, through :func:`kernel_invariant`; the split of
    E into its three class terms needs a balanced block kernel and is not returned."""
    wtw = weights.T @ weights
    feature_term = wtw - kernel_invariant(weights, features, kernel_matrix)
    return {name: float(value) for name, value in _alignment_values(wtw, feature_term).items()}
