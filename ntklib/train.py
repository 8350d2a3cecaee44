"""Training protocol and loop of the paper's experiments (§6, Appendix C).

The protocol, all set by :class:`ntklib.config.TrainConfig`:

- loss: MSE to one-hot targets, ``mean(½ (z − y)²)`` over batch *and* classes (the released
  code's convention), or cross-entropy (``loss="ce"``, Appendix C.2); :func:`per_sample_loss`;
- SGD with Nesterov momentum 0.9; weight decay 5e-4 added to the gradient of every weight tensor of
  rank > 1 (an L2 penalty ½·wd·‖w‖² on kernels, none on biases or BatchNorm);
- 400 epochs, learning rate ÷10 every 120 epochs — for shorter runs the decay epochs scale
  proportionally (``epochs=40`` → every 12);
- exactly balanced, class-sorted batches of 120 (:func:`ntklib.data.balanced_batches`); beyond the
  paper, with ``imbalance`` ρ > 1, class-sorted batches in the proportions of a step-imbalanced
  training set (:func:`ntklib.data.epoch_batches`).

The training set stays on the device; an epoch is one jitted ``jax.lax.scan`` over its index
array, or on a CPU a Python loop of one jitted step (``epoch_mode``, :mod:`ntklib.epochs`).

Every ``eval_every`` epochs (and at epoch 0 and the last epoch) one record is written: epoch-average
train loss/accuracy (train mode, as the steps saw them), test loss/accuracy on the full test set
(eval mode), and what :func:`ntklib.measure.measure_batch` measures on the last training batch —
NC1–NC4 and, with ``kernel_metrics``, the exact NTK statistics and the invariant metrics (at every
record, or only every ``kernel_every`` epochs when the kernels cost more than training). The
columns are defined in :data:`ntklib.measure.COLUMNS`; ``compile_seconds`` is the XLA compile time
since the previous record (:class:`ntklib.compilation.CompileLog`). Runs that differ only in lr or
init share their compiled train step, evaluation and NTK (``_build_model``).

Runs write to a :class:`ntklib.rundir.RunDir`, checkpoint at every evaluation and resume when
restarted with the same directory; a NaN/inf loss ends the run with status ``"diverged"``
(:class:`ntklib.rundir.RunStatus`).
``train_and_evaluate(..., on_epoch=f)`` calls ``f(epoch, state)`` after every epoch, so a caller
can measure the states of chosen epochs on the library's own loop.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from tqdm import tqdm  # the text bar: tqdm.auto needs ipywidgets in notebooks and warns without it

from ntklib import epochs, measure
from ntklib.compilation import CompileLog
from ntklib.config import ConfigError, TrainConfig, check_fit, run_identity
from ntklib.data import Dataset, epoch_batches, load_dataset
from ntklib.models import Classifier, build_model
from ntklib.rundir import NullRunDir, RunDir, RunStatus, json_safe

APPLY_INIT = "flax"
"""The ``init`` of the module that trains, evaluates and measures (``_build_model``). An
initialiser runs only in ``Module.init``; the layers' shapes and biases do not depend on it, so the
programs that apply a model are the same for every init."""


@functools.cache
def _build_model(
    arch: str, num_classes: int, variant: str = "released", bn_momentum: float | None = None
) -> Classifier:
    """The module of every program that *applies* the model: the train step, the evaluation and
    the NTK. One object per (arch, K, variant, bn_momentum), built with :data:`APPLY_INIT`: the
    jitted functions are keyed on it (through ``TrainState.apply_fn`` and
    :func:`ntklib.ntk.block_ntk_fn`'s cache), so runs that differ in init or lr share their
    compiled code. The init only sets the initial values (:func:`_init_fn`)."""
    return build_model(arch, num_classes, APPLY_INIT, variant, bn_momentum=bn_momentum)


class TrainState(train_state.TrainState):
    """Flax's TrainState plus the BatchNorm running statistics."""

    batch_stats: Any = None

    @property
    def variables(self) -> dict[str, Any]:
        """``{"params": ..., "batch_stats": ...}``, what ``model.apply`` takes."""
        return {"params": self.params, "batch_stats": self.batch_stats}


# ---------------------------------------------------------------------------------------------
# Optimiser, loss, state
# ---------------------------------------------------------------------------------------------


def create_learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """lr · factor^⌊step / (decay_every_epochs · steps_per_epoch)⌋, in float32."""
    decay = _decay_schedule(config.decay_every_epochs * steps_per_epoch, config.lr_decay_factor)
    return lambda count: config.lr * decay(count)


def _decay_schedule(every: int, factor: float) -> optax.Schedule:
    def schedule(count):
        return jnp.asarray(factor, jnp.float32) ** (jnp.asarray(count) // every).astype(jnp.float32)

    return schedule


def create_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD of the paper *without* its initial learning rate: L2 weight decay on rank > 1 tensors,
    (Nesterov) momentum, then −factor^⌊step/decay_steps⌋. :func:`train_step` multiplies the
    updates by ``lr``, a traced argument, so runs that differ only in lr share compiled code."""
    return _create_optimizer(
        config.weight_decay,
        config.momentum,
        config.nesterov,
        config.decay_every_epochs * steps_per_epoch,
        config.lr_decay_factor,
    )


@functools.cache
def _create_optimizer(weight_decay, momentum, nesterov, decay_steps, decay_factor) -> optax.GradientTransformation:
    decay = _decay_schedule(decay_steps, decay_factor)
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask=_rank_above_one),
        optax.trace(decay=momentum, nesterov=nesterov),
        optax.scale_by_schedule(lambda count: -decay(count)),
    )


def _rank_above_one(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


def per_sample_loss(logits: jax.Array, labels: jax.Array, loss: str = "mse") -> jax.Array:
    """Loss of every sample, (B,), of (B, K) logits against (B,) integer labels.

    "mse": mean over classes of ½(z − y)² with one-hot y; "ce": softmax cross-entropy.
    """
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    if loss == "mse":
        return 0.5 * jnp.mean((logits - onehot) ** 2, axis=-1)
    return optax.softmax_cross_entropy(logits, onehot)


def compute_loss(logits: jax.Array, labels: jax.Array, loss: str = "mse") -> jax.Array:
    """Mean of :func:`per_sample_loss` over the batch: for "mse" the mean over batch *and* classes
    of ½(z − y)², the released code's convention."""
    return jnp.mean(per_sample_loss(logits, labels, loss))


def create_train_state(
    config: TrainConfig, num_classes: int, input_shape: tuple[int, ...], steps_per_epoch: int
) -> TrainState:
    """Initialise parameters (initialisation ``config.init``, key ``seed``), BatchNorm statistics
    and the optimiser. ``apply_fn`` is the shared module of ``_build_model``, whatever the init."""
    model = _build_model(config.arch, num_classes, config.variant, config.bn_momentum)
    init = _init_fn(config.arch, num_classes, config.init, config.variant, config.bn_momentum, tuple(input_shape))
    variables = init(jax.random.key(config.seed))
    state = TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=create_optimizer(config, steps_per_epoch),
    )
    # strongly typed leaves, so that the jitted epoch sees the same types on every call
    state = state.replace(step=jnp.zeros((), jnp.int32))
    return jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype=jnp.asarray(leaf).dtype), state)


