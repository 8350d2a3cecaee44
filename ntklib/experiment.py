"""The command line of the paper's experiments: one run, a learning-rate × init sweep, or Figure 2.

Subcommands ``run`` (the default), ``sweep`` and ``plot``; the work is done by :mod:`ntklib.train`,
:mod:`ntklib.sweep` and :mod:`ntklib.plots`. The flags of ``run`` and ``sweep`` are the fields of
:class:`ntklib.config.TrainConfig` (``batch_size`` → ``--batch-size``), with the help of each
field's metadata.

One run (the flags of the paper's scripts; ``run`` may be left out)::

    python -m ntklib.experiment --arch resnet20 --dataset mnist --init flax --lr 0.01 \\
        --epochs 400 --out runs/resnet20_mnist/flax/lr_0.01

A sweep over learning rates and inits (skips finished runs, continues past diverged ones)::

    python -m ntklib.experiment sweep --arch resnet20 --dataset mnist --epochs 400 \\
        --num-lrs 30 --lr-min 1e-4 --lr-max 1.778 --inits flax torch normal_fan_out --out runs/resnet20_mnist

The same sweep as Ray tasks, four runs to a GPU, on the cluster that ``ray start`` began::

    python -m ntklib.experiment sweep ... --engine ray --address auto --gpus-per-run 0.25

The paper's Figure 2 (a–h) and Appendix C's panes i–j of a results directory, in one PNG::

    python -m ntklib.experiment plot runs/resnet20_mnist --out figures/resnet20_mnist.png

``--tiny`` starts from :meth:`ntklib.config.TrainConfig.tiny` (seconds on a CPU) instead of the
paper's protocol; every other flag overrides the chosen base.

``run`` and ``sweep`` keep JAX's persistent compilation cache (:mod:`ntklib.compilation`), so a
second process loads the programs the first compiled: in ``--compile-cache DIR``, else in
``$NTKLIB_COMPILE_CACHE`` (``off`` switches it off), else in ``$XDG_CACHE_HOME/ntklib/jax``
(``~/.cache/ntklib/jax``). ``--no-compile-cache`` neither reads nor writes it. With
``--engine ray`` every worker process uses the same directory.

Exit codes: 0 done (a sweep whose runs all finished or diverged); 1 a sweep with a failed or
refused run (a summary table goes to stderr), or an unexpected error (with its traceback); 2 a
user error — an invalid flag value, a config that does not fit the dataset, an unprepared dataset,
a run directory of another config, corrupt, incomplete or locked by another process, a bad
``--out`` — printed as one line on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from ntklib import compilation, plots, results, sweep
from ntklib.config import GROUPS, ConfigError, TrainConfig
from ntklib.models import INITS, PAPER_INITS
from ntklib.rundir import RunError, RunStatus
from ntklib.sources import DatasetNotPreparedError
from ntklib.train import train_and_evaluate


class UsageError(Exception):
    """A command-line argument that cannot be used (the message says which and why)."""


USER_ERRORS = (UsageError, ConfigError, RunError, DatasetNotPreparedError)
"""The errors a user can act on, each reported as one line on stderr with exit code 2, no traceback."""

SUBCOMMANDS = ("run", "sweep", "plot")
SWEPT_FIELDS = ("init", "lr")
"""TrainConfig fields that ``sweep`` sets itself (from ``--inits`` and the learning-rate grid)."""


def flag_name(field_name: str) -> str:
    """``batch_size`` → ``--batch-size``."""
    return "--" + field_name.replace("_", "-")


def _value_type(hint: typing.Any) -> type:
    """int, float or str of a field's type hint (``int | None`` → int)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_config_flags(parser: argparse.ArgumentParser, *, exclude: Sequence[str] = ()) -> None:
    """One flag per :class:`~ntklib.config.TrainConfig` field not in ``exclude`` (bool fields as
    ``--name`` / ``--no-name``), each defaulting to None: keep the base config's value. The flags
    sit in one argument group per field group (:data:`ntklib.config.GROUPS`)."""
    parser.add_argument("--tiny", action="store_true", help="start from TrainConfig.tiny() (CPU, seconds)")
    hints = typing.get_type_hints(TrainConfig)
    groups = {name: parser.add_argument_group(name, description) for name, description in GROUPS.items()}
    for field in dataclasses.fields(TrainConfig):
        if field.name in exclude:
            continue
        group = groups[field.metadata["group"]]
        help_text = field.metadata["help"]
        if field.default is not None:
            help_text += f" (default: {field.default})"
        kind = _value_type(hints[field.name])
        if kind is bool:
            group.add_argument(
                flag_name(field.name), action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            group.add_argument(flag_name(field.name), type=kind, choices=field.metadata["choices"], help=help_text)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bar")


def config_from_flags(args: argparse.Namespace) -> TrainConfig:
    """The base config (default or ``--tiny``) with every given flag applied."""
    overrides = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(TrainConfig)
        if getattr(args, field.name, None) is not None
    }
    return TrainConfig.tiny(**overrides) if args.tiny else TrainConfig.default(**overrides)


