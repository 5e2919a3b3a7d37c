#!/usr/bin/env bash
# One prepared check of resbench on a CUDA machine with PyTorch installed and no internet.
#
#   scripts/gpu_check.sh                          # on the GPU machine, ~7 minutes
#   scripts/gpu_check.sh --device cpu --dry-run   # rehearse every step on a CPU in ~3 minutes
#
# Steps (each time-limited; a failing step is logged and the rest still run):
#   1. environment (python -m resbench.env, nvidia-smi)
#   2. the tests marked cuda
#   3. a sweep of resnet18, resnet50, small_resnet20 x batch sizes x fp32/tf32/bf16 x channels_last
#      off/on x inference/train, then torch.compile on resnet50 bf16+cl
#   4. CUDA-event timing of measure() against torch.utils.benchmark.Timer (scripts/clock_check.py)
#   5. torch.profiler over resnet50 bf16 channels_last train
#   6. the trainer for two epochs on a generated full-size (50,000-image) CIFAR-10 stand-in
#   7. pytest benchmarks (resnet50, batch 32, fp32 and bf16+cl) on the device, JSON saved
# Everything lands in one folder, results/gpu-<timestamp> (or --out), with a log of each step;
# when $OUT is set (the device tool), a tarball of it and the key summaries are copied there.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
DRY=0
RUN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --out) RUN=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (use --device, --dry-run, --out)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
RUN=${RUN:-results/gpu-$(date -u +%Y%m%d-%H%M%S)-$DEVICE}
mkdir -p "$RUN"
LOG="$RUN/check.log"
STATUS="$RUN/steps.tsv"
: > "$STATUS"

if [ "$DRY" = 1 ]; then
  MODELS=small_resnet20; BATCHES=8; PRECS=fp32,bf16; BUDGET=0.1; SWEEP_MIN=2
  COMPILE_MODELS=small_resnet20; COMPILE_BATCH=8; PROFILE_MODEL=small_resnet20; PROFILE_BATCH=8
  TRAIN_IMAGES=2000; TRAIN_EPOCHS=1; CLOCK="--rounds 1 --budget 0.5"; BENCH="--rb-models small_resnet20 --rb-batch-sizes 8"
else
  MODELS=resnet18,resnet50,small_resnet20; BATCHES=32,256; PRECS=fp32,tf32,bf16; BUDGET=0.25; SWEEP_MIN=2.5
  COMPILE_MODELS=resnet50; COMPILE_BATCH=256; PROFILE_MODEL=resnet50; PROFILE_BATCH=32
  TRAIN_IMAGES=50000; TRAIN_EPOCHS=2; CLOCK="--rounds 3 --budget 1"
  BENCH="--rb-models resnet50 --rb-batch-sizes 32 --rb-settings fp32,bf16+cl"
fi

step() {  # step NAME SECONDS CMD...: run with a time limit, log it, record its status
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$LOG"
  timeout --signal=TERM --kill-after=20 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  printf '%s\t%s\t%ss\n' "$name" "$rc" "$((SECONDS - t0))" | tee -a "$STATUS"
  return 0
}

step env 60 bash -c "$PY -m resbench.env > '$RUN/env.json' && (nvidia-smi > '$RUN/nvidia-smi.txt' 2>&1 || true)"
step tests-cuda 240 $PY -m pytest tests -m cuda -q -p no:cacheprovider -o addopts="" --junitxml="$RUN/pytest-cuda.xml"
step sweep 300 $PY -m resbench.sweep --device "$DEVICE" --models "$MODELS" --batch-sizes "$BATCHES" \
  --precision "$PRECS" --channels-last off,on --modes inference,train --budget "$BUDGET" \
  --isolate off --max-minutes "$SWEEP_MIN" --no-progress --out "$RUN/sweep"
step sweep-compile 240 $PY -m resbench.sweep --device "$DEVICE" --models "$COMPILE_MODELS" \
  --batch-sizes "$COMPILE_BATCH" --precision bf16 --channels-last on --compile off,default \
  --modes inference,train --budget "$BUDGET" --isolate off --no-progress --resume --out "$RUN/sweep"
step clock 180 $PY scripts/clock_check.py --device "$DEVICE" $CLOCK --out "$RUN/clock.json"
step profile 180 $PY -m resbench.profile --model "$PROFILE_MODEL" --batch-size "$PROFILE_BATCH" \
  --device "$DEVICE" --precision bf16 --channels-last on --mode train --steps 3 --out "$RUN/profile"
step train 300 bash -c "$PY -m resbench.data --data-dir '$RUN/.data' --synthetic $TRAIN_IMAGES && \
  $PY -m resbench.train --data-dir '$RUN/.data' --no-verify --device $DEVICE --epochs $TRAIN_EPOCHS \
  --target-acc 0.5 --target-acc 0.9 --no-progress --out '$RUN/train'"
rm -rf "$RUN/.data"
step bench 150 $PY -m pytest benchmarks -q -p no:cacheprovider --rb-device "$DEVICE" $BENCH \
  --benchmark-json="$RUN/pytest-benchmark.json"
step report 120 $PY -m resbench.report --pytest-benchmark "$RUN/pytest-benchmark.json" --out "$RUN/bench"

echo "=== done; steps (name, exit code, seconds):" | tee -a "$LOG"
cat "$STATUS"
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  tar -czf "$OUT/gpu-check.tar.gz" "$RUN"
  cp "$LOG" "$STATUS" "$OUT/" 2>/dev/null
  cp "$RUN/sweep/summary.md" "$OUT/sweep-summary.md" 2>/dev/null
  cp "$RUN/clock.json" "$OUT/" 2>/dev/null
  echo "copied $RUN to $OUT/gpu-check.tar.gz"
fi
! grep -qv $'\t0\t' "$STATUS"
