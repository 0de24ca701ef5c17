#!/usr/bin/env bash
# The paper-scale recipe of one dataset on one GPU, in one call: train, evaluate on the test split
# (both protocols), write the accuracy table and curves (benchmarks/accuracy_report.py).
#
#   bash benchmarks/accuracy_gpu.sh DATASET[:ARG] DATA_DIR [--config.key=value ...]
#
# DATASET is a configs/<DATASET>.py (chase_db1, drive, hrf, stare; ARG as its get_config takes,
# e.g. synthetic:tiny for a CPU smoke run); DATA_DIR holds the dataset already prepared
# (`python main.py --mode prepare --config configs/DATASET.py --config.data.manual_dir=ZIPS
# --config.data.data_dir=DATA_DIR`, here, then carried: CHASE_DB1 prepared is ~25 MB). Writes
# under $OUT (the device tool's folder; else /tmp/ds2f_accuracy): env.txt, log.txt,
# metrics.jsonl, metrics.json, report.md and best_worst.png of the test evaluation, accuracy.md
# and curves.png (8 files, as the device tool brings back). The run's workdir is $WORKDIR
# (default /tmp/ds2f_accuracy_run); rerunning the same command resumes it.
#
# Expected time on one H200 (each configs/<dataset>.py docstring derives it from the FLOP count
# and the measured jax step): float32 steps ~181 s CHASE_DB1, ~62 s DRIVE, ~72 s HRF, ~40 s
# STARE, plus compile and evaluations; within one 10-minute command. The input pipeline runs
# with one thread per host core (data.num_workers = nproc): with decoded photos cached, one
# thread reads and augments ~50 CHASE_DB1 images/s at full size.
#
# The GPU machine has jax, flax, optax, orbax, absl, numpy, pillow and opencv but not
# ml_collections, tensorflow_datasets, array_record, grain, clu or tensorboardX: bring them as
# wheels for its Python (3.12) and put them on PYTHONPATH first; the script names what is
# missing and stops before any work.
set -u -o pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "error: usage: bash benchmarks/accuracy_gpu.sh DATASET[:ARG] DATA_DIR [--config.key=value ...]" >&2
  exit 2
fi
SPEC=$1; DATA_DIR=$2; shift 2
NAME=${SPEC%%:*}
if [ ! -f "configs/$NAME.py" ]; then
  echo "error: DATASET '$NAME': no configs/$NAME.py" >&2
  exit 2
fi
if [ ! -d "$DATA_DIR" ]; then
  echo "error: DATA_DIR '$DATA_DIR' is not a folder (prepare the dataset there first)" >&2
  exit 2
fi
OUT=${OUT:-/tmp/ds2f_accuracy}
WORKDIR=${WORKDIR:-/tmp/ds2f_accuracy_run}
PY=${PY:-python3}
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-540}
mkdir -p "$OUT" "$WORKDIR"

missing=$("$PY" - <<'EOF'
import importlib.util
mods = ('jax', 'flax', 'optax', 'orbax.checkpoint', 'ml_collections', 'absl', 'tensorflow_datasets',
        'array_record', 'grain', 'clu', 'PIL', 'numpy', 'tqdm')
print(' '.join(m for m in mods if importlib.util.find_spec(m.split('.')[0]) is None))
EOF
)
if [ -n "$missing" ]; then
  echo "error: python modules missing on this machine: $missing (carry them as wheels)" >&2
  exit 2
fi

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c 'import sys, jax; print(sys.version.split()[0], "jax", jax.__version__, jax.devices())'
  echo "nproc $(nproc)"
} 2>&1 | tee "$OUT/env.txt"

# One seed of the full method, trained then scored on the test split (ds2f_jax.ablate does both
# and skips what is already finished).
start=$(date +%s)
CONFIG="configs/$NAME.py${SPEC#"$NAME"}"
timeout --signal=TERM "$TRAIN_TIMEOUT" "$PY" -m ds2f_jax.ablate --config "$CONFIG" \
    --workdir "$WORKDIR" --variants ds2f --seeds 1 \
    --config.data.data_dir="$DATA_DIR" --config.data.num_workers="$(nproc)" "$@" \
    2>&1 | grep -v '^[WI][0-9]\{4\}' | tee "$OUT/log.txt"
rc=${PIPESTATUS[0]}
echo "ablate exit $rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/log.txt"
if [ $rc -ne 0 ]; then
  echo "error: training or evaluation stopped (exit $rc); rerun the same command to resume" >&2
  exit $rc
fi

run=$(ls -d "$WORKDIR"/ds2f/*/ | head -1)
"$PY" benchmarks/accuracy_report.py --run "ds2f, configs/$NAME.py${SPEC#"$NAME"} (ours)=$WORKDIR/ds2f/*" \
    --out "$OUT/report_tmp" | tee -a "$OUT/log.txt" || exit 2
cp "$OUT/report_tmp/accuracy.md" "$OUT/report_tmp/curves.png" "$OUT/"
rm -rf "$OUT/report_tmp"
cp "$run/metrics.jsonl" "$run/eval/test/metrics.json" "$run/eval/test/report.md" \
   "$run/eval/test/best_worst.png" "$OUT/"
echo "wrote $OUT: $(ls "$OUT" | tr '\n' ' ')"
