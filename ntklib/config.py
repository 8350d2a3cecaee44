"""The configuration of one training run: :class:`TrainConfig`, its fields and their checks.

Every field is declared once, with :func:`option`: its default, its description, its group and its
check, so the validation (``TrainConfig.__post_init__``), the command line
(:mod:`ntklib.experiment`, one flag per field, one argument group per field group) and the
documentation read them from one place. The groups (:data:`GROUPS`):

- ``model``: the network (architecture, initialisation, layer layout, BatchNorm momentum);
- ``data``: the dataset and how it is read;
- ``protocol``: the training protocol of the paper (§6, Appendix C): loss, SGD, schedule, seed;
- ``record``: what each metrics record measures, and when;
- ``execution``: how the numbers are computed, without changing them.

A config's *identity* (:meth:`TrainConfig.identity`) is every field that can change the numbers;
its hash (:func:`ntklib.rundir.config_hash`) names a run directory's run, so the field names and
defaults are part of every committed run and never change. A field added after runs were committed
is declared ``option(..., omitted_at_default=True)``: while it holds its default it is left out of
the identity and of config.json (:meth:`TrainConfig.to_dict`), so every earlier run keeps its hash
and its file.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

from ntklib.data import DATASETS, Dataset, batch_class_counts, check_imbalance, default_image_size, steps_per_epoch
from ntklib.epochs import EPOCH_MODES
from ntklib.models import ARCHS, INITS, VARIANTS
from ntklib.ntk import OffDiagonal
from ntklib.rundir import evaluation_epochs

REFERENCE_EPOCHS = 400
"""The paper's run length; ``lr_decay_every`` is given relative to it."""

LOSSES = ("mse", "ce")
OFFDIAG_MODES = tuple(mode.value for mode in OffDiagonal)

GROUPS = {
    "model": "the network",
    "data": "the dataset",
    "protocol": "the training protocol (paper §6, Appendix C)",
    "record": "what every metrics record measures, and when",
    "execution": "how the numbers are computed (not part of a run's identity)",
}
"""The field groups of :class:`TrainConfig` and their descriptions (the command line's argument groups)."""


class ConfigError(ValueError):
    """An invalid training configuration (a field's value, or its fit to the dataset); the message
    names the parameter. Raised before anything is written."""


# ---------------------------------------------------------------------------------------------
# Checks. check(name, value) raises a ConfigError naming the field, or returns None
# ---------------------------------------------------------------------------------------------

Check = Callable[[str, Any], None]
"""The type of a field's check, ``check(name, value)``, which raises a :class:`ConfigError` naming
field ``name`` when ``value`` is invalid."""


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_int(name: str, value: Any) -> None:
    """An integer ≥ 1."""
    if not (_is_int(value) and value >= 1):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def optional_positive_int(name: str, value: Any) -> None:
    """None, or an integer ≥ 1."""
    if value is not None:
        positive_int(name, value)


def non_negative_int(name: str, value: Any) -> None:
    """An integer ≥ 0 (a seed)."""
    if not (_is_int(value) and value >= 0):
        raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")


