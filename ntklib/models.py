"""Flax models of the paper, each split into a feature extractor and a linear classifier.

The split is the contract the NTK engine (:mod:`ntklib.ntk`) and the training code rely on:
every model is a :class:`Classifier` whose submodule ``features`` maps a batch of inputs to
last-layer features ``h(θ, x)`` of shape (B, d), followed by a dense layer named ``classifier``
(kernel ``Wᵀ`` of shape (d, K), bias ``b`` of shape (K,)). Variables therefore look like::

    {"params":      {"features": {...}, "classifier": {"kernel": (d, K), "bias": (K,)}},
     "batch_stats": {"features": {...}}}            # only when the extractor has BatchNorm
"""

from __future__ import annotations

from collections.abc import Sequence
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
        return nn.Dense(
            self.num_classes, kernel_init=self.kernel_init, bias_init=self.bias_init, name="classifier"
        )(h)


# ---------------------------------------------------------------------------------------------
# Initialisations (paper §6 "Optimization and initialization")
# ---------------------------------------------------------------------------------------------

INITS = ("flax", "torch", "normal_fan_out")
"""The three initialisation settings of the paper:

- ``"flax"``: LeCun normal (truncated normal, variance 1/fan_in) weights, zero biases — Flax's default.
- ``"torch"``: PyTorch's defaults, weights and biases uniform in ±1/√fan_in with fan_in = c_in·k²
  for a k×k convolution (PyTorch's ``kaiming_uniform_(a=√5)`` is exactly this).
- ``"normal_fan_out"``: He normal (untruncated, variance 2/fan_out), zero biases.

BatchNorm always starts at scale 1, shift 0.
"""


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(choices)}")


def get_kernel_init(init: str) -> nn.initializers.Initializer:
    """The weight initialiser of ``init`` (one of :data:`INITS`)."""
    _check_choice("init", init, INITS)
    if init == "flax":
        return nn.initializers.lecun_normal()
    if init == "torch":  # U(±a) has variance a²/3: a = 1/√fan_in ⇔ variance 1/(3 fan_in)
        return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
    return nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def get_bias_init(init: str, fan_in: int) -> nn.initializers.Initializer:
    """The bias initialiser of ``init`` for a layer with ``fan_in`` inputs (c_in·k² for a conv)."""
    _check_choice("init", init, INITS)
    if init != "torch":
        return nn.initializers.zeros_init()
    bound = 1.0 / float(fan_in) ** 0.5

    def uniform_bias(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return uniform_bias


# ---------------------------------------------------------------------------------------------
# Feature extractors. Biases are omitted wherever a BatchNorm follows (its shift makes a bias
# redundant), so the classifier's b is the only bias of every model.
# ---------------------------------------------------------------------------------------------

_BN = partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)


def _conv(features: int, kernel: int, init: str, stride: int = 1, name: str | None = None) -> nn.Conv:
    return nn.Conv(
        features, (kernel, kernel), strides=(stride, stride), padding="SAME", use_bias=False,
        kernel_init=get_kernel_init(init), name=name,
    )


class VGG(nn.Module):
    """VGG with BatchNorm after every layer and no dropout (paper §6).

    Stages of 3×3 convolutions (widths ``stages``) each followed by a 2×2 max-pool ("SAME"
    padding, so inputs of 8×8 to 32×32 all end at 1×1×512), then two fully-connected layers
    ``fc`` = (512, 256) with BN + ReLU. Output: (B, d) with d = fc[-1] = 256.
    """

    stages: Sequence[Sequence[int]]
    fc: Sequence[int] = (512, 256)
    init: str = "flax"

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        for stage in self.stages:
            for width in stage:
                x = nn.relu(_BN(use_running_average=not train)(_conv(width, 3, self.init)(x)))
            x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        x = x.reshape((x.shape[0], -1))
        for width in self.fc:
            x = nn.Dense(width, use_bias=False, kernel_init=get_kernel_init(self.init))(x)
            x = nn.relu(_BN(use_running_average=not train)(x))
        return x


class BasicBlock(nn.Module):
    """ResNet basic block: conv3×3-BN-ReLU-conv3×3-BN, plus shortcut, then ReLU.

    Where the shape changes (stride 2 or more channels) the shortcut is a 1×1 convolution with
    BN (He et al.'s option B); elsewhere it is the identity.
    """

    features: int
    stride: int = 1
    init: str = "flax"

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        bn = partial(_BN, use_running_average=not train)
        y = nn.relu(bn()(_conv(self.features, 3, self.init, self.stride)(x)))
        y = bn()(_conv(self.features, 3, self.init)(y))
        if self.stride != 1 or x.shape[-1] != self.features:
            x = bn(name="shortcut_bn")(_conv(self.features, 1, self.init, self.stride, name="shortcut")(x))
        return nn.relu(x + y)


