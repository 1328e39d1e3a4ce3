#!/usr/bin/env bash
# GPU check in one time budget (default 6 minutes), the most valuable measurement first, each result written under
# $OUT as soon as it is measured (a run cut short by the device's limit still returns what it measured):
#   1. the ConvNet step: anynet (torch compiled, jax, cupy) against its torch.nn twin, eager and compiled, batch 512
#   2. TwoLayerNet: anynet against PyTorch CUDA eager at batch 200 and 4096 (compiled torch, jax, cupy)
#   3. the CNN recipe's accuracy and time, when CIFAR-10 is there (CIFAR10_DIR, or the JPEG archive carried into
#      data/cifar10-jpeg.tar.gz and turned into batches here)
#   4. the test suites on cupy, torch (CUDA) and jax (CUDA), in what time is left
# Installs nothing: the device image has PyTorch, CuPy and JAX with CUDA. $OUT/summary.txt says what ran, how long
# each step took and how it ended.
#   usage: [BUDGET=360] [DRY_RUN=1] [OUT=dir] bash backends/gpu-check.sh
#   DRY_RUN=1 (on any machine, no GPU needed): checks the script's logic and every command's flags (each is run
#   with --help, or on the CPU with tiny sizes), in seconds, and writes the plan to $OUT/summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
BUDGET=${BUDGET:-360}
DRY=${DRY_RUN:-}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
began=$SECONDS
status=0
summary="$OUT/summary.txt"
: > "$summary"

left() { echo $(( BUDGET - (SECONDS - began) )); }

# step NAME LIMIT CMD...: run CMD into $OUT/NAME.txt within LIMIT seconds and what is left of the budget.
step() {
  local name=$1 limit=$2 rest t0 rc
  shift 2
  rest=$(left)
  if (( rest < 15 )); then
    echo "$name: skipped, $rest s of the budget left" >> "$summary"
    return
  fi
  (( limit > rest )) && limit=$rest
  t0=$SECONDS
  if [ -n "$DRY" ]; then
    echo "$name: would run for up to $limit s: $*" >> "$summary"
    "$@" --help > "$OUT/$name.txt" 2>&1; rc=$?
    echo "  its flags parse (--help): exit $rc" >> "$summary"
  else
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1; rc=$?
    echo "$name: exit $rc after $(( SECONDS - t0 )) s (limit $limit s)" >> "$summary"
  fi
  (( rc == 0 )) || status=1
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "no nvidia-smi"
  $py - <<'PY'
import platform, numpy, anynet
print("python", platform.python_version(), "numpy", numpy.__version__)
for name in ("cupy", "torch", "jax"):
    try:
        m = __import__(name); print(name, m.__version__)
    except Exception as e:
        print(name, "unavailable:", e)
print("available backends:", anynet.available_backends())
PY
} > "$OUT/gpu.txt" 2>&1

# 1. The CNN step (the GPU's reason to be): widths 64/128/256, airbench's conv-pool-conv blocks.
cnn=(benchmarks/cnn.py --device cuda --batch-size 512 --widths 64 128 256 --convs-per-stage 2 --pool-after 1
     --steps 10 --rounds 5)
step cnn-torch 150 $py "${cnn[@]}" --contestants twin anynet-torch twin-compiled twin-bf16 anynet-torch-bf16
step cnn-others 90 $py "${cnn[@]}" --contestants twin anynet-jax anynet-cupy

# 2. TwoLayerNet against PyTorch CUDA eager.
for args in "--backend torch --device cuda --batch-size 200 --compile on" \
            "--backend torch --device cuda --batch-size 4096 --compile on" \
            "--backend cupy --batch-size 200" "--backend jax --device cuda --batch-size 200"; do
  tag=$(echo "$args" | tr -cs 'a-z0-9' '-' | sed 's/-*$//')
  step "two-layer$tag" 45 $py benchmarks/compare.py $args --repeats 3 --iterations 50
done

# 3. The CNN recipe on CIFAR-10, where the data is there.
data=${CIFAR10_DIR:-}
if [ -z "$data" ] && [ -f data/cifar10-jpeg.tar.gz ] && [ -f data/make_cifar10.py ] && [ -z "$DRY" ]; then
  $py data/make_cifar10.py data/cifar > "$OUT/make-cifar.txt" 2>&1 && data=data/cifar
fi
if [ -n "$data" ] || [ -n "$DRY" ]; then
  # The README's recipe (its learning rate doubled with the batch), for 10 epochs.
  step cnn-recipe 150 $py -m anynet train --model cnn --widths 64 128 256 --convs-per-stage 2 --pool-after 1 \
    --precision bfloat16 --augment --label-smoothing 0.2 --update-rule nesterov_sgd --learning-rate 0.2 \
    --lr-schedule cosine --warmup-epochs 1 --weight-decay 5e-3 --batch-size 512 --epochs 10 --flip-test \
    --translate-test --keep last --num-test 10000 \
    --backend torch --device cuda --compile on --data-dir "${data:-none}" --out "$OUT/recipe" --quiet
else
  echo "cnn-recipe: skipped, no CIFAR-10 (set CIFAR10_DIR, or carry data/cifar10-jpeg.tar.gz and make_cifar10.py)" \
    >> "$summary"
fi

# 4. The tests, in what is left.
for b in ${TESTS-torch cupy jax}; do
  # torch's default device is "cuda" whenever a GPU is visible, so this run is torch on CUDA.
  step "tests-$b" 120 env ANYNET_TEST_BACKENDS="$b" $py -m pytest -q -p no:cacheprovider -x tests
done

echo "== $(head -n 1 "$OUT/gpu.txt"), $(( SECONDS - began )) s of a $BUDGET s budget"
cat "$summary"
for f in "$OUT"/cnn-*.txt "$OUT"/two-layer*.txt; do
  [ -f "$f" ] && { echo "== $(basename "$f")"; grep -E 'x |median|ratio|images/s' "$f" | tail -n 12; }
done
exit $status
