#!/usr/bin/env bash
# Chapter 07's CPU sweep, run once and committed (too long for every book build). The paper's
# protocol on scikit-learn's 8x8 digits with the two stated reductions (the data, and the 64-32
# MLP instead of ResNet20: bench/RESULTS.md, "A CPU sweep that collapses", measured why):
#   mse/seed_S/<init>/lr_<lr>/  the 16 largest of the paper's 30 learning rates (0.011 ... 1.78)
#                               x the 3 inits x seeds 0, 1, 2: 144 runs, MSE (§6, Figure 2)
#   ce/seed_S/flax/lr_<lr>/     the same rates with cross-entropy, flax init, seeds 0-2: 48 runs
#                               (Appendix C.2)
# Each run: 400 epochs, batches of 12 per class, SGD + Nesterov 0.9, weight decay 5e-4, lr / 10 at
# epochs 120, 240, 360 (the paper's schedule, uncompressed), NC metrics every 20 epochs, exact
# kernels and the invariant every 40 epochs on a probe of 3 per class. These are the flags of the
# chapter's TrainConfig (SWEEP_BASE); the chapter checks that every committed config.json equals
# it, so a change to one needs a rerun of this script.
#   bash bench/cpu_sweep.sh                    # writes results/cpu_mlp_digits_e400 (~10 min, 2 cores)
#   bash bench/cpu_sweep.sh /tmp/other_dir     # somewhere else
# The records are written to a temporary directory and moved into place only when every run ended
# (ntklib.rundir.RunStatus.DONE: finished or diverged), so an interrupted call leaves the old records as
# they were. Checkpoints and run locks are deleted (the records are the result); provenance.json
# holds the commands, commit, versions, machine and wall time.
set -euo pipefail
PY=${PYTHON:-python3}
DEST=${1:-results/cpu_mlp_digits_e400}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cpu_sweep.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
COMMON=(--arch mlp --dataset digits --epochs 400 --eval-every 20 --kernel-every 40
  --eval-batch-size 450 --ntk-per-class 3 --num-lrs 30 --largest 16 --no-progress)
START=$(date -u +%FT%TZ); T0=$SECONDS
COMMANDS=()
for SEED in 0 1 2; do
  for PART in mse ce; do
    if [ "$PART" = mse ]; then EXTRA=(--loss mse --inits flax torch normal_fan_out)
    else EXTRA=(--loss ce --inits flax); fi
    ARGS=("${COMMON[@]}" "${EXTRA[@]}" --seed "$SEED")
    COMMANDS+=("python -m ntklib.experiment sweep ${ARGS[*]} --out <dir>/$PART/seed_$SEED")
    "$PY" -m ntklib.experiment sweep "${ARGS[@]}" --out "$TMP/sweep/$PART/seed_$SEED"
  done
done
WALL=$((SECONDS - T0))
# checkpoints and the writers' advisory locks (a PID each) are not results
find "$TMP/sweep" \( -name 'checkpoint*' -o -name .lock \) -delete
printf '%s\n' "${COMMANDS[@]}" > "$TMP/commands.txt"
"$PY" - "$TMP/sweep" "$START" "$WALL" "$TMP/commands.txt" <<'EOF'
import json, os, platform, subprocess, sys
from importlib.metadata import version
from pathlib import Path

from ntklib.results import load_runs
from ntklib.rundir import RunStatus

root, start, wall, commands = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
statuses = load_runs(root).groupby("run_dir")["run_status"].first()
if not statuses.isin([status.value for status in RunStatus.DONE]).all():
    sys.exit(f"not every run ended: {statuses.value_counts().to_dict()}; nothing was moved")
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = bool(subprocess.run(["git", "status", "--porcelain", "ntklib"], capture_output=True, text=True).stdout)
provenance = {
    "commands": Path(commands).read_text().splitlines(),
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
