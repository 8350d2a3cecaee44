"""Models of the paper: exact parameter counts, output shapes, the Classifier contract, inits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from ntklib.models import (
    ARCHS,
    INITS,
    PAPER_INITS,
    VARIANTS,
    Classifier,
    build_model,
    densenet40,
    feature_dimension,
    get_bias_init,
    get_kernel_init,
    resnet20,
    vgg11,
    vgg16,
)


def count(tree) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def abstract_variables(model, shape):
    """Variables as ShapeDtypeStructs: nothing is computed (cheap even for VGG16)."""
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape, jnp.float32)))


# Hand counts. A BN layer of c channels has 2c parameters (scale, shift); the classifier has
# d·K + K (K = 10). The convolutional networks end in a global average pool (ResNet, DenseNet) or at
# a 1×1×512 map ("SAME" pooling, VGG), so their counts depend on the input channels only: 8×8×1
# digits and 28×28×1 count alike. Variants: "standard" has no bias in front of a BN and a 1×1
# conv + BN shortcut; "released" adds VGG's conv and FC biases and swaps the shortcut's BN for a bias.
#
# VGG11, 1 input channel:
#   convs 3×3: 1·64·9 + 64·128·9 + 128·256·9 + 256·256·9 + 256·512·9 + 3·(512·512·9)
#            = 576 + 73 728 + 294 912 + 589 824 + 1 179 648 + 7 077 888 = 9 216 576
#   conv BNs: 2·(64 + 128 + 256 + 256 + 4·512) = 5 504
#   FC: 512·512 + 2·512 + 512·256 + 2·256 = 262 144 + 1 024 + 131 072 + 512 = 394 752
#   features 9 616 832, classifier 256·10 + 10 = 2 570  → standard 9 619 402
#   3 input channels: 2·64·9 = 1 152 more weights → features 9 617 984, total 9 620 554
#   released biases: convs 64 + 128 + 2·256 + 4·512 = 2 752, FC 512 + 256 = 768 → + 3 520:
#   features 9 620 352 / 9 621 504, totals 9 622 922 (1 channel) / 9 624 074 (3 channels)
# VGG16, 3 input channels:
#   convs: 3·64·9 + 64·64·9 + 64·128·9 + 128·128·9 + 128·256·9 + 2·(256·256·9) + 256·512·9
#          + 5·(512·512·9) = 1 728 + 36 864 + 73 728 + 147 456 + 294 912 + 1 179 648
#          + 1 179 648 + 11 796 480 = 14 710 464
#   conv BNs: 2·(2·64 + 2·128 + 3·256 + 6·512) = 8 448;  FC as above 394 752
#   features 15 113 664, classifier 2 570 → standard 15 116 234; 1 channel: − 1 152 → 15 115 082
#   released biases: convs 2·64 + 2·128 + 3·256 + 6·512 = 4 224, FC 768 → + 4 992:
#   features 15 118 656 / 15 117 504, totals 15 121 226 (3 channels) / 15 120 074 (1 channel)
# ResNet20, 3 input channels, standard:
#   stem 3·16·9 + 32 = 464
#   stage 1: 3 × (2·16·16·9 + 2·32) = 3 × 4 672 = 14 016
#   stage 2: (16·32·9 + 32·32·9 + 2·64 + 1×1 shortcut 16·32 + BN 64) + 2 × (2·32·32·9 + 2·64)
#          = 14 528 + 37 120 = 51 648
#   stage 3: (32·64·9 + 64·64·9 + 2·128 + 32·64 + 128) + 2 × (2·64·64·9 + 2·128)
#          = 57 728 + 147 968 = 205 696
#   features 271 824, classifier 64·10 + 10 = 650 → 272 474 (1 input channel: stem 2·16·9
#   = 288 fewer weights → features 271 536, total 272 186)
#   released: each shortcut has a bias of c instead of a BN of 2c: − 32 − 64 = − 96 →
#   features 271 728 / 271 440, totals 272 378 (3 channels) / 272 090 (1 channel)
# DenseNet40, growth 12, bottleneck to 24 channels, no conv biases (both variants); a dense layer
#   on c channels has 2c (BN) + 24c (1×1) + 48 (BN) + 24·12·9 (3×3) = 26c + 2 640.
#   stem 1·24·9 = 216 (3 channels: 648)
#   block 1, c = 24, 36, …, 84 (Σc = 324): 26·324 + 6·2 640 = 24 264;  transition 96 → 48: 192 + 96·48 = 4 800
#   block 2, c = 48 … 108 (Σc = 468): 28 008;  transition 120 → 60: 240 + 120·60 = 7 440
#   block 3, c = 60 … 120 (Σc = 540): 29 880;  final BN on 132: 264
#   features 94 872 (1 channel), classifier 132·10 + 10 = 1 330 → 96 202; 3 channels: +432 → 96 634
# MLP (64, 32) on a flattened input of n values (both variants): 64n + 128 + 64·32 + 64 = 64n + 2 240,
#   classifier 32·10 + 10 = 330: n = 64 (8×8×1) → 6 336 / 6 666; n = 784 (28×28×1) → 52 416 /
#   52 746; n = 3 072 (32×32×3) → 198 848 / 199 178
SHAPES = {"digits": (2, 8, 8, 1), "mnist": (2, 28, 28, 1), "cifar": (2, 32, 32, 3)}
COUNTS = {  # (arch, variant) → input → (total, features)
    ("vgg11", "standard"): {
        "digits": (9_619_402, 9_616_832),
        "mnist": (9_619_402, 9_616_832),
        "cifar": (9_620_554, 9_617_984),
    },
    ("vgg11", "released"): {
        "digits": (9_622_922, 9_620_352),
        "mnist": (9_622_922, 9_620_352),
        "cifar": (9_624_074, 9_621_504),
    },
    ("vgg16", "standard"): {
        "digits": (15_115_082, 15_112_512),
        "mnist": (15_115_082, 15_112_512),
        "cifar": (15_116_234, 15_113_664),
    },
    ("vgg16", "released"): {
        "digits": (15_120_074, 15_117_504),
        "mnist": (15_120_074, 15_117_504),
        "cifar": (15_121_226, 15_118_656),
    },
    ("resnet20", "standard"): {"digits": (272_186, 271_536), "mnist": (272_186, 271_536), "cifar": (272_474, 271_824)},
    ("resnet20", "released"): {"digits": (272_090, 271_440), "mnist": (272_090, 271_440), "cifar": (272_378, 271_728)},
    ("densenet40", "standard"): {"digits": (96_202, 94_872), "mnist": (96_202, 94_872), "cifar": (96_634, 95_304)},
    ("densenet40", "released"): {"digits": (96_202, 94_872), "mnist": (96_202, 94_872), "cifar": (96_634, 95_304)},
    ("mlp", "standard"): {"digits": (6_666, 6_336), "mnist": (52_746, 52_416), "cifar": (199_178, 198_848)},
    ("mlp", "released"): {"digits": (6_666, 6_336), "mnist": (52_746, 52_416), "cifar": (199_178, 198_848)},
}
DIMS = {"vgg11": 256, "vgg16": 256, "resnet20": 64, "densenet40": 132, "mlp": 32}


def test_counts_cover_every_arch_and_variant():
    assert set(COUNTS) == {(arch, variant) for arch in ARCHS for variant in VARIANTS}


@pytest.mark.parametrize("arch, variant", sorted(COUNTS))
@pytest.mark.parametrize("inputs", sorted(SHAPES))
def test_parameter_counts_and_shapes(arch, variant, inputs):
    shape = SHAPES[inputs]
    total, features = COUNTS[arch, variant][inputs]
    d = DIMS[arch]
    model = build_model(arch, 10, variant=variant)
    variables = abstract_variables(model, shape)
    assert set(variables) == {"params", "batch_stats"}
    assert set(variables["params"]) == {"features", "classifier"}
    assert set(variables["batch_stats"]) == {"features"}
    assert count(variables["params"]) == total
    assert count(variables["params"]["features"]) == features
    assert variables["params"]["classifier"]["kernel"].shape == (d, 10)
    assert variables["params"]["classifier"]["bias"].shape == (10,)
    assert feature_dimension(arch) == d
    out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, jax.ShapeDtypeStruct(shape, jnp.float32))
    assert out.shape == (shape[0], 10)


def test_default_variant_is_the_released_code():
    released, standard = (abstract_variables(build_model("resnet20", 10, variant=v), (2, 8, 8, 1)) for v in VARIANTS)
    assert count(abstract_variables(build_model("resnet20", 10), (2, 8, 8, 1))["params"]) == count(released["params"])
    flat = {"/".join(k) for k in flatten_dict(released["params"])}
    assert "features/BasicBlock_3/shortcut/bias" in flat and not any("shortcut_bn" in k for k in flat)
    flat = {"/".join(k) for k in flatten_dict(standard["params"])}
    assert "features/BasicBlock_3/shortcut_bn/scale" in flat and "features/BasicBlock_3/shortcut/bias" not in flat


def test_factories_match_build_model():
    for factory, arch in ((vgg11, "vgg11"), (vgg16, "vgg16"), (resnet20, "resnet20"), (densenet40, "densenet40")):
        a, b = factory(10, "torch"), build_model(arch, 10, "torch")
        assert type(a.features) is type(b.features)
        assert a.num_classes == b.num_classes == 10


SMALL = {  # the built models at reduced depth/width, so a real forward pass compiles in seconds
    "resnet20": (dict(blocks_per_stage=1, widths=(4, 8, 16)), 16),
    "densenet40": (dict(layers_per_block=2, growth=4), 16),  # 8 → 16 → 8 → 16 → 8 → 16
    "vgg11": (dict(stages=((8,), (16, 16)), fc=(16, 8)), 8),
    "mlp": (dict(widths=(8, 8, 8, 4)), 4),  # four BatchNorms
}


def small_model(arch: str, init: str = "flax", variant: str = "released", num_classes: int = 3) -> Classifier:
    """``build_model(arch, ...)`` with the smaller widths of :data:`SMALL`; every other attribute
    (init, biases, shortcut, BN momentum) is the built model's."""
    model = build_model(arch, num_classes, init, variant)
    return model.clone(features=model.features.clone(**SMALL[arch][0]))


