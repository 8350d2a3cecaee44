"""What a record measures: the column definition, the NC bundle along a trajectory, the probe."""

import ast
import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntklib
from ntklib import collapse, measure
from ntklib.models import build_model

PACKAGE = Path(ntklib.__file__).parent


def test_every_column_is_defined_once_with_a_meaning_and_a_reference():
    names = measure.column_names()
    assert len(names) == len(set(names))
    for column in measure.COLUMNS:
        assert column.meaning and column.reference, column.name


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
    assert set(measure.measure_batch(model, variables, x, labels, kernels=False)) == set(
        measure.column_names(measure.NC_COLUMNS)
    )


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
