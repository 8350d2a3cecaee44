"""Flax models of the paper, each split into a feature extractor and a linear classifier.

The split is the contract the NTK engine (:mod:`ntklib.ntk`) and the training code rely on:
every model is a :class:`Classifier` whose submodule ``features`` maps a batch of inputs to
last-layer features ``h(θ, x)`` of shape (B, d), followed by a dense layer named ``classifier``
(kernel ``Wᵀ`` of shape (d, K), bias ``b`` of shape (K,)). Variables therefore look like::

    {
        "params": {"features": {...}, "classifier": {"kernel": (d, K), "bias": (K,)}},
        "batch_stats": {"features": {...}},
    }  # every extractor here has BatchNorm

Two names say how a model was built, and a run's ``config.json`` records both:

- the *initialisation* (:data:`INITS`): the paper's three settings ``flax``, ``torch`` and
  ``normal_fan_out``, defined as the paper's released code defines them, plus ``pytorch``
  (PyTorch's exact defaults) for comparison;
- the *variant* of the layers (:data:`VARIANTS`): ``released`` (the default) builds every
  network layer for layer as the released code does; ``standard`` is the textbook form ntklib
  used before (projection shortcut with BatchNorm, no bias in front of a BatchNorm, momentum
  0.9 everywhere).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array


class Classifier(nn.Module):
    """Logits z = W h(θ, x) + b of a feature extractor ``features`` and a linear classifier.

    Attributes:
        features: a module with ``__call__(x, train: bool) -> (B, d)``.
        num_classes: K, the number of logits.
        kernel_init, bias_init: initialisers of the classifier's W and b.
    """

    features: nn.Module
    num_classes: int
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        h = self.features(x, train=train)
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, bias_init=self.bias_init, name="classifier")(h)


# ---------------------------------------------------------------------------------------------
# Initialisations (paper §6 "Optimization and initialization")
# ---------------------------------------------------------------------------------------------

PAPER_INITS = ("flax", "torch", "normal_fan_out")
"""The paper's three initialisation settings, as its released code defines them (and the
initialisations a sweep runs by default):

