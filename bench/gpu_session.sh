#!/usr/bin/env bash
# The GPU checks of one device session, in order of importance, each under its own time limit so
# that a slow compile cannot starve the rest. Writes everything under $OUT (default: bench/out).
#   bash bench/gpu_session.sh            # on the GPU machine
#   SMOKE=1 bash bench/gpu_session.sh    # seconds-long dry run of the same commands on a CPU
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
timeout 170 "$PY" bench/ntk_speed.py "${ntk[@]}" 2>&1 | tee "$OUT/ntk_speed.txt"
timeout 100 "$PY" bench/train_speed.py "${train[@]}" 2>&1 | tee "$OUT/train_speed_resnet20.txt"
runs="$OUT/gpu_resnet20_digits28_e40"
timeout 170 "$PY" -m ntklib.experiment sweep "${sweep[@]}" --no-progress --out "$runs" 2>&1 | tail -20
find "$runs" -name checkpoint.msgpack -delete
timeout 100 "$PY" bench/train_speed.py "${others[@]}" 2>&1 | tee "$OUT/train_speed_others.txt"
echo "gpu_session done"
