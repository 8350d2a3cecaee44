"""Block-structured kernels (paper §3, Definition 3.1 and Table 1).

A kernel ``κ(x, x')`` has *block structure* ``(κ_d, κ_c, κ_n)`` on a class-sorted, balanced batch
of ``K`` classes with ``m`` samples each (``N = K m``) when it equals ``κ_d`` on the diagonal,
``κ_c`` on two distinct samples of one class and ``κ_n`` on samples of different classes::

    K_κ = (κ_d − κ_c) I_N + (κ_c − κ_n)(I_K ⊗ 1_m 1_mᵀ) + κ_n 1_N 1_Nᵀ        # (N, N)

It has three distinct eigenvalues (Table 1 of the paper):

=========  ==========================================  ===================  ============
name       value                                       eigenvectors         multiplicity
=========  ==========================================  ===================  ============
λ_max      κ_d − κ_c + m(κ_c − κ_n) + N κ_n              1_N                  1
λ_c        κ_d − κ_c + m(κ_c − κ_n)                      v ⊗ 1_m, v ⊥ 1_K     K − 1
λ_0        κ_d − κ_c                                     e_k ⊗ u, u ⊥ 1_m     K(m − 1)
=========  ==========================================  ===================  ============

Everything here is closed form; nothing is diagonalised numerically.

Unequal classes. :class:`ClassBlockKernel` is the sibling for class sizes n_1 … n_K (class k owns
n_k consecutive samples, N = Σ n_k) and block values that may differ by class, κ_d^(k) and
κ_c^(k) on class k's block (a *specialised* kernel), κ_n between classes. Its within-class
eigenvalues stay closed form; the class-level ones are those of a K×K diagonal-plus-rank-one
matrix, closed form for up to two distinct class-level values and an eigh of a small matrix beyond.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import DTypeLike
from numpy.typing import NDArray


class BlockEigenvalues(NamedTuple):
    """The three distinct eigenvalues of a block kernel, smallest first."""

    lam0: float
    """λ_0 = κ_d − κ_c, for the within-class directions (multiplicity K(m − 1))."""
    lamc: float
    """λ_c = λ_0 + m(κ_c − κ_n), for the class-mean directions (multiplicity K − 1)."""
    lammax: float
    """λ_max = λ_c + N κ_n, for the global-mean direction 1_N (multiplicity 1)."""


class BlockProjectors(NamedTuple):
    """Orthogonal projectors onto the three eigenspaces; they sum to I_N. Each is (N, N)."""

    glob: Array
    """P_glob = 1 1ᵀ / N."""
    cls: Array
    """P_cls = (I_K ⊗ 1 1ᵀ)/m − 1 1ᵀ/N."""
    within: Array
    """P_within = I_N − (I_K ⊗ 1 1ᵀ)/m."""


def _check_sizes(num_classes: int, per_class: int) -> None:
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes (K) must be an integer >= 2, got {num_classes!r}")
    if int(per_class) != per_class or per_class < 2:
        raise ValueError(f"per_class (m) must be an integer >= 2, got {per_class!r}")


@dataclasses.dataclass(frozen=True)
class BlockKernel:
    """A block-structured kernel on a class-sorted balanced batch.

    Args:
        diag: κ_d, the value on a sample with itself.
        same_class: κ_c, the value on two distinct samples of the same class.
        other_class: κ_n, the value on samples of different classes.
        num_classes: K ≥ 2.
        per_class: m ≥ 2 samples per class.

    Raises:
        ValueError: naming ``num_classes`` or ``per_class`` when either is below 2.

    Example:
        >>> k = BlockKernel(3.0, 1.0, 0.2, num_classes=4, per_class=5)
        >>> k.eigenvalues()
        BlockEigenvalues(lam0=2.0, lamc=6.0, lammax=10.0)
        >>> k.matrix().shape
        (20, 20)
    """

    diag: float
    same_class: float
    other_class: float
    num_classes: int
    per_class: int

    def __post_init__(self) -> None:
        _check_sizes(self.num_classes, self.per_class)

    @property
    def num_samples(self) -> int:
        """N = K m."""
        return self.num_classes * self.per_class

    def eigenvalues(self) -> BlockEigenvalues:
        """(λ_0, λ_c, λ_max) of Table 1."""
        lam0 = self.diag - self.same_class
        lamc = lam0 + self.per_class * (self.same_class - self.other_class)
        lammax = lamc + self.num_samples * self.other_class
        return BlockEigenvalues(lam0, lamc, lammax)

    def alpha(self) -> float:
        """α = m κ_n / λ_max = κ_n / (λ_0/m + κ_c + (K − 1) κ_n), the paper's constant in the
        invariant (eq. 26) and in the end-of-training geometry of Appendix B.4.

        It is how K_κ⁻¹ weighs the class-mean directions against the global mean: on features
        H = M Y with no within-class part, H K_κ⁻¹ Hᵀ = (m/λ_c) M (I_K − α 1 1ᵀ) Mᵀ. Also
        1 − K α = λ_c / λ_max, so 0 ≤ α < 1/K whenever K_κ ≻ 0 and κ_n ≥ 0; α = 0 iff κ_n = 0, and
        α → 1/K iff λ_c / λ_max → 0.

        Example:
            >>> k = BlockKernel(3.0, 1.0, 0.2, num_classes=4, per_class=5)
            >>> round(k.alpha(), 12), round(1 - 4 * k.alpha(), 12)  # λ_c/λ_max = 6/10
            (0.1, 0.6)
        """
        return self.per_class * self.other_class / self.eigenvalues().lammax

    def is_positive_definite(self) -> bool:
        """True iff λ_0, λ_c and λ_max are all positive."""
        return bool(min(self.eigenvalues()) > 0)

    def check_positive_definite(self) -> BlockKernel:
        """Return ``self`` if K_κ is positive definite, else raise a ValueError naming the
        eigenvalue that is not positive (the flows of §4–§5 need K_κ invertible)."""
        for name, value in self.eigenvalues()._asdict().items():
            if not value > 0:
                raise ValueError(
                    f"block kernel is not positive definite: {name} = {value:.6g} <= 0 "
                    f"(diag={self.diag}, same_class={self.same_class}, other_class={self.other_class})"
                )
        return self

    def matrix(self, dtype: DTypeLike | None = None) -> Array:
        """The dense (N, N) matrix K_κ."""
        lam0 = self.diag - self.same_class
        return (
            lam0 * jnp.eye(self.num_samples, dtype=dtype)
            + (self.same_class - self.other_class) * class_indicator(self.num_classes, self.per_class, dtype)
            + self.other_class * jnp.ones((self.num_samples, self.num_samples), dtype=dtype)
        )

    def inverse(self, dtype: DTypeLike | None = None) -> Array:
        """The dense (N, N) inverse K_κ⁻¹ = P_within/λ_0 + P_cls/λ_c + P_glob/λ_max (closed form)."""
        self.check_positive_definite()
        lam0, lamc, lammax = self.eigenvalues()
        p = block_projectors(self.num_classes, self.per_class, dtype)
        return p.within / lam0 + p.cls / lamc + p.glob / lammax

    def apply(self, x: Array) -> Array:
        """x K_κ for x of shape (..., N), in O(N) per row, without forming K_κ.

        Uses K_κ = λ_0 I + m(κ_c − κ_n) P_classmean + N κ_n P_globalmean, where the projectors
        average over each class and over the whole batch.
        """
        n_cls = self.per_class * (self.same_class - self.other_class)
        return (
            (self.diag - self.same_class) * x
            + n_cls * class_average(x, self.num_classes)
            + self.num_samples * self.other_class * jnp.mean(x, axis=-1, keepdims=True)
        )


def class_indicator(num_classes: int, per_class: int, dtype: DTypeLike | None = None) -> Array:
    """I_K ⊗ 1_m 1_mᵀ, the (N, N) same-class indicator (ones on the diagonal blocks)."""
    return jnp.kron(jnp.eye(num_classes, dtype=dtype), jnp.ones((per_class, per_class), dtype=dtype))


def class_average(x: Array, num_classes: int) -> Array:
    """Replace every entry of x (..., N) by the mean of its class block: x (I_K ⊗ 1 1ᵀ)/m."""
    *lead, n = x.shape
    blocks = x.reshape(*lead, num_classes, n // num_classes)
    return jnp.broadcast_to(blocks.mean(axis=-1, keepdims=True), blocks.shape).reshape(x.shape)


def block_projectors(num_classes: int, per_class: int, dtype: DTypeLike | None = None) -> BlockProjectors:
    """The projectors (P_glob, P_cls, P_within), each (N, N), onto Table 1's eigenspaces."""
    _check_sizes(num_classes, per_class)
    n = num_classes * per_class
    glob = jnp.ones((n, n), dtype=dtype) / n
    cls_avg = class_indicator(num_classes, per_class, dtype) / per_class
    return BlockProjectors(glob=glob, cls=cls_avg - glob, within=jnp.eye(n, dtype=dtype) - cls_avg)