- ``"flax"``: LeCun normal weights (truncated normal, variance 1/fan_in), zero biases.
- ``"torch"``: ``variance_scaling(s, "fan_in", "uniform")`` weights, i.e. U(±√(3s/fan_in)), with
  s = 1 for dense layers and 1×1 convolutions (bound √(3/fan_in), √3 times PyTorch's) and s = 1/9
  for 3×3 convolutions (bound 1/√(27·c_in), PyTorch's divided by √3). Every bias it initialises is
  drawn from the one-sided U[0, 1/√d), d the feature dimension (:func:`get_bias_init`). Despite
  the name this is not PyTorch's default; that one is ``"pytorch"``.
- ``"normal_fan_out"``: He normal weights (untruncated, variance 2/fan_out), zero biases.
"""

INITS = PAPER_INITS + ("pytorch",)
"""Every initialisation :func:`build_model` knows: :data:`PAPER_INITS` and

- ``"pytorch"``: PyTorch's exact defaults, weights and biases U(±1/√fan_in) with fan_in = c_in·k²
  for a k×k convolution (PyTorch's ``kaiming_uniform_(a=√5)`` is exactly this). ntklib called
  this ``"torch"`` before it followed the released code.

BatchNorm always starts at scale 1, shift 0.
"""

_TORCH_SCALE = {1: 1.0, 3: 1.0 / 9.0}  # kernel size → variance_scaling scale of the released "torch"


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(choices)}")


def get_kernel_init(init: str, kernel_size: int = 1) -> nn.initializers.Initializer:
    """The weight initialiser of ``init`` (one of :data:`INITS`) for a dense layer
    (``kernel_size=1``) or a ``kernel_size``×``kernel_size`` convolution.

    Raises:
        ValueError: for an unknown ``init``, or ``init="torch"`` with a kernel size other than 1
            or 3 (the released code defines that scheme for no other).
    """
    _check_choice("init", init, INITS)
    if init == "flax":
        return nn.initializers.lecun_normal()
    if init == "normal_fan_out":
        return nn.initializers.variance_scaling(2.0, "fan_out", "normal")
    if init == "pytorch":  # U(±a) has variance a²/3: a = 1/√fan_in ⇔ variance 1/(3 fan_in)
        return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
    if kernel_size not in _TORCH_SCALE:
        raise ValueError(f"init 'torch' is defined for kernel_size 1 or 3, got kernel_size = {kernel_size}")
    return nn.initializers.variance_scaling(_TORCH_SCALE[kernel_size], "fan_in", "uniform")


def get_bias_init(init: str, fan_in: int, feature_dim: int | None = None) -> nn.initializers.Initializer:
    """The bias initialiser of ``init`` for a layer with ``fan_in`` inputs (c_in·k² for a conv) in
    a network whose features have dimension ``feature_dim`` (default ``fan_in``: the classifier).

    - ``"torch"``: U[0, 1/√feature_dim), one-sided and the same bound for every bias of the
      network, as the released code draws them (``nn.initializers.uniform(√(1/d))``).
    - ``"pytorch"``: U(−1/√fan_in, 1/√fan_in).
    - ``"flax"``, ``"normal_fan_out"``: zeros.
    """
    _check_choice("init", init, INITS)
    feature_dim = fan_in if feature_dim is None else feature_dim
    if fan_in < 1 or feature_dim < 1:
        raise ValueError(f"fan_in and feature_dim must be >= 1, got fan_in = {fan_in}, feature_dim = {feature_dim}")
    if init == "torch":
        return nn.initializers.uniform(1.0 / float(feature_dim) ** 0.5)
    if init != "pytorch":
        return nn.initializers.zeros_init()
    bound = 1.0 / float(fan_in) ** 0.5

    def symmetric_uniform(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return symmetric_uniform


# ---------------------------------------------------------------------------------------------
# Feature extractors. Which layers have a bias, the ResNet shortcut and the BatchNorm momentum
# are attributes; :data:`VARIANTS` names the two sets of values build_model uses.
# ---------------------------------------------------------------------------------------------

_BN = partial(nn.BatchNorm, epsilon=1e-5)


def _conv(
    features: int,
    kernel: int,
    init: str,
    stride: int = 1,
    *,
    bias_init: nn.initializers.Initializer | None = None,
    name: str | None = None,
) -> nn.Conv:
    """A "SAME"-padded k×k convolution; with a bias only when ``bias_init`` is given."""
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding="SAME",
        use_bias=bias_init is not None,
        kernel_init=get_kernel_init(init, kernel),
        bias_init=bias_init or nn.initializers.zeros_init(),
        name=name,
    )


class VGG(nn.Module):
    """VGG with BatchNorm after every layer and no dropout (paper §6).

    Stages of 3×3 convolutions (widths ``stages``) each followed by a 2×2 max-pool ("SAME"
    padding, so inputs of 8×8 to 32×32 all end at 1×1×512), then two fully-connected layers
    ``fc`` = (512, 256) with BN + ReLU. Output: (B, d) with d = fc[-1] = 256.

    Attributes:
        biases: whether the convolutions and the fully-connected layers keep a bias in front of
            their BatchNorm (the released code's layers do; initialised by
            :func:`get_bias_init` with ``feature_dim`` = d).
        bn_momentum: running-average momentum of every BatchNorm.
    """

    stages: Sequence[Sequence[int]]
    fc: Sequence[int] = (512, 256)
    init_scheme: str = "flax"
    biases: bool = True
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        bn = partial(_BN, momentum=self.bn_momentum, use_running_average=not train)
        for stage in self.stages:
            for width in stage:
                x = nn.relu(bn()(_conv(width, 3, self.init_scheme, bias_init=self._bias_init(9 * x.shape[-1]))(x)))
            x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        x = x.reshape((x.shape[0], -1))
        for width in self.fc:
            bias_init = self._bias_init(x.shape[-1])
            x = nn.Dense(
                width,
                use_bias=self.biases,
                kernel_init=get_kernel_init(self.init_scheme),
                bias_init=bias_init or nn.initializers.zeros_init(),
            )(x)
            x = nn.relu(bn()(x))
        return x

    def _bias_init(self, fan_in: int) -> nn.initializers.Initializer | None:
        return get_bias_init(self.init_scheme, fan_in, self.fc[-1]) if self.biases else None


class BasicBlock(nn.Module):
    """ResNet basic block: conv3×3-BN-ReLU-conv3×3-BN, plus shortcut, then ReLU.

    Where the shape changes (stride 2 or more channels) the shortcut is a 1×1 convolution: with a
    BatchNorm and no bias if ``shortcut_bn`` (He et al.'s option B), else with a bias and no
    BatchNorm (the released code). Elsewhere the shortcut is the identity.
    """

    features: int
    stride: int = 1
    init_scheme: str = "flax"
    shortcut_bn: bool = False
    bn_momentum: float = 0.99

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        bn = partial(_BN, momentum=self.bn_momentum, use_running_average=not train)
        y = nn.relu(bn()(_conv(self.features, 3, self.init_scheme, self.stride)(x)))
        y = bn()(_conv(self.features, 3, self.init_scheme)(y))
        if self.stride != 1 or x.shape[-1] != self.features:
            if self.shortcut_bn:
                x = bn(name="shortcut_bn")(_conv(self.features, 1, self.init_scheme, self.stride, name="shortcut")(x))
            else:
                # the released code leaves this bias at Flax's default, zeros, under all three of the
                # paper's inits; "pytorch" gives it PyTorch's default like every other layer
                bias_init = nn.initializers.zeros_init()
                if self.init_scheme == "pytorch":
                    bias_init = get_bias_init("pytorch", x.shape[-1])
                x = _conv(self.features, 1, self.init_scheme, self.stride, bias_init=bias_init, name="shortcut")(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """CIFAR ResNet of He et al. (2016, §4.2): a 3×3 stem, stages of basic blocks, global average
    pool. ResNet20: 3 stages × 3 blocks, widths 16/32/64, d = 64. ``shortcut_bn`` and
    ``bn_momentum`` as in :class:`BasicBlock` (the stem's BatchNorm uses the same momentum)."""

    blocks_per_stage: int = 3
    widths: Sequence[int] = (16, 32, 64)
    init_scheme: str = "flax"
    shortcut_bn: bool = False
    bn_momentum: float = 0.99

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = _conv(self.widths[0], 3, self.init_scheme)(x)
        x = nn.relu(_BN(momentum=self.bn_momentum, use_running_average=not train)(x))
        for i, width in enumerate(self.widths):
            for j in range(self.blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                x = BasicBlock(width, stride, self.init_scheme, self.shortcut_bn, self.bn_momentum)(x, train=train)
        return jnp.mean(x, axis=(1, 2))


class DenseNet(nn.Module):
    """DenseNet-BC (Huang et al. 2017) with bottleneck layers and no dropout.

    A 3×3 stem to 2·growth channels; dense blocks of bottleneck layers
    (BN-ReLU-1×1 conv to 2·growth, BN-ReLU-3×3 conv to growth, concatenated); between blocks a
    transition BN-ReLU-1×1 conv halving the channels and a 2×2 average pool; final BN-ReLU-global
    average pool. DenseNet40 (3 blocks × 6 layers, growth 12): channels 24 → 96 → 48 → 120 → 60 →
    132, so d = 132 for any input size. No convolution has a bias; ``bn_momentum`` is the
    running-average momentum of every BatchNorm.
    """

    layers_per_block: int = 6
    num_blocks: int = 3
    growth: int = 12
    init_scheme: str = "flax"
    bn_momentum: float = 0.99

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        bn_relu = lambda y: nn.relu(_BN(momentum=self.bn_momentum, use_running_average=not train)(y))  # noqa: E731
        x = _conv(2 * self.growth, 3, self.init_scheme)(x)
        for block in range(self.num_blocks):
            for _ in range(self.layers_per_block):
                y = _conv(2 * self.growth, 1, self.init_scheme)(bn_relu(x))
                y = _conv(self.growth, 3, self.init_scheme)(bn_relu(y))
                x = jnp.concatenate([x, y], axis=-1)
            if block < self.num_blocks - 1:
                x = _conv(x.shape[-1] // 2, 1, self.init_scheme)(bn_relu(x))
                x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        return jnp.mean(bn_relu(x), axis=(1, 2))


class MLP(nn.Module):
    """A small fully-connected extractor (Dense-BN-ReLU per hidden layer, no bias in front of the
    BatchNorm) for tests and the CPU book; not a model of the paper, so both variants build it
    alike, with BatchNorm momentum 0.9 unless ``bn_momentum`` says otherwise. d = widths[-1]."""

    widths: Sequence[int] = (64, 32)
    init_scheme: str = "flax"
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = x.reshape((x.shape[0], -1))
        for width in self.widths:
            x = nn.Dense(width, use_bias=False, kernel_init=get_kernel_init(self.init_scheme))(x)
            x = nn.relu(_BN(momentum=self.bn_momentum, use_running_average=not train)(x))
        return x


VGG11_STAGES = ((64,), (128,), (256, 256), (512, 512), (512, 512))
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

VGG11 = partial(VGG, stages=VGG11_STAGES)
VGG16 = partial(VGG, stages=VGG16_STAGES)
ResNet20 = partial(ResNet, blocks_per_stage=3, widths=(16, 32, 64))
DenseNet40 = partial(DenseNet, layers_per_block=6, num_blocks=3, growth=12)

# arch name → (feature-extractor constructor taking ``init_scheme``, feature dimension d, family)
_ARCHS: dict[str, tuple[Callable[..., nn.Module], int, str]] = {
    "vgg11": (VGG11, 256, "vgg"),
    "vgg16": (VGG16, 256, "vgg"),
    "resnet20": (ResNet20, 64, "resnet"),
    "densenet40": (DenseNet40, 132, "densenet"),
    "mlp": (MLP, 32, "mlp"),
}
ARCHS = tuple(_ARCHS)
"""Architectures :func:`build_model` knows: the paper's four plus ``"mlp"`` (tests, CPU book)."""

# variant → family → the layer attributes in which the variants differ
_VARIANT_LAYERS = {
    "released": {
        "vgg": {"biases": True, "bn_momentum": 0.9},
        "resnet": {"shortcut_bn": False, "bn_momentum": 0.99},
        "densenet": {"bn_momentum": 0.99},
        "mlp": {"bn_momentum": 0.9},
    },
    "standard": {
        "vgg": {"biases": False, "bn_momentum": 0.9},
        "resnet": {"shortcut_bn": True, "bn_momentum": 0.9},
        "densenet": {"bn_momentum": 0.9},
        "mlp": {"bn_momentum": 0.9},
    },
}
VARIANTS = tuple(_VARIANT_LAYERS)
"""The two ways :func:`build_model` lays out the paper's networks:

- ``"released"`` (default): as the paper's released code. ResNet20's projection shortcut is a 1×1
  convolution with a bias and no BatchNorm; VGG's convolutions and hidden dense layers keep their
  biases in front of BatchNorm; BatchNorm momentum is Flax's default 0.99 in ResNet20 and
  DenseNet40 and 0.9 in VGG.
- ``"standard"``: the textbook layers ntklib used before: the shortcut is a 1×1 convolution with
  BatchNorm (He et al.'s option B), no layer has a bias in front of a BatchNorm, and every
  BatchNorm has momentum 0.9 (PyTorch's 0.1 in its convention).

Both variants have the same convolution and dense widths, pooling and feature dimension d. The
MLP is not a network of the paper and is the same in both (BatchNorm momentum 0.9).
"""


def build_model(
    arch: str, num_classes: int, init: str = "flax", variant: str = "released", *, bn_momentum: float | None = None
) -> Classifier:
    """A :class:`Classifier` of architecture ``arch`` with initialisation ``init``.

    Args:
        arch: one of :data:`ARCHS`.
        num_classes: K.
        init: one of :data:`INITS`; applies to every convolution and dense layer, classifier included.
        variant: one of :data:`VARIANTS`, the layout of the layers.
        bn_momentum: momentum of every BatchNorm's running averages, in place of the variant's
            (None: the variant's, 0.99 for the released ResNet20 and DenseNet40, 0.9 for VGG and
            the MLP). The running averages are what evaluation uses; after s steps a fraction
            ``bn_momentum**s`` of them is still the initial (0, 1), so a short run needs a smaller
            momentum. Every architecture has BatchNorm, the MLP included, and every one takes it.

    Raises:
        ValueError: naming ``arch``, ``init``, ``variant`` or ``bn_momentum``.

    Example:
        >>> model = build_model("resnet20", 10, "torch")
        >>> x = jnp.zeros((2, 28, 28, 1))
        >>> variables = model.init(jax.random.key(0), x)
        >>> model.apply(variables, x).shape
        (2, 10)
    """
    _check_choice("arch", arch, ARCHS)
    _check_choice("init", init, INITS)
    _check_choice("variant", variant, VARIANTS)
    make_features, d, family = _ARCHS[arch]
    layers = dict(_VARIANT_LAYERS[variant][family])
    if bn_momentum is not None:
        if not 0 <= bn_momentum < 1:
            raise ValueError(f"bn_momentum must be in [0, 1), got {bn_momentum!r}")
        layers["bn_momentum"] = bn_momentum
    return Classifier(
        features=make_features(init_scheme=init, **layers),
        num_classes=num_classes,
        kernel_init=get_kernel_init(init),
        bias_init=get_bias_init(init, d),
    )


def feature_dimension(arch: str) -> int:
    """d, the width of the last-layer features of ``arch``."""
    _check_choice("arch", arch, ARCHS)
    return _ARCHS[arch][1]


vgg11 = partial(build_model, "vgg11")
vgg16 = partial(build_model, "vgg16")
resnet20 = partial(build_model, "resnet20")
densenet40 = partial(build_model, "densenet40")
