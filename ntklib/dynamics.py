"""Training dynamics under a block-structured NTK (paper §4, Theorems 4.1 and 5.1).

Shapes: features ``H`` (d, N) of a class-sorted balanced batch (N = K m), classifier ``W``
(K, d), bias ``b`` (K,), residual ``R = W H + b 1ᵀ − Y`` (K, N). Time is gradient-flow time for the
loss ½‖R‖²_F.

Three families of dynamics:

* the residual flow dR/dt = −R K_γ of §4.1 (closed form, and its gradient-descent twin), the norms
  of its three components and the fit of their log-rates (:func:`fitted_log_slope`);
* the flow of (H, W, b) of Theorem 4.1, in its generic form dH/dt = −Wᵀ R K_κ, its block form, a
  centred variant (dH/dt = −Wᵀ R K_κ P, P = I − 1 1ᵀ/N, as BatchNorm keeps h̄ = 0) and the
  end-of-training reduction dH/dt = −λ_0 Wᵀ R;
* the decomposed flow of Theorem 5.1 for (M, H₂, W, b).

The residual and the loss of a state, as the chapters plot them: :func:`residual_of`,
:func:`loss_of`.

Vector fields have the signature ``f(t, state, args)`` of diffrax and are integrated by
:func:`integrate`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from numpy.typing import ArrayLike

from ntklib.block_kernel import BlockKernel, class_average, one_hot_labels


class FlowState(NamedTuple):
    """State of the Theorem 4.1 flow."""

    features: Array
    """H, (d, N)."""
    weights: Array
    """W, (K, d)."""
    bias: Array
    """b, (K,)."""


class DecomposedState(NamedTuple):
    """State of the Theorem 5.1 flow."""

    class_means: Array
    """M, (d, K)."""
    within: Array
    """H₂, (d, K(m − 1))."""
    weights: Array
    """W, (K, d)."""
    bias: Array
    """b, (K,)."""


class ResidualComponents(NamedTuple):
    """R split by the projectors of Table 1 (each (K, N)); the three parts sum to R."""

    glob: Array
    """R P_glob, the global-mean residual, decaying at rate μ_max."""
    cls: Array
    """R P_cls, the class means minus the global mean, decaying at rate μ_c."""
    within: Array
    """R P_within, each sample minus its class mean, decaying at rate μ_0."""


def residual(weights: Array, features: Array, bias: Array, num_classes: int, per_class: int) -> Array:
    """R = W H + b 1ᵀ − Y, shape (K, N)."""
    return weights @ features + bias[:, None] - one_hot_labels(num_classes, per_class, features.dtype)


def residual_of(state: FlowState, kernel: BlockKernel) -> Array:
    """R = W H + b 1ᵀ − Y of a Theorem 4.1 state, shape (K, N), with K and m taken from ``kernel``.

    The same as :func:`residual` with ``(state.weights, state.features, state.bias,
    kernel.num_classes, kernel.per_class)``; vmap it along a trajectory's states.

    Example:
        >>> import jax.numpy as jnp
        >>> from ntklib.block_kernel import BlockKernel
        >>> kernel = BlockKernel(2.0, 0.5, 0.1, num_classes=2, per_class=2)
        >>> features = jnp.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])  # H = Y
        >>> state = FlowState(features, weights=jnp.eye(2), bias=jnp.array([0.5, 0.0]))
        >>> residual_of(state, kernel).tolist()  # W H + b 1ᵀ − Y = b 1ᵀ
        [[0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]]
    """
    return residual(state.weights, state.features, state.bias, kernel.num_classes, kernel.per_class)


def class_mean_residual(weights: Array, class_means: Array, bias: Array) -> Array:
    """R̄ = W M + b 1_Kᵀ − I_K, shape (K, K): the residual of the class means M (d, K).

    Column k is the mean over class k of the columns of R, since R Yᵀ / m = W M + b 1_Kᵀ − I_K.
    """
    return weights @ class_means + bias[:, None] - jnp.eye(weights.shape[0], dtype=weights.dtype)


def loss_of(state: FlowState | DecomposedState, kernel: BlockKernel) -> Array:
    """The squared loss L = ½‖R‖²_F of a state, a scalar; the loss whose gradient flow this module follows.

    For a :class:`FlowState`, ``0.5 * sum(residual_of(state, kernel) ** 2)``. For a
    :class:`DecomposedState` (H = M Y + H₂ V₂ᵀ with V₂ orthonormal and orthogonal to Y's rows),
    R splits into R̄ Y (class means) and W H₂ V₂ᵀ (within-class), so::

        L = ½ (m ‖R̄‖²_F + ‖W H₂‖²_F),   R̄ = W M + b 1_Kᵀ − I_K  (:func:`class_mean_residual`),

    the same number as for the composed features, whatever the basis of the within-class space.

    Example:
        >>> import jax.numpy as jnp
        >>> from ntklib.block_kernel import BlockKernel
        >>> w, b = jnp.eye(2), jnp.array([0.5, 0.0])
        >>> decomposed = DecomposedState(jnp.eye(2), jnp.zeros((2, 2)), w, b)  # M = I, H₂ = 0
        >>> kernel = BlockKernel(2.0, 0.5, 0.1, num_classes=2, per_class=2)
        >>> float(loss_of(decomposed, kernel))  # R̄ = b 1ᵀ: ½ m ‖R̄‖² = ½ · 2 · (0.5² + 0.5²)
        0.5
        >>> composed = FlowState(jnp.repeat(jnp.eye(2), 2, axis=1), w, b)  # H = M Y
        >>> float(loss_of(composed, kernel))
        0.5
    """
    if isinstance(state, DecomposedState):
        mean_part = class_mean_residual(state.weights, state.class_means, state.bias)
        within_part = state.weights @ state.within
        return 0.5 * (kernel.per_class * jnp.sum(mean_part**2) + jnp.sum(within_part**2))
    return 0.5 * jnp.sum(residual_of(state, kernel) ** 2)


def residual_components(res: Array, num_classes: int) -> ResidualComponents:
    """Project every row of R (K, N) onto the global-mean, class-mean and within-class spaces."""
    per_class_mean = class_average(res, num_classes)
    glob = jnp.broadcast_to(res.mean(axis=-1, keepdims=True), res.shape)
    return ResidualComponents(glob=glob, cls=per_class_mean - glob, within=res - per_class_mean)


def residual_component_norms(path: Array, num_classes: int) -> ResidualComponents:
    """Frobenius norms of the three components along a path of residuals (T, K, N): each field
    (T,), the same names as :class:`ResidualComponents`."""
    parts = residual_components(jnp.asarray(path), num_classes)
    return ResidualComponents(*(jnp.linalg.norm(part, axis=(-2, -1)) for part in parts))


def fitted_log_slope(x: ArrayLike, values: ArrayLike, *, log_x: bool = False, where: ArrayLike | None = None) -> float:
    """Least-squares slope r of log(values) against x, or against log x with ``log_x``.

    The exponential rate of values ≈ c·e^{r x} (a component of R decays as e^{−μ t} under gradient
    flow, §4.1; per gradient-descent step its factor is e^r), or the power of values ≈ c·x^r.
    ``where`` (a boolean mask of the points to fit) leaves out points, e.g. values at round-off.

    Raises:
        ValueError: naming ``values`` when fewer than two points are left, or one is not positive.
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(values, dtype=np.float64)
    if where is not None:
        keep = np.asarray(where, dtype=bool)
        xs, ys = xs[keep], ys[keep]
    if ys.size < 2 or np.any(ys <= 0):
        raise ValueError(f"values must hold at least two positive points to fit, got {ys}")
    return float(np.polyfit(np.log(xs) if log_x else xs, np.log(ys), 1)[0])


def residual_flow(res0: Array, kernel: BlockKernel, times: Array) -> Array:
    """The exact solution R(t) = R(0) exp(−t K_γ) of dR/dt = −R K_γ, for each t in ``times``.

    Uses the spectral form exp(−t K_γ) = e^{−μ_max t} P_glob + e^{−μ_c t} P_cls + e^{−μ_0 t} P_within.

    Returns:
        (T, K, N) residuals.
    """
    mu0, muc, mumax = kernel.eigenvalues()
    parts = residual_components(res0, kernel.num_classes)
    t = jnp.asarray(times)[:, None, None]  # (T, 1, 1) against (1, K, N) components
    glob, cls, within = (part[None] for part in parts)
    return jnp.exp(-mumax * t) * glob + jnp.exp(-muc * t) * cls + jnp.exp(-mu0 * t) * within


def residual_gradient_descent(res0: Array, kernel: BlockKernel, learning_rate: float, steps: int) -> Array:
    """Linearised gradient descent R(s + 1) = R(s)(I − η K_γ), s = 0 … steps.

    Returns:
        (steps + 1, K, N) residuals, starting with R(0).
    """

    def step(res: Array, _: None) -> tuple[Array, Array]:
        nxt = res - learning_rate * kernel.apply(res)
        return nxt, nxt

    _, path = jax.lax.scan(step, res0, None, length=steps)
    return jnp.concatenate([res0[None], path])


def _centre(x: Array) -> Array:
    """x P with P = I − 1 1ᵀ/N: remove the mean of every row."""
    return x - x.mean(axis=-1, keepdims=True)


def theorem41_vector_field(
    kernel: BlockKernel, *, form: str = "block", centred: bool = False, train_bias: bool = True
) -> Callable[[Array | float, FlowState, object], FlowState]:
    """The gradient flow of Theorem 4.1 on FlowState(H, W, b)::

        dH/dt = −Wᵀ R K_κ          (form="generic": dense K_κ)
              = −Wᵀ [λ_0 R + m(κ_c − κ_n) R_cls + N κ_n R_glob]   (form="block")
              = −λ_0 Wᵀ R          (form="end_of_training": R_cls = R_glob = 0)
        dW/dt = −R Hᵀ,   db/dt = −R 1_N (0 if not train_bias).

    Here R_cls and R_glob are R with every entry replaced by its class mean and its global mean.

    Args:
        kernel: (κ_d, κ_c, κ_n) of the feature kernel; must be positive definite.
        form: "block", "generic" or "end_of_training".
        centred: multiply dH/dt by P = I − 1 1ᵀ/N, keeping the global feature mean h̄ fixed. E is
            conserved by the centred flow when h̄ = 0 (as in Theorem 5.2); with h̄ ≠ 0 it is not.
        train_bias: if False the bias stays at its initial value.
    """
    forms = ("block", "generic", "end_of_training")
    if form not in forms:
        raise ValueError(f"form must be one of {forms}, got {form!r}")
    kernel.check_positive_definite()
    k, m, n = kernel.num_classes, kernel.per_class, kernel.num_samples
    lam0 = kernel.diag - kernel.same_class

    def kernel_times(res: Array) -> Array:
        if form == "generic":
            return res @ kernel.matrix(res.dtype)
        if form == "end_of_training":
            return lam0 * res
        return (
            lam0 * res
            + m * (kernel.same_class - kernel.other_class) * class_average(res, k)
            + n * kernel.other_class * res.mean(axis=-1, keepdims=True)
        )

    def vector_field(t: Array | float, state: FlowState, args: object) -> FlowState:
        h, w, b = state
        res = residual(w, h, b, k, m)
        dh = -w.T @ kernel_times(res)
        if centred:
            dh = _centre(dh)
        db = -res.sum(axis=1) if train_bias else jnp.zeros_like(b)
        return FlowState(dh, -res @ h.T, db)

    return vector_field


def theorem51_vector_field(
    kernel: BlockKernel, *, train_bias: bool = True
) -> Callable[[Array | float, DecomposedState, object], DecomposedState]:
    """The decomposed flow of Theorem 5.1 on DecomposedState(M, H₂, W, b).

    With class-mean residuals R̄ = W M + b 1_Kᵀ − I_K (K, K)::

        dM/dt  = −Wᵀ (λ_c R̄ + m κ_n R̄ 1_K 1_Kᵀ)
        dH₂/dt = −λ_0 WᵀW H₂
        dW/dt  = −(m R̄ Mᵀ + W H₂ H₂ᵀ)
        db/dt  = −m R̄ 1_K
    """
    lam0, lamc, _ = kernel.check_positive_definite().eigenvalues()
    m = kernel.per_class

    def vector_field(t: Array | float, state: DecomposedState, args: object) -> DecomposedState:
        means, within, w, b = state
        rbar = class_mean_residual(w, means, b)
        row_sums = rbar.sum(axis=1, keepdims=True)  # R̄ 1_K, (K, 1)
        d_means = -w.T @ (lamc * rbar + m * kernel.other_class * row_sums)
        d_within = -lam0 * w.T @ (w @ within)
        d_w = -(m * rbar @ means.T + (w @ within) @ within.T)
        d_b = -m * row_sums[:, 0] if train_bias else jnp.zeros_like(b)
        return DecomposedState(d_means, d_within, d_w, d_b)

    return vector_field


class Trajectory(NamedTuple):
    """An integrated trajectory: ``times`` (T,) and ``states``, a pytree with a leading T axis."""

    times: Array
    states: object


def integrate(
    vector_field: Callable[[Any, Any, Any], Any],
    initial_state: Any,
    times: Array,
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    solver: diffrax.AbstractSolver[Any] | None = None,
    max_steps: int = 1_000_000,
) -> Trajectory:
    """Integrate ``dy/dt = vector_field(t, y, None)`` from ``times[0]`` and save at every entry of
    ``times`` (increasing), with an adaptive solver (default: Dormand–Prince 8(7), ``Dopri8``) and a
    PID step-size controller at the given tolerances.

    Returns:
        Trajectory(times (T,), states with leading axis T).
    """
    times = jnp.asarray(times)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        solver or diffrax.Dopri8(),
        t0=times[0],
        t1=times[-1],
        dt0=None,
        y0=initial_state,
        saveat=diffrax.SaveAt(ts=times),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
    )
    return Trajectory(solution.ts, solution.ys)
