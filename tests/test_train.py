"""Training loop: protocol pieces, records, reproducibility, resume, divergence, kernel metrics
(the config itself: tests/test_config.py)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from ntklib import rundir
from ntklib.config import TrainConfig
from ntklib.data import load_dataset
from ntklib.measure import timing_columns
from ntklib.train import (
    compute_loss,
    create_learning_rate_schedule,
    create_optimizer,
    train_and_evaluate,
)

TIMING = timing_columns()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def strip_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def test_mse_is_the_released_codes_mean():
    logits = jnp.array([[1.0, 0.0, 0.5], [0.0, 2.0, 0.0]])
    labels = jnp.array([0, 2])
    y = np.eye(3)[[0, 2]]
    assert float(compute_loss(logits, labels, "mse")) == pytest.approx(np.mean(0.5 * (np.asarray(logits) - y) ** 2))
    ce = -np.mean(np.log(jax.nn.softmax(logits)[np.arange(2), [0, 2]]))
    assert float(compute_loss(logits, labels, "ce")) == pytest.approx(float(ce), rel=1e-5)


def test_schedule_and_weight_decay_mask():
    config = TrainConfig(lr=0.5, epochs=40)  # decay every 12 epochs
    schedule = create_learning_rate_schedule(config, steps_per_epoch=10)
    assert float(schedule(0)) == pytest.approx(0.5)
    assert float(schedule(119)) == pytest.approx(0.5)
    assert float(schedule(120)) == pytest.approx(0.05)
    assert float(schedule(245)) == pytest.approx(0.005)
    # with zero gradients only the decay acts, and only on tensors of rank > 1
    tx = create_optimizer(config, steps_per_epoch=10)
    params = {"kernel": jnp.ones((2, 3), jnp.float32), "bias": jnp.ones((3,), jnp.float32)}
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    # Nesterov: the first update is (1 + momentum) · wd · w, times −lr in train_step
    np.testing.assert_allclose(updates["kernel"], -1.9 * 5e-4 * np.ones((2, 3)), rtol=1e-6)
    np.testing.assert_array_equal(updates["bias"], 0.0)


def test_tiny_run_writes_tidy_records(tmp_path, digits):
    config = TrainConfig.tiny(kernel_metrics=False)
    result = train_and_evaluate(config, tmp_path, dataset=digits, progress=False)
    assert result.status == "finished"
    assert [r["epoch"] for r in result.records] == [0, 1, 2]
    frame = pd.read_json(tmp_path / rundir.METRICS_FILE, lines=True)
    assert list(frame["epoch"]) == [0, 1, 2]
    for column in (
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
        "current_lr",
        "nc1",
        "nc1_trace",
        "nc2",
        "nc3",
        "nc4",
    ):
        assert frame[column].notna().all(), column
    assert frame["test_accuracy"].iloc[-1] > 0.5  # learns the digits
    saved = json.loads((tmp_path / rundir.CONFIG_FILE).read_text())
    assert saved["config"]["arch"] == "mlp" and saved["environment"]["jax"] == jax.__version__
    assert "device_kind" in saved["environment"]
    assert rundir.read_status(tmp_path) == "finished"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files
    # a finished directory is returned as is; a different config there is refused
    again = train_and_evaluate(config, tmp_path, dataset=digits, progress=False)
    assert again.records == result.records
    with pytest.raises(ValueError, match="different config"):
        train_and_evaluate(config.replace(lr=0.2), tmp_path, dataset=digits, progress=False)


def test_same_seed_same_metrics(digits):
    config = TrainConfig.tiny(kernel_metrics=False)
    a = train_and_evaluate(config, dataset=digits, progress=False)
    b = train_and_evaluate(config, dataset=digits, progress=False)
    assert strip_timing(a.records) == strip_timing(b.records)
    c = train_and_evaluate(config.replace(seed=1), dataset=digits, progress=False)
    assert strip_timing(c.records) != strip_timing(a.records)


@pytest.mark.parametrize("eval_every", [1, 2])
def test_interrupted_run_resumes_to_the_same_metrics(tmp_path, digits, eval_every):
    config = TrainConfig.tiny(epochs=3, eval_every=eval_every, kernel_metrics=False)
    full = train_and_evaluate(config, tmp_path / "full", dataset=digits, progress=False)
    first = train_and_evaluate(config, tmp_path / "split", dataset=digits, progress=False, max_epochs_this_call=1)
    assert first.status == "running" and rundir.read_status(tmp_path / "split") == "running"
    assert (tmp_path / "split" / rundir.CHECKPOINT_FILE).exists()
    resumed = train_and_evaluate(config, tmp_path / "split", dataset=digits, progress=False)
    assert resumed.status == "finished"
    on_disk = rundir.read_records(tmp_path / "split")
    assert [r["epoch"] for r in on_disk] == [r["epoch"] for r in full.records]
    assert strip_timing(on_disk) == strip_timing(full.records)
    np.testing.assert_array_equal(jax.tree.leaves(resumed.state.params)[0], jax.tree.leaves(full.state.params)[0])


def test_resume_drops_records_after_the_checkpoint(tmp_path, digits):
    """A run killed between writing a record and its checkpoint must not duplicate records."""
    config = TrainConfig.tiny(epochs=2, kernel_metrics=False)
    train_and_evaluate(config, tmp_path, dataset=digits, progress=False, max_epochs_this_call=1)
    records = rundir.read_records(tmp_path)
    rundir.write_records(tmp_path, [*records, {**records[-1], "epoch": 2}])  # a stray later record
    train_and_evaluate(config, tmp_path, dataset=digits, progress=False)
    assert [r["epoch"] for r in rundir.read_records(tmp_path)] == [0, 1, 2]


def test_divergence_is_recorded_not_raised(tmp_path, digits):
    config = TrainConfig.tiny(lr=1e6, kernel_metrics=False)
    result = train_and_evaluate(config, tmp_path, dataset=digits, progress=False)
    assert result.status == "diverged"
    assert result.records[-1]["status"] == "diverged"
    assert rundir.read_status(tmp_path) == "diverged"
    frame = pd.read_json(tmp_path / rundir.METRICS_FILE, lines=True)
    assert frame["status"].iloc[-1] == "diverged"


def test_kernel_and_invariant_metrics_are_recorded(digits):
    config = TrainConfig.tiny(epochs=1, kernel_metrics=True)
    record = train_and_evaluate(config, dataset=digits, progress=False).records[-1]
    for key in (
        "gamma_d",
        "gamma_c",
        "gamma_n",
        "kappa_d",
        "kappa_c",
        "kappa_n",
        "align_ntk",
        "align_feat",
        "offdiag_ratio_ntk",
    ):
        assert np.isfinite(record[key]), key
    assert record["gamma_lam0"] == pytest.approx(record["gamma_d"] - record["gamma_c"])
    assert record["batch_per_class"] == 4 and record["probe_per_class"] == 4  # batches of 40, 10 classes
    short_probe = train_and_evaluate(config.replace(ntk_per_class=2), dataset=digits, progress=False).records[-1]
    assert short_probe["batch_per_class"] == 4 and short_probe["probe_per_class"] == 2
    if record["kappa_lam0"] > 0 and record["kappa_lamc"] > 0 and record["kappa_lammax"] > 0:
        assert np.isfinite(record["invariant_norm"]) and 0 < record["mmt_norm"]


def test_kernel_every_thins_the_kernel_records(digits):
    config = TrainConfig.tiny(epochs=5, eval_every=1, kernel_every=2)
    records = train_and_evaluate(config, dataset=digits, progress=False).records
    with_kernels = [r["epoch"] for r in records if "gamma_d" in r]
    assert [r["epoch"] for r in records] == [0, 1, 2, 3, 4, 5]
    assert with_kernels == [0, 2, 4, 5]  # every 2nd epoch, and the last
    assert all("nc2" in r for r in records)


def test_resnet20_trains_on_digits(digits):
    """The paper's ResNet20 on 8×8 digits: one epoch of the real architecture."""
    config = TrainConfig.tiny(arch="resnet20", epochs=1, kernel_metrics=False, lr=0.05)
    result = train_and_evaluate(config, dataset=digits, progress=False)
    assert result.status == "finished"
    assert result.records[-1]["train_loss"] < result.records[0]["train_loss"]


