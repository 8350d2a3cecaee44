"""The measured NTK as a linear model of training, against direct computation: actual gradient steps
on small Flax models, whose NTK is taken from their Jacobian, and hand-written loops."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import naive_block_kernel, naive_labels, naive_projectors
from jax.flatten_util import ravel_pytree

from ntklib import linearised as lin
from ntklib.block_kernel import BlockKernel
from ntklib.dynamics import residual_gradient_descent
from ntklib.models import build_model
from ntklib.ntk import block_ntk

K, M = 3, 2  # classes (= outputs) and samples per class
N = K * M
LABELS = np.repeat(np.arange(K), M)


def mse(z, labels):
    """ntklib.train's "mse": the mean over samples and outputs of ½(z − y)²."""
    return 0.5 * jnp.mean((z - jax.nn.one_hot(labels, z.shape[-1], dtype=z.dtype)) ** 2)


class Tanh(nn.Module):
    """z = W₂ tanh(W₁ x + b₁) + b₂: not linear in its parameters."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(K)(jnp.tanh(nn.Dense(5)(x)))


def setup(module, seed=0):
    """(apply_fn, params, x) of a module on N random inputs, float64."""
    x = jax.random.normal(jax.random.key(seed), (N, 4), jnp.float64)
    params = module.init(jax.random.key(seed + 1), x)["params"]
    noise = jax.random.key(seed + 2)  # away from the initialisation's zero biases
    params = jax.tree.map(lambda p: p.astype(jnp.float64) + 0.3 * jax.random.normal(noise, p.shape), params)
    return (lambda p, xs: module.apply({"params": p}, xs)), params, x


def direct_ntk(apply_fn, params, x):
    """Θ_{cc'}(x_i, x_j) = ⟨∂z_c(x_i)/∂θ, ∂z_{c'}(x_j)/∂θ⟩ (C, C, N, N) from the full Jacobian."""
    flat, unravel = ravel_pytree(params)
    jac = jax.jacobian(lambda f: apply_fn(unravel(f), x))(flat)  # (N, C, P)
    return np.einsum("icp,jep->ceij", jac, jac)


def logits(apply_fn, params, x):
    return np.asarray(apply_fn(params, x)).T  # (C, N)


def sgd_step(apply_fn, params, x, labels, eta):
    """θ − η ∇_θ L, L = mse of the batch (x, labels)."""
    grads = jax.grad(lambda p: mse(apply_fn(p, x), labels))(params)
    return jax.tree.map(lambda p, g: p - eta * g, params, grads)


def test_first_order_change_is_exact_for_a_linear_model():
    apply_fn, params, x = setup(nn.Dense(K))
    theta = direct_ntk(apply_fn, params, x)
    np.testing.assert_allclose(theta, np.einsum("ce,ij->ceij", np.eye(K), x @ x.T + 1.0), atol=1e-12)
    z = logits(apply_fn, params, x)
    grad_z = (z - naive_labels(K, M)) / (N * K)  # ∂L/∂Z of the mean squared error
    got = lin.logit_change(theta, grad_z, 0.7)
    want = logits(apply_fn, sgd_step(apply_fn, params, x, LABELS, 0.7), x) - z
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_first_order_change_of_a_nonlinear_model_is_right_to_first_order():
    apply_fn, params, x = setup(Tanh())
    theta = direct_ntk(apply_fn, params, x)
    z = logits(apply_fn, params, x)
    grad_z = np.asarray(jax.grad(mse)(jnp.asarray(z.T), LABELS)).T
    errors = []
    for eta in (1e-2, 5e-3):
        actual = logits(apply_fn, sgd_step(apply_fn, params, x, LABELS, eta), x) - z
        errors.append(np.linalg.norm(lin.logit_change(theta, grad_z, eta) - actual) / np.linalg.norm(actual))
    assert errors[0] < 1e-2
    assert errors[1] / errors[0] == pytest.approx(0.5, abs=0.05)  # the error is O(η) relative


def test_first_order_change_with_the_engines_kernel_matches_a_step_of_the_mlp():
    """ntklib.ntk's logits_full in the layout logit_change reads, on the MLP in eval mode."""
    model = build_model("mlp", K)
    x = jax.random.normal(jax.random.key(3), (N, 6), jnp.float64)
    variables = jax.tree.map(lambda v: v.astype(jnp.float64), model.init(jax.random.key(4), x))

    def apply_fn(p, xs):
        return model.apply({**variables, "params": p}, xs, train=False)

    params = variables["params"]
    theta = np.asarray(block_ntk(model, variables, x, offdiag="logits").logits_full)
    np.testing.assert_allclose(theta, direct_ntk(apply_fn, params, x), rtol=1e-9, atol=1e-12)
    z = logits(apply_fn, params, x)
    grad_z = (z - naive_labels(K, M)) / (N * K)
    actual = logits(apply_fn, sgd_step(apply_fn, params, x, LABELS, 1e-3), x) - z
    first = lin.logit_change(theta, grad_z, 1e-3)
    assert np.linalg.norm(first - actual) < 1e-2 * np.linalg.norm(actual)


