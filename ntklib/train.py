"""Training loop of the paper's experiments (§6, Appendix C) with the NC / NTK / invariant metrics.

Protocol (SPEC §8), all set by :class:`TrainConfig`:

- loss: MSE to one-hot targets, ``mean(½ (z − y)²)`` over batch *and* classes (the released
  code's convention), or cross-entropy (``loss="ce"``, Appendix C.2);
- SGD with Nesterov momentum 0.9; weight decay 5e-4 added to the gradient of every weight tensor of
  rank > 1 (an L2 penalty ½·wd·‖w‖² on kernels, none on biases or BatchNorm);
- 400 epochs, learning rate ÷10 every 120 epochs — for shorter runs the decay epochs scale
  proportionally (``epochs=40`` → every 12);
- exactly balanced, class-sorted batches of 120 (:func:`ntklib.data.balanced_batches`).

One jit-compiled call trains a whole epoch: the training set stays on the device and a
``jax.lax.scan`` runs the steps over the epoch's index array, so there is no per-step Python.

Every ``eval_every`` epochs (and at epoch 0 and the last epoch) one record is written with:
epoch-average train loss/accuracy (train mode, as the steps saw them), test loss/accuracy on the
full test set (eval mode), NC1–NC4 on the last training batch (eval-mode features), and, with
``kernel_metrics``, the exact NTK statistics of that batch (:func:`ntklib.ntk.kernel_statistics`)
and the invariant metrics with the measured κ (:func:`ntklib.invariant.invariant_metrics`) — at
every record, or only every ``kernel_every`` epochs when the kernels cost more than training.

Runs write to a directory (:mod:`ntklib.results`), checkpoint at every evaluation and resume when
restarted with the same directory; a NaN/inf loss ends the run with status ``"diverged"``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm  # the text bar: tqdm.auto needs ipywidgets in notebooks and warns without it
from flax.training import train_state

from ntklib import collapse, ntk, results
from ntklib.data import Dataset, balanced_batches, default_image_size, load_dataset, per_class_batch, steps_per_epoch
from ntklib.models import Classifier, build_model

REFERENCE_EPOCHS = 400
"""The paper's run length; ``lr_decay_every`` is given relative to it."""