@functools.cache
def _init_fn(
    arch: str, num_classes: int, init: str, variant: str, bn_momentum: float | None, input_shape: tuple[int, ...]
) -> Callable:
    """``key -> variables`` of ``build_model(arch, num_classes, init, ...)``, jitted: the one
    program that depends on the init. Its parameter tree is that of ``_build_model``'s module."""
    model = build_model(arch, num_classes, init, variant, bn_momentum=bn_momentum)
    x = jnp.zeros((2, *input_shape), jnp.float32)
    return jax.jit(lambda key: model.init(key, x, train=False))


def train_step(state: TrainState, images: jax.Array, labels: jax.Array, lr: jax.Array, loss: str = "mse"):
    """One SGD step (initial learning rate ``lr``) with BatchNorm in train mode.

    Returns (new state, loss, accuracy)."""

    def loss_fn(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats}, images, train=True, mutable=["batch_stats"]
        )
        return compute_loss(logits, labels, loss), (logits, updates["batch_stats"])

    (value, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    updates = jax.tree.map(lambda u: lr * u, updates)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
        batch_stats=batch_stats,
    )
    # keep the dtypes of the carry fixed (float64 scalars may appear when x64 is enabled)
    new_state = jax.tree.map(lambda new, old: new.astype(old.dtype), new_state, state)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return new_state, value, accuracy


@functools.cache
def make_train_epoch(loss: str, mode: str = "auto") -> Callable:
    """``train_epoch(state, images, labels, batch_indices, lr) -> (state, losses, accs)``: one
    epoch of :func:`train_step` over the rows of ``batch_indices`` (steps, B), each batch gathered
    on the device from the device-resident ``images`` / ``labels``; ``mode`` as in
    :func:`ntklib.epochs.stepping_pass` (one jitted scan, or a loop of jitted steps on CPU)."""

    def step(state, images, labels, idx, lr):
        return train_step(state, images[idx], labels[idx], lr, loss)

    return epochs.stepping_pass(step, mode)


