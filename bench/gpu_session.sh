#!/usr/bin/env bash
# The GPU checks of one device session, in order of importance, each under its own time limit so
# that a slow compile cannot starve the rest. Writes everything under $OUT (default: bench/out).
#   bash bench/gpu_session.sh            # on the GPU machine
#   SMOKE=1 bash bench/gpu_session.sh    # seconds-long dry run of the same commands on a CPU
#   bash bench/gpu_session.sh fashion_mnist DIR          # only the FashionMNIST paper run (below)
#   SMOKE=1 bash bench/gpu_session.sh fashion_mnist DIR  # its CPU dry run (an MLP, 2 epochs, ~1 min)
set -u
PY=${PYTHON:-python3}
OUT=${OUT:-bench/out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ -n "${SMOKE:-}" ]; then
  ntk=(--device-scale cpu --arch mlp --pair-samples 4 --repeats 1)
  train=(--archs mlp --steps 2 --per-class 24 --test-size 100 --epoch-steps 2 --repeats 1 --modes loop)
  sweep=(--tiny --arch mlp --epochs 2 --lrs 0.05 --inits flax)
  others=(--archs mlp --steps 2 --per-class 24 --test-size 100 --epoch-steps 2 --repeats 1 --modes loop --no-kernel-metrics)
else
  ntk=()
  train=(--archs resnet20 --steps 100 --repeats 3 --modes scan loop)
  sweep=(--arch resnet20 --dataset digits --image-size 28 --epochs 40 --eval-every 2 --lrs 0.1 0.01 0.03 --inits flax torch normal_fan_out)
  others=(--archs densenet40 vgg11 vgg16 --steps 50 --repeats 2 --modes scan --no-kernel-metrics)
fi
"$PY" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null

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
    "${fashion[@]}" --inits flax --lrs "$lr" --no-progress --out "$root" 2>&1 | tail -20
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
timeout 170 "$PY" bench/ntk_speed.py "${ntk[@]}" 2>&1 | tee "$OUT/ntk_speed.txt"
timeout 100 "$PY" bench/train_speed.py "${train[@]}" 2>&1 | tee "$OUT/train_speed_resnet20.txt"
runs="$OUT/gpu_resnet20_digits28_e40"
timeout 170 "$PY" -m ntklib.experiment sweep "${sweep[@]}" --no-progress --out "$runs" 2>&1 | tail -20
find "$runs" -name checkpoint.msgpack -delete
timeout 100 "$PY" bench/train_speed.py "${others[@]}" 2>&1 | tee "$OUT/train_speed_others.txt"
echo "gpu_session done"