LOSSES = ("mse", "ce")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run. ``TrainConfig()`` is the paper's protocol for
    ResNet20 on MNIST; :meth:`tiny` is the seconds-long CPU variant the tests use.

    Attributes:
        arch: :data:`ntklib.models.ARCHS`.
        dataset: :data:`ntklib.data.DATASETS`.
        init: :data:`ntklib.models.INITS`.
        lr: initial learning rate.
        epochs: number of epochs.
        batch_size: K·m, a multiple of the number of classes.
        loss: "mse" or "ce".
        momentum, nesterov: SGD momentum.
        weight_decay: L2 coefficient on weight tensors of rank > 1.
        lr_decay_every: epochs between ÷10 decays *in a 400-epoch run*; scaled by epochs/400.
        lr_decay_factor: multiplier at every decay.
        eval_every: epochs between metric records.
        seed: parameter initialisation and data shuffling.
        data_dir: tfds data directory (None: tfds default).
        image_size: input size; None: :func:`ntklib.data.default_image_size` (32 for VGG on
            MNIST/FashionMNIST, else native).
        eval_batch_size: batch size of the test-set evaluation.
        kernel_metrics: compute the NTK statistics and invariant metrics.
        kernel_every: epochs between records with kernel metrics, a multiple of ``eval_every``
            (epoch 0 and the last epoch always have them). None: every record.
        ntk_per_class: samples per class of the last batch used for the NTK. None: the paper's
            choice, 4 for VGG (its Jacobians are too large) and the whole batch otherwise.
        ntk_chunk_size: feature neurons per Jacobian chunk (:func:`ntklib.ntk.kernel_statistics`).
            None: 8 for VGG (≈ 30–45 GB peak at 40 samples), all d at once otherwise.
        ntk_offdiag: off-diagonal block norms to record, :class:`ntklib.ntk.OffDiagonal`:
            "logits" (default, cheap), "norms" (also the feature kernel's, d times the cost of its
            diagonal blocks) or "none".
        epoch_mode: "scan" (one jitted epoch), "loop" (jitted step, Python loop) or "auto"
            (:func:`resolve_epoch_mode`: loop on CPU, scan elsewhere). Not part of the numbers.
    """

    arch: str = "resnet20"
    dataset: str = "mnist"
    init: str = "flax"
    lr: float = 0.01
    epochs: int = 400
    batch_size: int = 120
    loss: str = "mse"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_decay_every: int = 120
    lr_decay_factor: float = 0.1
    eval_every: int = 2
    seed: int = 0
    data_dir: str | None = None
    image_size: int | None = None
    eval_batch_size: int = 1000
    kernel_metrics: bool = True
    kernel_every: int | None = None
    ntk_per_class: int | None = None
    ntk_chunk_size: int | None = None
    ntk_offdiag: str = "logits"
    epoch_mode: str = "auto"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid choices: {', '.join(LOSSES)}")
        resolve_epoch_mode(self.epoch_mode)
        if self.ntk_offdiag not in {mode.value for mode in ntk.OffDiagonal}:
            valid = ", ".join(mode.value for mode in ntk.OffDiagonal)
            raise ValueError(f"unknown ntk_offdiag {self.ntk_offdiag!r}; valid choices: {valid}")
        if self.epochs < 1 or self.eval_every < 1:
            raise ValueError(f"epochs and eval_every must be >= 1, got {self.epochs}, {self.eval_every}")
        if self.kernel_every is not None and (self.kernel_every < 1 or self.kernel_every % self.eval_every):
            raise ValueError(
                f"kernel_every must be a positive multiple of eval_every ({self.eval_every}), got {self.kernel_every}"
            )

    @classmethod
    def default(cls, **overrides: Any) -> TrainConfig:
        """The paper's protocol (ResNet20, MNIST, 400 epochs, batch 120), with ``overrides``."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> TrainConfig:
        """A seconds-long CPU run: a small MLP on the 8×8 digits, 2 epochs, batches of 40."""
        base = dict(
            arch="mlp", dataset="digits", init="flax", lr=0.05, epochs=2, batch_size=40,
            eval_every=1, eval_batch_size=256,
        )
        return cls(**{**base, **overrides})

    def replace(self, **overrides: Any) -> TrainConfig:
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def decay_every_epochs(self) -> int:
        """Epochs between learning-rate decays in this run, lr_decay_every · epochs / 400, ≥ 1."""
        return max(1, round(self.lr_decay_every * self.epochs / REFERENCE_EPOCHS))

    @property
    def ntk_settings(self) -> tuple[int | None, int | None]:
        """(samples per class, chunk size) of the NTK; None entries resolved per architecture."""
        vgg = self.arch.startswith("vgg")
        per_class = self.ntk_per_class if self.ntk_per_class is not None else (4 if vgg else None)
        chunk = self.ntk_chunk_size if self.ntk_chunk_size is not None else (8 if vgg else None)
        return per_class, chunk

    def kernels_at(self, epoch: int) -> bool:
        """Whether the record of ``epoch`` gets the kernel metrics."""
        if not self.kernel_metrics:
            return False
        return epoch % (self.kernel_every or self.eval_every) == 0 or epoch == self.epochs

    @property
    def input_size(self) -> int | None:
        return self.image_size if self.image_size is not None else default_image_size(self.arch, self.dataset)


@functools.lru_cache(maxsize=None)
def _build_model(arch: str, num_classes: int, init: str) -> Classifier:
    # one module object per (arch, K, init): jitted functions keyed on it are reused across runs
    return build_model(arch, num_classes, init)


class TrainState(train_state.TrainState):
    """Flax's TrainState plus the BatchNorm running statistics."""

    batch_stats: Any = None


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
    return _create_optimizer(config.weight_decay, config.momentum, config.nesterov,
                             config.decay_every_epochs * steps_per_epoch, config.lr_decay_factor)


@functools.lru_cache(maxsize=None)
def _create_optimizer(weight_decay, momentum, nesterov, decay_steps, decay_factor) -> optax.GradientTransformation:
    decay = _decay_schedule(decay_steps, decay_factor)
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask=_rank_above_one),
        optax.trace(decay=momentum, nesterov=nesterov),
        optax.scale_by_schedule(lambda count: -decay(count)),
    )