def test_logit_change_bad_shapes_raise_naming_the_parameter():
    with pytest.raises(ValueError, match="kernel"):
        lin.logit_change(np.zeros((2, 3, 4, 4)), np.zeros((3, 4)), 0.1)
    with pytest.raises(ValueError, match="loss_gradient"):
        lin.logit_change(np.zeros((2, 2, 4, 5)), np.zeros((2, 4)), 0.1)


def naive_local_elasticity(apply_fn, params, x, stepped, eta):
    """Per class, the mean ‖Δz(x)‖ over the samples of the class other than the stepped one, after
    one step on the stepped sample's loss alone, averaged over the steps; entry by entry."""
    z = logits(apply_fn, params, x)
    total = np.zeros(K)
    for i in stepped:
        dz = logits(apply_fn, sgd_step(apply_fn, params, x[i : i + 1], LABELS[i : i + 1], eta), x) - z
        for k in range(K):
            norms = [np.linalg.norm(dz[:, j]) for j in range(N) if LABELS[j] == k and j != i]
            total[k] += np.mean(norms)
    return total / len(stepped)


@pytest.mark.parametrize("module, exact", [(nn.Dense(K), True), (Tanh(), False)])
def test_local_elasticity_matches_steps_taken_one_by_one(module, exact):
    apply_fn, params, x = setup(module)
    theta = direct_ntk(apply_fn, params, x)
    stepped = [2, 3]  # the class-1 samples
    le = lin.local_elasticity(apply_fn, mse, params, x, LABELS, theta, stepped=stepped, learning_rate=0.05)
    np.testing.assert_allclose(le.measured, naive_local_elasticity(apply_fn, params, x, stepped, 0.05), rtol=1e-10)
    assert le.stepped_class == 1
    assert le.ratio == pytest.approx(le.measured[1] / np.mean(le.measured[[0, 2]]), rel=1e-12)
    if exact:  # a model linear in θ: the first-order change is the change
        assert le.first_order_error < 1e-10
        np.testing.assert_allclose(le.first_order, le.measured, rtol=1e-10)
    else:
        assert 0 < le.first_order_error < 0.1
        np.testing.assert_allclose(le.first_order, le.measured, rtol=0.1)


def test_local_elasticity_of_a_block_kernel_is_gamma_c_over_gamma_n():
    """A linear model on features whose Gram matrix is block-structured: the ratio is γ_c/γ_n."""
    gram = naive_block_kernel(3.0, 1.5, 0.5, K, M)  # the input Gram matrix; +1 from the bias
    feats = jnp.asarray(np.linalg.cholesky(gram))  # rows whose inner products are the Gram matrix
    module = nn.Dense(K)
    params = jax.tree.map(lambda p: jnp.zeros(p.shape), module.init(jax.random.key(0), feats)["params"])

    def apply_fn(p, xs):
        return module.apply({"params": p}, xs)

    theta = direct_ntk(apply_fn, params, feats)
    le = lin.local_elasticity(apply_fn, mse, params, feats, LABELS, theta, stepped=[0, 1], learning_rate=0.1)
    assert le.ratio == pytest.approx((1.5 + 1) / (0.5 + 1), rel=1e-9)
    assert le.first_order_ratio == pytest.approx(le.ratio, rel=1e-9)