# BatchNorm momentum of each variant: Flax's default 0.99 in the released ResNet20 and DenseNet40,
# 0.9 in the released VGG, in the MLP and everywhere in the standard variant.
MOMENTUM = {
    ("resnet20", "released"): 0.99,
    ("densenet40", "released"): 0.99,
    ("vgg11", "released"): 0.9,
    ("resnet20", "standard"): 0.9,
    ("densenet40", "standard"): 0.9,
    ("vgg11", "standard"): 0.9,
    ("mlp", "released"): 0.9,
    ("mlp", "standard"): 0.9,
}


@pytest.mark.parametrize("arch, variant", sorted(MOMENTUM))
def test_forward_passes_and_batchnorm_momentum(arch, variant):
    """Real forward passes on 8×8 inputs: logits (B, K), eval-mode features (B, d), and the
    BatchNorm momentum. Two train-mode passes on the same batch take every running mean from
    μ₀ = 0 to μ₁ = (1 − m)μ and μ₂ = m μ₁ + (1 − m)μ (train mode normalises with the batch's own
    statistics, so μ is the same in both passes), hence μ₂ − μ₁ = m μ₁ for every BatchNorm."""
    model, d = small_model(arch, variant=variant), SMALL[arch][1]
    x = jax.random.normal(jax.random.key(1), (6, 8, 8, 1), jnp.float32)

    @jax.jit
    def run(key):
        variables = model.init(key, x)
        logits, first = model.apply(variables, x, train=True, mutable=["batch_stats"])
        _, second = model.apply({**variables, **first}, x, train=True, mutable=["batch_stats"])
        h = model.apply(variables, x, method=lambda m, x: m.features(x, train=False))
        return logits, h, variables["batch_stats"], first["batch_stats"], second["batch_stats"]

    logits, h, *stats = run(jax.random.key(0))
    assert logits.shape == (6, 3) and logits.dtype == jnp.float32 and np.all(np.isfinite(logits))
    assert h.shape == (6, d)
    zero, first, second = (flatten_dict(tree) for tree in stats)
    means = [k for k in first if k[-1] == "mean"]
    assert len(means) >= 4 and all(np.all(zero[k] == 0) for k in means)
    for k in means:
        mu1, mu2 = np.asarray(first[k], np.float64), np.asarray(second[k], np.float64)
        momentum = np.sum((mu2 - mu1) * mu1) / np.sum(mu1 * mu1)  # least squares over the channels
        assert momentum == pytest.approx(MOMENTUM[arch, variant], abs=1e-3), k


