"""Compilation: runs that differ in lr and init share their programs; the CLI's persistent cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntklib import compilation, experiment, ntk, train
from ntklib.config import TrainConfig
from ntklib.data import load_dataset
from ntklib.models import ARCHS, INITS, build_model
from ntklib.train import train_and_evaluate

# shapes no other test uses, so that the first run below compiles whatever else ran before
SHARED = dict(batch_size=30, eval_batch_size=97, ntk_per_class=2, epochs=2)


def clear_compiled() -> None:
    """Fresh jitted step, evaluation, init and NTK functions: their next call compiles. (JAX's own
    caches stay: with the SHARED shapes nothing else compiled these programs.)"""
    for cached in (train._build_model, train._init_fn, train.make_train_epoch, train.make_evaluate):
        cached.cache_clear()
    ntk._cached_ntk_fn.cache_clear()


def shapes(variables):
    return jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), variables)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_applied_module_has_every_inits_variables(arch):
    """The shared module (built with APPLY_INIT) takes the variables of every init: same tree, same shapes."""
    x = jnp.zeros((2, 8, 8, 1), jnp.float32)
    key = jax.random.key(0)
    applied = shapes(jax.eval_shape(train._build_model(arch, 10).init, key, x))
    for init in INITS:
        assert shapes(jax.eval_shape(build_model(arch, 10, init).init, key, x)) == applied, init


def test_initial_parameters_follow_the_init():
    config = TrainConfig.tiny(init="torch", seed=5)
    state = train.create_train_state(config, 10, (8, 8, 1), steps_per_epoch=3)
    x = jnp.zeros((2, 8, 8, 1), jnp.float32)
    expected = build_model("mlp", 10, "torch").init(jax.random.key(5), x)["params"]
    jax.tree.map(np.testing.assert_array_equal, state.params, expected)
    flax = train.create_train_state(config.replace(init="flax"), 10, (8, 8, 1), steps_per_epoch=3)
    assert state.apply_fn == flax.apply_fn
    assert not np.array_equal(state.params["classifier"]["kernel"], flax.params["classifier"]["kernel"])


def test_runs_differing_in_lr_and_init_compile_step_evaluation_and_ntk_once():
    dataset = load_dataset("digits")
    clear_compiled()
    first_config = TrainConfig.tiny(init="flax", lr=0.05, **SHARED)
    with compilation.CompileLog() as first:
        run = train_and_evaluate(first_config, dataset=dataset, progress=False)
    with compilation.CompileLog() as second:
        train_and_evaluate(first_config.replace(init="torch", lr=0.02), dataset=dataset, progress=False)

    programs = ("step", "batch_totals", "_block_ntk")
    assert [first.count(name) for name in programs] == [1, 1, 1], first.counts()
    assert [second.count(name) for name in programs] == [0, 0, 0], second.counts()
    # the init is the one program of its own: compiled for each init
    assert first.count("<lambda>") == 1 and second.count("<lambda>") == 1

    # the records' compile_seconds are the compilations of the run, split by record
    recorded = [record["compile_seconds"] for record in run.records]
    assert all(seconds >= 0 for seconds in recorded) and recorded[0] > 0
    assert sum(recorded) == pytest.approx(first.seconds, abs=1e-6)


def test_compile_log_counts_a_jitted_function():
    def square_plus_one(x):
        return x * x + 1

    f = jax.jit(square_plus_one)
    with compilation.CompileLog() as log:
        f(jnp.ones(3))
        f(jnp.ones(3))
        f(jnp.ones(4))
    assert log.count("square_plus_one") == 2 and log.seconds > 0
    assert log.take_seconds() == pytest.approx(log.seconds) and log.take_seconds() == 0


def test_cache_directory_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(compilation.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compilation.resolve_cache_dir() == tmp_path / "ntklib" / "jax"
    assert compilation.resolve_cache_dir("here") == compilation.Path("here")
    assert compilation.resolve_cache_dir("here", enabled=False) is None
    monkeypatch.setenv(compilation.CACHE_ENV, "off")
    assert compilation.resolve_cache_dir() is None
    monkeypatch.setenv(compilation.CACHE_ENV, str(tmp_path / "env"))
    assert compilation.resolve_cache_dir() == tmp_path / "env"
    with pytest.raises(ValueError, match="--compile-cache"):
        compilation.resolve_cache_dir(" ")
    with pytest.raises(ValueError, match="min_compile_seconds"):
        compilation.enable_persistent_cache(tmp_path, min_compile_seconds=-1.0)


def test_use_persistent_cache_sets_keeps_and_clears_the_directory(tmp_path):
    before = jax.config.jax_compilation_cache_dir
    try:
        assert compilation.use_persistent_cache(tmp_path / "a") == tmp_path / "a"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "a") and (tmp_path / "a").is_dir()
        assert compilation.use_persistent_cache(str(tmp_path / "a")) == tmp_path / "a"  # already in use: kept
        assert compilation.use_persistent_cache(tmp_path / "b") == tmp_path / "b"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "b")
        assert compilation.use_persistent_cache(None) is None
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        compilation.use_persistent_cache(before)


def test_cli_writes_the_persistent_cache_only_when_asked(tmp_path, monkeypatch):
    """``--compile-cache DIR`` writes the programs the run compiles to DIR; ``--no-compile-cache``
    writes none, not even to the default directory. In-process, with batch sizes no other test
    uses, so that the run compiles (a Ray worker process writing it: tests/test_ray_engine.py)."""
    monkeypatch.delenv(compilation.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    before = jax.config.jax_compilation_cache_dir
    argv = ["--tiny", "--no-kernel-metrics", "--epochs", "1", "--no-progress", "--batch-size", "20"]
    cache = tmp_path / "cache"
    try:
        for name, flags in (("cached", ["--compile-cache", str(cache)]), ("uncached", ["--no-compile-cache"])):
            eval_batch = "41" if name == "cached" else "43"  # new programs for each run
            out = ["--eval-batch-size", eval_batch, "--out", str(tmp_path / name)]
            assert experiment.main([*argv, *flags, *out]) == 0
            if name == "cached":
                written = sorted(cache.iterdir())
                assert len(written) > 0
                compilation.use_persistent_cache(None)  # as a new process starts
            else:
                assert jax.config.jax_compilation_cache_dir is None
    finally:
        compilation.use_persistent_cache(before)
    assert sorted(cache.iterdir()) == written  # the uncached run added nothing
    assert not (tmp_path / "xdg").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "cached", "uncached"]
