#!/usr/bin/env bash
# GPU check: on a machine with an NVIDIA GPU where CuPy, PyTorch and JAX (CUDA) are already installed, run the
# test suite on the cupy, torch and jax (CUDA) backends and the GPU benchmark, then print a one-screen summary.
# Installs nothing. Results go to $OUT (default: a new temporary folder).
#   usage: [QUICK=1] [TESTS="cupy torch"] bash backends/gpu-check.sh   (TESTS="" skips the test suites)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1 || true
$py - > "$OUT/versions.txt" 2>&1 <<'PY'
import platform, numpy, array_api_compat, anynet
print("python", platform.python_version(), "numpy", numpy.__version__, "array-api-compat", array_api_compat.__version__)
for name in ("cupy", "torch", "jax"):
    try:
        m = __import__(name); print(name, m.__version__)
    except Exception as e:
        print(name, "unavailable:", e)
print("available backends:", anynet.available_backends())
PY

# Where a step's time goes: host time per array operation, and a cProfile of Solver steps.
for b in cupy torch; do
  timeout 90 $py benchmarks/profile_step.py --backend $b --device cuda --steps 200 --top 25 \
    > "$OUT/profile-$b.txt" 2>&1 || status=1
  timeout 60 $py benchmarks/profile_step.py --backend $b --device cuda --model fc --steps 100 --top 25 --no-ops \
    > "$OUT/profile-$b-fc.txt" 2>&1 || status=1
done

# Throughput: anynet (cupy, torch-cuda) against PyTorch CUDA eager, batch 200 and 4096, synchronised timings.
: > "$OUT/bench.txt"
# Compiled steps: torch.compile with CUDA graphs (the default on a GPU) and without, and jax.jit.
for args in "--backend cupy --batch-size 200" "--backend cupy --batch-size 4096" \
            "--backend torch --device cuda --batch-size 200 --compile off" \
            "--backend torch --device cuda --batch-size 200 --compile on" \
            "--backend torch --device cuda --batch-size 4096 --compile on" \
            "--backend jax --device cuda --batch-size 200" "--backend jax --device cuda --batch-size 4096" \
            "--backend torch --device cuda --model fc --batch-size 200 --compile on" \
            "--backend jax --device cuda --model fc --batch-size 200" \
            "--backend cupy --model fc --batch-size 200"; do
  echo "## compare.py $args" >> "$OUT/bench.txt"
  timeout 100 $py benchmarks/compare.py $args ${QUICK:+--repeats 3 --iterations 50} >> "$OUT/bench.txt" 2>&1 || status=1
done
echo "## compare.py torch compiled without CUDA graphs" >> "$OUT/bench.txt"
ANYNET_TORCH_COMPILE_MODE=default timeout 100 $py benchmarks/compare.py --backend torch --device cuda --compile on \
  ${QUICK:+--repeats 3 --iterations 50} >> "$OUT/bench.txt" 2>&1 || status=1
for b in cupy torch; do
  echo "## sync_check.py --backend $b" >> "$OUT/bench.txt"
  timeout 60 $py benchmarks/sync_check.py --backend $b >> "$OUT/bench.txt" 2>&1 || status=1
done

# A full CIFAR-10-sized run per backend: peak device memory, and GPU utilization sampled every 100 ms during it.
for args in "--backend cupy" "--backend torch --device cuda" "--backend cupy --model fc --epochs 2"; do
  tag=$(echo "$args" | tr -cs 'a-z0-9' '-')
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 100 \
    > "$OUT/util$tag.csv" 2>/dev/null & sampler=$!
  echo "## peak_memory.py $args" >> "$OUT/bench.txt"
  timeout 120 $py benchmarks/peak_memory.py $args >> "$OUT/bench.txt" 2>&1 || status=1
  kill $sampler 2>/dev/null; wait $sampler 2>/dev/null
  awk -F', *' '$1 > 0 || seen { seen = 1; n++; s += $1; if ($1 > m) m = $1 } END {
    if (n) printf "GPU utilization while it ran: mean %.0f%%, max %d%% (%d samples of 100 ms, from the first busy one)\n", s / n, m, n
  }' "$OUT/util$tag.csv" >> "$OUT/bench.txt"
done

for b in ${TESTS-cupy torch jax}; do
  # torch's default device is "cuda" whenever a GPU is visible, so this run is torch on CUDA.
  ANYNET_TEST_BACKENDS=$b timeout ${TEST_TIMEOUT:-200} $py -m pytest -q -p no:cacheprovider tests -x \
    > "$OUT/tests-$b.log" 2>&1 || status=1
done

echo "== GPU:  $(cat "$OUT/gpu.txt")"
cat "$OUT/versions.txt"
for b in ${TESTS-cupy torch jax}; do echo "== tests on $b: $(tail -n 1 "$OUT/tests-$b.log")"; done
echo "== benchmarks"; grep -vE '^\s*$' "$OUT/bench.txt" | grep -vE '^(warmed|round)' | tail -n 90
exit $status