def uniform_bound(init, shape):
    return np.asarray(get_kernel_init(init, shape[0])(jax.random.key(0), shape, jnp.float32))


def test_torch_init_is_the_released_codes():
    """Released "torch": U(±√(3/fan_in)) for dense and 1×1 kernels, U(±1/√(27·c_in)) for 3×3 ones."""
    for shape, bound in (((1, 1, 64, 64), np.sqrt(3 / 64)), ((3, 3, 64, 64), 1 / np.sqrt(27 * 64))):
        w = uniform_bound("torch", shape)
        # 4 096 or 36 864 draws: the largest |w| is within 1% of the bound with probability ≥ 1 − 1e-17
        assert bound >= np.abs(w).max() > 0.99 * bound
        assert np.std(w) == pytest.approx(bound / np.sqrt(3), rel=0.05)
    dense = np.asarray(get_kernel_init("torch")(jax.random.key(0), (64, 4096), jnp.float32))
    assert np.sqrt(3 / 64) >= np.abs(dense).max() > 0.99 * np.sqrt(3 / 64)
    # at equal c_in the 3×3 scale is the 1×1 scale / 9; against PyTorch's √3 smaller (3×3), √3 larger (1×1)
    ratio = np.std(uniform_bound("torch", (3, 3, 64, 64))) / np.std(uniform_bound("torch", (1, 1, 64, 64)))
    assert ratio == pytest.approx(1 / 9, rel=0.05)
    for k, factor in ((3, 1 / np.sqrt(3)), (1, np.sqrt(3))):
        shape = (k, k, 64, 64)
        assert np.std(uniform_bound("torch", shape)) / np.std(uniform_bound("pytorch", shape)) == pytest.approx(
            factor, rel=0.05
        )
    with pytest.raises(ValueError, match="kernel_size = 5"):
        get_kernel_init("torch", 5)
    # biases: one-sided U[0, 1/√d); the bound is the network's d, not the layer's fan-in
    bias = np.asarray(get_bias_init("torch", 576, feature_dim=64)(jax.random.key(0), (10_000,), jnp.float32))
    assert bias.min() >= 0 and 1 / 8 > bias.max() > 0.99 / 8
    assert np.mean(bias) == pytest.approx(1 / 16, rel=0.05)


