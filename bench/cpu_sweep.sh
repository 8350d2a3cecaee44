#!/usr/bin/env bash
# Chapter 07's CPU sweep, run once and committed (too long for every book build): the released
# ResNet20 on scikit-learn's 8x8 digits, 3 learning rates x 3 inits, 20 epochs, NC metrics every
# 2 epochs, kernels and the invariant every 10 epochs on a probe of 3 per class, BatchNorm momentum
# 0.9, seed 0. These are the flags of the chapter's default-scale TrainConfig (BASE); the chapter
# checks that every committed config.json equals it, so a change to one needs a rerun of this script.
#   bash bench/cpu_sweep.sh                    # writes results/cpu_resnet20_digits_e20 (~4 min, 2 cores)
#   bash bench/cpu_sweep.sh /tmp/other_dir     # somewhere else
# The records are written to a temporary directory and moved into place only when every run ended
# (ntklib.sweep.SUCCESS: finished or diverged), so an interrupted call leaves the old records as
# they were. Checkpoints and run locks are deleted (the records are the result); provenance.json
# holds the command, commit, versions, machine and wall time.
set -euo pipefail
PY=${PYTHON:-python3}
DEST=${1:-results/cpu_resnet20_digits_e20}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cpu_sweep.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
ARGS=(--arch resnet20 --dataset digits --epochs 20 --eval-every 2 --kernel-every 10
  --eval-batch-size 450 --ntk-per-class 3 --bn-momentum 0.9 --seed 0
  --num-lrs 3 --lr-min 0.01 --lr-max 0.1 --inits flax torch normal_fan_out --no-progress)
START=$(date -u +%FT%TZ); T0=$SECONDS
"$PY" -m ntklib.experiment sweep "${ARGS[@]}" --out "$TMP/sweep"
WALL=$((SECONDS - T0))
# checkpoints and the writers' advisory locks (a PID each) are not results
find "$TMP/sweep" \( -name 'checkpoint*' -o -name .lock \) -delete
"$PY" - "$TMP/sweep" "$START" "$WALL" "${ARGS[*]}" <<'EOF'
import json, os, platform, subprocess, sys
from importlib.metadata import version
from pathlib import Path

from ntklib.results import load_runs
from ntklib.sweep import SUCCESS

root, start, wall, args = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
statuses = load_runs(root).groupby("run_dir")["run_status"].first()
if not statuses.isin(SUCCESS).all():
    sys.exit(f"not every run ended: {statuses.value_counts().to_dict()}; nothing was moved")
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = bool(subprocess.run(["git", "status", "--porcelain", "ntklib"], capture_output=True, text=True).stdout)
provenance = {
    "command": f"python -m ntklib.experiment sweep {args} --out <dir>",
    "script": "bash bench/cpu_sweep.sh",
    "commit": commit + (" (ntklib/ modified)" if dirty else ""),
    "started_utc": start,
    "wall_seconds": wall,
    "machine": {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform()},
    "python": platform.python_version(),
    "versions": {name: version(name) for name in ("jax", "jaxlib", "flax", "optax", "numpy")},
    "statuses": statuses.value_counts().to_dict(),
}
(root / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
print(json.dumps(provenance, indent=1))
EOF
rm -rf "$DEST.old"; [ -e "$DEST" ] && mv "$DEST" "$DEST.old"
mkdir -p "$(dirname "$DEST")"; mv "$TMP/sweep" "$DEST"; rm -rf "$DEST.old"
echo "wrote $DEST in $WALL s"