def test_scan_and_loop_epochs_agree(digits):
    """One jitted lax.scan per epoch and a Python loop of jitted steps compute the same run."""
    scan = train_and_evaluate(TrainConfig.tiny(kernel_metrics=False, epoch_mode="scan"), dataset=digits, progress=False)
    loop = train_and_evaluate(TrainConfig.tiny(kernel_metrics=False, epoch_mode="loop"), dataset=digits, progress=False)
    for a, b in zip(strip_timing(scan.records), strip_timing(loop.records), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], float):
                assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), key
            else:
                assert a[key] == b[key], key
    with pytest.raises(ValueError, match="epoch_mode"):
        TrainConfig(epoch_mode="pmap")


def test_on_epoch_gets_the_state_of_every_epoch(digits):
    """The hook sees epoch 0 and every trained epoch, with states a caller may keep."""
    config = TrainConfig.tiny(epochs=3, eval_every=3, kernel_metrics=False)
    seen = {}
    result = train_and_evaluate(
        config, dataset=digits, progress=False, on_epoch=lambda epoch, state: seen.__setitem__(epoch, state)
    )
    assert list(seen) == [0, 1, 2, 3]
    steps = [int(seen[epoch].step) for epoch in seen]
    assert steps[0] == 0 and len(set(np.diff(steps))) == 1 and steps[-1] == int(result.state.step)
    for a, b in zip(jax.tree.leaves(seen[3].variables), jax.tree.leaves(result.state.variables), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(jax.tree.leaves(seen[0].params)[0], jax.tree.leaves(seen[3].params)[0])


def test_every_record_key_is_a_defined_column(digits):
    """The keys of a finished run's records and of a diverged run's last record (a run of lr 1e6,
    asserted to have diverged, so that its record's keys are really the ones checked)."""
    from ntklib import measure

    config = TrainConfig.tiny(epochs=1, kernel_metrics=True)
    for record in train_and_evaluate(config, dataset=digits, progress=False).records:
        for key in record:
            measure.column(key)
    diverged = train_and_evaluate(config.replace(lr=1e6, kernel_metrics=False), dataset=digits, progress=False)
    assert diverged.status == rundir.RunStatus.DIVERGED
    last = diverged.records[-1]
    assert last["status"] == "diverged" and last["train_loss"] is None and last["epoch"] == 1
    for key in last:
        measure.column(key)


def test_tiny_imbalanced_run_finishes_with_finite_records(tmp_path, digits):
    """Step imbalance 4 on the digits: the subset is 5 × 131 + 5 × 32, every batch of 40 holds
    6 of each majority and 2 of each minority class, 16 batches an epoch."""
    from ntklib import measure

    config = TrainConfig.tiny(imbalance=4.0)
    result = train_and_evaluate(config, tmp_path, dataset=digits, progress=False)
    assert result.status == "finished" and [r["epoch"] for r in result.records] == [0, 1, 2]
    assert result.records[-1]["step"] == 2 * 16
    saved = json.loads((tmp_path / rundir.CONFIG_FILE).read_text())
    assert saved["config"]["imbalance"] == 4.0 and saved["identity"] == rundir.config_hash(config.identity())
    for record in result.records:
        numbers = {key: value for key, value in record.items() if isinstance(value, (int, float))}
        assert all(np.isfinite(value) for value in numbers.values()), record
        for key in record:
            measure.column(key)
        for column in ("nc1", "nc2", "nc3", "nc4", "gamma_d", "kappa_d_class9", "invariant_norm"):
            assert column in record, column
        assert record["batch_per_class"] == 2 and record["batch_count_class0"] == 6
