"""Tests of ntklib.book: the scale (NTK_BOOK_SCALE), the smoke size (NTK_BOOK_SMOKE), the seed
(NTK_BOOK_SEED), a chapter's sizes at its scale (sizes_at, Book.pick), setup's side effects and marker
line, figsize and results_path."""

from pathlib import Path

import matplotlib as mpl
import numpy as np
import pytest

from ntklib.book import (
    BOOK_STYLE,
    BOOK_WIDTH_IN,
    SCALE_VAR,
    SCALES,
    SEED_VAR,
    SMOKE_VAR,
    Book,
    env_flag,
    figsize,
    read_scale,
    read_seed,
    read_smoke,
    results_path,
    setup,
    sizes_at,
)

CONFIGS = {"default": {"epochs": 6, "m": 3}, "paper": {"epochs": 60, "m": 12}}


@pytest.fixture
def env(monkeypatch):
    """Set (or, with None, unset) NTK_BOOK_SCALE, NTK_BOOK_SMOKE and NTK_BOOK_SEED."""

    def set_env(scale=None, smoke=None, seed=None):
        for name, value in ((SCALE_VAR, scale), (SMOKE_VAR, smoke), (SEED_VAR, seed)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)

    return set_env


@pytest.fixture
def isolated():
    """Leave numpy's print options and matplotlib's rcParams as they were (setup changes both)."""
    with np.printoptions(), mpl.rc_context():
        yield


# --- NTK_BOOK_SCALE ------------------------------------------------------------------------------


def test_constants():
    assert (SCALE_VAR, SMOKE_VAR, SEED_VAR) == ("NTK_BOOK_SCALE", "NTK_BOOK_SMOKE", "NTK_BOOK_SEED")
    assert SCALES == ("default", "paper")


def test_default_without_env(env):
    env()
    assert read_scale() == "default"


@pytest.mark.parametrize("value", SCALES)
def test_env_selects_scale(env, value):
    env(scale=value)
    assert read_scale() == value


@pytest.mark.parametrize("bad", ["Paper", "full", " default", ""])
def test_invalid_scale_names_the_variable(env, bad):
    env(scale=bad)
    with pytest.raises(ValueError, match=r"^NTK_BOOK_SCALE must be one of \('default', 'paper'\), got"):
        read_scale()


# --- NTK_BOOK_SMOKE ------------------------------------------------------------------------------


@pytest.mark.parametrize(("scale", "smoke"), [(None, None), ("paper", None), ("paper", "0"), ("default", "0")])
def test_smoke_off(env, scale, smoke):
    env(scale=scale, smoke=smoke)
    assert read_smoke(read_scale()) is False


def test_smoke_on_with_paper(env):
    env(scale="paper", smoke="1")
    assert read_smoke("paper") is True


@pytest.mark.parametrize("scale", [None, "default"])
def test_smoke_without_paper_names_both_variables(env, scale):
    env(scale=scale, smoke="1")
    with pytest.raises(ValueError, match=r"NTK_BOOK_SMOKE=1 .* needs NTK_BOOK_SCALE=paper.*'default'"):
        read_smoke(read_scale())


def test_smoke_at_an_explicit_default_scale_is_refused(env):
    env(scale="paper", smoke="1")  # the environment says paper, the argument says default: it decides
    with pytest.raises(ValueError, match="NTK_BOOK_SMOKE"):
        read_smoke("default")


@pytest.mark.parametrize("bad", ["yes", "true", "2", " 1", ""])
def test_smoke_invalid_value_names_the_variable(env, bad):
    env(scale="paper", smoke=bad)
    with pytest.raises(ValueError, match=r"^NTK_BOOK_SMOKE must be one of \('0', '1'\)"):
        read_smoke("paper")


# --- NTK_BOOK_SEED -------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(None, 0), ("0", 0), ("4", 4), ("2026", 2026), ("007", 7)])
def test_seed(env, value, expected):
    env(seed=value)
    assert read_seed() == expected