def one_hot_labels(num_classes: int, per_class: int, dtype: DTypeLike | None = None) -> Array:
    """Y = I_K ⊗ 1_mᵀ, the (K, N) one-hot labels of a class-sorted balanced batch."""
    _check_sizes(num_classes, per_class)
    return jnp.kron(jnp.eye(num_classes, dtype=dtype), jnp.ones((1, per_class), dtype=dtype))


# ---------------------------------------------------------------- unequal classes, specialised blocks

FloatArray = NDArray[np.float64]


class ClassBlockSpectrum(NamedTuple):
    """The eigenvalues of a :class:`ClassBlockKernel`, grouped by eigenspace; N in all."""

    within: FloatArray
    """(K,) λ_0^(k) = κ_d^(k) − κ_c^(k), each of multiplicity n_k − 1 (vectors inside class k's
    block that sum to 0 there)."""
    within_multiplicity: NDArray[np.int64]
    """(K,) the multiplicities n_k − 1 of ``within``."""
    class_level: FloatArray
    """(K,) the eigenvalues of the reduced matrix A (``ClassBlockKernel.reduced_matrix``), ascending
    (vectors constant on every class)."""


class ClassBlockComponents(NamedTuple):
    """Coordinates of x (..., N) in the eigenspaces of a :class:`ClassBlockKernel`."""

    within: Array
    """(..., K) the norm over class k's samples of x minus its class-k mean, decaying as
    e^{−λ_0^(k) t} under dx/dt = −x K."""
    class_level: Array
    """(..., K) the coordinates x V along the class-level eigenvectors V (``class_eigenvectors``),
    decaying as e^{−μ_j t} under dx/dt = −x K (μ_j = ``eigenvalues().class_level[j]``)."""