@functools.cache
def make_evaluate(loss: str, batch_size: int, mode: str = "auto") -> Callable:
    """``evaluate(state, images, labels) -> (mean loss, accuracy)`` in eval mode over a whole set,
    in batches of ``batch_size`` (zero-padded and masked, :func:`ntklib.epochs.masked_totals_pass`)."""

    def batch_totals(state, x, y, m):
        logits = state.apply_fn(state.variables, x, train=False)
        per_sample = per_sample_loss(logits, y, loss)
        loss_sum = jnp.sum(jnp.where(m, per_sample, 0.0)).astype(jnp.float32)
        return loss_sum, jnp.sum((jnp.argmax(logits, -1) == y) & m, dtype=jnp.int32)

    return epochs.masked_totals_pass(batch_totals, batch_size, mode)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    """What :func:`train_and_evaluate` returns: records (one per evaluation), the final status
    (finished, diverged, or running when stopped early), the final state, and whether the run
    was found done and ``skipped``."""

    records: list[dict]
    status: RunStatus
    state: TrainState | None = None
    skipped: bool = False


def _checkpoint_target(state: TrainState) -> dict[str, Any]:
    """The parts of a state that a checkpoint holds."""
    return {"params": state.params, "batch_stats": state.batch_stats, "opt_state": state.opt_state, "step": state.step}


def _restore(state: TrainState, saved: dict[str, Any]) -> TrainState:
    """``state`` with the parts that :func:`_checkpoint_target` saved."""
    parts = {name: saved[name] for name in ("params", "batch_stats", "opt_state")}
    return state.replace(**parts, step=jnp.asarray(saved["step"]))


EpochCallback = Callable[[int, TrainState], None]
"""``on_epoch(epoch, state)``: called with epoch 0 (the initial state, on a fresh start) and after
every trained epoch; ``state`` is a copy the callback may keep."""


def _record_failure(run: RunDir, error: Exception) -> None:
    """status.json ``failed`` with the reason; a failure to write it (a full disk) leaves the
    previous status, from which the run resumes."""
    try:
        run.write_status(RunStatus.FAILED, error=repr(error), traceback=traceback.format_exc())
    except OSError:
        pass


def train_and_evaluate(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    dataset: Dataset | None = None,
    max_epochs_this_call: int | None = None,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
) -> RunResult:
    """Train one model under ``config``, recording metrics; resume from ``out_dir`` if it holds a
    checkpoint of the same config.

    Nothing is written before the directory is verified (:meth:`ntklib.rundir.RunDir.verify`),
    the dataset loaded and the batch arithmetic checked (:func:`ntklib.config.check_fit`). The run
    then holds the directory's lock; an exception while training writes status ``failed`` with its
    reason and is raised again.

    Args:
        config: the run.
        out_dir: run directory (:class:`ntklib.rundir.RunDir`); None keeps everything in memory.
        dataset: a preloaded :class:`~ntklib.data.Dataset` (else :func:`~ntklib.data.load_dataset`).
        max_epochs_this_call: stop (with a checkpoint, status "running") after this many epochs,
            to simulate an interruption or to split a long run.
        progress: show a tqdm bar over epochs.
        on_epoch: :data:`EpochCallback`, e.g. to measure the states of chosen epochs.

    Returns:
        A :class:`RunResult`. A finished run directory is returned as is, without training.

    Raises:
        ConfigError: the config does not fit the dataset, or ``max_epochs_this_call`` < 1.
        ntklib.rundir.RunError: ``out_dir`` holds another config's run, a corrupt checkpoint, a
            malformed file or incomplete records, or another process writes it.
    """
    if max_epochs_this_call is not None and max_epochs_this_call < 1:
        raise ConfigError(f"max_epochs_this_call must be >= 1, got {max_epochs_this_call}")
    run = NullRunDir() if out_dir is None else RunDir(out_dir)
    status = run.verify(config.to_dict(), **run_identity(config))
    if status in RunStatus.DONE:
        return RunResult(run.read_records(), status, skipped=True)
    if dataset is None:
        dataset = load_dataset(config.dataset, data_dir=config.data_dir, image_size=config.input_size)
    steps = check_fit(config, dataset)
    with run.lock():
        status = run.begin(config.to_dict(), **run_identity(config))
        if status in RunStatus.DONE:  # another process finished it meanwhile
            return RunResult(run.read_records(), status, skipped=True)
        try:
            with CompileLog() as compiles:
                return _train(config, run, dataset, steps, max_epochs_this_call, progress, on_epoch, compiles)
        except Exception as error:
            _record_failure(run, error)
            raise


