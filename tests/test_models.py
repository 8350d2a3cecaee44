"""Models of the paper: exact parameter counts, output shapes, the Classifier contract, inits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from ntklib.models import (
    ARCHS,
    INITS,
    VGG,
    Classifier,
    DenseNet,
    ResNet,
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


# Hand counts. Convolutions and FC layers followed by BatchNorm have no bias; a BN layer of c
# channels has 2c parameters (scale, shift); the classifier has d·K + K.
#
# VGG11, 1 input channel, 32×32 (5 max-pools → 1×1×512):
#   convs 3×3: 1·64·9 + 64·128·9 + 128·256·9 + 256·256·9 + 256·512·9 + 3·(512·512·9)
#            = 576 + 73 728 + 294 912 + 589 824 + 1 179 648 + 7 077 888 = 9 216 576
#   conv BNs: 2·(64 + 128 + 256 + 256 + 4·512) = 5 504
#   FC: 512·512 + 2·512 + 512·256 + 2·256 = 262 144 + 1 024 + 131 072 + 512 = 394 752
#   features 9 616 832, classifier 256·10 + 10 = 2 570  → 9 619 402
# VGG16, 3 input channels, 32×32:
#   convs: 3·64·9 + 64·64·9 + 64·128·9 + 128·128·9 + 128·256·9 + 2·(256·256·9) + 256·512·9
#          + 5·(512·512·9) = 1 728 + 36 864 + 73 728 + 147 456 + 294 912 + 1 179 648
#          + 1 179 648 + 11 796 480 = 14 710 464
#   conv BNs: 2·(2·64 + 2·128 + 3·256 + 6·512) = 8 448;  FC as above 394 752
#   features 15 113 664, classifier 2 570 → 15 116 234
# ResNet20, 3 input channels:
#   stem 3·16·9 + 32 = 464
#   stage 1: 3 × (2·16·16·9 + 2·32) = 3 × 4 672 = 14 016
#   stage 2: (16·32·9 + 32·32·9 + 2·64 + 1×1 shortcut 16·32 + 64) + 2 × (2·32·32·9 + 2·64)
#          = 14 528 + 37 120 = 51 648
#   stage 3: (32·64·9 + 64·64·9 + 2·128 + 32·64 + 128) + 2 × (2·64·64·9 + 2·128)
#          = 57 728 + 147 968 = 205 696
#   features 271 824, classifier 64·10 + 10 = 650 → 272 474 (1 input channel: stem 16·9
#   fewer weights = 144 + 32 → 272 474 − 288 = 272 186)
# DenseNet40, growth 12, bottleneck to 24 channels; a dense layer on c channels has
#   2c (BN) + 24c (1×1) + 48 (BN) + 24·12·9 (3×3) = 26c + 2 640.
#   stem 1·24·9 = 216 (3 channels: 648)
#   block 1, c = 24, 36, …, 84 (Σc = 324): 26·324 + 6·2 640 = 24 264;  transition 96 → 48: 192 + 96·48 = 4 800
#   block 2, c = 48 … 108 (Σc = 468): 28 008;  transition 120 → 60: 240 + 120·60 = 7 440
#   block 3, c = 60 … 120 (Σc = 540): 29 880;  final BN on 132: 264
#   features 94 872 (1 channel), classifier 132·10 + 10 = 1 330 → 96 202; 3 channels: 96 634
# MLP (64, 32) on 8×8×1: 64·64 + 128 + 64·32 + 64 = 6 336, classifier 32·10 + 10 = 330 → 6 666
@pytest.mark.parametrize(
    "arch, shape, total, features, d",
    [
        ("vgg11", (2, 32, 32, 1), 9_619_402, 9_616_832, 256),
        ("vgg16", (2, 32, 32, 3), 15_116_234, 15_113_664, 256),
        ("resnet20", (2, 32, 32, 3), 272_474, 271_824, 64),
        ("resnet20", (2, 28, 28, 1), 272_186, 271_536, 64),
        ("densenet40", (2, 28, 28, 1), 96_202, 94_872, 132),
        ("densenet40", (2, 32, 32, 3), 96_634, 95_304, 132),
        ("mlp", (2, 8, 8, 1), 6_666, 6_336, 32),
    ],
)
def test_parameter_counts_and_shapes(arch, shape, total, features, d):
    model = build_model(arch, 10)
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


def test_factories_match_build_model():
    for factory, arch in ((vgg11, "vgg11"), (vgg16, "vgg16"), (resnet20, "resnet20"), (densenet40, "densenet40")):
        a, b = factory(10, "torch"), build_model(arch, 10, "torch")
        assert type(a.features) is type(b.features)
        assert a.num_classes == b.num_classes == 10


SMALL = {  # the same modules at reduced depth/width, so a real forward pass compiles in seconds
    "resnet": (ResNet(blocks_per_stage=1, widths=(4, 8, 16)), 16),
    "densenet": (DenseNet(layers_per_block=2, growth=4), 16),  # 8 → 16 → 8 → 16 → 8 → 16
    "vgg": (VGG(stages=((8,), (16, 16)), fc=(16, 8)), 8),
}


@pytest.mark.parametrize("name", SMALL)
def test_forward_train_and_eval_small_inputs(name):
    """Real forward passes on 8×8 inputs: train mode updates batch_stats; eval-mode features (B, d)."""
    features, d = SMALL[name]
    model = Classifier(features, num_classes=3)
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1), jnp.float32)

    @jax.jit
    def run(key):
        variables = model.init(key, x)
        logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        h = model.apply(variables, x, method=lambda m, x: m.features(x, train=False))
        return variables, logits, updates, h

    variables, logits, updates, h = run(jax.random.key(0))
    assert logits.shape == (4, 3) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), updates["batch_stats"], variables["batch_stats"])
    assert any(jax.tree.leaves(changed))
    assert h.shape == (4, d)


@pytest.mark.parametrize("init", INITS)
def test_initialisations(init):
    key = jax.random.key(0)
    # a 3×3 conv 64 → 64: fan_in = fan_out = 576
    w = np.asarray(get_kernel_init(init)(key, (3, 3, 64, 64), jnp.float32))
    bias = np.asarray(get_bias_init(init, 64)(key, (1000,), jnp.float32))
    if init == "flax":  # LeCun normal: variance 1/fan_in (truncated normal, rescaled)
        assert np.std(w) == pytest.approx(1 / np.sqrt(576), rel=0.05)
        assert np.all(bias == 0)
    elif init == "torch":  # U(±1/√fan_in) for weights and biases
        bound = 1 / np.sqrt(576)
        assert bound >= np.abs(w).max() > 0.95 * bound
        assert np.std(w) == pytest.approx(bound / np.sqrt(3), rel=0.05)
        assert 1 / 8 >= np.abs(bias).max() > 0.95 / 8 and np.mean(bias) == pytest.approx(0, abs=0.01)
    else:  # He normal fan_out: variance 2/fan_out
        assert np.std(w) == pytest.approx(np.sqrt(2 / 576), rel=0.05)
        assert np.all(bias == 0)
    # the classifier of a built model uses the same scheme (d = 32 for the MLP); BN starts at 1, 0
    x = jnp.zeros((2, 8, 8, 1), jnp.float32)
    params = jax.jit(build_model("mlp", 10, init).init)(key, x)["params"]
    head = params["classifier"]
    if init == "torch":
        assert np.abs(head["kernel"]).max() <= 1 / np.sqrt(32)
        assert np.abs(head["bias"]).max() <= 1 / np.sqrt(32) and np.any(head["bias"] != 0)
    else:
        assert np.all(head["bias"] == 0)
    flat = flatten_dict(params["features"])
    assert all(np.all(v == 1) for k, v in flat.items() if k[-1] == "scale")
    assert all(np.all(v == 0) for k, v in flat.items() if k[-2].startswith("BatchNorm") and k[-1] == "bias")


def test_unknown_arch_and_init():
    with pytest.raises(ValueError, match=r"arch 'resnet18'.*resnet20.*densenet40"):
        build_model("resnet18", 10)
    with pytest.raises(ValueError, match=r"init 'xavier'.*flax, torch, normal_fan_out"):
        build_model("resnet20", 10, "xavier")
    assert set(ARCHS) >= {"vgg11", "vgg16", "resnet20", "densenet40"}
