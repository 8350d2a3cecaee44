"""TrainConfig: fields, groups and checks; identities that committed run directories depend on."""

import dataclasses
import json
from pathlib import Path

import pytest

from ntklib.config import GROUPS, ConfigError, NTKSettings, TrainConfig, run_identity
from ntklib.rundir import RunDir, config_hash, read_status

RESULTS = Path(__file__).resolve().parent.parent / "results"
COMMITTED_RUNS = [
    RESULTS / "cpu_mlp_digits_e400" / "mse" / "seed_0" / "flax" / "lr_0.011264816923358855",
    RESULTS / "cpu_mlp_digits_e400" / "mse" / "seed_2" / "torch" / "lr_1.7782794100389228",
    RESULTS / "cpu_mlp_digits_e400" / "ce" / "seed_1" / "flax" / "lr_0.022122162910704478",
]
"""A few runs of the committed 400-epoch MLP sweep: two MSE runs (the smallest and the largest
rate, other seeds and inits) and a cross-entropy run."""


def test_config_variants():
    default = TrainConfig()
    assert (default.arch, default.dataset, default.batch_size, default.epochs, default.eval_every) == (
        "resnet20",
        "mnist",
        120,
        400,
        2,
    )
    assert (default.momentum, default.nesterov, default.weight_decay, default.loss) == (0.9, True, 5e-4, "mse")
    assert default.decay_every_epochs == 120
    assert TrainConfig(epochs=40).decay_every_epochs == 12
    assert TrainConfig(epochs=1).decay_every_epochs == 1
    assert TrainConfig(arch="vgg11").input_size == 32 and TrainConfig().input_size is None
    tiny = TrainConfig.tiny(lr=0.3)
    assert tiny.dataset == "digits" and tiny.lr == 0.3 and tiny.replace(seed=3).seed == 3
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="hinge")
    assert default.to_dict()["variant"] == "released"  # config.json records the layers' variant
    with pytest.raises(ValueError, match=r"variant 'paper'.*released, standard"):
        TrainConfig(variant="paper")


def test_ntk_settings_are_named():
    assert TrainConfig(arch="vgg16").ntk_settings == NTKSettings(per_class=4, chunk_size=8)  # the paper's VGG NTK
    assert TrainConfig().ntk_settings == (None, None)  # whole batch of 120
    settings = TrainConfig(arch="vgg11", ntk_per_class=12, ntk_chunk_size=2).ntk_settings
    assert (settings.per_class, settings.chunk_size) == (12, 2)


def test_every_field_has_a_group_a_check_and_a_help():
    fields = dataclasses.fields(TrainConfig)
    assert {field.metadata["group"] for field in fields} == set(GROUPS)
    for field in fields:
        assert field.metadata["group"] in GROUPS and callable(field.metadata["check"]), field.name
        assert field.metadata["help"], field.name
    assert [f.name for f in fields if not f.metadata["identity"]] == ["epoch_mode"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"arch": "resnet18"}, r"unknown arch 'resnet18'; valid choices: vgg11, "),
        ({"epochs": 0}, r"epochs must be a positive integer, got 0"),
        ({"batch_size": 12.0}, r"batch_size must be a positive integer, got 12.0"),
        ({"image_size": 0}, r"image_size must be a positive integer, got 0"),
        ({"seed": -1}, r"seed must be an integer >= 0, got -1"),
        ({"lr": float("nan")}, r"lr must be a finite number > 0, got nan"),
        ({"lr_decay_factor": 0}, r"lr_decay_factor must be a finite number > 0, got 0"),
        ({"momentum": -0.1}, r"momentum must be a finite number >= 0, got -0.1"),
        ({"weight_decay": True}, r"weight_decay must be a finite number >= 0, got True"),
        ({"nesterov": 1}, r"nesterov must be a boolean, got 1"),
        ({"kernel_metrics": "yes"}, r"kernel_metrics must be a boolean, got 'yes'"),
        ({"bn_momentum": 1.0}, r"bn_momentum must be a number in \[0, 1\) or None, got 1.0"),
        ({"data_dir": ""}, r"data_dir must be a non-empty path or None, got ''"),
        ({"kernel_every": 3}, r"kernel_every must be a positive multiple of eval_every \(2\), got 3"),
    ],
)
def test_a_bad_field_is_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**overrides)


@pytest.mark.parametrize("kernel_every", [0, 3])
def test_kernel_every_must_be_a_multiple_of_eval_every(kernel_every):
    with pytest.raises(ValueError, match="kernel_every"):
        TrainConfig.tiny(eval_every=2, kernel_every=kernel_every)