def check_out_dir(out: str) -> None:
    """Refuse an empty ``--out`` (it would write into the current directory) and an existing file."""
    if not out.strip():
        raise UsageError("--out: an empty path would write into the current directory; give a directory")
    if Path(out).exists() and not Path(out).is_dir():
        raise UsageError(f"--out: {out} is a file, not a directory")


def run_command(args: argparse.Namespace) -> int:
    """``run``: train one model into ``--out`` and print a one-line JSON summary."""
    config = config_from_flags(args)
    check_out_dir(args.out)
    result = train_and_evaluate(
        config, args.out, max_epochs_this_call=args.max_epochs_this_call, progress=args.progress
    )
    final = result.records[-1] if result.records else {}
    summary = {k: final.get(k) for k in ("epoch", "train_loss", "test_accuracy", "nc1", "nc2", "nc3", "nc4")}
    print(json.dumps({"status": result.status, "out": args.out, **summary}))
    return 0


def sweep_command(args: argparse.Namespace) -> int:
    """``sweep``: every (init, lr) into ``--out``; prints one JSON line per run, and a summary
    table on stderr. Exit code 1 when a run failed or was refused."""
    base = config_from_flags(args)
    check_out_dir(args.out)
    lrs = args.lrs or sweep.learning_rates(args.num_lrs, args.lr_min, args.lr_max, args.largest)
    check_engine_flags(args)
    if args.engine == "ray":
        from ntklib import ray_engine  # Ray is imported only for a Ray sweep

        try:
            ray_engine.import_ray()
        except ray_engine.RayNotInstalledError as error:
            raise UsageError(f"--engine ray: {error}") from None
        entries = ray_engine.run_sweep_ray(
            base,
            lrs,
            args.inits,
            args.out,
            address=args.address,
            gpus_per_run=args.gpus_per_run,
            cpus_per_run=args.cpus_per_run,
            max_retries=args.max_retries,
            progress=args.progress,
            compile_cache=getattr(args, "compile_cache_dir", None),
        )
    else:
        entries = sweep.run_sweep(base, lrs, args.inits, args.out, progress=args.progress)
    for entry in entries:
        print(json.dumps(dataclasses.asdict(entry)))
    bad = [entry for entry in entries if entry.status not in RunStatus.DONE]
    print(sweep.summary_table(entries), file=sys.stderr)
    if bad:
        print(f"sweep: {len(bad)} of {len(entries)} runs failed or were refused", file=sys.stderr)
    return 1 if bad else 0


ENGINES = ("local", "ray")
RAY_FLAGS = {"address": None, "gpus_per_run": None, "cpus_per_run": 1.0, "max_retries": 3}
"""The flags of ``--engine ray`` and their defaults."""


def check_engine_flags(args: argparse.Namespace) -> None:
    """Ray flags only with ``--engine ray``; non-negative resources and retries; a GPU count
    above 1 must be whole (Ray packs fractions onto one GPU only)."""
    if args.engine != "ray":
        given = [flag_name(name) for name, default in RAY_FLAGS.items() if getattr(args, name) != default]
        if given:
            raise UsageError(f"{given[0]}: needs --engine ray (the local engine runs one run at a time here)")
        return
    gpus = args.gpus_per_run
    if gpus is not None and (gpus < 0 or (gpus > 1 and gpus != int(gpus))):
        raise UsageError(f"--gpus-per-run: must be a fraction in [0, 1] or a whole number, got {gpus}")
    if args.cpus_per_run <= 0:
        raise UsageError(f"--cpus-per-run: must be > 0, got {args.cpus_per_run}")
    if args.max_retries < 0:
        raise UsageError(f"--max-retries: must be >= 0, got {args.max_retries}")


def plot_path(out: str) -> Path:
    """The file ``plot --out`` writes: ``out``, with ``.png`` appended when it has no extension."""
    path = Path(out)
    if not out.strip() or path.is_dir():
        raise UsageError(f"--out: {out!r} is not a file name")
    return path if path.suffix else path.with_name(path.name + ".png")