def _rank_above_one(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


def compute_loss(logits: jax.Array, labels: jax.Array, loss: str = "mse") -> jax.Array:
    """Mean loss of (B, K) logits against (B,) integer labels.

    "mse": mean over batch and classes of ½(z − y)² with one-hot y; "ce": mean softmax cross-entropy.
    """
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    if loss == "mse":
        return 0.5 * jnp.mean((logits - onehot) ** 2)
    return jnp.mean(optax.softmax_cross_entropy(logits, onehot))


def create_train_state(
    config: TrainConfig, model: Classifier, input_shape: tuple[int, ...], steps_per_epoch: int
) -> TrainState:
    """Initialise parameters (key ``seed``), BatchNorm statistics and the optimiser."""
    variables = _init_fn(model, tuple(input_shape))(jax.random.key(config.seed))
    state = TrainState.create(
        apply_fn=model.apply, params=variables["params"], batch_stats=variables.get("batch_stats", {}),
        tx=create_optimizer(config, steps_per_epoch),
    )
    # strongly typed leaves, so that the jitted epoch sees the same types on every call
    state = state.replace(step=jnp.zeros((), jnp.int32))
    return jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype=jnp.asarray(leaf).dtype), state)


@functools.lru_cache(maxsize=None)
def _init_fn(model: Classifier, input_shape: tuple[int, ...]) -> Callable:
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
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              opt_state=opt_state, batch_stats=batch_stats)
    # keep the dtypes of the carry fixed (float64 scalars may appear when x64 is enabled)
    new_state = jax.tree.map(lambda new, old: new.astype(old.dtype), new_state, state)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return new_state, value, accuracy


EPOCH_MODES = ("auto", "scan", "loop")


def resolve_epoch_mode(mode: str = "auto") -> str:
    """"scan" or "loop"; "auto" is "loop" on CPU, where XLA runs convolutions inside a while loop
    (``lax.scan``) about 40× slower than the same jitted step called from Python (ResNet20, batch
    120, 32×32: 31 s vs 0.76 s per step on a 2-core machine), and "scan" on accelerators."""
    if mode not in EPOCH_MODES:
        raise ValueError(f"unknown epoch_mode {mode!r}; valid choices: {', '.join(EPOCH_MODES)}")
    if mode == "auto":
        return "loop" if jax.default_backend() == "cpu" else "scan"
    return mode


@functools.lru_cache(maxsize=None)
def make_train_epoch(loss: str, mode: str = "auto") -> Callable:
    """``train_epoch(state, images, labels, batch_indices, lr) -> (state, losses, accs)``: one
    epoch of :func:`train_step` over the rows of ``batch_indices`` (steps, B), each batch gathered
    on the device from the device-resident ``images`` / ``labels``.

    ``mode="scan"``: the whole epoch is one jitted ``lax.scan`` (no per-step Python);
    ``mode="loop"``: a Python loop over one jitted, state-donating step (faster on CPU);
    ``"auto"``: :func:`resolve_epoch_mode`. Both give the same numbers up to float rounding.
    """
    mode = resolve_epoch_mode(mode)

    def step(state, images, labels, idx, lr):
        return train_step(state, images[idx], labels[idx], lr, loss)

    if mode == "loop":
        jit_step = jax.jit(step, donate_argnums=(0,))

        def train_epoch_loop(state, images, labels, batch_indices, lr):
            losses, accs = [], []
            for idx in batch_indices:
                state, value, acc = jit_step(state, images, labels, idx, lr)
                losses.append(value)
                accs.append(acc)
            return state, jnp.stack(losses), jnp.stack(accs)

        return train_epoch_loop

    def train_epoch(state, images, labels, batch_indices, lr):
        def body(state, idx):
            state, value, acc = step(state, images, labels, idx, lr)
            return state, (value, acc)

        state, (losses, accs) = jax.lax.scan(body, state, batch_indices)
        return state, losses, accs

    return jax.jit(train_epoch, donate_argnums=(0,))


