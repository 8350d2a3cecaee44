"""Tests of ntklib.dynamics against naive references: scipy.linalg.expm, an explicit gradient-descent
loop, finite-difference gradients of ½‖R‖² through a linear-feature model, and scipy's DOP853."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
from helpers import centring, naive_block_kernel, naive_class_means, naive_labels, naive_projectors, random_within_basis

from ntklib.block_kernel import BlockKernel
from ntklib.dynamics import (
    DecomposedState,
    FlowState,
    ResidualComponents,
    Trajectory,
    class_mean_residual,
    integrate,
    loss_of,
    residual,
    residual_components,
    residual_flow,
    residual_gradient_descent,
    residual_of,
    theorem41_vector_field,
    theorem51_vector_field,
)
from ntklib.invariant import decompose_features, end_of_training_invariant, invariant

GRID = [(k, m) for k in (2, 3, 5) for m in (2, 4)]
KAPPA = (3.0, 1.0, 0.2)


# ---------------------------------------------------------------- naive references (numpy only)


def naive_field(h, w, b, kmat, y, centred=False, train_bias=True):
    """(dH, dW, db) of Theorem 4.1 with a dense kernel matrix."""
    r = w @ h + b[:, None] - y
    dh = -w.T @ r @ kmat
    if centred:
        dh = dh @ centring(h.shape[1])
    db = -r.sum(axis=1) if train_bias else np.zeros_like(b)
    return dh, -r @ h.T, db


def random_state(rng, k, m, d, scale=0.7):
    return (
        scale * rng.normal(size=(d, k * m)),
        scale * rng.normal(size=(k, d)),
        0.3 * rng.normal(size=k),
    )


def as_np(state):
    return tuple(np.asarray(x) for x in state)


# ---------------------------------------------------------------- residuals


@pytest.mark.parametrize("k,m", GRID)
def test_residual_vs_naive(k, m):
    rng = np.random.default_rng(0)
    h, w, b = random_state(rng, k, m, d=k + 1)
    expected = w @ h + np.outer(b, np.ones(k * m)) - naive_labels(k, m)
    np.testing.assert_allclose(np.asarray(residual(w, h, b, k, m)), expected, atol=1e-14)


@pytest.mark.parametrize("k,m", GRID)
def test_residual_of_and_loss_of_a_flow_state_vs_direct_computation(k, m):
    rng = np.random.default_rng(12)
    kern = BlockKernel(*KAPPA, num_classes=k, per_class=m)
    h, w, b = random_state(rng, k, m, d=k + 1)
    state = FlowState(jnp.asarray(h), jnp.asarray(w), jnp.asarray(b))
    expected = np.empty((k, k * m))  # R[c, i] = w_c · h_i + b_c − [i is of class c]
    for c in range(k):
        for i in range(k * m):
            expected[c, i] = w[c] @ h[:, i] + b[c] - (1.0 if i // m == c else 0.0)
    np.testing.assert_allclose(np.asarray(residual_of(state, kern)), expected, atol=1e-14)
    assert float(loss_of(state, kern)) == pytest.approx(0.5 * np.sum(expected**2), rel=1e-13)
    # the chapters' spelling, bit for bit
    assert float(loss_of(state, kern)) == float(
        0.5 * jnp.sum(residual(state.weights, state.features, state.bias, k, m) ** 2)
    )


@pytest.mark.parametrize("k,m", GRID)
def test_loss_of_a_decomposed_state_is_that_of_its_features(k, m):
    """½(m‖R̄‖² + ‖W H₂‖²) equals ½‖R‖² of the composed features, for any orthonormal basis of 1_m^⊥."""
    rng = np.random.default_rng(13)
    kern = BlockKernel(*KAPPA, num_classes=k, per_class=m)
    h, w, b = random_state(rng, k, m, d=k + 1)
    direct = 0.5 * np.sum((w @ h + b[:, None] - naive_labels(k, m)) ** 2)
    for basis in (None, jnp.asarray(random_within_basis(rng, m))):
        means, within = decompose_features(jnp.asarray(h), k, m, basis)
        decomposed = DecomposedState(means, within, jnp.asarray(w), jnp.asarray(b))
        assert float(loss_of(decomposed, kern)) == pytest.approx(direct, rel=1e-12)
    expected_rbar = w @ naive_class_means(h, k, m) + b[:, None] - np.eye(k)
    np.testing.assert_allclose(np.asarray(class_mean_residual(w, means, b)), expected_rbar, atol=1e-13)


def test_residual_of_and_loss_of_vmap_along_a_trajectory():
    k, m, d, steps = 3, 2, 4, 5
    kern = BlockKernel(*KAPPA, num_classes=k, per_class=m)
    rng = np.random.default_rng(14)
    states = [random_state(rng, k, m, d) for _ in range(steps)]
    stacked = FlowState(*(jnp.asarray(np.stack(parts)) for parts in zip(*states, strict=True)))
    losses = jax.vmap(lambda s: loss_of(s, kern))(stacked)
    residuals = jax.vmap(lambda s: residual_of(s, kern))(stacked)
    assert losses.shape == (steps,) and residuals.shape == (steps, k, k * m)
    for t in range(steps):
        one = FlowState(*(x[t] for x in stacked))
        np.testing.assert_allclose(np.asarray(residuals[t]), np.asarray(residual_of(one, kern)), atol=1e-15)
        assert float(losses[t]) == pytest.approx(float(loss_of(one, kern)), rel=1e-14)


@pytest.mark.parametrize("k,m", GRID)
def test_residual_components_are_projections(k, m):
    rng = np.random.default_rng(1)
    r = rng.normal(size=(k, k * m))
    parts = residual_components(jnp.asarray(r), k)
    assert isinstance(parts, ResidualComponents)
    for part, proj in zip(parts, naive_projectors(k, m), strict=True):
        assert part.shape == r.shape
        np.testing.assert_allclose(np.asarray(part), r @ proj, atol=1e-14)
    np.testing.assert_allclose(np.asarray(sum(parts)), r, atol=1e-14)


@pytest.mark.parametrize("k,m", GRID)
def test_residual_flow_vs_expm(k, m):
    rng = np.random.default_rng(2)
    kern = BlockKernel(2.0, 0.7, 0.1, num_classes=k, per_class=m)
    kmat = naive_block_kernel(2.0, 0.7, 0.1, k, m)
    r0 = rng.normal(size=(k, k * m))
    times = np.array([0.0, 0.13, 0.5, 1.7])
    path = np.asarray(residual_flow(jnp.asarray(r0), kern, jnp.asarray(times)))
    assert path.shape == (len(times), k, k * m)
    for t, rt in zip(times, path, strict=True):
        np.testing.assert_allclose(rt, r0 @ scipy.linalg.expm(-t * kmat), rtol=1e-10, atol=1e-13)
    # each component decays at its own rate (μ_max, μ_c, μ_0 = Table 1 eigenvalues)
    mu0, muc, mumax = kern.eigenvalues()
    p_glob, p_cls, p_within = naive_projectors(k, m)
    t = times[-1]
    np.testing.assert_allclose(path[-1] @ p_glob, np.exp(-mumax * t) * r0 @ p_glob, atol=1e-13)
    np.testing.assert_allclose(path[-1] @ p_cls, np.exp(-muc * t) * r0 @ p_cls, atol=1e-13)
    np.testing.assert_allclose(path[-1] @ p_within, np.exp(-mu0 * t) * r0 @ p_within, atol=1e-13)


@pytest.mark.parametrize("k,m", GRID)
def test_residual_gradient_descent_vs_loop(k, m):
    rng = np.random.default_rng(3)
    kern = BlockKernel(2.0, 0.7, 0.1, num_classes=k, per_class=m)
    kmat = naive_block_kernel(2.0, 0.7, 0.1, k, m)
    r0 = rng.normal(size=(k, k * m))
    eta, steps = 0.07, 9
    path = np.asarray(residual_gradient_descent(jnp.asarray(r0), kern, eta, steps))
    assert path.shape == (steps + 1, k, k * m)
    expected = [r0]
    for _ in range(steps):
        expected.append(expected[-1] @ (np.eye(k * m) - eta * kmat))
    np.testing.assert_allclose(path, np.stack(expected), rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------- Theorem 4.1 vector field


def fd_gradient(loss, params, eps=1e-4):
    """Central finite differences of a scalar function of a tuple of numpy arrays."""
    grads = []
    for idx, p in enumerate(params):
        g = np.zeros_like(p)
        for pos in np.ndindex(*p.shape):
            plus = [q.copy() for q in params]
            minus = [q.copy() for q in params]
            plus[idx][pos] += eps
            minus[idx][pos] -= eps
            g[pos] = (loss(*plus) - loss(*minus)) / (2 * eps)
        grads.append(g)
    return grads


@pytest.mark.parametrize("k,m", GRID)
@pytest.mark.parametrize(
    "form,centred", [("block", False), ("generic", False), ("block", True), ("end_of_training", False)]
)
def test_theorem41_is_gradient_flow_of_linear_feature_model(k, m, form, centred):
    """With features H = Θ Φ (P), ΦᵀΦ = K_κ, the gradient flow of ½‖W H + b 1ᵀ − Y‖² over (Θ, W, b)
    induces exactly the Theorem 4.1 vector field on (H, W, b) (Θʰ = K_κ ⊗ I_d). For the
    end-of-training form the feature kernel is λ_0 I."""
    rng = np.random.default_rng(4)
    d = k + 1
    kern = BlockKernel(*KAPPA, num_classes=k, per_class=m)
    n = k * m
    if form == "end_of_training":
        phi = np.sqrt(kern.eigenvalues().lam0) * np.eye(n)
    else:
        phi = np.linalg.cholesky(naive_block_kernel(*KAPPA, k, m)).T  # ΦᵀΦ = K_κ
    if centred:
        phi = phi @ centring(n)
    y = naive_labels(k, m)
    theta = 0.5 * rng.normal(size=(d, n))
    _, w, b = random_state(rng, k, m, d)

    def loss(theta_, w_, b_):
        r = w_ @ theta_ @ phi + b_[:, None] - y
        return 0.5 * np.sum(r**2)

    g_theta, g_w, g_b = fd_gradient(loss, (theta, w, b))
    h = theta @ phi
    field = theorem41_vector_field(kern, form=form, centred=centred)(0.0, FlowState(h, w, b), None)
    assert isinstance(field, FlowState)
    dh, dw, db = as_np(field)
    scale = np.abs(g_theta @ phi).max()
    np.testing.assert_allclose(dh, -g_theta @ phi, rtol=0, atol=1e-7 * scale)
    np.testing.assert_allclose(dw, -g_w, rtol=0, atol=1e-7 * np.abs(g_w).max())
    np.testing.assert_allclose(db, -g_b, rtol=0, atol=1e-7 * np.abs(g_b).max())


@pytest.mark.parametrize("k,m", GRID)
def test_theorem41_forms_vs_dense_formula(k, m):
    rng = np.random.default_rng(5)
    d = k + 1
    kern = BlockKernel(*KAPPA, num_classes=k, per_class=m)
    kmat = naive_block_kernel(*KAPPA, k, m)
    y = naive_labels(k, m)
    h, w, b = random_state(rng, k, m, d)
    state = FlowState(jnp.asarray(h), jnp.asarray(w), jnp.asarray(b))
    for form in ("block", "generic"):
        for centred in (False, True):
            for train_bias in (True, False):
                got = as_np(
                    theorem41_vector_field(kern, form=form, centred=centred, train_bias=train_bias)(0.0, state, None)
                )
                want = naive_field(h, w, b, kmat, y, centred, train_bias)
                for g_, w_ in zip(got, want, strict=True):
                    np.testing.assert_allclose(g_, w_, rtol=1e-11, atol=1e-12)
    lam0 = kern.eigenvalues().lam0
    got = as_np(theorem41_vector_field(kern, form="end_of_training")(0.0, state, None))
    want = naive_field(h, w, b, lam0 * np.eye(k * m), y)
    for g_, w_ in zip(got, want, strict=True):
        np.testing.assert_allclose(g_, w_, rtol=1e-11, atol=1e-12)
    # centred: the global feature mean does not move
    dh = np.asarray(theorem41_vector_field(kern, centred=True)(0.0, state, None).features)
    np.testing.assert_allclose(dh.mean(axis=1), 0.0, atol=1e-13)


def test_end_of_training_form_equals_block_form_when_class_residuals_vanish():
    """If R P_cls = R P_glob = 0 the end-of-training field equals the full block field."""
    rng = np.random.default_rng(6)
    k, m, d = 3, 4, 4
    kern = BlockKernel(*KAPPA, num_classes=k, per_class=m)
    y = naive_labels(k, m)
    w = rng.normal(size=(k, d))
    b = rng.normal(size=k)
    # choose H so that R = W H + b 1ᵀ − Y has only a within-class part: R = R0 P_within
    r_target = rng.normal(size=(k, k * m)) @ naive_projectors(k, m)[2]
    h = np.linalg.pinv(w) @ (r_target + y - b[:, None])  # W has full row rank, so W H = target
    np.testing.assert_allclose(w @ h + b[:, None] - y, r_target, atol=1e-12)
    state = FlowState(jnp.asarray(h), jnp.asarray(w), jnp.asarray(b))
    full = as_np(theorem41_vector_field(kern, form="block")(0.0, state, None))
    eot = as_np(theorem41_vector_field(kern, form="end_of_training")(0.0, state, None))
    for a, c in zip(full, eot, strict=True):
        np.testing.assert_allclose(a, c, atol=1e-12)


def test_theorem41_bad_form():
    kern = BlockKernel(*KAPPA, num_classes=3, per_class=2)
    with pytest.raises(ValueError, match="form"):
        theorem41_vector_field(kern, form="dense")


def test_flows_reject_non_positive_definite_kernel():
    kern = BlockKernel(1.0, 1.5, 0.1, num_classes=3, per_class=2)  # λ_0 = −0.5
    with pytest.raises(ValueError, match="lam0"):
        theorem41_vector_field(kern)
    with pytest.raises(ValueError, match="lam0"):
        theorem51_vector_field(kern)


# ---------------------------------------------------------------- Theorem 5.1 and the invariant


@pytest.mark.parametrize("k,m", GRID)
@pytest.mark.parametrize("train_bias", [True, False])
def test_theorem51_matches_decomposed_theorem41(k, m, train_bias):
    rng = np.random.default_rng(7)
    d = k + 1
    kern = BlockKernel(*KAPPA, num_classes=k, per_class=m)
    h, w, b = random_state(rng, k, m, d)
    f41 = theorem41_vector_field(kern, train_bias=train_bias)(0.0, FlowState(h, w, b), None)
    means, within = decompose_features(jnp.asarray(h), k, m)
    f51 = theorem51_vector_field(kern, train_bias=train_bias)(0.0, DecomposedState(means, within, w, b), None)
    assert isinstance(f51, DecomposedState)
    d_means, d_within = decompose_features(f41.features, k, m)  # decomposition is linear
    np.testing.assert_allclose(np.asarray(f51.class_means), np.asarray(d_means), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(np.asarray(f51.within), np.asarray(d_within), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(np.asarray(f51.weights), np.asarray(f41.weights), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(np.asarray(f51.bias), np.asarray(f41.bias), rtol=1e-11, atol=1e-12)
    if not train_bias:
        np.testing.assert_array_equal(np.asarray(f51.bias), 0.0)


def directional_change(fn, h, w, field, eps=1e-3):
    """(fn(s + ε f) − fn(s − ε f)) / 2ε: exact for the quadratic invariants up to rounding."""
    plus = fn(w + eps * field.weights, h + eps * field.features)
    minus = fn(w - eps * field.weights, h - eps * field.features)
    return np.asarray(plus - minus) / (2 * eps)


@pytest.mark.parametrize("k,m", GRID)
@pytest.mark.parametrize("form,centred", [("block", False), ("generic", False), ("block", True)])
def test_invariant_has_zero_time_derivative(k, m, form, centred):
    rng = np.random.default_rng(8)
    d = k + 1
    kern = BlockKernel(*KAPPA, num_classes=k, per_class=m)
    kinv = np.linalg.inv(naive_block_kernel(*KAPPA, k, m))
    h, w, b = random_state(rng, k, m, d)
    if centred:
        # the centred flow (BatchNorm) conserves E for features with zero global mean; as a
        # control, with h̄ ≠ 0 it does not (dE/dt = −(Wᵀ R 1 h̄ᵀ + h̄ 1ᵀ Rᵀ W) ≠ 0)
        vf = theorem41_vector_field(kern, form=form, centred=True)
        field = vf(0.0, FlowState(h, w, b), None)
        d_e = directional_change(lambda w_, h_: invariant(w_, h_, kern), h, w, field)
        assert np.linalg.norm(d_e) > 1e-3
        h = h @ centring(k * m)
    field = theorem41_vector_field(kern, form=form, centred=centred)(0.0, FlowState(h, w, b), None)
    d_e = directional_change(lambda w_, h_: invariant(w_, h_, kern), h, w, field)
    # the two halves of E move, but by the same amount
    d_wtw = directional_change(lambda w_, h_: w_.T @ w_, h, w, field)
    d_feat = directional_change(lambda w_, h_: h_ @ kinv @ h_.T, h, w, field)
    assert np.linalg.norm(d_wtw) > 1e-3
    np.testing.assert_allclose(d_wtw, d_feat, rtol=0, atol=1e-9 * np.linalg.norm(d_wtw))
    assert np.linalg.norm(d_e) <= 1e-9 * np.linalg.norm(d_wtw)


@pytest.mark.parametrize("k,m", GRID)
def test_end_of_training_invariant_has_zero_time_derivative(k, m):
    rng = np.random.default_rng(9)
    d = k + 1
    kern = BlockKernel(*KAPPA, num_classes=k, per_class=m)
    lam0 = kern.eigenvalues().lam0
    h, w, b = random_state(rng, k, m, d)
    field = theorem41_vector_field(kern, form="end_of_training")(0.0, FlowState(h, w, b), None)
    d_eot = directional_change(lambda w_, h_: end_of_training_invariant(w_, h_, lam0), h, w, field)
    d_wtw = directional_change(lambda w_, h_: w_.T @ w_, h, w, field)
    assert np.linalg.norm(d_eot) <= 1e-9 * np.linalg.norm(d_wtw)
    # control: the end-of-training flow does not conserve the full E, nor the full flow E_eot
    d_e = directional_change(lambda w_, h_: invariant(w_, h_, kern), h, w, field)
    assert np.linalg.norm(d_e) > 1e-3 * np.linalg.norm(d_wtw)
    full = theorem41_vector_field(kern, form="block")(0.0, FlowState(h, w, b), None)
    d_eot_full = directional_change(lambda w_, h_: end_of_training_invariant(w_, h_, lam0), h, w, full)
    assert np.linalg.norm(d_eot_full) > 1e-3 * np.linalg.norm(d_wtw)


# ---------------------------------------------------------------- integration (one compilation)

K, M, D = 3, 2, 4
TIMES = np.array([0.0, 0.25, 0.5, 1.0, 2.0])
FLOW_SPECS = {  # name: (form, centred, train_bias)
    "block": ("block", False, True),
    "generic": ("generic", False, True),
    "centred": ("block", True, True),
    "eot": ("end_of_training", False, True),
    "frozen_bias": ("block", False, False),
}


@pytest.fixture(scope="module")
def flows():
    """All Theorem 4.1 variants and the Theorem 5.1 flow, integrated together as one pytree ODE
    (one diffrax compilation for the whole module)."""
    rng = np.random.default_rng(10)
    kern = BlockKernel(*KAPPA, num_classes=K, per_class=M)
    h, w, b = random_state(rng, K, M, D)
    fields = {
        name: theorem41_vector_field(kern, form=f, centred=c, train_bias=tb) for name, (f, c, tb) in FLOW_SPECS.items()
    }
    fields["theorem51"] = theorem51_vector_field(kern)
    means, within = decompose_features(jnp.asarray(h), K, M)
    y0 = {name: FlowState(jnp.asarray(h), jnp.asarray(w), jnp.asarray(b)) for name in FLOW_SPECS}
    # the centred flow starts from centred features (h̄ = 0, as with BatchNorm)
    y0["centred"] = FlowState(jnp.asarray(h @ centring(K * M)), jnp.asarray(w), jnp.asarray(b))
    y0["theorem51"] = DecomposedState(means, within, jnp.asarray(w), jnp.asarray(b))

    # the linear residual flow dR/dt = −R K_γ, to check residual_flow against integration
    fields["residual"] = lambda t, r, args: -kern.apply(r)
    y0["residual"] = jnp.asarray(rng.normal(size=(K, K * M)))

    def combined(t, ys, args):
        return {name: fields[name](t, ys[name], args) for name in fields}

    traj = integrate(combined, y0, jnp.asarray(TIMES))
    return kern, (h, w, b), traj


def initial_state(flows, name):
    _, (h, w, b), _ = flows
    return (h @ centring(K * M) if name == "centred" else h), w, b


def test_integrate_returns_trajectory(flows):
    _, _, traj = flows
    assert isinstance(traj, Trajectory)
    np.testing.assert_allclose(np.asarray(traj.times), TIMES, rtol=0, atol=0)
    st = traj.states["block"]
    assert isinstance(st, FlowState)
    assert st.features.shape == (len(TIMES), D, K * M)
    assert st.weights.shape == (len(TIMES), K, D)
    assert st.bias.shape == (len(TIMES), K)


@pytest.mark.parametrize("name", list(FLOW_SPECS))
def test_integrate_vs_solve_ivp_dop853(flows, name):
    """Compare with scipy's DOP853 at tight tolerance on the flattened state with the dense
    naive vector field."""
    kern, _, traj = flows
    h0, w0, b0 = initial_state(flows, name)
    form, centred, train_bias = FLOW_SPECS[name]
    kmat = kern.eigenvalues().lam0 * np.eye(K * M) if form == "end_of_training" else naive_block_kernel(*KAPPA, K, M)
    y = naive_labels(K, M)
    sizes = [h0.size, w0.size, b0.size]

    def rhs(t, flat):
        h, w, b = np.split(flat, np.cumsum(sizes)[:-1])
        out = naive_field(h.reshape(h0.shape), w.reshape(w0.shape), b, kmat, y, centred, train_bias)
        return np.concatenate([x.ravel() for x in out])

    flat0 = np.concatenate([h0.ravel(), w0.ravel(), b0])
    sol = scipy.integrate.solve_ivp(
        rhs, (TIMES[0], TIMES[-1]), flat0, method="DOP853", t_eval=TIMES, rtol=1e-12, atol=1e-14
    )
    assert sol.success
    st = traj.states[name]
    got = np.concatenate(
        [
            np.asarray(st.features).reshape(len(TIMES), -1),
            np.asarray(st.weights).reshape(len(TIMES), -1),
            np.asarray(st.bias),
        ],
        axis=1,
    )
    np.testing.assert_allclose(got, sol.y.T, rtol=1e-8, atol=1e-9)
    # the flow actually moved
    assert np.abs(sol.y[:, -1] - flat0).max() > 0.1
    if not train_bias:
        np.testing.assert_array_equal(np.asarray(st.bias), np.broadcast_to(b0, st.bias.shape))


@pytest.mark.parametrize("name", ["block", "generic", "centred"])
def test_invariant_conserved_along_flow(flows, name):
    kern, _, traj = flows
    st = traj.states[name]
    es = [np.asarray(invariant(w, h, kern)) for h, w in zip(st.features, st.weights, strict=True)]
    scale = np.linalg.norm(es[0])
    assert scale > 0.1
    for e in es[1:]:
        assert np.linalg.norm(e - es[0]) <= 1e-9 * scale
    # while WᵀW itself changes a lot
    wtw = [np.asarray(w.T @ w) for w in st.weights]
    assert np.linalg.norm(wtw[-1] - wtw[0]) > 1e-2 * scale


def test_centred_flow_keeps_global_mean(flows):
    _, (h0, _, _), traj = flows
    means = np.asarray(traj.states["centred"].features).mean(axis=2)
    np.testing.assert_allclose(means, 0.0, atol=1e-12)
    # the uncentred flow moves it
    moved = np.asarray(traj.states["block"].features).mean(axis=2)
    assert np.abs(moved[-1] - h0.mean(axis=1)).max() > 1e-3


def test_end_of_training_invariant_conserved_along_flow(flows):
    kern, _, traj = flows
    lam0 = kern.eigenvalues().lam0
    st = traj.states["eot"]
    es = [np.asarray(end_of_training_invariant(w, h, lam0)) for h, w in zip(st.features, st.weights, strict=True)]
    scale = np.linalg.norm(es[0])
    for e in es[1:]:
        assert np.linalg.norm(e - es[0]) <= 1e-9 * scale


def test_theorem51_trajectory_matches_decomposed_theorem41(flows):
    _, _, traj = flows
    full = traj.states["block"]
    dec = traj.states["theorem51"]
    for i in range(len(TIMES)):
        means, within = decompose_features(full.features[i], K, M)
        np.testing.assert_allclose(np.asarray(dec.class_means[i]), np.asarray(means), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(np.asarray(dec.within[i]), np.asarray(within), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.asarray(dec.weights), np.asarray(full.weights), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.asarray(dec.bias), np.asarray(full.bias), rtol=1e-8, atol=1e-10)


def test_residual_flow_matches_integrated_linear_flow(flows):
    kern, _, traj = flows
    path = traj.states["residual"]
    closed = residual_flow(path[0], kern, jnp.asarray(TIMES))
    np.testing.assert_allclose(np.asarray(path), np.asarray(closed), rtol=1e-8, atol=1e-10)


def test_float32_inputs_stay_float32():
    k, m, d = 3, 2, 4
    kern = BlockKernel(*KAPPA, num_classes=k, per_class=m)
    rng = np.random.default_rng(11)
    h, w, b = (jnp.asarray(x, dtype=jnp.float32) for x in random_state(rng, k, m, d))
    state = FlowState(h, w, b)
    for form in ("block", "generic", "end_of_training"):
        out = theorem41_vector_field(kern, form=form, centred=form == "block")(0.0, state, None)
        assert all(x.dtype == jnp.float32 for x in out), form
        if form == "end_of_training":
            kmat = kern.eigenvalues().lam0 * np.eye(k * m)
        else:
            kmat = naive_block_kernel(*KAPPA, k, m)
        h64, w64, b64 = (np.asarray(x, dtype=np.float64) for x in state)
        want = naive_field(h64, w64, b64, kmat, naive_labels(k, m), centred=form == "block")
        for g_, w_ in zip(out, want, strict=True):
            np.testing.assert_allclose(np.asarray(g_), w_, rtol=1e-4, atol=1e-4)
    assert residual(w, h, b, k, m).dtype == jnp.float32
    assert residual_flow(residual(w, h, b, k, m), kern, jnp.asarray([0.0, 1.0], dtype=jnp.float32)).dtype == jnp.float32
    means, within = decompose_features(h, k, m)
    assert means.dtype == within.dtype == jnp.float32
    assert invariant(w, h, kern).dtype == jnp.float32


def test_component_norms_and_fitted_log_slope_recover_the_rates_of_table1():
    from ntklib.dynamics import fitted_log_slope, residual_component_norms

    kern = BlockKernel(1.0, 0.4, 0.1, num_classes=3, per_class=4)
    res0 = jax.random.normal(jax.random.key(0), (3, 12))
    times = jnp.linspace(0.0, 2.0, 9)
    norms = residual_component_norms(residual_flow(res0, kern, times), 3)
    parts = residual_components(res0, 3)
    eig = kern.eigenvalues()
    for name, mu in zip(("glob", "cls", "within"), (eig.lammax, eig.lamc, eig.lam0), strict=True):
        series = getattr(norms, name)
        assert series[0] == pytest.approx(float(jnp.linalg.norm(getattr(parts, name))), rel=1e-12)
        assert fitted_log_slope(times, series) == pytest.approx(-mu, rel=1e-9)
    t = np.array([1.0, 2.0, 4.0, 8.0])
    assert fitted_log_slope(t, 3 * t**-0.5, log_x=True) == pytest.approx(-0.5)
    masked = np.where(t == 2.0, 0.0, np.exp(-0.7 * t))  # a point at zero, left out by the mask
    assert fitted_log_slope(t, masked, where=masked > 0) == pytest.approx(-0.7)
    with pytest.raises(ValueError, match="values"):
        fitted_log_slope(t, [1.0, 0.0, 1.0, 1.0])