def test_local_elasticity_bad_inputs_raise_naming_the_parameter():
    apply_fn, params, x = setup(nn.Dense(K))
    theta = direct_ntk(apply_fn, params, x)
    for stepped in ([], [0, 2], [N]):
        with pytest.raises(ValueError, match="stepped"):
            lin.local_elasticity(apply_fn, mse, params, x, LABELS, theta, stepped=stepped, learning_rate=0.1)
    with pytest.raises(ValueError, match="kernel"):
        lin.local_elasticity(apply_fn, mse, params, x, LABELS, theta[:, :, :4, :4], stepped=[0], learning_rate=0.1)


def test_descent_logits_is_plain_gradient_descent():
    apply_fn, params, x = setup(Tanh())
    path = lin.descent_logits(apply_fn, mse, params, x, LABELS, learning_rate=0.5, steps=3)
    assert path.shape == (4, K, N)
    for z in path:
        np.testing.assert_allclose(z, logits(apply_fn, params, x), rtol=1e-12)
        params = sgd_step(apply_fn, params, x, LABELS, 0.5)
    with pytest.raises(ValueError, match="steps"):
        lin.descent_logits(apply_fn, mse, params, x, LABELS, learning_rate=0.5, steps=-1)


def test_linearised_descent_is_exact_for_a_linear_model():
    apply_fn, params, x = setup(nn.Dense(K))
    theta = direct_ntk(apply_fn, params, x)
    y = naive_labels(K, M)
    path = lin.descent_logits(apply_fn, mse, params, x, LABELS, learning_rate=2.0, steps=8)
    got = lin.linearised_descent(theta, path[0] - y, learning_rate=2.0, steps=8)
    np.testing.assert_allclose(got, path - y, rtol=1e-9, atol=1e-12)


def test_linearised_descent_of_a_nonlinear_model_departs_from_its_descent():
    apply_fn, params, x = setup(Tanh())
    theta = direct_ntk(apply_fn, params, x)
    y = naive_labels(K, M)
    path = lin.descent_logits(apply_fn, mse, params, x, LABELS, learning_rate=0.3, steps=8) - y
    got = lin.linearised_descent(theta, path[0], learning_rate=0.3, steps=8)
    first_miss = np.linalg.norm(got[1] - path[1])
    assert first_miss < 0.05 * np.linalg.norm(path[1] - path[0])  # right to first order
    assert np.linalg.norm(got[-1] - path[-1]) > 2 * first_miss  # the kernel moves


def test_linearised_descent_with_the_block_model_is_the_residual_gradient_descent():
    gamma = BlockKernel(4.0, 1.5, 0.5, num_classes=K, per_class=M)
    theta = np.einsum("ce,ij->ceij", np.eye(K), naive_block_kernel(4.0, 1.5, 0.5, K, M))
    res0 = np.random.default_rng(0).normal(size=(K, N))
    got = lin.linearised_descent(theta, res0, learning_rate=3.0, steps=5)
    want = residual_gradient_descent(jnp.asarray(res0), gamma, 3.0 / (N * K), 5)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_block_model_factors_scale_each_component_of_a_step():
    gamma = BlockKernel(4.0, 1.5, 0.5, num_classes=K, per_class=M)
    eta = 2.0
    step = np.eye(N) - eta / (N * K) * naive_block_kernel(4.0, 1.5, 0.5, K, M)  # R ← R step
    res = np.random.default_rng(1).normal(size=(K, N))
    factors = lin.block_model_factors(gamma, eta)
    for name, proj in naive_projectors(K, M)._asdict().items():
        np.testing.assert_allclose(res @ proj @ step, getattr(factors, name) * (res @ proj), atol=1e-12)


def test_linearised_descent_bad_inputs_raise_naming_the_parameter():
    theta = np.zeros((K, K, N, N))
    with pytest.raises(ValueError, match="residual0"):
        lin.linearised_descent(theta, np.zeros((K, N + 1)), learning_rate=1.0, steps=2)
    with pytest.raises(ValueError, match="steps"):
        lin.linearised_descent(theta, np.zeros((K, N)), learning_rate=1.0, steps=-1)


def test_rate_error():
    assert lin.rate_error(0.5, 0.75) == pytest.approx(1.0)
    assert lin.rate_error(0.9, 0.9) == 0.0
    assert lin.rate_error(0.95, 0.9) == pytest.approx(0.5)