@pytest.mark.parametrize("init", INITS)
def test_initialisations(init):
    key = jax.random.key(0)
    # a 3×3 conv 64 → 64: fan_in = fan_out = 576
    w = np.asarray(get_kernel_init(init, 3)(key, (3, 3, 64, 64), jnp.float32))
    bias = np.asarray(get_bias_init(init, 64)(key, (1000,), jnp.float32))
    if init == "flax":  # LeCun normal: variance 1/fan_in (truncated normal, rescaled)
        assert np.std(w) == pytest.approx(1 / np.sqrt(576), rel=0.05)
        assert np.all(bias == 0)
    elif init == "pytorch":  # U(±1/√fan_in) for weights and biases
        bound = 1 / np.sqrt(576)
        assert bound >= np.abs(w).max() > 0.95 * bound
        assert np.std(w) == pytest.approx(bound / np.sqrt(3), rel=0.05)
        assert 1 / 8 >= np.abs(bias).max() > 0.95 / 8 and np.mean(bias) == pytest.approx(0, abs=0.01)
        assert bias.min() < -0.9 / 8  # symmetric
    elif init == "torch":  # U(±1/√(27·64)) weights, U[0, 1/8) biases
        assert 1 / np.sqrt(27 * 64) >= np.abs(w).max() > 0.95 / np.sqrt(27 * 64)
        assert bias.min() >= 0 and 1 / 8 > bias.max() > 0.95 / 8
    else:  # He normal fan_out: variance 2/fan_out
        assert np.std(w) == pytest.approx(np.sqrt(2 / 576), rel=0.05)
        assert np.all(bias == 0)
    # the classifier of a built model uses the same scheme (d = 32 for the MLP); BN starts at 1, 0
    x = jnp.zeros((2, 8, 8, 1), jnp.float32)
    params = jax.jit(build_model("mlp", 10, init).init)(key, x)["params"]
    head = params["classifier"]
    if init == "pytorch":
        assert np.abs(head["kernel"]).max() <= 1 / np.sqrt(32)
        assert np.abs(head["bias"]).max() <= 1 / np.sqrt(32) and np.any(head["bias"] != 0)
    elif init == "torch":
        assert np.abs(head["kernel"]).max() <= np.sqrt(3 / 32) and np.abs(head["kernel"]).max() > 1 / np.sqrt(32)
        assert np.all(head["bias"] >= 0) and np.all(head["bias"] < 1 / np.sqrt(32)) and np.any(head["bias"] != 0)
    else:
        assert np.all(head["bias"] == 0)
    flat = flatten_dict(params["features"])
    assert all(np.all(v == 1) for k, v in flat.items() if k[-1] == "scale")
    assert all(np.all(v == 0) for k, v in flat.items() if k[-2].startswith("BatchNorm") and k[-1] == "bias")


