"""The Ray engine of sweeps (``sweep --engine ray``) on a real local Ray cluster of 2 CPUs.

One cluster serves the whole module (started once: a Ray start costs seconds). Its workers run JAX
with the test process's settings (float64 enabled, rank promotion an error), so that the Ray
engine's runs can be compared value for value with the local engine's runs of this process: the
tolerance of the resume tests (tests/test_train.py, tests/test_run_integrity.py), equality with
the timing fields left out. The worker of a run is found by the pid its run directory's lock file
holds, and killed with SIGKILL. A run raises through a fault injected into the workers at their
start (Ray's worker setup hook), for one learning rate only.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import pytest

ray = pytest.importorskip("ray")

from ntklib import compilation, experiment, rundir  # noqa: E402
from ntklib.measure import timing_columns  # noqa: E402
from ntklib.sweep import run_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIMING = timing_columns()
BASE = ["--tiny", "--no-kernel-metrics", "--no-progress", "--epochs", "24", "--eval-every", "4"]
"""The tiny digits MLP: 24 epochs, a record every 4 — a few seconds a run."""
GRID = ["--lrs", "0.05", "0.2", "--inits", "flax", "torch"]
"""Four runs: 2 inits × 2 learning rates."""
RUNS = [(init, lr) for init in ("flax", "torch") for lr in (0.05, 0.2)]
KILL_GRID = ["--lrs", "0.05", "0.2", "--inits", "flax"]
"""Two of the four runs, for the kill tests."""
FAILING_LR = 0.0123
"""The learning rate whose runs raise in the workers (:func:`inject_fault`)."""


def inject_fault():
    """Worker setup hook: training a run of :data:`FAILING_LR` raises."""
    from ntklib import train

    original = train._train

    def failing(config, *args, **kwargs):
        if config.lr == FAILING_LR:
            raise RuntimeError("injected fault")
        return original(config, *args, **kwargs)

    train._train = failing


def jax_env():
    """This process's JAX settings as environment variables of a child process."""
    return {
        "JAX_ENABLE_X64": str(jax.config.jax_enable_x64),
        "JAX_NUMPY_RANK_PROMOTION": jax.config.jax_numpy_rank_promotion,
    }


@pytest.fixture(scope="module", autouse=True)
def cluster(compile_cache):
    """One local Ray cluster (2 CPUs) for the module; shut down at its end.

    The module's sweeps use the session's persistent compilation cache (``$NTKLIB_COMPILE_CACHE``,
    which the command line passes on to the Ray tasks): a worker that Ray starts again after a
    kill loads the programs its predecessors compiled instead of compiling them again. At the end this
    process returns to its own cache setting."""
    before, env_before = jax.config.jax_compilation_cache_dir, os.environ.get(compilation.CACHE_ENV)
    os.environ[compilation.CACHE_ENV] = str(compile_cache)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the hook, by value: workers cannot import tests
    env_vars = {**jax_env(), "JAX_PLATFORMS": "cpu"}
    started = time.monotonic()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": env_vars, "worker_process_setup_hook": inject_fault},
    )
    yield
    ray.shutdown()
    if env_before is None:
        del os.environ[compilation.CACHE_ENV]
    else:
        os.environ[compilation.CACHE_ENV] = env_before
    compilation.use_persistent_cache(before)
    print(f"Ray module: {time.monotonic() - started:.1f} s")


