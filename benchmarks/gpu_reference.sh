#!/usr/bin/env bash
# The reference setting on one GPU, in one call (~5 min on an H100/H200 incl. compiles):
# DS2F-UNet, width 64, batch 8, LR 256^2 -> HR 512^2 (r = 2); bf16 and float32; train step
# and inference forward; then a per-op profile of the bf16 train step.
#
# From the device tool, in the repository root:
#   bash benchmarks/gpu_reference.sh            (writes under $OUT, else /tmp/ds2f_gpu)
# Needs only jax (+ CUDA plugin), flax, optax, orbax, numpy: no ml_collections/TFDS/grain.
# Compare with docs/method.md §Speed of the official code (H200: PyTorch best 170.3 train / 1692.5
# infer images/s; targets >= 255 train, >= 3400 infer, first compile <= 60 s). On an H100
# the PyTorch figures must come from an H100 too.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ds2f_gpu}
mkdir -p "$OUT"
PY=${PY:-python3}
# Dense bf16 rate of an H100/H200 on large matrix products, as measured for the reference
# (~790 TFLOP/s); float32 convs/matmuls run as TF32 on tensor cores at half that.
PEAK_BF16=${PEAK_BF16:-790}
PEAK_F32=${PEAK_F32:-395}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$PY" -c 'import sys, jax, flax, optax; print(sys.version.split()[0], "jax", jax.__version__,
            "flax", flax.__version__, "optax", optax.__version__, jax.devices())'
} 2>&1 | tee "$OUT/env.txt"

# BENCH_FLAGS replaces the setting (e.g. a tiny one to try the script on a CPU).
read -r -a COMMON <<< "${BENCH_FLAGS:---model ds2f_unet --width 64 --batch-size 8 --lr-size 256 --upscale 2 --steps 20 --warmup 5}"
run() {  # name, then harness flags
  local name=$1; shift
  echo "== $name" | tee -a "$OUT/log.txt"
  timeout 240 "$PY" benchmarks/train_throughput.py "${COMMON[@]}" "$@" 2>&1 \
    | grep -v '^[WI][0-9]\{4\}' | tee -a "$OUT/log.txt" | grep '^RESULT ' \
    | sed 's/^RESULT //' >> "$OUT/results.jsonl"
}

# Cold compiles first (no persistent cache), the headline number first.
run train_bf16 --mode train --dtype bfloat16 --peak-tflops "$PEAK_BF16"
run infer_bf16 --mode infer --dtype bfloat16 --peak-tflops "$PEAK_BF16"
run train_f32 --mode train --dtype float32 --peak-tflops "$PEAK_F32"
run infer_f32 --mode infer --dtype float32 --peak-tflops "$PEAK_F32"

# Where the bf16 step's time goes: kernels summed per HLO op, phase, module and primitive.
echo "== profile_bf16" | tee -a "$OUT/log.txt"
timeout 200 "$PY" benchmarks/profile_step.py "${COMMON[@]}" --mode train --dtype bfloat16 \
    --steps 3 --profile-dir /tmp/ds2f_trace 2>&1 | grep -v '^[WI][0-9]\{4\}' \
    | tee "$OUT/profile_bf16.txt" | grep -v '^RESULT' | head -80
trace=$(find /tmp/ds2f_trace -name '*.xplane.pb' | head -1)
[ -n "$trace" ] && cp "$trace" "$OUT/train_bf16.xplane.pb"

echo "== summary (images/s, compile s, peak GiB)" | tee -a "$OUT/log.txt"
"$PY" - "$OUT/results.jsonl" <<'EOF' | tee -a "$OUT/log.txt"
import json, sys
for line in open(sys.argv[1]):
  r = json.loads(line)
  mem = r['peak_device_bytes'] or 0
  frac = r['fraction_of_peak'] or 0
  print(f"{r['mode']:5s} {r['dtype']:8s} {r['images_per_s']:8.1f} img/s  step "
        f"{r['median_step_s'] * 1e3:7.2f} ms  compile {r['compile_s']:6.1f} s  "
        f"{r['achieved_tflops'] or 0:6.1f} TFLOP/s ({100 * frac:.1f} %)  peak {mem / 2**30:.2f} GiB")
EOF