def _train(
    config: TrainConfig,
    run: RunDir,
    dataset: Dataset,
    steps: int,
    max_epochs_this_call: int | None,
    progress: bool,
    on_epoch: EpochCallback | None,
    compiles: CompileLog,
) -> RunResult:
    """The loop of :func:`train_and_evaluate` in a verified, locked run directory; every record's
    ``compile_seconds`` are those of ``compiles`` since the previous record."""
    num_classes = dataset.num_classes
    model = _build_model(config.arch, num_classes, config.variant, config.bn_momentum)
    state = create_train_state(config, num_classes, dataset.image_shape, steps)
    schedule = create_learning_rate_schedule(config, steps)
    lr = jnp.asarray(config.lr, jnp.float32)

    train_images = jnp.asarray(dataset.train_images, jnp.float32)
    train_labels = jnp.asarray(dataset.train_labels, jnp.int32)
    test_images = jnp.asarray(dataset.test_images, jnp.float32)
    test_labels = jnp.asarray(dataset.test_labels, jnp.int32)
    train_epoch = make_train_epoch(config.loss, config.epoch_mode)
    evaluate = make_evaluate(config.loss, min(config.eval_batch_size, len(dataset.test_labels)), config.epoch_mode)
    notify = (
        (lambda epoch, state: None)
        if on_epoch is None
        else (lambda epoch, state: on_epoch(epoch, jax.tree.map(jnp.copy, state)))
    )

    def batches(epoch: int) -> np.ndarray:
        return epoch_batches(
            dataset.train_labels,
            batch_size=config.batch_size,
            num_classes=num_classes,
            seed=config.seed,
            epoch=epoch,
            imbalance=config.imbalance,
        )

    def record(state, epoch, batch_idx, train_loss, train_acc, seconds):
        test_loss, test_acc = evaluate(state, test_images, test_labels)
        rec = {
            "epoch": epoch,
            "step": int(state.step),
            "current_lr": float(schedule(max(int(state.step) - 1, 0))),
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "test_loss": float(test_loss),
            "test_accuracy": float(test_acc),
            "epoch_seconds": seconds,
            "status": "ok",
        }
        t0 = time.perf_counter()
        images, labels = train_images[batch_idx], train_labels[batch_idx]
        rec.update(measure.measure_batch(model, state.variables, images, labels, **config.measure_options(epoch)))
        rec["metrics_seconds"] = time.perf_counter() - t0
        rec["compile_seconds"] = compiles.take_seconds()
        return json_safe(rec)

    restored = run.load_checkpoint(_checkpoint_target(state))
    if restored is not None:
        saved, start = restored
        state = _restore(state, saved)
        records = [r for r in run.read_records() if r["epoch"] <= start]
        run.write_records(records)
    else:
        start, first = 0, batches(1)[0]
        train_loss, train_acc = (float(v) for v in evaluate(state, train_images[first], train_labels[first]))
        records = [record(state, 0, first, train_loss, train_acc, 0.0)]
        run.commit(records, status=RunStatus.RUNNING, epoch=0)
        notify(0, state)

    stop = config.epochs if max_epochs_this_call is None else min(config.epochs, start + max_epochs_this_call)
    label = f"{config.arch} {config.init} lr={config.lr:.3g}"
    bar = tqdm(range(start + 1, stop + 1), desc=label, disable=not progress, leave=False)
    for epoch in bar:
        idx = batches(epoch)
        t0 = time.perf_counter()
        state, losses, accs = train_epoch(state, train_images, train_labels, jnp.asarray(idx), lr)
        losses = np.asarray(losses)
        seconds = time.perf_counter() - t0
        if not np.all(np.isfinite(losses)):
            diverged = {"epoch": epoch, "step": int(state.step), "status": RunStatus.DIVERGED.value, "train_loss": None}
            records.append({**diverged, "epoch_seconds": seconds, "compile_seconds": compiles.take_seconds()})
            run.commit(records, status=RunStatus.DIVERGED, epoch=epoch)
            bar.close()
            return RunResult(records, RunStatus.DIVERGED, state)
        train_loss, train_acc = float(losses.mean()), float(np.asarray(accs).mean())
        bar.set_postfix(loss=f"{train_loss:.4g}", acc=f"{train_acc:.3f}")
        notify(epoch, state)
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            records.append(record(state, epoch, idx[-1], train_loss, train_acc, seconds))
            run.commit(records, status=RunStatus.RUNNING, epoch=epoch, checkpoint=_checkpoint_target(state))
    bar.close()

    status = RunStatus.FINISHED if stop == config.epochs else RunStatus.RUNNING
    checkpointed = records[-1]["epoch"] == stop  # else stopped between records: checkpoint it now
    run.commit(records, status=status, epoch=stop, checkpoint=None if checkpointed else _checkpoint_target(state))
    return RunResult(records, status, state)