def values(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def entries(stdout):
    """The JSON lines of a sweep (Ray's own messages about dead workers may come between them)."""
    return [json.loads(line) for line in stdout.strip().splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The four runs through the local engine (in this process)."""
    out = tmp_path_factory.mktemp("local") / "sweep"
    assert experiment.main(["sweep", *BASE, *GRID, "--out", str(out)]) == 0
    return out


def assert_same_runs(out, reference, runs=RUNS):
    for init, lr in runs:
        got, want = run_dir(out, init, lr), run_dir(reference, init, lr)
        assert rundir.read_status(got) == "finished"
        assert values(rundir.read_records(got)) == values(rundir.read_records(want)), (init, lr)


def test_ray_sweep_equals_the_local_sweep_and_skips_when_rerun(local, tmp_path, capsys):
    out = tmp_path / "ray"
    assert experiment.main(["sweep", *BASE, *GRID, "--engine", "ray", "--out", str(out)]) == 0
    first = entries(capsys.readouterr().out)
    assert [(e["init"], e["lr"], e["status"], e["skipped"]) for e in first] == [
        (init, lr, "finished", False) for init, lr in RUNS
    ]
    assert_same_runs(out, local)

    assert experiment.main(["sweep", *BASE, *GRID, "--engine", "ray", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert all(e["skipped"] and e["status"] == "finished" for e in entries(captured.out))
    assert "init" in captured.err.splitlines()[0] and len(captured.err.strip().splitlines()) == 5  # the table


def test_ray_workers_use_the_compilation_cache_of_the_command_line(tmp_path_factory, capsys):
    """``--compile-cache DIR`` reaches the workers: they write the programs they compile to DIR.

    The driver compiles nothing (checked), so the files are the workers'. The batch sizes are
    ones no other test uses, so the workers, which live for the module, compile them afresh."""
    cache = tmp_path_factory.mktemp("jax_cache")  # kept for the session: the workers hold on to it
    out = tmp_path_factory.mktemp("cached") / "ray"
    argv = ["sweep", *BASE, "--epochs", "1", "--batch-size", "30", "--eval-batch-size", "77"]
    argv += ["--lrs", "0.05", "--inits", "flax", "--engine", "ray", "--compile-cache", str(cache), "--out", str(out)]
    before = jax.config.jax_compilation_cache_dir
    try:
        with compilation.CompileLog() as driver:
            assert experiment.main(argv) == 0
    finally:
        compilation.use_persistent_cache(before)  # this process: back to its own setting
    assert entries(capsys.readouterr().out)[0]["status"] == "finished"
    assert driver.events == []
    assert len(list(cache.iterdir())) > 0


def kill_when_checkpointed(run, timeout=120.0):
    """SIGKILL the process that writes ``run`` once it has a checkpoint and is not finished; its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lock = run / rundir.LOCK_FILE
        if (run / rundir.CHECKPOINT_FILE).exists() and lock.exists() and rundir.read_status(run) == "running":
            pid = int(lock.read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.002)
    raise AssertionError(f"{run} never reached a checkpoint")


def sweep_in_thread(argv, codes):
    thread = threading.Thread(target=lambda: codes.append(experiment.main([str(a) for a in argv])))
    thread.start()
    return thread


@pytest.mark.parametrize("retries", [3, 0])
def test_a_killed_worker_resumes_from_its_checkpoint(local, tmp_path, capsys, retries):
    out, runs = tmp_path / "ray", RUNS[:2]
    victim = run_dir(out, "flax", 0.05)
    codes = []
    argv = ["sweep", *BASE, *KILL_GRID, "--engine", "ray", "--max-retries", retries, "--out", out]
    thread = sweep_in_thread(argv, codes)
    pid = kill_when_checkpointed(victim)
    thread.join(timeout=300)
    assert not thread.is_alive()
    got = {(e["init"], e["lr"]): e for e in entries(capsys.readouterr().out)}
    if retries:  # Ray ran the task again; it resumed in another process and finished
        assert codes == [0]
        assert int((victim / rundir.LOCK_FILE).read_text().split()[0]) != pid
        assert_same_runs(out, local, runs)
        return
    # no retries: the run is failed with the reason, the other finished; a rerun resumes it
    assert codes == [1]
    assert got[("flax", 0.05)]["status"] == "failed" and "retries" in got[("flax", 0.05)]["error"]
    assert got[("flax", 0.2)]["status"] == "finished"
    assert rundir.read_status(victim) == "running"  # resumable
    assert experiment.main([str(a) for a in ["sweep", *BASE, *KILL_GRID, "--engine", "ray", "--out", out]]) == 0
    assert_same_runs(out, local, runs)


def test_a_run_that_raises_is_failed_with_its_reason(tmp_path, capsys):
    out = tmp_path / "ray"
    argv = ["sweep", *BASE, "--lrs", 0.05, FAILING_LR, "--inits", "flax", "--engine", "ray", "--out", out]
    assert experiment.main([str(a) for a in argv]) == 1
    captured = capsys.readouterr()
    got = {e["lr"]: e for e in entries(captured.out)}
    assert got[0.05]["status"] == "finished"
    assert got[FAILING_LR]["status"] == "failed" and "injected fault" in got[FAILING_LR]["error"]
    status = rundir.read_json(run_dir(out, "flax", FAILING_LR) / rundir.STATUS_FILE)
    assert status["status"] == "failed" and "injected fault" in status["error"]
    assert "injected fault" in captured.err and "1 of 2 runs failed" in captured.err


@pytest.mark.parametrize(
    ("flags", "name"),
    [
        (["--gpus-per-run", "1.5"], "--gpus-per-run"),
        (["--gpus-per-run", "-1"], "--gpus-per-run"),
        (["--cpus-per-run", "0"], "--cpus-per-run"),
        (["--max-retries", "-1"], "--max-retries"),
    ],
)
def test_invalid_engine_flags_are_one_line(tmp_path, capsys, flags, name):
    code = experiment.main(["sweep", *BASE, *GRID, "--engine", "ray", *flags, "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and name in err
    assert not (tmp_path / "s").exists()


def test_ray_flags_need_the_ray_engine(tmp_path, capsys):
    code = experiment.main(["sweep", *BASE, *GRID, "--address", "auto", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "--address" in err and "--engine ray" in err


def test_the_local_engine_does_not_import_ray(tmp_path):
    code = (
        "import sys; from ntklib import experiment; "
        f"argv = ['sweep', *{BASE!r}, '--epochs', '1', '--lrs', '0.05', '--inits', 'flax', "
        f"'--out', {str(tmp_path)!r}]; "
        "assert experiment.main(argv) == 0; assert 'ray' not in sys.modules, 'ray imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), **jax_env()}  # JAX as here: programs from the shared cache
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