def test_identity_hashes_are_those_of_before_the_move():
    """Field names and defaults define every run's identity: these hashes were computed with
    TrainConfig as defined in ntklib/train.py before it moved to ntklib/config.py (commit 50236d3)."""
    assert config_hash(TrainConfig().identity()) == "3dd8fb1142b8b4a51a0e8cf290c9e781a1a1036ee31d0d1c0311fa17130cec1c"
    assert config_hash(TrainConfig.tiny().identity()) == (
        "5aeb87bf99889c97492e047d931b63183fe55ac405d42d18513b5f8e53362257"
    )


@pytest.mark.parametrize("path", COMMITTED_RUNS, ids=lambda path: "/".join(path.parts[-4:]))
def test_committed_run_directories_still_verify(path):
    saved = json.loads((path / "config.json").read_text())
    config = TrainConfig(**saved["config"])
    assert config.to_dict() == saved["config"]
    assert config_hash(config.identity()) == saved["identity"]
    status = RunDir(path).verify(config.to_dict(), **run_identity(config))
    assert status is not None and status == read_status(path)
    assert status == json.loads((path / "status.json").read_text())["status"]


# ---------------------------------------------------------------------------------------------
# imbalance: a field added after runs were committed
# ---------------------------------------------------------------------------------------------


def test_imbalance_at_its_default_leaves_identity_and_config_json_as_before():
    field = {f.name: f for f in dataclasses.fields(TrainConfig)}["imbalance"]
    assert field.metadata["omitted_at_default"] and field.metadata["group"] == "data" and field.default == 1.0
    for config in (TrainConfig(), TrainConfig.tiny(), TrainConfig.tiny(imbalance=1), TrainConfig(imbalance=1.0)):
        assert "imbalance" not in config.identity() and "imbalance" not in config.to_dict()
        assert TrainConfig(**config.to_dict()) == config
    assert config_hash(TrainConfig(imbalance=1.0).identity()) == config_hash(TrainConfig().identity())
    imbalanced = TrainConfig.tiny(imbalance=4.0)
    assert imbalanced.identity()["imbalance"] == 4.0 and imbalanced.to_dict()["imbalance"] == 4.0
    assert config_hash(imbalanced.identity()) != config_hash(TrainConfig.tiny().identity())
    assert TrainConfig(**imbalanced.to_dict()) == imbalanced
    # the other fields are recorded whatever their value
    assert set(TrainConfig().to_dict()) == {f.name for f in dataclasses.fields(TrainConfig)} - {"imbalance"}


@pytest.mark.parametrize("value", [0.5, 0, True, float("nan"), float("inf"), "4"])
def test_a_bad_imbalance_is_named(value):
    with pytest.raises(ConfigError, match=r"imbalance must be a finite number >= 1, got "):
        TrainConfig.tiny(imbalance=value)


def test_check_fit_under_imbalance():
    from ntklib.config import check_fit
    from ntklib.data import load_dataset

    digits = load_dataset("digits")  # class counts 131 … 137: subset 5 × 131 + 5 × 32, batches of 6 and 2
    assert check_fit(TrainConfig.tiny(imbalance=4.0), digits) == 16
    assert check_fit(TrainConfig.tiny(imbalance=4.0, batch_size=45), digits) == 16  # 7 and 2: no multiple of K
    assert check_fit(TrainConfig.tiny(), digits) == 32  # balanced: 131 // 4
    with pytest.raises(ConfigError, match=r"ntk_per_class=3 exceeds the 2 samples of the smallest class .*imbalance"):
        check_fit(TrainConfig.tiny(imbalance=4.0, ntk_per_class=3), digits)
    with pytest.raises(ConfigError, match=r"batch_size=20 gives class 5 .* no sample per batch"):
        check_fit(TrainConfig.tiny(imbalance=40.0, batch_size=20), digits)
    with pytest.raises(ConfigError, match=r"kernel_metrics need 2 samples .*batch_size=40 with imbalance=10.0 .* 1;"):
        check_fit(TrainConfig.tiny(imbalance=10.0), digits)  # 7 and 1 per batch
    assert check_fit(TrainConfig.tiny(imbalance=10.0, kernel_metrics=False), digits) == 13
    with pytest.raises(ConfigError, match=r"imbalance=200.0 leaves the minority classes"):
        check_fit(TrainConfig.tiny(imbalance=200.0), digits)
    with pytest.raises(ConfigError, match=r"batch_size must be a positive multiple"):  # balanced: unchanged
        check_fit(TrainConfig.tiny(batch_size=45), digits)


def test_the_imbalance_flag_comes_from_the_field():
    import argparse

    from ntklib.experiment import add_config_flags, config_from_flags

    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    (flag,) = [action for action in parser._actions if "--imbalance" in action.option_strings]
    assert flag.type is float and flag.help.startswith("step imbalance") and flag.help.endswith("(default: 1.0)")
    assert config_from_flags(parser.parse_args(["--tiny", "--imbalance", "4"])) == TrainConfig.tiny(imbalance=4.0)
    assert config_from_flags(parser.parse_args(["--tiny"])).imbalance == 1.0