@pytest.fixture(scope="module")
def small_params():
    """Initial parameters of the small VGG11 and ResNet20 of every (init, variant), flattened to
    {"features/.../bias": array}; one compilation (only parameters are returned, so the forward
    passes of ``init`` are dead code)."""
    x = jnp.zeros((2, 8, 8, 1), jnp.float32)
    models = {
        (arch, init, variant): small_model(arch, init, variant)
        for arch in ("vgg11", "resnet20")
        for init in INITS
        for variant in VARIANTS
    }
    params = jax.jit(lambda key: {name: m.init(key, x)["params"] for name, m in models.items()})(jax.random.key(0))
    return {name: {"/".join(k): np.asarray(v) for k, v in flatten_dict(p).items()} for name, p in params.items()}


@pytest.mark.parametrize("init", INITS)
def test_biases_of_the_released_layers(init, small_params):
    """VGG's conv and dense biases and the ResNet shortcut's bias, per init."""
    vgg = small_params["vgg11", init, "released"]
    biases = [v for k, v in vgg.items() if k.endswith("bias") and ("Conv" in k or "Dense" in k)]
    assert len(biases) == 3 + 2  # three convolutions, two dense layers (fc = (16, 8), so d = 8)
    values = np.concatenate(biases)
    if init == "torch":  # every bias U[0, 1/√d), d = 8
        assert values.min() >= 0 and values.max() < 1 / np.sqrt(8) and np.any(values > 0)
    elif init == "pytorch":  # U(±1/√fan_in): symmetric
        assert values.min() < 0 < values.max()
    else:
        assert np.all(values == 0)
    shortcut = np.concatenate(
        [v for k, v in small_params["resnet20", init, "released"].items() if k.endswith("shortcut/bias")]
    )
    assert shortcut.size == 8 + 16  # two shortcuts, to 8 and 16 channels
    if init == "pytorch":  # PyTorch's default for a conv with a bias, fan_in = c_in = 4 or 8
        assert np.all(np.abs(shortcut) <= 1 / np.sqrt(4)) and shortcut.min() < 0 < shortcut.max()
    else:  # the released code leaves it at Flax's default under all three paper inits
        assert np.all(shortcut == 0)
    for arch in ("vgg11", "resnet20"):  # the standard variant has no bias but the classifier's
        standard = small_params[arch, init, "standard"]
        not_bn = [k for k in standard if k.endswith("bias") and k.replace("/bias", "/scale") not in standard]
        assert not_bn == ["classifier/bias"]


def test_inits_and_variants_named():
    assert PAPER_INITS == ("flax", "torch", "normal_fan_out") and set(INITS) == {*PAPER_INITS, "pytorch"}
    assert VARIANTS == ("released", "standard")


def test_unknown_arch_init_and_variant():
    with pytest.raises(ValueError, match=r"arch 'resnet18'.*resnet20.*densenet40"):
        build_model("resnet18", 10)
    with pytest.raises(ValueError, match=r"init 'xavier'.*flax, torch, normal_fan_out, pytorch"):
        build_model("resnet20", 10, "xavier")
    with pytest.raises(ValueError, match=r"variant 'paper'.*released, standard"):
        build_model("resnet20", 10, variant="paper")
    assert set(ARCHS) >= {"vgg11", "vgg16", "resnet20", "densenet40"}


@pytest.mark.parametrize("arch", ["resnet20", "densenet40", "vgg11", "mlp"])
def test_bn_momentum_overrides_the_variants(arch):
    assert build_model(arch, 3, "flax").features.bn_momentum == MOMENTUM[arch, "released"]
    for variant in VARIANTS:
        assert build_model(arch, 3, "flax", variant, bn_momentum=0.5).features.bn_momentum == 0.5


def test_bn_momentum_is_checked_and_reaches_the_mlp():
    """The MLP has BatchNorm too (momentum 0.9 by default, as the committed MLP runs were trained),
    and a bn_momentum override reaches it."""
    from ntklib.config import ConfigError, TrainConfig

    assert build_model("mlp", 3).features == build_model("mlp", 3, bn_momentum=0.9).features
    assert build_model("mlp", 3, bn_momentum=0.5).features != build_model("mlp", 3).features
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="bn_momentum"):
            build_model("resnet20", 3, bn_momentum=bad)
        with pytest.raises(ConfigError, match="bn_momentum"):
            TrainConfig.tiny(bn_momentum=bad)