@pytest.mark.parametrize("bad", ["-1", "1.5", " 3", "3 ", "+3", "1_000", "seven", "", "1e3"])
def test_invalid_seed_names_the_variable(env, bad):
    env(seed=bad)
    with pytest.raises(ValueError, match=r"^NTK_BOOK_SEED must be an integer >= 0, got"):
        read_seed()


# --- sizes_at and Book.pick ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scale", "smoke_on", "expected"),
    [
        ("default", False, {"epochs": 6, "m": 3}),
        ("paper", False, {"epochs": 60, "m": 12}),
        ("paper", True, {"epochs": 1, "m": 12}),  # only the declared override changes
    ],
)
def test_sizes_at_picks_scale_and_applies_smoke(scale, smoke_on, expected):
    assert sizes_at(CONFIGS, scale, smoke={"epochs": 1}, smoke_on=smoke_on) == expected


def test_sizes_at_returns_a_copy():
    sizes = sizes_at(CONFIGS, "paper", smoke={"m": 2}, smoke_on=True)
    sizes["epochs"] = -1
    assert CONFIGS == {"default": {"epochs": 6, "m": 3}, "paper": {"epochs": 60, "m": 12}}


def test_sizes_at_without_smoke_overrides():
    # a chapter whose paper branch is already small declares no overrides
    assert sizes_at(CONFIGS, "paper", smoke_on=True) == CONFIGS["paper"]


def test_sizes_at_smoke_at_default_scale_is_refused():
    with pytest.raises(ValueError, match="NTK_BOOK_SMOKE"):
        sizes_at(CONFIGS, "default", smoke={"epochs": 1}, smoke_on=True)


@pytest.mark.parametrize("bad", ["huge", "PAPER"])
def test_sizes_at_invalid_scale_names_scale(bad):
    with pytest.raises(ValueError, match=r"^scale must be one of") as info:
        sizes_at(CONFIGS, bad)
    assert "NTK_BOOK_SCALE" not in str(info.value)


@pytest.mark.parametrize("configs", [{"paper": {"epochs": 1}}, {**CONFIGS, "huge": {}}, {}])
def test_sizes_at_needs_every_scale(configs):
    with pytest.raises(ValueError, match=r"^configs must have exactly the keys \('default', 'paper'\)"):
        sizes_at(configs, "default")


@pytest.mark.parametrize("smoke_on", [False, True])
def test_sizes_at_smoke_keys_must_exist_in_paper_sizes(smoke_on):
    # checked whether or not the smoke size is on: a typo fails at every scale
    with pytest.raises(ValueError, match=r"^smoke overrides keys that the paper config lacks: \['epoch'\]"):
        sizes_at(CONFIGS, "paper", smoke={"epoch": 1}, smoke_on=smoke_on)


def test_book_pick_uses_its_scale_and_smoke():
    smoke = {"epochs": 1}
    assert Book("paper", True, 0).pick(CONFIGS, smoke=smoke) == {"epochs": 1, "m": 12}
    assert Book("paper", False, 0).pick(CONFIGS, smoke=smoke) == CONFIGS["paper"]
    assert Book("default", False, 0).pick(CONFIGS, smoke=smoke) == CONFIGS["default"]


# --- setup ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scale", "smoke", "seed", "label", "sizes"),
    [
        (None, None, None, "default", {"epochs": 6, "m": 3}),
        ("default", "0", "2", "default", {"epochs": 6, "m": 3}),
        ("paper", None, "4", "paper", {"epochs": 60, "m": 12}),
        ("paper", "1", "0", "paper (smoke size)", {"epochs": 1, "m": 12}),
    ],
)
def test_setup_reads_the_environment(env, isolated, capsys, scale, smoke, seed, label, sizes):
    env(scale=scale, smoke=smoke, seed=seed)
    result = setup(CONFIGS, smoke={"epochs": 1})
    assert result == Book(scale or "default", smoke == "1", int(seed or 0), sizes)
    assert result.label == label
    expected = f"scale={label}, seed={int(seed or 0)}: " + ", ".join(f"{k}={v}" for k, v in sizes.items())
    assert capsys.readouterr().out == expected + "\n"  # one marker line