def finite_positive(name: str, value: Any) -> None:
    """A finite real number > 0."""
    if not (_is_real(value) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def finite_nonnegative(name: str, value: Any) -> None:
    """A finite real number ≥ 0."""
    if not (_is_real(value) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")


def imbalance_ratio(name: str, value: Any) -> None:
    """A finite real number ≥ 1 (:func:`ntklib.data.check_imbalance`)."""
    try:
        check_imbalance(value)
    except ValueError:
        raise ConfigError(f"{name} must be a finite number >= 1, got {value!r}") from None


def boolean(name: str, value: Any) -> None:
    """True or False (not 0 or 1)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be a boolean, got {value!r}")


def unit_interval_or_none(name: str, value: Any) -> None:
    """None, or a real number in [0, 1) (a BatchNorm momentum)."""
    if value is not None and not (_is_real(value) and 0 <= value < 1):
        raise ConfigError(f"{name} must be a number in [0, 1) or None, got {value!r}")


def nonempty_path_or_none(name: str, value: Any) -> None:
    """None, or a non-empty string."""
    if value is not None and not (isinstance(value, str) and value):
        raise ConfigError(f"{name} must be a non-empty path or None, got {value!r}")


def one_of(choices: tuple[str, ...]) -> Check:
    """The check of a field whose value is one of ``choices``."""

    def check(name: str, value: Any) -> None:
        if value not in choices:
            raise ConfigError(f"unknown {name} {value!r}; valid choices: {', '.join(choices)}")

    return check


def option(
    default: Any,
    help: str,
    *,
    group: str,
    check: Check | None = None,
    choices: tuple[str, ...] | None = None,
    identity: bool = True,
    omitted_at_default: bool = False,
) -> Any:
    """A :class:`TrainConfig` field with its description, group and check in its metadata.

    Args:
        default: the field's default (part of every run's identity: never change it).
        help: the description (the command line's help).
        group: one of :data:`GROUPS`.
        check: ``check(name, value)`` (:data:`Check`); with ``choices`` it defaults to :func:`one_of`.
        choices: the valid values, if they are a fixed set (the command line offers them).
        identity: False for a field that cannot change the numbers (left out of
            :meth:`TrainConfig.identity`).
        omitted_at_default: True for a field added after runs were committed (every new field):
            :meth:`TrainConfig.identity` and :meth:`TrainConfig.to_dict` leave it out while it
            equals ``default``, so the hash and config.json of every earlier run, and of every run
            that keeps the default, are those of before the field existed. Any other value is in
            both and changes the hash.
    """
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; valid: {', '.join(GROUPS)}")
    if check is None and choices is not None:
        check = one_of(choices)
    if check is None:
        raise ValueError("option needs a check or choices")
    metadata = {
        "help": help,
        "group": group,
        "check": check,
        "choices": choices,
        "identity": identity,
        "omitted_at_default": omitted_at_default,
    }
    return dataclasses.field(default=default, metadata=metadata)


class NTKSettings(NamedTuple):
    """How the NTK of a record is computed (:attr:`TrainConfig.ntk_settings`)."""

    per_class: int | None
    """Samples per class of the last batch the NTK uses, or None for the whole batch."""
    chunk_size: int | None
    """Feature neurons per Jacobian chunk, or None for all d at once."""


# ---------------------------------------------------------------------------------------------
# The config
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run. ``TrainConfig()`` is the paper's protocol for
    ResNet20 on MNIST; :meth:`tiny` is the seconds-long CPU variant the tests use. Every field is
    described once, in its metadata (``dataclasses.fields(TrainConfig)``: ``metadata["help"]``,
    ``"group"``, ``"check"`` and the valid values ``"choices"``)."""

    # model
    arch: str = option("resnet20", "architecture", group="model", choices=ARCHS)
    init: str = option("flax", "parameter initialisation", group="model", choices=INITS)
    variant: str = option(
        "released",
        "layer layout: released (as the paper's code) or standard (shortcut BN, no bias "
        "before BatchNorm, BN momentum 0.9)",
        group="model",
        choices=VARIANTS,
    )
    bn_momentum: float | None = option(
        None,
        "momentum of the BatchNorm running averages that evaluation uses (default: the variant's, "
        "0.99 for the released ResNet20/DenseNet40; a run of s steps keeps a fraction bn_momentum**s "
        "of the initial statistics, so short CPU runs need less)",
        group="model",
        check=unit_interval_or_none,
    )
    # data
    dataset: str = option("mnist", "dataset", group="data", choices=DATASETS)
    data_dir: str | None = option(
        None, "tfds data directory (default: tfds's own)", group="data", check=nonempty_path_or_none
    )
    image_size: int | None = option(
        None,
        "input size (default: 32 for VGG on MNIST/FashionMNIST, else native; ntklib.data.default_image_size)",
        group="data",
        check=optional_positive_int,
    )
    imbalance: float = option(
        1.0,
        "step imbalance ratio ρ >= 1 of the training set (Fang et al. 2021): the first ceil(K/2) classes keep "
        "n_max samples (the smallest class's count), the others floor(n_max/ρ), the first of each class; every "
        "batch keeps these proportions (ntklib.data.epoch_batches); 1: the whole set in exactly balanced batches",
        group="data",
        check=imbalance_ratio,
        omitted_at_default=True,
    )
    # protocol
    lr: float = option(0.01, "initial learning rate", group="protocol", check=finite_positive)
    epochs: int = option(400, "number of epochs", group="protocol", check=positive_int)
    batch_size: int = option(
        120,
        "K·m samples per batch, a multiple of the number of classes (with imbalance > 1 any size that gives "
        "every class a sample)",
        group="protocol",
        check=positive_int,
    )
    loss: str = option("mse", "training loss (ce: Appendix C.2)", group="protocol", choices=LOSSES)
    momentum: float = option(0.9, "SGD momentum", group="protocol", check=finite_nonnegative)
    nesterov: bool = option(True, "Nesterov momentum", group="protocol", check=boolean)
    weight_decay: float = option(
        5e-4, "L2 coefficient on weight tensors of rank > 1", group="protocol", check=finite_nonnegative
    )
    lr_decay_every: int = option(
        120, "epochs between ÷10 decays in a 400-epoch run; scaled by epochs/400", group="protocol", check=positive_int
    )
    lr_decay_factor: float = option(
        0.1, "learning-rate multiplier at every decay", group="protocol", check=finite_positive
    )
    seed: int = option(
        0, "seed of the parameter initialisation and of the data shuffling", group="protocol", check=non_negative_int
    )
    # record
    eval_every: int = option(2, "epochs between metric records", group="record", check=positive_int)
    eval_batch_size: int = option(1000, "batch size of the test-set evaluation", group="record", check=positive_int)
    kernel_metrics: bool = option(
        True, "record the NTK statistics and the invariant metrics", group="record", check=boolean
    )
    kernel_every: int | None = option(
        None,
        "epochs between records with kernel metrics, a multiple of eval_every (epoch 0 and the "
        "last epoch always have them; default: every record)",
        group="record",
        check=optional_positive_int,
    )
    ntk_per_class: int | None = option(
        None,
        "samples per class of the last batch used for the NTK and the kernel columns (default: 4 for VGG, "
        "whose Jacobians are too large, else the whole batch); the NC and invariant columns use the whole batch",
        group="record",
        check=optional_positive_int,
    )
    ntk_chunk_size: int | None = option(
        None,
        "feature neurons per Jacobian chunk (default: 8 for VGG, all d at once otherwise)",
        group="record",
        check=optional_positive_int,
    )
    ntk_offdiag: str = option(
        "logits",
        "off-diagonal block norms to record: logits (cheap), norms (also the feature "
        "kernel's, d times the cost of its diagonal blocks) or none",
        group="record",
        choices=OFFDIAG_MODES,
    )
    # execution
    epoch_mode: str = option(
        "auto",
        "one jitted lax.scan per epoch, or a Python loop of jitted steps (auto: loop on CPU); not part of the numbers",
        group="execution",
        choices=EPOCH_MODES,
        identity=False,
    )

    def __post_init__(self) -> None:
        """Run every field's check, in the order of the fields, then the one cross-field rule
        (``kernel_every`` a multiple of ``eval_every``); a :class:`ConfigError` names the first
        bad field."""
        for field in dataclasses.fields(self):
            field.metadata["check"](field.name, getattr(self, field.name))
        if self.kernel_every is not None and self.kernel_every % self.eval_every:
            raise ConfigError(
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
            arch="mlp",
            dataset="digits",
            init="flax",
            lr=0.05,
            epochs=2,
            batch_size=40,
            eval_every=1,
            eval_batch_size=256,
        )
        return cls(**{**base, **overrides})

    def replace(self, **overrides: Any) -> TrainConfig:
        return dataclasses.replace(self, **overrides)

    def _recorded_fields(self) -> list[dataclasses.Field]:
        """The fields of config.json: all but those ``omitted_at_default`` that hold their default."""
        return [
            f
            for f in dataclasses.fields(self)
            if not (f.metadata["omitted_at_default"] and getattr(self, f.name) == f.default)
        ]

    def to_dict(self) -> dict[str, Any]:
        """The config as config.json records it: every field but those declared
        ``omitted_at_default`` while they hold their default (:func:`option`);
        ``TrainConfig(**config.to_dict()) == config``."""
        return {f.name: getattr(self, f.name) for f in self._recorded_fields()}

    def identity(self) -> dict[str, Any]:
        """The fields that can change the numbers: those of :meth:`to_dict` but the ones marked
        ``identity=False`` (``epoch_mode``). Their hash (:func:`ntklib.rundir.config_hash`, of sorted
        keys, so the order of the fields does not matter) is the run's identity."""
        return {f.name: getattr(self, f.name) for f in self._recorded_fields() if f.metadata["identity"]}

    def evaluation_epochs(self, up_to: int | None = None) -> list[int]:
        """The epochs ≤ ``up_to`` (default: the last) that get a record: 0, every ``eval_every``-th, the last."""
        up_to = self.epochs if up_to is None else up_to
        return evaluation_epochs(up_to, eval_every=self.eval_every, epochs=self.epochs)

    @property
    def decay_every_epochs(self) -> int:
        """Epochs between learning-rate decays in this run, lr_decay_every · epochs / 400, ≥ 1."""
        return max(1, round(self.lr_decay_every * self.epochs / REFERENCE_EPOCHS))

    @property
    def ntk_settings(self) -> NTKSettings:
        """The NTK's samples per class and chunk size; None fields resolved per architecture
        (VGG: 4 per class in chunks of 8, whose Jacobians are too large otherwise)."""
        vgg = self.arch.startswith("vgg")
        per_class = self.ntk_per_class if self.ntk_per_class is not None else (4 if vgg else None)
        chunk = self.ntk_chunk_size if self.ntk_chunk_size is not None else (8 if vgg else None)
        return NTKSettings(per_class, chunk)

    def kernels_at(self, epoch: int) -> bool:
        """Whether the record of ``epoch`` gets the kernel metrics."""
        if not self.kernel_metrics:
            return False
        return epoch % (self.kernel_every or self.eval_every) == 0 or epoch == self.epochs

    def measure_options(self, epoch: int | None = None) -> dict[str, Any]:
        """Keyword arguments of :func:`ntklib.measure.measure_batch` for the record of ``epoch``
        (None: with kernels when ``kernel_metrics``)."""
        settings = self.ntk_settings
        kernels = self.kernel_metrics if epoch is None else self.kernels_at(epoch)
        return dict(
            kernels=kernels, per_class=settings.per_class, chunk_size=settings.chunk_size, offdiag=self.ntk_offdiag
        )

    @property
    def input_size(self) -> int | None:
        return self.image_size if self.image_size is not None else default_image_size(self.arch, self.dataset)


def check_fit(config: TrainConfig, dataset: Dataset) -> int:
    """Check the batch arithmetic and the NTK settings of ``config`` against ``dataset``; returns
    the steps per epoch (:func:`ntklib.data.steps_per_epoch`, with ``config.imbalance``).

    Raises:
        ConfigError: naming ``batch_size``, ``imbalance`` or ``ntk_per_class``.
    """
    labels, batch, num_classes, imbalance = (
        dataset.train_labels,
        config.batch_size,
        dataset.num_classes,
        config.imbalance,
    )
    try:
        per_batch = batch_class_counts(labels, batch_size=batch, num_classes=num_classes, imbalance=imbalance)
        steps = steps_per_epoch(labels, batch_size=batch, num_classes=num_classes, imbalance=imbalance)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    m = int(per_batch.min())
    if steps < 1:
        needs = f"{m} samples of every class" if config.imbalance == 1 else f"{per_batch.tolist()} samples per class"
        raise ConfigError(
            f"batch_size={batch} needs {needs}, but the smallest class of {dataset.name} has "
            f"{dataset.min_class_count()}" + ("" if config.imbalance == 1 else f" (imbalance={config.imbalance})")
        )
    per_class = config.ntk_settings.per_class
    if config.kernel_metrics and config.imbalance != 1 and m < 2:
        raise ConfigError(
            f"kernel_metrics need 2 samples of every class in a batch (the NTK probe), but batch_size={batch} with "
            f"imbalance={config.imbalance} gives the smallest class {m}; raise batch_size or turn kernel_metrics off"
        )
    if config.kernel_metrics and per_class is not None and per_class > m:
        if config.imbalance == 1:
            raise ConfigError(f"ntk_per_class={per_class} exceeds the {m} samples per class of a batch of {batch}")
        raise ConfigError(
            f"ntk_per_class={per_class} exceeds the {m} samples of the smallest class in a batch of {batch} "
            f"(imbalance={config.imbalance})"
        )
    return steps


def run_identity(config: TrainConfig) -> dict[str, Any]:
    """The keyword arguments of :meth:`ntklib.rundir.RunDir.verify` for ``config``: its identity
    and the epochs whose records a run must have."""
    return {"identity": config.identity(), "required_epochs": config.evaluation_epochs}
