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
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax.numpy as jnp
from jax import Array
from jax.typing import DTypeLike


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
