"""Fault injection on run directories: every run knows its identity, every fault is caught, every
user error is one clear line (exit code 2).

One uninterrupted tiny run (the module fixture ``reference``) is the yardstick: a killed and
resumed run must reproduce its records value for value (timing fields aside), and the other cases
work on copies of its directory. Processes are started only where a process is the point (kill -9,
a second writer); everything else calls ``experiment.main`` in-process.
"""

import errno
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

from ntklib import compilation, experiment, rundir
from ntklib.measure import timing_columns
from ntklib.sweep import run_dir

ROOT = Path(__file__).resolve().parents[1]
TIMING = timing_columns()
BASE = ["--tiny", "--no-kernel-metrics", "--no-progress", "--epochs", "24", "--eval-every", "4"]
"""The tiny digits MLP (lr 0.05, init flax): 24 epochs, a record every 4 — a few seconds."""


def values(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def run_cli(argv, capsys):
    """``experiment.main(argv)`` in-process: (exit code, stdout, stderr)."""
    code = experiment.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code, err, *needles):
    """Exit code 2, one line on stderr naming every needle, and no traceback."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, compile_cache):
    """An uninterrupted, finished run of BASE: its directory and records. Its programs go to the
    session's persistent cache, from which the process of the kill -9 test loads them."""
    out = tmp_path_factory.mktemp("reference") / "run"
    before = jax.config.jax_compilation_cache_dir
    try:
        assert experiment.main([*BASE, "--compile-cache", str(compile_cache), "--out", str(out)]) == 0
    finally:
        compilation.use_persistent_cache(before)
    return out, rundir.read_records(out)