class ResNet(nn.Module):
    """CIFAR ResNet of He et al. (2016, §4.2): a 3×3 stem, stages of basic blocks, global average
    pool. ResNet20: 3 stages × 3 blocks, widths 16/32/64, d = 64."""

    blocks_per_stage: int = 3
    widths: Sequence[int] = (16, 32, 64)
    init: str = "flax"

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = nn.relu(_BN(use_running_average=not train)(_conv(self.widths[0], 3, self.init)(x)))
        for i, width in enumerate(self.widths):
            for j in range(self.blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                x = BasicBlock(width, stride, self.init)(x, train=train)
        return jnp.mean(x, axis=(1, 2))


class DenseNet(nn.Module):
    """DenseNet-BC (Huang et al. 2017) with bottleneck layers and no dropout.

    A 3×3 stem to 2·growth channels; dense blocks of bottleneck layers
    (BN-ReLU-1×1 conv to 2·growth, BN-ReLU-3×3 conv to growth, concatenated); between blocks a
    transition BN-ReLU-1×1 conv halving the channels and a 2×2 average pool; final BN-ReLU-global
    average pool. DenseNet40 (3 blocks × 6 layers, growth 12): channels 24 → 96 → 48 → 120 → 60 →
    132, so d = 132 for any input size.
    """

    layers_per_block: int = 6
    num_blocks: int = 3
    growth: int = 12
    init: str = "flax"

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        bn_relu = lambda y: nn.relu(_BN(use_running_average=not train)(y))  # noqa: E731
        x = _conv(2 * self.growth, 3, self.init)(x)
        for block in range(self.num_blocks):
            for _ in range(self.layers_per_block):
                y = _conv(2 * self.growth, 1, self.init)(bn_relu(x))
                y = _conv(self.growth, 3, self.init)(bn_relu(y))
                x = jnp.concatenate([x, y], axis=-1)
            if block < self.num_blocks - 1:
                x = _conv(x.shape[-1] // 2, 1, self.init)(bn_relu(x))
                x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        return jnp.mean(bn_relu(x), axis=(1, 2))


class MLP(nn.Module):
    """A small fully-connected extractor (Dense-BN-ReLU per hidden layer) for tests and the CPU
    book; not a model of the paper. d = widths[-1]."""

    widths: Sequence[int] = (64, 32)
    init: str = "flax"

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = x.reshape((x.shape[0], -1))
        for width in self.widths:
            x = nn.Dense(width, use_bias=False, kernel_init=get_kernel_init(self.init))(x)
            x = nn.relu(_BN(use_running_average=not train)(x))
        return x


VGG11_STAGES = ((64,), (128,), (256, 256), (512, 512), (512, 512))
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

VGG11 = partial(VGG, stages=VGG11_STAGES)
VGG16 = partial(VGG, stages=VGG16_STAGES)
ResNet20 = partial(ResNet, blocks_per_stage=3, widths=(16, 32, 64))
DenseNet40 = partial(DenseNet, layers_per_block=6, num_blocks=3, growth=12)

# arch name → (feature-extractor constructor taking ``init``, feature dimension d)
_ARCHS = {
    "vgg11": (VGG11, 256),
    "vgg16": (VGG16, 256),
    "resnet20": (ResNet20, 64),
    "densenet40": (DenseNet40, 132),
    "mlp": (MLP, 32),
}
ARCHS = tuple(_ARCHS)
"""Architectures :func:`build_model` knows: the paper's four plus ``"mlp"`` (tests, CPU book)."""


def build_model(arch: str, num_classes: int, init: str = "flax") -> Classifier:
    """A :class:`Classifier` of architecture ``arch`` with initialisation ``init``.

    Args:
        arch: one of :data:`ARCHS`.
        num_classes: K.
        init: one of :data:`INITS`; applies to every convolution and dense layer, classifier included.

    Raises:
        ValueError: naming ``arch`` or ``init`` and listing the valid choices.

    Example:
        >>> model = build_model("resnet20", 10, "torch")
        >>> x = jnp.zeros((2, 28, 28, 1))
        >>> variables = model.init(jax.random.key(0), x)
        >>> model.apply(variables, x).shape
        (2, 10)
    """
    _check_choice("arch", arch, ARCHS)
    _check_choice("init", init, INITS)
    make_features, d = _ARCHS[arch]
    return Classifier(
        features=make_features(init=init),
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
