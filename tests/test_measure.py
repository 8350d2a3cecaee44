"""What a record measures: the column definition, the NC bundle along a trajectory, the probe."""

import ast
import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntklib
from ntklib import collapse, kernel_stats, measure
from ntklib.block_kernel import BlockKernel
from ntklib.config import TrainConfig
from ntklib.data import load_dataset
from ntklib.invariant import invariant_metrics
from ntklib.models import build_model
from ntklib.ntk import block_ntk
from ntklib.train import train_and_evaluate

PACKAGE = Path(ntklib.__file__).parent


def test_every_column_is_defined_once_with_a_meaning_and_a_reference():
    names = measure.column_names()
    assert len(names) == len(set(names))
    for column in measure.COLUMNS:
        assert column.meaning and column.reference, column.name


def test_the_timing_columns_are_the_wall_times():
    """Exactly the columns in seconds of wall time are flagged; comparisons of runs leave them out."""
    seconds = {c.name for c in measure.COLUMNS if c.name.endswith("_seconds")}
    assert set(measure.timing_columns()) == seconds == {"epoch_seconds", "metrics_seconds", "compile_seconds"}
    assert measure.timing_columns(measure.NC_COLUMNS) == ()


def test_column_resolves_per_class_keys_and_rejects_unknown_ones():
    assert measure.column("gamma_d_class7").name == "gamma_d_class{k}"
    assert measure.column("align_ntk").name == "align_ntk"
    with pytest.raises(KeyError, match="inv_invariant_norm"):
        measure.column("inv_invariant_norm")


def _random_state(key, k=3, m=4, d=5):
    kh, kw, kb = jax.random.split(key, 3)
    return (jax.random.normal(kh, (d, k * m)), jax.random.normal(kw, (k, d)), jax.random.normal(kb, (k,)))


def test_collapse_metrics_match_the_single_metrics_and_vmap_along_a_trajectory():
    k, m = 3, 4
    labels = jnp.repeat(jnp.arange(k), m)
    h, w, b = _random_state(jax.random.key(0), k, m)
    values = measure.collapse_metrics(w, b, h, labels)
    assert set(values) == set(measure.column_names(measure.NC_COLUMNS))
    assert float(values["nc2"]) == pytest.approx(float(collapse.nc2_etf_distance(h, labels)))
    assert float(values["nc4"]) == pytest.approx(float(collapse.nc4_ncc_mismatch(w, b, h, labels)))
    states = [_random_state(key, k, m) for key in jax.random.split(jax.random.key(1), 4)]
    hs, ws, bs = (jnp.stack(parts) for parts in zip(*states, strict=True))
    along = jax.jit(jax.vmap(lambda h, w, b: measure.collapse_metrics(w, b, h, labels, num_classes=k)))(hs, ws, bs)
    for name, series in along.items():
        assert series.shape == (4,)
        expected = [float(measure.collapse_metrics(w, b, h, labels)[name]) for h, w, b in states]
        np.testing.assert_allclose(series, expected, rtol=1e-10, err_msg=name)