@functools.lru_cache(maxsize=None)
def make_evaluate(loss: str, batch_size: int, mode: str = "auto") -> Callable:
    """``evaluate(state, images, labels) -> (mean loss, accuracy)`` in eval mode over a whole set,
    in batches of ``batch_size`` (the set is zero-padded and masked); ``mode`` as in
    :func:`make_train_epoch` (a jitted ``lax.scan`` over batches, or a Python loop)."""
    mode = resolve_epoch_mode(mode)

    def batch_totals(state, x, y, m):
        logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, x, train=False)
        onehot = jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)
        if loss == "mse":
            per_sample = 0.5 * jnp.mean((logits - onehot) ** 2, axis=-1)
        else:
            per_sample = optax.softmax_cross_entropy(logits, onehot)
        loss_sum = jnp.sum(jnp.where(m, per_sample, 0.0)).astype(jnp.float32)
        return loss_sum, jnp.sum((jnp.argmax(logits, -1) == y) & m, dtype=jnp.int32)

    def batched(images, labels):
        n = images.shape[0]
        pad = (-n) % batch_size
        mask = jnp.arange(n + pad) < n
        images = jnp.pad(images, [(0, pad)] + [(0, 0)] * (images.ndim - 1))
        labels = jnp.pad(labels, (0, pad))
        shape = (-1, batch_size)
        return images.reshape(*shape, *images.shape[1:]), labels.reshape(shape), mask.reshape(shape)

    if mode == "loop":
        jit_totals = jax.jit(batch_totals)

        def evaluate_loop(state, images, labels):
            total, correct = 0.0, 0
            for x, y, m in zip(*batched(images, labels)):
                batch_loss, batch_correct = jit_totals(state, x, y, m)
                total, correct = total + batch_loss, correct + batch_correct
            n = images.shape[0]
            return total / n, correct / n

        return evaluate_loop

    def evaluate(state, images, labels):
        def body(totals, batch):
            batch_loss, batch_correct = batch_totals(state, *batch)
            return (totals[0] + batch_loss, totals[1] + batch_correct), None

        zero = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
        (total, correct), _ = jax.lax.scan(body, zero, batched(images, labels))
        n = images.shape[0]
        return total / n, correct / n

    return jax.jit(evaluate)


# ---------------------------------------------------------------------------------------------
# Metrics of the last training batch
# ---------------------------------------------------------------------------------------------


def extract_features(model: Classifier, variables: dict, images: jax.Array) -> jax.Array:
    """Eval-mode last-layer features H of shape (d, N) (one column per sample)."""
    h = model.apply(variables, images, method=lambda m, x: m.features(x, train=False))
    return h.T


def collapse_metrics(weights: jax.Array, bias: jax.Array, features: jax.Array, labels: jax.Array) -> dict[str, float]:
    """NC1 (paper's std form ``nc1`` and trace form ``nc1_trace``), ``nc2``, ``nc3``, ``nc4`` of
    W (K, d), b (K,), H (d, N) and labels (N,) (:mod:`ntklib.collapse`)."""
    values = {
        "nc1": collapse.nc1_within_class_std(features, labels),
        "nc1_trace": collapse.nc1_trace(features, labels),
        "nc2": collapse.nc2_etf_distance(features, labels),
        "nc3": collapse.nc3_self_duality(weights, features, labels),
        "nc4": collapse.nc4_ncc_mismatch(weights, bias, features, labels),
    }
    return {name: float(value) for name, value in values.items()}


def kernel_metrics(
    model: Classifier,
    variables: dict,
    images: jax.Array,
    labels: jax.Array,
    *,
    chunk_size: int | None = None,
    offdiag: str = "logits",
) -> dict[str, float]:
    """Exact NTK statistics of a class-sorted balanced batch and the invariant metrics with the
    measured feature kernel κ: :meth:`ntklib.ntk.KernelStatistics.as_dict` of
    :func:`ntklib.ntk.kernel_statistics` (keys ``gamma_*``, ``kappa_*``, ``align_*``,
    ``block_fit_*``, ``*_norm_*`` and ``inv_*`` from :func:`ntklib.invariant.invariant_metrics`,
    present when the measured K_κ is positive definite)."""
    stats = ntk.kernel_statistics(model, variables, images, labels, chunk_size=chunk_size, offdiag=offdiag)
    return stats.as_dict()