def test_setup_without_sizes(env, isolated, capsys):
    env(scale="paper", smoke="1", seed="3")
    result = setup()
    assert result.sizes == {} and result.smoke
    assert capsys.readouterr().out == "scale=paper (smoke size), seed=3\n"


def test_setup_smoke_without_sizes_is_refused(env, isolated):
    env()
    with pytest.raises(ValueError, match="^smoke overrides sizes, but setup got no sizes"):
        setup(smoke={"epochs": 1})


@pytest.mark.parametrize(
    ("scale", "smoke", "seed", "variable"),
    [("Paper", None, None, "NTK_BOOK_SCALE"), (None, "1", None, "NTK_BOOK_SMOKE"), (None, None, "-2", "NTK_BOOK_SEED")],
)
def test_setup_invalid_environment_names_the_variable(env, isolated, capsys, scale, smoke, seed, variable):
    env(scale=scale, smoke=smoke, seed=seed)
    with pytest.raises(ValueError, match=f"^{variable}"):
        setup(CONFIGS)
    assert capsys.readouterr().out == ""  # nothing printed, nothing chosen


def test_setup_applies_style_and_print_options(env, isolated):
    env()
    setup()
    assert all(mpl.rcParams[key] == value for key, value in BOOK_STYLE.items() if key != "figure.figsize")
    assert tuple(mpl.rcParams["figure.figsize"]) == BOOK_STYLE["figure.figsize"]
    assert str(np.get_printoptions()["legacy"]) == "1.25"
    assert repr(np.float64(2.5)) == "2.5"


def test_setup_x64(env, isolated):
    import jax

    env()
    before = jax.config.jax_enable_x64
    try:
        setup(x64=False)
        assert jax.config.jax_enable_x64 == before  # x64=False leaves jax alone
        setup(x64=True)
        assert jax.config.jax_enable_x64
    finally:
        jax.config.update("jax_enable_x64", before)


def test_marker_formats_sizes():
    sizes = {"K": 10, "tol": 1e-1, "t": 1e3, "lrs": (0.00316227766, 0.68), "root": None, "name": "mlp"}
    marker = Book("paper", False, 1, sizes).marker()
    assert marker == "scale=paper, seed=1: K=10, tol=0.1, t=1000, lrs=(0.003162, 0.68), root=None, name=mlp"


# --- env_flag, figsize, results_path -------------------------------------------------------------


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


def test_figsize():
    assert figsize(3.2) == (BOOK_WIDTH_IN, 3.2) == (7.2, 3.2)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_figsize_needs_a_positive_height(bad):
    with pytest.raises(ValueError, match="^height must be positive"):
        figsize(bad)


@pytest.mark.parametrize("where", ["root", "book"])
def test_results_path_from_book_or_root(tmp_path, monkeypatch, where):
    (tmp_path / "results" / "sweep").mkdir(parents=True)
    (tmp_path / "book").mkdir()
    monkeypatch.chdir(tmp_path if where == "root" else tmp_path / "book")
    path = results_path("sweep")
    assert path.is_dir() and path.resolve() == (tmp_path / "results" / "sweep").resolve()
    assert not path.is_absolute()  # as relative as the chapter prints it


def test_results_path_missing_names_the_results_directories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        FileNotFoundError, match=r"^no committed results 'sweep': neither \.\./results/sweep nor results"
    ):
        results_path("sweep")


def test_results_path_finds_the_committed_sweep(monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1] / "book")
    assert results_path("cpu_mlp_digits_e400") == Path("..", "results", "cpu_mlp_digits_e400")