def _per_class(value: float | Sequence[float], num_classes: int, name: str) -> tuple[float, ...]:
    values = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if values.ndim != 1 or values.size not in (1, num_classes):
        raise ValueError(f"{name} must be one value or one per class (K = {num_classes}), got {value!r}")
    return tuple(float(v) for v in np.broadcast_to(values, (num_classes,)))


def _check_class_sizes(class_sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(class_sizes)
    if len(sizes) < 2 or any(int(n) != n or n < 1 for n in sizes):
        raise ValueError(f"class_sizes must list K >= 2 integers >= 1, got {class_sizes!r}")
    return tuple(int(n) for n in sizes)


def _secular_roots(levels: FloatArray, weights: FloatArray, other_class: float) -> FloatArray:
    """Eigenvalues, ascending, of diag(levels) + κ_n t tᵀ with t_j = √weights_j (J = 1, 2 in closed
    form: J = 1 gives levels + κ_n T, J = 2 the roots of a quadratic; J > 2 by eigh)."""
    shifted = levels + other_class * weights  # the diagonal of the J×J matrix
    if levels.size == 1:
        return shifted
    if levels.size == 2:
        mean = 0.5 * (shifted[0] + shifted[1])
        half_gap = 0.5 * np.hypot(shifted[0] - shifted[1], 2 * other_class * np.sqrt(weights[0] * weights[1]))
        return np.array([mean - half_gap, mean + half_gap], dtype=np.float64)
    root = np.sqrt(weights)
    return np.asarray(np.linalg.eigvalsh(np.diag(levels) + other_class * np.outer(root, root)), dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class ClassBlockKernel:
    """A block kernel on a class-sorted batch with class sizes n_1 … n_K and per-class blocks.

    Class k owns n_k consecutive samples (N = Σ_k n_k). The kernel is κ_d^(k) on a sample of class
    k with itself, κ_c^(k) on two distinct samples of class k, κ_n on samples of different
    classes; with n_k = m and one value for every class it is :class:`BlockKernel`::

        K = D + Σ_k (κ_c^(k) − κ_n) 1_(k) 1_(k)ᵀ + κ_n 1_N 1_Nᵀ,    D = diag(κ_d^(k) − κ_c^(k))   # (N, N)

    with 1_(k) the indicator (N,) of class k. Eigendecomposition (derived in
    :meth:`eigenvalues`): the within-class eigenvalue of class k, λ_0^(k) = κ_d^(k) − κ_c^(k), of
    multiplicity n_k − 1, and K class-level eigenvalues, those of the K×K reduced matrix
    A = diag(λ_c^(k)) + κ_n s sᵀ (:meth:`reduced_matrix`) with λ_c^(k) = λ_0^(k) + n_k(κ_c^(k) − κ_n)
    and s_k = √n_k.

    Args:
        diag: κ_d, one value or one per class.
        same_class: κ_c, one value or one per class (unused for a class of one sample).
        other_class: κ_n, one value for every pair of classes.
        class_sizes: (n_1, …, n_K), K ≥ 2 integers ≥ 1.

    Raises:
        ValueError: naming ``class_sizes``, ``diag`` or ``same_class`` when it does not fit.

    Example:
        Two classes of 3 and 1 samples: the within-class eigenvalue 2 twice (class 0), and the two
        class-level eigenvalues of A = diag(4.4, 2.8) + 0.2 s sᵀ, s = (√3, 1), that is
        4 ± √1.12:

        >>> k = ClassBlockKernel(3.0, 1.0, 0.2, class_sizes=(3, 1))
        >>> spectrum = k.eigenvalues()
        >>> spectrum.within.tolist(), spectrum.within_multiplicity.tolist()
        ([2.0, 2.0], [2, 0])
        >>> [round(v, 6) for v in spectrum.class_level.tolist()]
        [2.941699, 5.058301]
        >>> import numpy as np
        >>> bool(np.allclose(k.all_eigenvalues(), np.linalg.eigvalsh(np.asarray(k.matrix()))))
        True
    """

    diag: float | tuple[float, ...]
    same_class: float | tuple[float, ...]
    other_class: float
    class_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        sizes = _check_class_sizes(self.class_sizes)
        object.__setattr__(self, "class_sizes", sizes)
        object.__setattr__(self, "diag", _per_class(self.diag, len(sizes), "diag"))
        object.__setattr__(self, "same_class", _per_class(self.same_class, len(sizes), "same_class"))
        object.__setattr__(self, "other_class", float(self.other_class))

    @classmethod
    def from_block_kernel(cls, kernel: BlockKernel) -> ClassBlockKernel:
        """The same kernel as a :class:`BlockKernel`: K classes of m samples, one value per block."""
        sizes = (kernel.per_class,) * kernel.num_classes
        return cls(kernel.diag, kernel.same_class, kernel.other_class, class_sizes=sizes)

    @property
    def num_classes(self) -> int:
        """K, the number of classes."""
        return len(self.class_sizes)

    @property
    def num_samples(self) -> int:
        """N = Σ_k n_k."""
        return sum(self.class_sizes)

    def _values(self) -> tuple[FloatArray, FloatArray, NDArray[np.int64]]:
        """(κ_d^(k), κ_c^(k), n_k), each (K,)."""
        return np.asarray(self.diag), np.asarray(self.same_class), np.asarray(self.class_sizes)

    def labels(self) -> NDArray[np.int64]:
        """(N,) the class of every sample: n_1 zeros, then n_2 ones, …"""
        return np.repeat(np.arange(self.num_classes), self.class_sizes)

    def one_hot(self, dtype: DTypeLike | None = None) -> Array:
        """Y (K, N): Y[k, i] = 1 if sample i is of class k (the targets of the flows)."""
        return jnp.asarray(np.eye(self.num_classes)[:, self.labels()], dtype=dtype)

    def within_eigenvalues(self) -> FloatArray:
        """(K,) λ_0^(k) = κ_d^(k) − κ_c^(k), of multiplicity n_k − 1 each."""
        diag, same, _ = self._values()
        return diag - same

    def class_values(self) -> FloatArray:
        """(K,) λ_c^(k) = λ_0^(k) + n_k (κ_c^(k) − κ_n), the diagonal of :meth:`reduced_matrix`.

        With equal sizes and values this is Table 1's λ_c for every class.
        """
        _, same, sizes = self._values()
        return self.within_eigenvalues() + sizes * (same - self.other_class)

    def reduced_matrix(self) -> FloatArray:
        """A = diag(λ_c^(k)) + κ_n s sᵀ (K, K), s_k = √n_k: K restricted to vectors constant on
        every class, in the orthonormal basis 1_(k)/√n_k (:meth:`class_basis`)."""
        root = np.sqrt(self._values()[2].astype(np.float64))
        return np.diag(self.class_values()) + self.other_class * np.outer(root, root)

    def class_basis(self, dtype: DTypeLike | None = None) -> Array:
        """L (N, K), column k = 1_(k)/√n_k: an orthonormal basis of the vectors constant on every
        class, so that Lᵀ K L = :meth:`reduced_matrix`."""
        sizes = self._values()[2]
        return jnp.asarray(np.eye(self.num_classes)[self.labels()] / np.sqrt(sizes)[None, :], dtype=dtype)

    def eigenvalues(self) -> ClassBlockSpectrum:
        """The N eigenvalues, grouped by eigenspace (the analogue of Table 1).

        Derivation. For u (n_k,) with 1ᵀu = 0 placed in class k's block, every block sum of u is 0,
        so K u = (κ_d^(k) − κ_c^(k)) u: the within-class eigenvalue λ_0^(k), multiplicity n_k − 1.
        Their orthogonal complement, the vectors x = Σ_k (c_k/√n_k) 1_(k) constant on every class,
        is invariant, and (K x) on class k is (λ_c^(k) c_k + κ_n √n_k Σ_l √n_l c_l)/√n_k, so K acts
        there as A = diag(λ_c^(k)) + κ_n s sᵀ, s = (√n_1, …, √n_K). Its eigenvalues:

        - the g_j classes sharing a value λ_c^(k) = λ_j (a group G_j, e.g. the classes of one
          size) give λ_j with multiplicity g_j − 1 (c supported on G_j with sᵀc = 0);
        - the other J eigenvalues (J groups) are those of diag(λ_j) + κ_n t tᵀ with
          t_j = √T_j, T_j = Σ_{k∈G_j} n_k, the roots μ of 1 + κ_n Σ_j T_j/(λ_j − μ) = 0.
          J = 1: μ = λ_1 + κ_n N. J = 2, with a_j = λ_j + κ_n T_j::

              μ_± = (a_1 + a_2)/2 ± ½ √((a_1 − a_2)² + 4 κ_n² T_1 T_2)

          For κ_n > 0 they interlace: λ_1 < μ_− < λ_2 < μ_+ (λ_1 < λ_2). J > 2 by eigh.

        Equal sizes m and one value per block is one group: λ_c with multiplicity K − 1 and
        λ_c + κ_n N = λ_max, Table 1. With two sizes (K_a classes of n_a, K_b of n_b), Table 1's
        λ_c splits into λ_0 + n_a(κ_c − κ_n) (multiplicity K_a − 1), λ_0 + n_b(κ_c − κ_n)
        (K_b − 1) and μ_−, and λ_max becomes μ_+; the eigenvectors of μ_± are constant on each size
        group, ∝ 1/(μ − λ_j) there, so 1_N is not one of them (unless κ_n = 0).

        Returns:
            ClassBlockSpectrum(within (K,), within_multiplicity (K,), class_level (K,) ascending).
        """
        values = self.class_values()
        sizes = self._values()[2]
        scale = max(float(np.abs(values).max()), abs(self.other_class) * self.num_samples, 1e-300)
        order = np.argsort(values, kind="stable")
        groups: list[list[int]] = []
        for k in order:  # classes whose λ_c^(k) agree to rounding share an eigenvalue
            if groups and abs(values[k] - values[groups[-1][0]]) <= 1e-12 * scale:
                groups[-1].append(int(k))
            else:
                groups.append([int(k)])
        levels = np.array([values[g].mean() for g in groups])
        repeated = np.repeat(levels, [len(g) - 1 for g in groups])
        roots = _secular_roots(levels, np.array([float(sizes[g].sum()) for g in groups]), self.other_class)
        class_level = np.sort(np.concatenate([repeated, roots]))
        return ClassBlockSpectrum(self.within_eigenvalues(), sizes - 1, class_level)

    def all_eigenvalues(self) -> FloatArray:
        """(N,) every eigenvalue with its multiplicity, ascending (to compare with eigvalsh)."""
        spectrum = self.eigenvalues()
        within = np.repeat(spectrum.within, spectrum.within_multiplicity)
        return np.sort(np.concatenate([within, spectrum.class_level]))

    def class_eigenvectors(self, dtype: DTypeLike | None = None) -> Array:
        """V (N, K): orthonormal eigenvectors of K constant on every class, in the order of
        ``eigenvalues().class_level`` (V = L U with U the eigenvectors of the reduced matrix, by
        eigh; any basis inside a repeated eigenvalue)."""
        _, vectors = np.linalg.eigh(self.reduced_matrix())
        return self.class_basis(dtype) @ jnp.asarray(vectors, dtype=dtype)

    def components(self, x: Array) -> ClassBlockComponents:
        """Split x (..., N) (e.g. the rows of a residual R) by the eigenspaces of K: for each class
        the norm of its within-class part, and the coordinates along the class-level eigenvectors.

        Under the residual flow dR/dt = −R K (paper §4.1), R(t) = R(0) exp(−t K), each within norm
        of class k decays exactly as e^{−λ_0^(k) t} and each class-level coordinate as e^{−μ_j t}:
        the convergence phases with unequal classes. With equal sizes the class-level coordinates
        are those of Table 1 (λ_c, K − 1 of them, and λ_max along 1_N/√N).

        Example:
            >>> import jax.numpy as jnp
            >>> k = ClassBlockKernel(3.0, 1.0, 0.0, class_sizes=(2, 1))  # κ_n = 0: V = class basis
            >>> parts = k.components(jnp.array([1.0, 3.0, 5.0]))
            >>> parts.within.tolist()  # class 0: (1, 3) − 2 has norm √2; class 1 has no within part
            [1.4142135623730951, 0.0]
        """
        labels = self.labels()
        onehot = jnp.asarray(np.eye(self.num_classes)[labels], dtype=x.dtype)  # (N, K)
        sizes = jnp.asarray(self.class_sizes, dtype=x.dtype).reshape((1,) * (x.ndim - 1) + (self.num_classes,))
        means = (x @ onehot) / sizes  # (..., K)
        deviations = x - means @ onehot.T
        within = jnp.sqrt(jnp.square(deviations) @ onehot)
        return ClassBlockComponents(within, x @ self.class_eigenvectors(x.dtype))

    def within_projector(self, dtype: DTypeLike | None = None) -> Array:
        """P_within = I_N − Σ_k 1_(k) 1_(k)ᵀ / n_k (N, N): removes every class mean; it projects
        onto the span of the within-class eigenvectors of all classes."""
        basis = self.class_basis(dtype)
        return jnp.eye(self.num_samples, dtype=dtype) - basis @ basis.T

    def matrix_function(self, function: Callable[[FloatArray], FloatArray], dtype: DTypeLike | None = None) -> Array:
        """f(K) (N, N) from the eigendecomposition: the within-class part of class k times
        f(λ_0^(k)), plus L f(A) Lᵀ for the class-level part (A = :meth:`reduced_matrix`).

        For example ``lambda x: 1 / x`` is K⁻¹ and ``lambda x: np.exp(-t * x)`` is exp(−t K), the
        factor of the residual flow dR/dt = −R K (paper §4.1) after time t.
        """
        evals, vectors = np.linalg.eigh(self.reduced_matrix())
        basis = np.asarray(self.class_basis(np.float64))
        within = np.asarray(self.within_projector(np.float64))
        per_sample = np.asarray(function(self.within_eigenvalues()))[self.labels()]
        dense = within * per_sample[:, None] + basis @ (vectors * function(evals)[None, :]) @ vectors.T @ basis.T
        return jnp.asarray(dense, dtype=dtype)

    def is_positive_definite(self) -> bool:
        """True iff every within-class eigenvalue of a class with n_k ≥ 2 and every class-level
        eigenvalue is positive."""
        spectrum = self.eigenvalues()
        used = spectrum.within[spectrum.within_multiplicity > 0]
        return bool(min(float(used.min(initial=np.inf)), float(spectrum.class_level.min())) > 0)

    def check_positive_definite(self) -> ClassBlockKernel:
        """Return ``self`` if K is positive definite, else raise a ValueError naming the
        eigenvalue that is not positive."""
        spectrum = self.eigenvalues()
        for k, (value, mult) in enumerate(zip(spectrum.within, spectrum.within_multiplicity, strict=True)):
            if mult > 0 and not value > 0:
                raise ValueError(
                    f"class block kernel is not positive definite: within-class λ_0 of class {k} = {value:.6g} <= 0"
                )
        if not spectrum.class_level.min() > 0:
            low = float(spectrum.class_level.min())
            raise ValueError(f"class block kernel is not positive definite: class-level eigenvalue {low:.6g} <= 0")
        return self

    def matrix(self, dtype: DTypeLike | None = None) -> Array:
        """The dense (N, N) matrix K."""
        diag, same, _ = self._values()
        labels = self.labels()
        same_class = labels[:, None] == labels[None, :]
        dense = np.where(same_class, same[labels][:, None], self.other_class)
        dense[np.diag_indices_from(dense)] = diag[labels]
        return jnp.asarray(dense, dtype=dtype)

    def inverse(self, dtype: DTypeLike | None = None) -> Array:
        """The dense (N, N) inverse K⁻¹ from the eigendecomposition (:meth:`matrix_function`)."""
        self.check_positive_definite()
        return self.matrix_function(lambda x: 1.0 / x, dtype)

    def apply(self, x: Array) -> Array:
        """x K for x of shape (..., N), without forming K::

        (x K)_i = λ_0^(k_i) x_i + (κ_c^(k_i) − κ_n) Σ_{j∈k_i} x_j + κ_n Σ_j x_j
        """
        labels = self.labels()
        row = (1,) * (x.ndim - 1) + (self.num_samples,)  # broadcast along the leading axes of x
        lam0 = jnp.asarray(self.within_eigenvalues()[labels], dtype=x.dtype).reshape(row)
        gap = jnp.asarray((np.asarray(self.same_class) - self.other_class)[labels], dtype=x.dtype).reshape(row)
        onehot = jnp.asarray(np.eye(self.num_classes)[labels], dtype=x.dtype)  # (N, K)
        class_sums = (x @ onehot) @ onehot.T  # (..., N): the sum over the sample's class
        return lam0 * x + gap * class_sums + self.other_class * jnp.sum(x, axis=-1, keepdims=True)