def measure_batch(
    model: Classifier,
    variables: dict,
    images: jax.Array,
    labels: jax.Array,
    *,
    config: TrainConfig,
    kernels: bool | None = None,
) -> dict[str, float]:
    """NC metrics and (if ``kernels``, by default ``config.kernel_metrics``) kernel and invariant
    metrics of one class-sorted balanced batch, all in eval mode."""
    features = extract_features(model, variables, images)
    params = variables["params"]["classifier"]
    weights, bias = params["kernel"].T, params["bias"]
    values = collapse_metrics(weights, bias, features, labels)
    if kernels is None:
        kernels = config.kernel_metrics
    if kernels:
        per_class, chunk_size = config.ntk_settings
        if per_class is not None:
            images, labels = subsample_per_class(images, labels, per_class)
        values.update(
            kernel_metrics(model, variables, images, labels, chunk_size=chunk_size, offdiag=config.ntk_offdiag)
        )
    return values


def subsample_per_class(images: jax.Array, labels: jax.Array, per_class: int):
    """The first ``per_class`` samples of every class, sorted by class: a balanced probe batch from
    any labelled set (the last training batch, or a whole dataset)."""
    labels = np.asarray(labels)
    keep = np.concatenate([np.flatnonzero(labels == k)[:per_class] for k in range(int(labels.max()) + 1)])
    return images[keep], labels[keep]


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    """What :func:`train_and_evaluate` returns: records (one per evaluation), the final status
    ("finished", "diverged" or "running" when stopped early) and the final state."""

    records: list[dict]
    status: str
    state: TrainState | None = None


def _save_checkpoint(out_dir: Path, state: TrainState, epoch: int) -> None:
    payload = {"state": {"params": state.params, "batch_stats": state.batch_stats,
                         "opt_state": state.opt_state, "step": state.step}, "epoch": epoch}
    results.write_atomic(out_dir / results.CHECKPOINT_FILE, flax.serialization.to_bytes(payload))


def _load_checkpoint(out_dir: Path, state: TrainState) -> tuple[TrainState, int] | None:
    path = out_dir / results.CHECKPOINT_FILE
    if not path.exists():
        return None
    template = {"state": {"params": state.params, "batch_stats": state.batch_stats,
                          "opt_state": state.opt_state, "step": state.step}, "epoch": 0}
    restored = flax.serialization.from_bytes(template, path.read_bytes())
    s = restored["state"]
    state = state.replace(params=s["params"], batch_stats=s["batch_stats"], opt_state=s["opt_state"],
                          step=jnp.asarray(s["step"]))
    return state, int(restored["epoch"])