def plot_command(args: argparse.Namespace) -> int:
    """``plot``: Figure 2 (a–h) and Appendix C's panes i–j of a run or sweep directory into one
    file (:func:`ntklib.plots.plot_figure2`); prints its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not Path(args.results_dir).exists():
        raise UsageError(f"no such path: {args.results_dir}")
    path = plot_path(args.out)
    unreadable: list[tuple[str, str]] = []
    df = results.load_runs(args.results_dir, unreadable=unreadable)
    for run_dir, reason in unreadable:
        print(f"plot: skipped unreadable run {run_dir}: {reason}", file=sys.stderr)
    if df.empty:
        raise UsageError(f"no runs with records in {args.results_dir}")
    plt.close(plots.plot_figure2(df, path, title=args.title))
    print(path)
    return 0


def add_cache_flags(parser: argparse.ArgumentParser) -> None:
    """``--compile-cache DIR`` and ``--no-compile-cache``: JAX's persistent compilation cache."""
    cache = parser.add_mutually_exclusive_group()
    default = compilation.default_cache_dir()
    cache.add_argument(
        "--compile-cache",
        metavar="DIR",
        help=f"persistent compilation cache directory (default: ${compilation.CACHE_ENV}, else {default})",
    )
    cache.add_argument(
        "--no-compile-cache", dest="use_compile_cache", action="store_false", help="no persistent compilation cache"
    )


def apply_cache_flags(args: argparse.Namespace) -> None:
    """Enable the persistent compilation cache that the flags (or their defaults) name, and keep
    its directory (or None) in ``args.compile_cache_dir`` for the Ray engine's workers."""
    if not hasattr(args, "use_compile_cache"):
        return
    try:
        directory = compilation.resolve_cache_dir(args.compile_cache, enabled=args.use_compile_cache)
    except ValueError as error:
        raise UsageError(str(error)) from None
    args.compile_cache_dir = None if directory is None else compilation.enable_persistent_cache(directory)


def build_parser() -> argparse.ArgumentParser:
    """The parser with the subcommands ``run``, ``sweep`` and ``plot``."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="python -m ntklib.experiment", description=__doc__, formatter_class=raw)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="train one model", description=__doc__, formatter_class=raw)
    add_config_flags(run)
    run.add_argument("--out", required=True, help="run directory (resumed if it holds a checkpoint)")
    run.add_argument("--max-epochs-this-call", type=int, help="stop after this many epochs (resumable)")
    add_cache_flags(run)
    run.set_defaults(handler=run_command)

    grid = commands.add_parser("sweep", help="learning rates × inits", description=sweep.__doc__)
    add_config_flags(grid, exclude=SWEPT_FIELDS)
    grid.add_argument("--out", required=True, help="sweep root directory")
    grid.add_argument("--inits", nargs="+", choices=INITS, default=list(PAPER_INITS))
    grid.add_argument("--lrs", nargs="+", type=float, help="explicit learning rates")
    grid.add_argument("--num-lrs", type=int, default=30)
    grid.add_argument("--lr-min", type=float, default=sweep.PAPER_LR_MIN)
    grid.add_argument("--lr-max", type=float, default=sweep.PAPER_LR_MAX)
    grid.add_argument("--largest", type=int, help="keep only this many of the largest rates")
    add_cache_flags(grid)
    engine = grid.add_argument_group("engine", "where the runs execute (see ntklib.ray_engine)")
    engine.add_argument(
        "--engine", choices=ENGINES, default="local", help="local: one run after another; ray: one Ray task per run"
    )
    engine.add_argument("--address", help="Ray cluster to join ('auto': the one ray start began); default: a local one")
    engine.add_argument(
        "--gpus-per-run", type=float, help="GPUs per run; a fraction packs runs onto a GPU (default: 1 if any)"
    )
    engine.add_argument("--cpus-per-run", type=float, default=RAY_FLAGS["cpus_per_run"], help="CPUs per run")
    engine.add_argument(
        "--max-retries", type=int, default=RAY_FLAGS["max_retries"], help="reruns of a run whose worker died"
    )
    grid.set_defaults(handler=sweep_command)

    figure = commands.add_parser(
        "plot", help="Figure 2 (a–h) and Appendix C's panes i–j", description=plots.__doc__, formatter_class=raw
    )
    figure.add_argument("results_dir", help="a run or sweep directory")
    figure.add_argument(
        "--out",
        required=True,
        help="file to write (PNG; another extension matplotlib knows, e.g. .pdf, sets the format)",
    )
    figure.add_argument("--title", help="the figure's title (default: architecture, dataset, number of runs)")
    figure.set_defaults(handler=plot_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ntklib.experiment [run|sweep|plot] ...``; flags first means ``run``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        apply_cache_flags(args)
        return args.handler(args)
    except USER_ERRORS as error:
        message = str(error).replace("\n", " ")
        print(f"{parser.prog} {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
