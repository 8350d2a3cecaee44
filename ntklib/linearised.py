"""The measured NTK as a linear model of training (paper §3.3 and §4.1; chapter 02).

A gradient step θ ← θ − η ∇_θ L on a loss L(Z) of the logits Z (C, N) of a batch moves the logits,
to first order in η, by the NTK Θ_{cc'}(x, x') = ⟨∂z_c(x)/∂θ, ∂z_{c'}(x')/∂θ⟩ applied to the loss
gradient::

    Δz_c(x_i) ≈ −η Σ_{c', l} Θ_{cc'}(x_i, x_l) ∂L/∂z_{c'}(x_l)                # (C, N)

(the chain rule: Δθ = −η Σ_l J(x_l)ᵀ ∂L/∂z(x_l) and Δz(x_i) ≈ J(x_i) Δθ with J = ∂z/∂θ). For a
model linear in θ the formula is exact. Chapter 02 uses it three ways:

* :func:`logit_change`, the first-order change itself;
* :func:`local_elasticity` (He and Su; §3.3 of the paper): one gradient step on one sample at a
  time, and how far it moves the logits of each class, measured on the network and to first order;
* :func:`linearised_descent`: full-batch gradient descent on the mean squared error with the kernel
  held fixed, R ← R − η/(NC) Θ·R, against the network's own descent (:func:`descent_logits`) and
  against the block model of the kernel (:func:`block_model_factors`).

Shapes: C outputs (one per class), N samples; the full logit kernel Θ is (C, C, N, N), as
``BlockNTK.logits_full`` of :mod:`ntklib.ntk` returns it; logits and residuals R = Z − Y are
(C, N). A network enters as ``apply_fn(params, x) -> (B, C)`` logits and its loss as
``loss_fn(logits (B, C), labels (B,)) -> scalar`` (e.g. :func:`ntklib.train.compute_loss`). "The
mean squared error" is that of ``ntklib.train``: L = 1/(NC) Σ_{c,i} ½ R_ci², so ∂L/∂Z = R/(NC).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from numpy.typing import ArrayLike

from ntklib.block_kernel import BlockKernel

__all__ = [
    "logit_change",
    "LocalElasticity",
    "local_elasticity",
    "descent_logits",
    "linearised_descent",
    "StepFactors",
    "block_model_factors",
    "rate_error",
]

PyTree = Any
ApplyFn = Callable[[PyTree, Array], Array]
"""``apply_fn(params, x) -> (B, C)`` logits."""
LossFn = Callable[[Array, Array], Array]
"""``loss_fn(logits (B, C), labels (B,)) -> scalar``."""


def _kernel(kernel: ArrayLike) -> np.ndarray:
    """(C, C, N, M) float64 view of a full logit kernel; raises naming ``kernel``."""
    a = np.asarray(kernel, dtype=np.float64)
    if a.ndim != 4 or a.shape[0] != a.shape[1]:
        raise ValueError(f"kernel must be a full logit kernel (C, C, N, M), got shape {a.shape}")
    return a


def logit_change(kernel: ArrayLike, loss_gradient: ArrayLike, learning_rate: float) -> np.ndarray:
    """First-order change of the logits after one gradient step, Δz ≈ −η Θ ∇_z L::

        Δz_c(x_i) = −η Σ_{c', l} Θ_{cc'}(x_i, x_l) G_{c'l},        G = ∂L/∂Z

    Args:
        kernel: (C, C, N, M) NTK Θ_{cc'}(x_i, x_l) between the N samples whose logits move and the
            M samples the loss sees.
        loss_gradient: (C, M) G, the gradient of the loss with respect to the logits of those M
            samples.
        learning_rate: η.

    Returns:
        (C, N) float64 Δz.

    Raises:
        ValueError: naming ``kernel`` or ``loss_gradient`` when the shapes do not fit.

    Example:
        A linear model z = W x has Θ_{cc'}(x, x') = δ_{cc'} ⟨x, x'⟩. With ⟨x_0, x_1⟩ = 0.6, the
        gradient of output 0 at x_0 moves output 0 at x_1 by 0.6 of what it moves it at x_0:

        >>> x = np.array([[1.0, 0.0], [0.6, 0.8]])
        >>> theta = np.einsum("cd,ij->cdij", np.eye(2), x @ x.T)  # (C, C, N, N) = (2, 2, 2, 2)
        >>> logit_change(theta, [[1.0, 0.0], [0.0, 1.0]], learning_rate=0.5)
        array([[-0.5, -0.3],
               [-0.3, -0.5]])
    """
    theta = _kernel(kernel)
    grad = np.asarray(loss_gradient, dtype=np.float64)
    if grad.shape != (theta.shape[1], theta.shape[3]):
        raise ValueError(
            f"loss_gradient must be (C, M) = {(theta.shape[1], theta.shape[3])} for a kernel of shape "
            f"{theta.shape}, got {grad.shape}"
        )
    return -learning_rate * np.tensordot(theta, grad, axes=([1, 3], [0, 1]))


def _gradient_step(params: PyTree, grads: PyTree, learning_rate: float) -> PyTree:
    """θ − η g, leaf by leaf."""
    return jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)


def _logits(apply_fn: ApplyFn, params: PyTree, inputs: Array) -> np.ndarray:
    """(C, N) float64 logits of the batch."""
    return np.asarray(apply_fn(params, inputs), dtype=np.float64).T


def _elasticity_ratio(responses: np.ndarray, stepped_class: int) -> float:
    """Response of one class over the mean response of the others."""
    return float(responses[stepped_class] / np.delete(responses, stepped_class).mean())


class LocalElasticity(NamedTuple):
    """Responses of the classes to gradient steps on single samples of one class."""

    measured: np.ndarray
    """(C,) per class k, the mean of ‖Δz(x)‖₂ over the samples x of class k other than the stepped
    sample, averaged over the steps; Δz measured on the network."""
    first_order: np.ndarray
    """(C,) the same for the first-order change of :func:`logit_change`."""
    first_order_error: float
    """Mean over the steps of ‖Δz_first − Δz‖_F / ‖Δz‖_F on the samples not stepped on."""
    stepped_class: int
    """The class of the stepped samples."""

    @property
    def ratio(self) -> float:
        """The classmates' measured response over the mean response of the other classes (> 1:
        locally elastic)."""
        return _elasticity_ratio(self.measured, self.stepped_class)

    @property
    def first_order_ratio(self) -> float:
        """The same ratio for the first-order responses."""
        return _elasticity_ratio(self.first_order, self.stepped_class)


def local_elasticity(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    params: PyTree,
    inputs: ArrayLike,
    labels: ArrayLike,
    kernel: ArrayLike,
    *,
    stepped: Sequence[int] | ArrayLike,
    learning_rate: float,
) -> LocalElasticity:
    """One gradient step on one sample at a time, and how far it moves the logits of each class.

    For each index l in ``stepped``, one step θ' = θ − η ∇_θ ℓ_l on the loss ℓ_l = ``loss_fn`` of
    x_l alone, and the change Δz = z(θ') − z(θ) of the logits of the whole batch: measured, and to
    first order (:func:`logit_change` with Θ(·, x_l) and ∂ℓ_l/∂z(x_l)). The response of class k is
    the mean of ‖Δz(x)‖₂ over the samples x ≠ x_l of class k (x_l itself moves most, by its
    self-kernel). Under Assumption 3.2 the first-order response of a classmate is ∝ γ_c and that of
    any other sample ∝ γ_n, so the ratio of the two is γ_c/γ_n: block structure with γ_c > γ_n is
    local elasticity at the level of classes.

    Args:
        apply_fn: ``apply_fn(params, x)`` -> (B, C) logits, e.g. a network in eval mode.
        loss_fn: ``loss_fn(logits, labels)`` -> the scalar loss of a batch.
        params: θ, a pytree.
        inputs: (N, ...) the batch.
        labels: (N,) integer labels in 0 … C − 1.
        kernel: (C, C, N, N) NTK Θ_{cc'} of ``apply_fn`` at ``params`` on ``inputs``.
        stepped: indices of the samples stepped on, one at a time, all of one class.
        learning_rate: η.

    Returns:
        :class:`LocalElasticity`, its responses averaged over the steps.

    Raises:
        ValueError: naming ``stepped`` (empty, out of range, or of several classes) or ``kernel``
            (not (C, C, N, N) for the N samples).

    Example:
        A linear model z = W x on two classes of two samples: class 1's inputs make a cosine of 0.6
        with class 0's, so a step on a class-0 sample moves class 1 by 0.6 of what it moves the
        classmate, and to first order exactly so:

        >>> x = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8], [0.6, 0.8]])
        >>> labels = np.array([0, 0, 1, 1])
        >>> apply_fn = lambda w, x: x @ w.T
        >>> loss_fn = lambda z, y: 0.5 * jnp.mean((z - jax.nn.one_hot(y, 2)) ** 2)
        >>> theta = np.einsum("cd,ij->cdij", np.eye(2), x @ x.T)  # Θ_cc' = δ_cc' ⟨x, x'⟩
        >>> le = local_elasticity(
        ...     apply_fn, loss_fn, jnp.zeros((2, 2)), x, labels, theta, stepped=[0, 1], learning_rate=0.1
        ... )
        >>> le.measured.round(4), round(le.ratio, 4), round(le.first_order_error, 6)
        (array([0.05, 0.03]), 1.6667, 0.0)
    """
    labels_np = np.asarray(labels)
    idx = np.asarray(stepped, dtype=int).reshape(-1)
    n = labels_np.shape[0]
    theta = _kernel(kernel)
    if theta.shape[2:] != (n, n):
        raise ValueError(f"kernel must be (C, C, N, N) for the N = {n} samples, got shape {theta.shape}")
    if idx.size == 0 or idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"stepped must hold indices of samples in 0 … {n - 1}, got {idx.tolist()}")
    if np.unique(labels_np[idx]).size != 1:
        raise ValueError(f"stepped must be samples of one class, got classes {np.unique(labels_np[idx]).tolist()}")
    x, y = jnp.asarray(inputs), jnp.asarray(labels_np)
    num_classes = theta.shape[0]
    loss_grad = jax.jit(jax.grad(lambda p, xs, ys: loss_fn(apply_fn(p, xs), ys)))
    logit_grad = jax.grad(loss_fn)  # ∂ℓ/∂z of one sample's loss, (1, C)
    z0 = _logits(apply_fn, params, x)
    measured, first_order, errors = [], [], []
    for i in idx:
        stepped_params = _gradient_step(params, loss_grad(params, x[i : i + 1], y[i : i + 1]), learning_rate)
        dz = _logits(apply_fn, stepped_params, x) - z0
        g_z = np.asarray(logit_grad(jnp.asarray(z0[:, i : i + 1].T), y[i : i + 1]), dtype=np.float64).T
        dz_first = logit_change(theta[:, :, :, i : i + 1], g_z, learning_rate)
        others = np.arange(n) != i
        measured.append(_class_responses(dz, labels_np, others, num_classes))
        first_order.append(_class_responses(dz_first, labels_np, others, num_classes))
        errors.append(np.linalg.norm((dz_first - dz)[:, others]) / np.linalg.norm(dz[:, others]))
    return LocalElasticity(
        measured=np.mean(measured, axis=0),
        first_order=np.mean(first_order, axis=0),
        first_order_error=float(np.mean(errors)),
        stepped_class=int(labels_np[idx[0]]),
    )


def _class_responses(change: np.ndarray, labels: np.ndarray, keep: np.ndarray, num_classes: int) -> np.ndarray:
    """(C,) per class k, the mean of ‖Δz(x)‖₂ over the kept samples x of class k."""
    norms = np.linalg.norm(change, axis=0)
    return np.array([norms[keep & (labels == k)].mean() for k in range(num_classes)])


def descent_logits(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    params: PyTree,
    inputs: ArrayLike,
    labels: ArrayLike,
    *,
    learning_rate: float,
    steps: int,
) -> np.ndarray:
    """The network's own full-batch gradient descent θ ← θ − η ∇_θ L on one batch: its logits.

    Plain steps (no momentum, no weight decay), so that each update is exactly −η ∇_θ L and
    :func:`linearised_descent` is its first-order model.

    Args:
        apply_fn: ``apply_fn(params, x)`` -> (B, C) logits.
        loss_fn: ``loss_fn(logits, labels)`` -> the scalar loss of the batch.
        params: θ_0, a pytree.
        inputs: (N, ...) the batch.
        labels: (N,) integer labels.
        learning_rate: η.
        steps: number of steps, ≥ 0.

    Returns:
        (steps + 1, C, N) float64 logits Z(s), s = 0 … steps, starting with those at ``params``.

    Raises:
        ValueError: naming ``steps`` when it is negative.

    Example:
        For a model linear in θ the path is exactly the linearised one:

        >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8]])
        >>> loss_fn = lambda z, y: 0.5 * jnp.mean((z - jax.nn.one_hot(y, 2)) ** 2)
        >>> z = descent_logits(lambda w, x: x @ w.T, loss_fn, jnp.zeros((2, 2)), x, [0, 1], learning_rate=1.0, steps=3)
        >>> theta = np.einsum("cd,ij->cdij", np.eye(2), x @ x.T)
        >>> lin = linearised_descent(theta, z[0] - np.eye(2), learning_rate=1.0, steps=3)
        >>> z.shape, bool(np.allclose(z - np.eye(2), lin, atol=1e-6))
        ((4, 2, 2), True)
    """
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    x, y = jnp.asarray(inputs), jnp.asarray(labels)

    def objective(p: PyTree) -> tuple[Array, Array]:
        z = apply_fn(p, x)
        return loss_fn(z, y), z

    step = jax.jit(jax.value_and_grad(objective, has_aux=True))
    path = []
    for _ in range(int(steps) + 1):
        (_, z), grads = step(params)
        path.append(np.asarray(z, dtype=np.float64).T)
        params = _gradient_step(params, grads, learning_rate)
    return np.stack(path)


def linearised_descent(kernel: ArrayLike, residual0: ArrayLike, *, learning_rate: float, steps: int) -> np.ndarray:
    """Gradient descent on the mean squared error with the NTK held fixed (exact for a linear model).

    With ∂L/∂Z = R/(NC) every step adds the first-order change (:func:`logit_change`)::

        R(s + 1) = R(s) − η/(NC) Θ·R(s),        (Θ·R)_ci = Σ_{c', l} Θ_{cc'}(x_i, x_l) R_{c'l}

    With the block model Θ_{cc'} = δ_{cc'} K_γ this is
    :func:`ntklib.dynamics.residual_gradient_descent` at learning rate η/(NC).

    Args:
        kernel: (C, C, N, N) NTK Θ_{cc'} on the batch.
        residual0: (C, N) R(0) = Z − Y.
        learning_rate: η.
        steps: number of steps, ≥ 0.

    Returns:
        (steps + 1, C, N) float64 residuals, starting with R(0).

    Raises:
        ValueError: naming ``residual0`` (not (C, N) for the kernel) or ``steps`` (negative).

    Example:
        Θ = δ_cc' I (each sample only moves itself): every entry decays by 1 − η/(NC) a step.

        >>> theta = np.einsum("cd,ij->cdij", np.eye(2), np.eye(3))
        >>> path = linearised_descent(theta, np.ones((2, 3)), learning_rate=3.0, steps=2)
        >>> path[:, 0, 0]
        array([1.  , 0.5 , 0.25])
    """
    theta = _kernel(kernel)
    res = np.asarray(residual0, dtype=np.float64)
    c, n = theta.shape[1], theta.shape[3]
    if res.shape != (c, n) or theta.shape[2] != n:
        raise ValueError(f"residual0 must be (C, N) = {(c, n)} for a kernel of shape {theta.shape}, got {res.shape}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    path = [res]
    for _ in range(int(steps)):
        path.append(path[-1] + logit_change(theta, path[-1] / (n * c), learning_rate))
    return np.stack(path)


class StepFactors(NamedTuple):
    """Per-step factors ρ of the three residual components (the names of
    :class:`ntklib.dynamics.ResidualComponents`)."""

    glob: float
    """ρ of the global mean, 1 − η μ_max/(NC)."""
    cls: float
    """ρ of the class means minus the global mean, 1 − η μ_c/(NC)."""
    within: float
    """ρ of each sample minus its class mean, 1 − η μ_0/(NC)."""


def block_model_factors(gamma: BlockKernel, learning_rate: float) -> StepFactors:
    """Per-step factors of :func:`linearised_descent` when the kernel is its block model.

    With Θ_{cc'} = δ_{cc'} K_γ (Assumption 3.2) a step on the mean squared error is
    R ← R (I − η/(NC) K_γ), which multiplies the global-mean, class-mean and within-class
    components of R by::

        ρ_glob = 1 − η μ_max/(NC),    ρ_cls = 1 − η μ_c/(NC),    ρ_within = 1 − η μ_0/(NC)

    with (μ_0, μ_c, μ_max) the eigenvalues of K_γ (Table 1), N = K m samples and C = K outputs.

    Args:
        gamma: the block values (γ_d, γ_c, γ_n) of the batch, K classes of m samples.
        learning_rate: η.

    Example:
        >>> gamma = BlockKernel(3.0, 1.0, 0.5, num_classes=2, per_class=2)  # μ = (2, 3, 5)
        >>> block_model_factors(gamma, learning_rate=0.8)  # N C = 8
        StepFactors(glob=0.5, cls=0.7, within=0.8)
    """
    mu0, muc, mumax = gamma.eigenvalues()
    scale = gamma.num_samples * gamma.num_classes
    return StepFactors(*(1 - learning_rate * mu / scale for mu in (mumax, muc, mu0)))


def rate_error(predicted: float, observed: float) -> float:
    """Relative error of a predicted per-step decay, ``|(1 − ρ_pred) − (1 − ρ_obs)| / (1 − ρ_obs)``.

    Example:
        >>> rate_error(0.5, 0.75)  # the prediction decays twice as fast
        1.0
    """
    return float(abs((1 - predicted) - (1 - observed)) / (1 - observed))
