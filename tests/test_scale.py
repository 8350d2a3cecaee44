"""Tests of ntklib.scale.book_scale: the explicit argument, the NTK_BOOK_SCALE variable, the default."""

import pytest

from ntklib.scale import ENV_VAR, SCALES, book_scale


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