def child_env(**extra):
    """A child process's environment: JAX as in this process (float64 on, rank promotion an
    error), so that it compiles the same programs and finds them in the shared cache."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "JAX_ENABLE_X64": str(jax.config.jax_enable_x64),
        "JAX_NUMPY_RANK_PROMOTION": jax.config.jax_numpy_rank_promotion,
        **extra,
    }


@pytest.fixture
def copy(reference, tmp_path):
    """A fresh copy of the reference run directory."""
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    return out


def snapshot(directory):
    return {p.name: p.read_bytes() for p in Path(directory).iterdir() if p.name != rundir.LOCK_FILE}


# --- kill -9 -------------------------------------------------------------------------------------


def test_kill_9_at_a_random_point_then_rerun_gives_the_same_metrics(reference, tmp_path, capsys, compile_cache):
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "ntklib.experiment", *BASE, "--compile-cache", str(compile_cache), "--out", str(out)]
    env = child_env()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rng = random.Random()
    records_seen, pause = rng.randint(1, len(reference[1]) - 1), rng.uniform(0.0, 0.05)  # a random point
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        path = out / rundir.METRICS_FILE
        if path.exists() and path.read_text().count("\n") >= records_seen:
            break
        time.sleep(0.005)
    time.sleep(pause)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = rundir.read_records(out)
    with capsys.disabled():  # shown with pytest -s
        print(f"killed after {records_seen} records + {pause:.3f} s, at epoch {done[-1]['epoch']}")
    assert process.returncode == -signal.SIGKILL or rundir.read_status(out) == "finished", process.stderr

    code, stdout, _ = run_cli([*BASE, "--out", out], capsys)
    assert code == 0 and json.loads(stdout)["status"] == "finished"
    assert values(rundir.read_records(out)) == values(reference[1])


# --- 1. a sweep compares configs before it skips ---------------------------------------------------


@pytest.mark.parametrize("earlier", ["finished", "running"])
def test_resweep_with_other_epochs_is_refused_and_leaves_the_runs_alone(copy, tmp_path, capsys, earlier):
    root = tmp_path / "sweep"
    target = run_dir(root, "flax", 0.05)
    shutil.copytree(copy, target)
    if earlier == "running":  # an unfinished run of the old config: its status must survive
        rundir.write_status(target, "running", epoch=8)
    before = snapshot(target)
    code, stdout, err = run_cli(
        ["sweep", *BASE, "--epochs", "8", "--lrs", "0.05", "--inits", "flax", "--out", root], capsys
    )
    assert code == 1
    (entry,) = [json.loads(line) for line in stdout.splitlines()]
    assert entry["status"] == "refused" and not entry["skipped"] and "epochs: 24 → 8" in entry["error"]
    assert "refused" in err and "status" in err.splitlines()[0]  # the summary table
    assert snapshot(target) == before


def test_learning_rates_equal_to_five_digits_are_two_runs(tmp_path, capsys):
    root = tmp_path / "sweep"
    argv = ["sweep", *BASE, "--epochs", "2", "--lrs", "0.1", "0.100001", "--inits", "flax", "--out", root]
    code, stdout, _ = run_cli(argv, capsys)
    entries = [json.loads(line) for line in stdout.splitlines()]
    assert code == 0 and [(e["status"], e["skipped"]) for e in entries] == [("finished", False)] * 2
    configs = [rundir.read_json(Path(e["out_dir"]) / rundir.CONFIG_FILE)["config"]["lr"] for e in entries]
    assert configs == [0.1, 0.100001]


# --- 2. the checkpoint has an identity and a checksum ----------------------------------------------


def test_deleted_config_and_another_lr_is_refused_by_the_checkpoint(copy, capsys):
    (copy / rundir.CONFIG_FILE).unlink()
    rundir.write_status(copy, "running", epoch=12)
    code, _, err = run_cli([*BASE, "--lr", "0.5", "--out", copy], capsys)
    assert_user_error(code, err, str(copy), "checkpoint", "lr: 0.05 → 0.5")
    assert not (copy / rundir.CONFIG_FILE).exists()  # refused before writing anything


@pytest.mark.parametrize("where", [0.25, 0.75])
def test_a_corrupted_checkpoint_byte_is_refused(copy, capsys, where):
    path = copy / rundir.CHECKPOINT_FILE
    data = bytearray(path.read_bytes())
    data[int(where * len(data))] ^= 0xFF
    path.write_bytes(bytes(data))
    code, _, err = run_cli([*BASE, "--out", copy], capsys)
    assert_user_error(code, err, str(path))
    assert "checksum" in err or "decoded" in err or "checkpoint" in err


def test_epoch_mode_is_not_part_of_the_identity(copy, capsys):
    mode = "scan" if rundir.read_json(copy / rundir.CONFIG_FILE)["config"]["epoch_mode"] != "scan" else "loop"
    code, stdout, _ = run_cli([*BASE, "--epoch-mode", mode, "--out", copy], capsys)
    assert code == 0 and json.loads(stdout)["status"] == "finished"


# --- records must cover every evaluation epoch -----------------------------------------------------


@pytest.mark.parametrize("status", ["finished", "running"])
def test_deleted_metrics_is_refused(copy, capsys, status):
    rundir.write_status(copy, status, epoch=24)
    (copy / rundir.METRICS_FILE).unlink()
    code, _, err = run_cli([*BASE, "--out", copy], capsys)
    assert_user_error(code, err, str(copy), "misses the records of epochs 0, 4, 8")


def test_truncated_metrics_names_path_and_line(copy, capsys):
    path = copy / rundir.METRICS_FILE
    text = path.read_text()
    path.write_text(text[: len(text) - 40])
    line = text.count("\n")  # the last line lost its end
    with pytest.raises(rundir.RunFileError, match=f"{path}:{line}: invalid JSON"):
        rundir.read_records(copy)
    code, _, err = run_cli([*BASE, "--out", copy], capsys)
    assert_user_error(code, err, f"{path}:{line}")


# --- 3. one bad file does not stop a sweep or a plot -----------------------------------------------


def test_invalid_status_inside_a_sweep_and_a_plot(tmp_path, capsys):
    root = tmp_path / "sweep"
    argv = ["sweep", *BASE, "--epochs", "2", "--lrs", "0.05", "0.07", "--inits", "flax", "--out", root]
    assert run_cli(argv, capsys)[0] == 0
    bad = run_dir(root, "flax", 0.07) / rundir.STATUS_FILE
    bad.write_text('{"status": "fini')
    code, stdout, err = run_cli(argv, capsys)
    entries = {e["lr"]: e for e in map(json.loads, stdout.splitlines())}
    assert code == 1 and entries[0.05]["skipped"] and entries[0.05]["status"] == "finished"
    assert entries[0.07]["status"] == "refused" and f"{bad}:1" in entries[0.07]["error"]
    assert bad.read_text() == '{"status": "fini'

    code, stdout, err = run_cli(["plot", root, "--out", tmp_path / "figure"], capsys)
    assert code == 0 and stdout.strip() == str(tmp_path / "figure.png")  # the path written, with its extension
    assert (tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"
    assert f"skipped unreadable run {bad.parent}" in err
    assert not list(tmp_path.glob(".figure*"))  # written atomically: no temporary left


def test_plot_of_a_missing_path_says_so(tmp_path, capsys):
    code, _, err = run_cli(["plot", tmp_path / "nowhere", "--out", tmp_path / "f.png"], capsys)
    assert_user_error(code, err, "no such path")


# --- 4. validate, then write -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, value, name",
    [
        ("--lr", "0", "lr"),
        ("--lr", "-0.1", "lr"),
        ("--lr", "nan", "lr"),
        ("--lr", "inf", "lr"),
        ("--eval-batch-size", "0", "eval_batch_size"),
        ("--seed", "-1", "seed"),
        ("--image-size", "0", "image_size"),
        ("--ntk-per-class", "0", "ntk_per_class"),
        ("--momentum", "nan", "momentum"),
        ("--weight-decay", "inf", "weight_decay"),
        ("--epochs", "0", "epochs"),
        ("--batch-size", "45", "batch_size"),  # not a multiple of the 10 classes: needs the dataset
        ("--batch-size", "2000", "batch_size"),  # more samples per class than the digits have
        ("--ntk-per-class", "9", "ntk_per_class"),  # more than the 4 per class of a batch of 40
    ],
)
def test_invalid_flag_values_are_one_line_and_write_nothing(tmp_path, capsys, flag, value, name):
    out = tmp_path / "run"
    argv = ["--tiny", "--no-progress", flag, value, "--out", out]
    if name == "ntk_per_class":
        argv.insert(1, "--kernel-metrics")
    code, _, err = run_cli(argv, capsys)
    assert_user_error(code, err, name)
    assert not out.exists()


def test_a_failed_attempt_does_not_block_the_corrected_command(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli([*BASE, "--batch-size", "45", "--out", out], capsys)[0] == 2
    code, stdout, _ = run_cli([*BASE, "--epochs", "1", "--out", out], capsys)
    assert code == 0 and json.loads(stdout)["status"] == "finished"


# --- 5. errors a user can act on -------------------------------------------------------------------


def test_unprepared_tfds_dataset_prints_the_commands(tmp_path, capsys):
    pytest.importorskip("tensorflow_datasets")
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("with TensorFlow, tfds would prepare (download) the dataset itself")
    empty, out = tmp_path / "tfds", tmp_path / "run"
    empty.mkdir()
    code, _, err = run_cli(["--dataset", "mnist", "--data-dir", empty, "--no-progress", "--out", out], capsys)
    assert_user_error(code, err, "'mnist' is not prepared", 'pip install -e ".[prepare]"', "tfds build mnist")
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("kind", ["empty", "file"])
def test_out_must_be_a_directory(tmp_path, capsys, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    out = "" if kind == "empty" else tmp_path / "a_file"
    if kind == "file":
        out.write_text("keep me")
    for command in ([], ["sweep", "--lrs", "0.05"]):
        code, _, err = run_cli([*command, *BASE, "--out", out], capsys)
        assert_user_error(code, err, "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if kind == "empty" else ["a_file"])


def test_a_run_that_raises_records_failed_with_the_reason(tmp_path, capsys, monkeypatch):
    from ntklib import measure

    def broken(*args, **kwargs):
        raise RuntimeError("injected fault")

    monkeypatch.setattr(measure, "measure_batch", broken)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="injected fault"):  # unexpected: keeps its traceback
        experiment.main([*BASE, "--out", str(out)])
    status = rundir.read_json(out / rundir.STATUS_FILE)
    assert status["status"] == "failed" and "injected fault" in status["error"]


def test_a_sweep_with_a_failed_run_exits_non_zero(tmp_path, capsys, monkeypatch):
    from ntklib import measure

    monkeypatch.setattr(measure, "measure_batch", lambda *a, **k: 1 / 0)
    argv = ["sweep", *BASE, "--lrs", "0.05", "--inits", "flax", "--out", tmp_path / "sweep"]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 1 and json.loads(stdout)["status"] == "failed" and "ZeroDivisionError" in err


# --- one writer per run ----------------------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from ntklib.rundir import RunDir
with RunDir(sys.argv[1]).lock():
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_is_refused(copy, capsys):
    rundir.write_status(copy, "running", epoch=12)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(copy)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(copy)
        code, _, err = run_cli([*BASE, "--out", copy], capsys)
        assert_user_error(code, err, str(copy), f"another process (pid {holder.pid})")
        assert snapshot(copy) == before
    finally:
        holder.kill()
        holder.wait()
    code, stdout, _ = run_cli([*BASE, "--out", copy], capsys)  # the lock died with its process
    assert code == 0 and json.loads(stdout)["status"] == "finished"


# --- files ---------------------------------------------------------------------------------------


def test_a_full_disk_midway_leaves_the_previous_files_and_the_run_resumes(reference, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert run_cli([*BASE, "--max-epochs-this-call", "8", "--out", out], capsys)[0] == 0
    before = snapshot(out)
    fsync, calls = os.fsync, []

    def full_disk(fd):
        calls.append(fd)
        if len(calls) >= 3:  # the resumed run's records, its epoch-12 records, then its checkpoint
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        experiment.main([*BASE, "--out", str(out)])
    monkeypatch.setattr(os, "fsync", fsync)
    after = snapshot(out)
    for name in (rundir.CHECKPOINT_FILE, rundir.STATUS_FILE, rundir.CONFIG_FILE):
        assert after[name] == before[name], name
    assert not list(out.glob(".*.tmp"))
    code, stdout, _ = run_cli([*BASE, "--out", out], capsys)
    assert code == 0 and json.loads(stdout)["status"] == "finished"
    assert values(rundir.read_records(out)) == values(reference[1])


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        rundir.write_atomic(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode


def test_reference_run_files_are_readable_by_the_group(reference):
    if os.umask(os.umask(0o022)) & 0o044:
        pytest.skip("this process's umask hides files from group and others")
    for path in reference[0].iterdir():
        assert path.stat().st_mode & 0o044 == 0o044, path.name
