"""Tests of ntklib.scale: book_scale (the explicit argument, NTK_BOOK_SCALE, the default), book_smoke
(NTK_BOOK_SMOKE) and book_config (a chapter's sizes at its scale, with its smoke overrides)."""

import pytest

from ntklib.scale import ENV_VAR, SCALES, SMOKE_ENV_VAR, book_config, book_scale, book_smoke, env_flag


def test_constants():
    assert ENV_VAR == "NTK_BOOK_SCALE"
    assert SCALES == ("default", "paper")


def test_default_without_env(monkeypatch):
    monkeypatch.delenv("NTK_BOOK_SCALE", raising=False)
    assert book_scale() == "default"


@pytest.mark.parametrize("value", SCALES)
def test_env_selects_scale(monkeypatch, value):
    monkeypatch.setenv("NTK_BOOK_SCALE", value)
    assert book_scale() == value


@pytest.mark.parametrize("env", [None, "paper", "default"])
@pytest.mark.parametrize("value", SCALES)
def test_argument_overrides_env(monkeypatch, env, value):
    if env is None:
        monkeypatch.delenv("NTK_BOOK_SCALE", raising=False)
    else:
        monkeypatch.setenv("NTK_BOOK_SCALE", env)
    assert book_scale(value) == value


@pytest.mark.parametrize("bad", ["Paper", "full", " default"])
def test_invalid_env_names_the_variable(monkeypatch, bad):
    monkeypatch.setenv("NTK_BOOK_SCALE", bad)
    with pytest.raises(ValueError, match="NTK_BOOK_SCALE"):
        book_scale()


@pytest.mark.parametrize("bad", ["huge", "PAPER"])
def test_invalid_argument_names_scale(monkeypatch, bad):
    monkeypatch.setenv("NTK_BOOK_SCALE", "paper")  # valid env, invalid argument: the argument is blamed
    with pytest.raises(ValueError, match=r"^scale must be one of") as info:
        book_scale(bad)
    assert "NTK_BOOK_SCALE" not in str(info.value)


# --- NTK_BOOK_SMOKE and book_config ------------------------------------------------------------

CONFIGS = {"default": {"epochs": 6, "m": 3}, "paper": {"epochs": 60, "m": 12}}


@pytest.fixture
def env(monkeypatch):
    """Set (or, with None, unset) NTK_BOOK_SCALE and NTK_BOOK_SMOKE."""

    def set_env(scale, smoke):
        for name, value in (("NTK_BOOK_SCALE", scale), ("NTK_BOOK_SMOKE", smoke)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)

    return set_env


def test_smoke_constants():
    assert SMOKE_ENV_VAR == "NTK_BOOK_SMOKE"


@pytest.mark.parametrize(("scale", "smoke"), [(None, None), ("paper", None), ("paper", "0"), ("default", "0")])
def test_smoke_off(env, scale, smoke):
    env(scale, smoke)
    assert book_smoke() is False


def test_smoke_on_with_paper(env):
    env("paper", "1")
    assert book_smoke() is True
    assert book_smoke("paper") is True


@pytest.mark.parametrize("scale", [None, "default"])
def test_smoke_without_paper_names_both_variables(env, scale):
    env(scale, "1")
    with pytest.raises(ValueError, match=r"NTK_BOOK_SMOKE=1 .* needs NTK_BOOK_SCALE=paper.*'default'"):
        book_smoke()


def test_smoke_with_explicit_default_scale_is_refused(env):
    env("paper", "1")  # the environment says paper, the argument says default: the argument decides
    with pytest.raises(ValueError, match="NTK_BOOK_SMOKE"):
        book_smoke("default")


@pytest.mark.parametrize("bad", ["yes", "true", "2", " 1", ""])
def test_smoke_invalid_value_names_the_variable(env, bad):
    env("paper", bad)
    with pytest.raises(ValueError, match=r"^NTK_BOOK_SMOKE must be one of \('0', '1'\)"):
        book_smoke()


@pytest.mark.parametrize(
    ("scale", "smoke", "expected"),
    [
        (None, None, {"epochs": 6, "m": 3}),
        ("default", "0", {"epochs": 6, "m": 3}),
        ("paper", None, {"epochs": 60, "m": 12}),
        ("paper", "0", {"epochs": 60, "m": 12}),
        ("paper", "1", {"epochs": 1, "m": 12}),  # only the declared override changes
    ],
)
def test_book_config_picks_scale_and_applies_smoke(env, scale, smoke, expected):
    env(scale, smoke)
    assert book_config(CONFIGS, smoke={"epochs": 1}) == expected


def test_book_config_returns_a_copy(env):
    env("paper", "1")
    config = book_config(CONFIGS, smoke={"m": 2})
    config["epochs"] = -1
    assert CONFIGS == {"default": {"epochs": 6, "m": 3}, "paper": {"epochs": 60, "m": 12}}


def test_book_config_without_smoke_overrides(env):
    env("paper", "1")  # a chapter whose paper branch is already small declares no overrides
    assert book_config(CONFIGS) == CONFIGS["paper"]


def test_book_config_explicit_scale(env):
    env("paper", None)
    assert book_config(CONFIGS, smoke={"epochs": 1}, scale="default") == CONFIGS["default"]


def test_book_config_smoke_at_default_scale_is_refused(env):
    env("default", "1")
    with pytest.raises(ValueError, match="NTK_BOOK_SMOKE"):
        book_config(CONFIGS, smoke={"epochs": 1})


@pytest.mark.parametrize("configs", [{"paper": {"epochs": 1}}, {**CONFIGS, "huge": {}}, {}])
def test_book_config_needs_every_scale(env, configs):
    env(None, None)
    with pytest.raises(ValueError, match=r"^configs must have exactly the keys \('default', 'paper'\)"):
        book_config(configs)


def test_book_config_smoke_keys_must_exist_in_paper_config(env):
    env("paper", "0")  # checked whether or not the smoke size is on: a typo fails at every scale
    with pytest.raises(ValueError, match=r"^smoke overrides keys that the paper config lacks: \['epoch'\]"):
        book_config(CONFIGS, smoke={"epoch": 1})


def test_book_config_bad_scale_names_the_variable(env):
    env("Paper", None)
    with pytest.raises(ValueError, match="NTK_BOOK_SCALE"):
        book_config(CONFIGS)


@pytest.mark.parametrize(("value", "expected"), [(None, False), ("0", False), ("1", True)])
def test_env_flag(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("NTK_BOOK_RUN_SWEEP", raising=False)
    else:
        monkeypatch.setenv("NTK_BOOK_RUN_SWEEP", value)
    assert env_flag("NTK_BOOK_RUN_SWEEP") is expected


@pytest.mark.parametrize("bad", ["yes", "on", "01", ""])
def test_env_flag_invalid_value_names_the_variable(monkeypatch, bad):
    monkeypatch.setenv("NTK_BOOK_RUN_SWEEP", bad)
    with pytest.raises(ValueError, match=r"^NTK_BOOK_RUN_SWEEP must be one of \('0', '1'\), got"):
        env_flag("NTK_BOOK_RUN_SWEEP")
