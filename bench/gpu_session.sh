#!/usr/bin/env bash
# Every GPU check of one device session in ONE call of at most 10 minutes on one GPU:
#   1. NTK speed and accuracy (bench/ntk_speed.py: block_ntk_fn against the per-pair reference at
#      `highest`, PASS/FAIL at 1e-5, first-call compile time of the rolled chunk loop);
#   2. a complete 9-run digits sweep through the CLI (ResNet20, 28x28, 40 epochs, 3 lrs x 3 inits);
#   3. a protocol-epoch figure for each of the four architectures (bench/train_speed.py), one
#      process per architecture so that one slow compile cannot starve the others;
#   4. a summary of every step (exit code, seconds, the key lines).
# Every step runs under its own `timeout`; the limits sum to 555 s (LIMITS below), which leaves
# ~45 s of the 600 s call for the machine's start-up and the copy of $OUT. Everything is written
# under $OUT (default: bench/out). The NTK uses ntklib's default chunk loop, loop="auto", which is
# rolled (one lax.scan) on a GPU. JAX's persistent compilation cache is on for every step, in
# $COMPILE_CACHE (default: the CLI's own, ${XDG_CACHE_HOME:-~/.cache}/ntklib/jax): a second call on
# the same machine loads what the first compiled.
#   bash bench/gpu_session.sh            # on the GPU machine
#   SMOKE=1 bash bench/gpu_session.sh    # the same steps on a CPU with tiny workloads (~3-5 min)
#   bash bench/gpu_session.sh fashion_mnist DIR          # only the FashionMNIST paper run (below)
#   SMOKE=1 bash bench/gpu_session.sh fashion_mnist DIR  # its CPU dry run (an MLP, 2 epochs, ~1 min)
set -u
PY=${PYTHON:-python3}
OUT=${OUT:-bench/out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
COMPILE_CACHE=${COMPILE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ntklib/jax}; mkdir -p "$COMPILE_CACHE"
# the bench scripts read JAX's own variables; the CLI gets --compile-cache (the same directory)
export JAX_COMPILATION_CACHE_DIR=$COMPILE_CACHE JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
if [ -n "${SMOKE:-}" ]; then
  ntk=(--device-scale cpu --arch mlp --pair-samples 4 --repeats 1)
  train=(--steps 2 --per-class 24 --test-size 100 --epoch-steps 2 --repeats 1 --modes loop --ntk-per-class 2)
  archs=(mlp mlp mlp mlp)  # four processes, as on the GPU, of the MLP
  others=(--no-kernel-metrics)
  sweep=(--tiny --arch mlp --epochs 2 --eval-every 1)
else
  ntk=(--repeats 3)
  train=(--steps 50 --repeats 2 --modes scan)
  archs=(resnet20 densenet40 vgg11 vgg16)
  others=(--no-kernel-metrics)  # DenseNet40, VGG11, VGG16: no NTK in the record (as in the 2026-11-28 run)
  sweep=(--arch resnet20 --dataset digits --image-size 28 --epochs 40 --eval-every 2)
fi
sweep+=(--lrs 0.1 0.01 0.03 --inits flax torch normal_fan_out)
# seconds per step: versions, ntk_speed, sweep, train_speed per arch (in the order of archs), summary
LIMITS=(${LIMITS:-20 100 150 70 60 70 75 10})
STEPS="$OUT/steps.tsv"; printf 'step\texit\tseconds\tlimit\n' > "$STEPS"

step() {  # step NAME LIMIT LOGFILE COMMAND...: run under `timeout`, log to LOGFILE, record exit and time
  local name=$1 limit=$2 log=$3; shift 3
  local t0=$SECONDS
  date -u +"[%T] $name (limit ${limit} s)"
  timeout --kill-after=2 "$limit" "$@" > "$log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >> "$STEPS"
  tail -n 3 "$log"
  return 0
}

if [ "${1:-}" = fashion_mnist ]; then
  # One full paper-protocol run on real data: ResNet20, FashionMNIST read from its four IDX files in
  # DIR (e.g. the Debian package's /usr/share/datasets/fashion-mnist, carried beside the repository),
  # 400 epochs, a record with every metric every 2nd epoch, init flax and lr 8.5317e-02 (the 21st of
  # the paper's 30 rates, ntklib.sweep.learning_rates()[20]). Layout: <root>/flax/lr_8.5317e-02/.
  # Estimate for one H200 (/work/shared/gpu-runs/2026-11-28-h200, CIFAR-shaped 32x32x3, so an upper
  # bound for 28x28x1): training 2.35 ms/step x 500 steps = 1.18 s/epoch -> 470 s for 400 epochs;
  # 200 records x (0.02 s test set + 0.34 s NC and NTK statistics) = 72 s; compiling the epoch
  # (5 s) and the first record (52 s) ~ 60 s; loading ~ 5 s. Total ~ 610 s: it may not fit one
  # 10-minute call. So the run is stopped at FASHION_TIMEOUT (540 s) and resumes from its
  # checkpoint (written at every record, ~2.2 MB: params + momentum of 272k float32) on the next
  # call: copy the run directory that came back in $OUT to <root> in the repository and call again
  # with the same DIR (it is part of the run's config). A second call needs ~ 60 s + 1.4 s/epoch left.
  fdir=${2:?usage: bash bench/gpu_session.sh fashion_mnist DIR_WITH_THE_IDX_FILES}
  lr=$("$PY" -c "from ntklib.sweep import learning_rates; print(repr(learning_rates()[20]))")
  if [ -n "${SMOKE:-}" ]; then
    root=${FASHION_RUNS:-$OUT/smoke_fashion_mnist}
    fashion=(--arch mlp --epochs 2 --eval-every 1)
  else
    root=${FASHION_RUNS:-results/resnet20_fashion_mnist}
    fashion=(--arch resnet20 --epochs 400 --eval-every 2)
  fi
  date -u +"start %FT%TZ"
  timeout "${FASHION_TIMEOUT:-540}" "$PY" -m ntklib.experiment sweep --dataset fashion_mnist --data-dir "$fdir" \
    "${fashion[@]}" --inits flax --lrs "$lr" --no-progress --compile-cache "$COMPILE_CACHE" --out "$root" 2>&1 | tail -20
  date -u +"stop %FT%TZ"
  run="$root/flax/lr_$(printf '%.4e' "$lr")"
  cat "$run/status.json"; echo; tail -n 1 "$run/metrics.jsonl" | "$PY" -c \
    "import json,sys; r=json.loads(sys.stdin.read()); print({k: r.get(k) for k in ('epoch','train_loss','test_accuracy','nc1','nc2','epoch_seconds','metrics_seconds')})"
  if grep -q '"finished"\|"diverged"' "$run/status.json"; then rm -f "$run/checkpoint.msgpack"; fi
  ls -l "$run"  # a checkpoint.msgpack here means: not finished, call again to resume
  case "$root" in  # bring the run back in $OUT (unless it is there already)
    "$OUT"/*) ;;
    *) mkdir -p "$OUT/$(dirname "$root")" && cp -r "$root" "$OUT/$(dirname "$root")/" ;;
  esac
  echo "gpu_session fashion_mnist done"
  exit 0
fi

date -u +"gpu_session start %FT%TZ${SMOKE:+ (SMOKE)}; limits ${LIMITS[*]} s; compile cache $COMPILE_CACHE"
export PY
step versions "${LIMITS[0]}" "$OUT/versions.txt" bash -c '"$PY" -c "import jax, flax, optax; \
print(\"jax\", jax.__version__, \"flax\", flax.__version__, \"optax\", optax.__version__, jax.devices())"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  echo "commit $(git rev-parse --short HEAD 2>/dev/null)"'
step ntk_speed "${LIMITS[1]}" "$OUT/ntk_speed.txt" "$PY" bench/ntk_speed.py "${ntk[@]}"
runs="$OUT/gpu_resnet20_digits28_e40"
step sweep "${LIMITS[2]}" "$OUT/sweep.txt" "$PY" -m ntklib.experiment sweep "${sweep[@]}" --no-progress \
  --compile-cache "$COMPILE_CACHE" --out "$runs"
find "$runs" -name checkpoint.msgpack -delete 2>/dev/null
for i in 0 1 2 3; do
  arch=${archs[$i]}
  extra=(); [ "$i" -gt 0 ] && extra=("${others[@]}")
  step "train_speed_$arch$([ -n "${SMOKE:-}" ] && echo "_$i")" "${LIMITS[$((3 + i))]}" \
    "$OUT/train_speed_${arch}$([ -n "${SMOKE:-}" ] && echo "_$i").txt" \
    "$PY" bench/train_speed.py --archs "$arch" "${train[@]}" "${extra[@]}"
done

summary() {
  echo "== gpu_session summary ($(date -u +%FT%TZ)${SMOKE:+, SMOKE}) =="
  column -t -s $'\t' "$STEPS" 2>/dev/null || cat "$STEPS"
  echo "-- versions"; cat "$OUT/versions.txt"
  echo "-- ntk_speed"
  grep -E "^workload|compile ≈|first call|agreement|PASS|FAIL|SPEEDUP" "$OUT/ntk_speed.txt"
  echo "-- sweep ($runs): run statuses"
  for s in "$runs"/*/lr_*/status.json; do
    [ -f "$s" ] && printf '%s: %s\n' "${s#"$runs"/}" "$(grep -o '"status": *"[a-z]*"' "$s")"
  done
  grep -c '"status": *"finished"' "$runs"/*/lr_*/status.json 2>/dev/null | awk -F: '{n += $2} END {print n + 0, "of 9 runs finished"}'
  echo "-- train_speed (protocol epoch rows)"
  grep -h '^| [a-z]' "$OUT"/train_speed_*.txt | grep -v '^| arch'
  grep -h 'first call (compile' "$OUT"/train_speed_*.txt
  echo "-- compile cache: $(find "$COMPILE_CACHE" -type f | wc -l) files, $(du -sh "$COMPILE_CACHE" | cut -f1)"
}
export OUT STEPS runs COMPILE_CACHE
timeout "${LIMITS[7]}" bash -c "$(declare -f summary); summary" | tee "$OUT/summary.txt"
echo "gpu_session done ($SECONDS s)"