def train_and_evaluate(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    dataset: Dataset | None = None,
    max_epochs_this_call: int | None = None,
    progress: bool = True,
) -> RunResult:
    """Train one model under ``config``, recording metrics; resume from ``out_dir`` if it holds a
    checkpoint of the same config.

    Args:
        config: the run.
        out_dir: run directory (see :mod:`ntklib.results`); None keeps everything in memory.
        dataset: a preloaded :class:`~ntklib.data.Dataset` (else :func:`~ntklib.data.load_dataset`).
        max_epochs_this_call: stop (with a checkpoint, status "running") after this many epochs,
            to simulate an interruption or to split a long run.
        progress: show a tqdm bar over epochs.

    Returns:
        A :class:`RunResult`. A finished run directory is returned as is, without training.

    Raises:
        ValueError: if ``out_dir`` holds a run of a different config.
    """
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        saved = results.read_json(out / results.CONFIG_FILE)
        if saved is not None and saved.get("config") != results.json_safe(config.to_dict()):
            raise ValueError(f"out_dir {out} holds a run with a different config: {saved.get('config')}")
        status = results.read_status(out)
        if status in ("finished", "diverged"):
            return RunResult(results.read_records(out), status)
        if saved is None:
            results.write_json(out / results.CONFIG_FILE, {"config": config.to_dict(),
                                                           "environment": results.environment()})

    if dataset is None:
        dataset = load_dataset(config.dataset, data_dir=config.data_dir, image_size=config.input_size)
    num_classes = dataset.num_classes
    per_class_batch(config.batch_size, num_classes)
    steps = steps_per_epoch(dataset.train_labels, batch_size=config.batch_size, num_classes=num_classes)
    model = _build_model(config.arch, num_classes, config.init)
    state = create_train_state(config, model, dataset.image_shape, steps)
    schedule = create_learning_rate_schedule(config, steps)
    lr = jnp.asarray(config.lr, jnp.float32)

    train_images = jnp.asarray(dataset.train_images, jnp.float32)
    train_labels = jnp.asarray(dataset.train_labels, jnp.int32)
    test_images = jnp.asarray(dataset.test_images, jnp.float32)
    test_labels = jnp.asarray(dataset.test_labels, jnp.int32)
    train_epoch = make_train_epoch(config.loss, config.epoch_mode)
    evaluate = make_evaluate(config.loss, min(config.eval_batch_size, len(dataset.test_labels)), config.epoch_mode)

    def record(state, epoch, batch_idx, train_loss, train_acc, seconds):
        test_loss, test_acc = evaluate(state, test_images, test_labels)
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        x, y = train_images[batch_idx], train_labels[batch_idx]
        rec = {"epoch": epoch, "step": int(state.step), "current_lr": float(schedule(max(int(state.step) - 1, 0))),
               "train_loss": train_loss, "train_accuracy": train_acc,
               "test_loss": float(test_loss), "test_accuracy": float(test_acc),
               "epoch_seconds": seconds, "status": "ok"}
        t0 = time.perf_counter()
        rec.update(measure_batch(model, variables, x, y, config=config, kernels=config.kernels_at(epoch)))
        rec["metrics_seconds"] = time.perf_counter() - t0
        return results.json_safe(rec)

    records: list[dict] = []
    start = 0
    restored = _load_checkpoint(out, state) if out is not None else None
    if restored is not None:
        state, start = restored
        records = [r for r in results.read_records(out) if r["epoch"] <= start]
        results.write_records(out, records)
    else:
        first = balanced_batches(dataset.train_labels, batch_size=config.batch_size,
                                 num_classes=num_classes, seed=config.seed, epoch=1)[0]
        train_loss, train_acc = (float(v) for v in evaluate(state, train_images[first], train_labels[first]))
        records.append(record(state, 0, first, train_loss, train_acc, 0.0))
        if out is not None:
            results.write_records(out, records)
            results.write_status(out, "running", epoch=0)

    stop = config.epochs if max_epochs_this_call is None else min(config.epochs, start + max_epochs_this_call)
    bar = tqdm(range(start + 1, stop + 1), desc=f"{config.arch} {config.init} lr={config.lr:.3g}",
               disable=not progress, leave=False)
    for epoch in bar:
        idx = balanced_batches(dataset.train_labels, batch_size=config.batch_size, num_classes=num_classes,
                               seed=config.seed, epoch=epoch)
        t0 = time.perf_counter()
        state, losses, accs = train_epoch(state, train_images, train_labels, jnp.asarray(idx), lr)
        losses = np.asarray(losses)
        seconds = time.perf_counter() - t0
        if not np.all(np.isfinite(losses)):
            rec = {"epoch": epoch, "step": int(state.step), "status": "diverged",
                   "train_loss": None, "epoch_seconds": seconds}
            records.append(rec)
            if out is not None:
                results.write_records(out, records)
                results.write_status(out, "diverged", epoch=epoch)
            bar.close()
            return RunResult(records, "diverged", state)
        train_loss, train_acc = float(losses.mean()), float(np.asarray(accs).mean())
        bar.set_postfix(loss=f"{train_loss:.4g}", acc=f"{train_acc:.3f}")
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            records.append(record(state, epoch, idx[-1], train_loss, train_acc, seconds))
            if out is not None:
                results.write_records(out, records)
                _save_checkpoint(out, state, epoch)
                results.write_status(out, "running", epoch=epoch)
        elif epoch == stop and out is not None:
            _save_checkpoint(out, state, epoch)
    bar.close()

    status = "finished" if stop == config.epochs else "running"
    if out is not None:
        results.write_status(out, status, epoch=stop)
    return RunResult(records, status, state)