def test_subsample_per_class_takes_the_first_of_every_class_sorted():
    labels = np.array([2, 0, 1, 0, 2, 1, 1, 0, 2])
    images = np.arange(9) * 10
    x, y = measure.subsample_per_class(images, labels, 2)
    np.testing.assert_array_equal(y, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(x, [10, 30, 20, 50, 0, 40])
    with pytest.raises(ValueError, match="per_class"):
        measure.subsample_per_class(images, labels, 4)
    with pytest.raises(ValueError, match="per_class"):
        measure.subsample_per_class(images, labels, 0)


def test_measure_batch_gives_only_defined_columns():
    model = build_model("mlp", 3, "flax")
    x = jax.random.normal(jax.random.key(0), (12, 8, 8, 1))
    labels = np.repeat(np.arange(3), 4)
    variables = model.init(jax.random.key(1), x, train=False)
    values = measure.measure_batch(model, variables, x, labels, per_class=3, offdiag="logits")
    for key in values:
        measure.column(key)
    assert {"nc1", "gamma_d", "align_feat", "offdiag_ratio_ntk", "kappa_n_class2"} <= set(values)
    assert set(measure.measure_batch(model, variables, x, labels, kernels=False)) == {
        *measure.column_names(measure.NC_COLUMNS),
        "batch_per_class",
    }


def _dense_block_kernel(kappa, k, m):
    """The (N, N) matrix with κ_d on the diagonal, κ_c within a class and κ_n across, by loops."""
    n = k * m
    out = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            out[i, j] = kappa.diag if i == j else kappa.same_class if i // m == j // m else kappa.other_class
    return out


@pytest.fixture(scope="module")
def mlp_batch():
    """An MLP and a class-sorted batch of 3 classes with 6 samples each, in float64."""
    model = build_model("mlp", 3, "flax")
    x = jax.random.normal(jax.random.key(0), (18, 8, 8, 1), jnp.float64)
    labels = np.repeat(np.arange(3), 6)
    return model, model.init(jax.random.key(1), x, train=False), x, labels


def test_the_invariant_uses_the_whole_batch_with_the_probes_kappa(mlp_batch):
    model, variables, x, labels = mlp_batch
    values = measure.measure_batch(model, variables, x, labels, per_class=2)
    assert values["batch_per_class"] == 6 and values["probe_per_class"] == 2
    # κ from the probe: the first 2 samples of every class
    x_probe, y_probe = measure.subsample_per_class(x, labels, 2)
    kappa = measure.kernel_statistics(model, variables, x_probe, y_probe).kappa
    assert (values["kappa_d"], values["kappa_c"], values["kappa_n"]) == (
        kappa.diag,
        kappa.same_class,
        kappa.other_class,
    )
    # E = WᵀW − H K_κ⁻¹ Hᵀ with H the whole batch and K_κ the dense (18, 18) block matrix of that κ
    h = np.asarray(measure.extract_features(model, variables, x), np.float64)
    w = np.asarray(variables["params"]["classifier"]["kernel"], np.float64).T
    feature_term = h @ np.linalg.inv(_dense_block_kernel(kappa, 3, 6)) @ h.T
    means = np.stack([h[:, labels == c].mean(axis=1) for c in range(3)], axis=1)
    within = h - means[:, labels]
    hbar = h.mean(axis=1)
    expected = {
        "invariant_norm": np.linalg.norm(w.T @ w - feature_term),
        "invariant_alignment": np.sum(w.T @ w * feature_term) / np.linalg.norm(w.T @ w) / np.linalg.norm(feature_term),
        "wtw_norm": np.linalg.norm(w.T @ w),
        "mmt_norm": np.linalg.norm(means @ means.T),
        "h2h2t_norm": np.linalg.norm(within @ within.T),
        "mean_outer_norm": np.linalg.norm(np.outer(hbar, hbar)),
    }
    for key, value in expected.items():
        np.testing.assert_allclose(values[key], value, rtol=1e-9, err_msg=key)
    # the probe alone gives other terms: the records could not tell them apart without the counts
    on_probe = measure.measure_batch(model, variables, x_probe, y_probe)
    assert on_probe["batch_per_class"] == on_probe["probe_per_class"] == 2
    assert not np.isclose(on_probe["h2h2t_norm"], values["h2h2t_norm"])


def test_with_the_whole_batch_as_probe_the_invariant_is_that_of_the_measured_kernel(mlp_batch):
    model, variables, x, labels = mlp_batch
    values = measure.measure_batch(model, variables, x, labels)
    assert values["batch_per_class"] == values["probe_per_class"] == 6
    stats = measure.kernel_statistics(model, variables, x, labels)
    expected = invariant_metrics(jnp.asarray(stats.weights), jnp.asarray(stats.features), stats.kappa)
    for key, value in expected.items():  # features from the Jacobian pass vs a plain forward pass
        np.testing.assert_allclose(values[key], value, rtol=1e-7, err_msg=key)
    assert {k: v for k, v in measure.measure_batch(model, variables, x, labels, per_class=6).items()} == pytest.approx(
        values
    )


def test_the_virtual_alignment_is_for_half_the_whole_batch_from_the_probes_kernel(mlp_batch):
    model, variables, x, labels = mlp_batch
    values = measure.measure_batch(model, variables, x, labels, per_class=2)
    x_probe, y_probe = measure.subsample_per_class(x, labels, 2)
    ntk = block_ntk(model, variables, x_probe)
    for suffix, kernel in (("ntk", ntk.logits), ("feat", ntk.features)):
        # k = 6 // 2 = 3 per class, from the exact block means of the probe's 2 per class
        expected = kernel_stats.virtual_label_alignment(kernel, y_probe, virtual_per_class=3)
        np.testing.assert_allclose(values[f"align_{suffix}_virtual"], expected, rtol=1e-9, err_msg=suffix)
        assert values[f"align_{suffix}"] == pytest.approx(kernel_stats.label_alignment(kernel, y_probe), rel=1e-9)
    # without the batch's m the probe is the batch: k = 2 // 2 = 1
    alone = measure.kernel_statistics(model, variables, x_probe, y_probe)
    assert alone.virtual_per_class == 1
    assert alone.align_ntk_virtual == pytest.approx(
        kernel_stats.virtual_label_alignment(ntk.logits, y_probe, virtual_per_class=1), rel=1e-9
    )


def test_a_tiny_run_records_the_virtual_alignments():
    # batches of 4 per class, a probe of 2: the virtual batch (4 // 2 = 2 per class) is the probe's size,
    # where the virtual alignment is the exact one
    config = TrainConfig.tiny(epochs=1, kernel_metrics=True, ntk_per_class=2)
    records = train_and_evaluate(config, dataset=load_dataset("digits"), progress=False).records
    kernel_records = [r for r in records if "gamma_d" in r]
    assert len(kernel_records) == 2  # epochs 0 and 1
    for record in kernel_records:
        assert record["batch_per_class"] == 4 and record["probe_per_class"] == 2
        for suffix in ("ntk", "feat"):
            value = record[f"align_{suffix}_virtual"]
            assert np.isfinite(value) and -1 <= value <= 1, suffix
            assert value == pytest.approx(record[f"align_{suffix}"], rel=1e-9), suffix


def test_batch_kernel_keeps_the_block_values_and_rescales_the_eigenvalues():
    kappa = BlockKernel(3.0, 1.0, 0.2, num_classes=3, per_class=2)
    kernel = measure.batch_kernel(kappa, np.repeat(np.arange(3), 5))
    assert (kernel.diag, kernel.same_class, kernel.other_class, kernel.per_class) == (3.0, 1.0, 0.2, 5)
    assert kernel.eigenvalues().lamc == pytest.approx(2.0 + 5 * 0.8)
    with pytest.raises(ValueError, match="labels"):
        measure.batch_kernel(kappa, np.array([0, 1, 0, 1, 2, 2]))
    with pytest.raises(ValueError, match="num_classes"):
        measure.batch_kernel(kappa, np.repeat(np.arange(4), 2))


def test_no_invariant_when_the_whole_batch_kernel_is_not_positive_definite():
    # κ_n < 0: λ_max = λ_0 + m(κ_c + (K − 1)κ_n) = 2 − 0.2 m is 1.6 on 2 per class, −0.4 on 12
    kappa = BlockKernel(3.0, 1.0, -0.6, num_classes=3, per_class=2)
    assert kappa.is_positive_definite()
    labels = np.repeat(np.arange(3), 12)
    assert measure.batch_kernel(kappa, labels).eigenvalues().lammax == pytest.approx(-0.4)
    assert measure.batch_invariant_metrics(np.ones((3, 4)), np.ones((4, 36)), labels, kappa) is None


def _imports(module: Path) -> set[str]:
    """The ntklib modules that ``module`` imports (any depth of the file)."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ntklib"):
            found |= {node.module} if node.module != "ntklib" else {f"ntklib.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ntklib.")}
    return found


def test_the_import_graph_has_no_cycle_and_the_engine_sits_below_the_theory():
    graph = {f"ntklib.{p.stem}": _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert "ntklib.invariant" not in graph["ntklib.ntk"] and "ntklib.measure" not in graph["ntklib.ntk"]
    visiting, done = set(), set()

    def visit(node, path):
        assert node not in visiting, f"import cycle: {' -> '.join([*path, node])}"
        if node in done:
            return
        visiting.add(node)
        for child in graph.get(node, ()):
            visit(child, [*path, node])
        visiting.discard(node)
        done.add(node)

    for module in graph:
        visit(module, [])


def test_kernel_statistics_fields_are_named_as_their_columns():
    scalar_fields = [
        f.name for f in dataclasses.fields(measure.KernelStatistics) if f.type in ("float", "float | None")
    ]
    assert scalar_fields
    for name in scalar_fields:
        assert measure.column(name).name == name
