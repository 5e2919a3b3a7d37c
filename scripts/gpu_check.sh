#!/usr/bin/env bash
# One prepared check of resbench on a CUDA machine with PyTorch installed and no internet.
#
#   scripts/gpu_check.sh [--out DIR] [--minutes 7] [--skip profile,bench]  # on the GPU machine
#   scripts/gpu_check.sh --device cpu --dry-run     # rehearse every step on a CPU (3-6 minutes)
#
# Steps, in order; [seconds] are estimates from the first H100 run (results/gpu-h100-cuda):
#   1. env: python -m resbench.env (with the NVIDIA driver and each GPU's power limit), nvidia-smi [14]
#   2. tests-cuda: the tests marked cuda                                                  [~90]
#   3. clock: measure() and the sweep against the user's own loop (Timer, a bare loop, a plain
#      process) on resnet50 b128 tf32 (GPU-bound), over 2 fresh processes [~100]
#   4. profile: torch.profiler over resnet50 b32 bf16+cl train                            [28]
#   5. train: the trainer's default setting, two epochs on a generated full-size (50,000-image)
#      CIFAR-10 stand-in [42]; train-best: the same at its best setting, bf16 + channels_last +
#      CUDA graphs (--compile reduce-overhead) [~100, most of it compiling]; train-compare:
#      images/s per epoch of the two (train-compare.md)
#   6. bench: pytest benchmarks, resnet50 b32 bf16+cl, JSON saved, and its report          [~25]
#   7. sweep: `--preset gpu`, with whatever time is left, most telling first: resnet50 at batch
#      32 and 256 in fp32 tf32 tf32+cl bf16 bf16+cl, inference and train [~120]; resnet50 b256
#      bf16+cl+compile inference [18]; resnet18 and small_resnet20 b256, tf32 and bf16+cl [~20];
#      resnet50 bf16+cl+compile train at b256 and b512 [~110, most of it compiling]; resnet18 and
#      small_resnet20 b32 [~35]. Every Result carries energy (NVML: avg_power_w, images_per_joule),
#      SM clock and temperature at both ends, and whether the card throttled (power_method says
#      how, or why not: `pip install nvidia-ml-py` where pynvml is missing).
# A whole run takes ~11 minutes on an H100; within --minutes 7 a rerun (same --out) finishes it.
# Every step runs under its own limit and under the whole check's deadline (--minutes): a step
# that would start with less than 10 s left is skipped, and the sweep stops starting Configs in time.
# --skip NAMES (comma-separated step names) leaves steps out, e.g. those a committed run already has.
# A failing step is logged and the rest still run. A rerun with the same --out (e.g. the tarball
# unpacked into the repository) skips the steps that passed and resumes the sweep.
# Everything lands in one folder (default results/gpu-<timestamp>-<device>) with check.log and
# steps.tsv; when $OUT is set (the device tool), a tarball of it and the key summaries are copied
# there on exit, also after a TERM.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
DRY=0
RUN=""
MINUTES=7
SKIP=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --out) RUN=$2; shift 2 ;;
    --minutes) MINUTES=$2; shift 2 ;;
    --skip) SKIP=$2; shift 2 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (use --device, --dry-run, --out, --minutes, --skip)" >&2; exit 2 ;;
  esac
done
[[ $MINUTES =~ ^[1-9][0-9]*$ ]] || { echo "gpu_check.sh: --minutes takes whole minutes; got $MINUTES" >&2; exit 2; }
STEPS="env tests-cuda clock profile train train-best train-compare bench bench-report sweep"
for name in ${SKIP//,/ }; do
  grep -qx -- "$name" <<< "${STEPS// /$'\n'}" || { echo "gpu_check.sh: --skip $name is not a step; choose from: ${STEPS// /, }" >&2; exit 2; }
done
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
RUN=${RUN:-results/gpu-$(date -u +%Y%m%d-%H%M%S)-$DEVICE}
mkdir -p "$RUN"
LOG="$RUN/check.log"
STATUS="$RUN/steps.tsv"
PASSED=$(awk -F'\t' '$2 == "0" { print $1 }' "$STATUS" 2>/dev/null)  # a rerun skips these
: > "$STATUS"
DEADLINE=$((SECONDS + MINUTES * 60))
RESERVE=15  # kept back for the report and the copy to $OUT

if [ "$DRY" = 1 ]; then
  NARROW=(--models small_resnet20 --batch-sizes 4,8); BUDGET=0.1
  PROFILE="--model small_resnet20 --batch-size 8"; TRAIN_IMAGES=2000; TRAIN_EPOCHS=1
  CLOCK="--model small_resnet20 --batch-size 8 --processes 1 --rounds 1 --budget 0.3"; BENCH="--rb-models small_resnet20 --rb-batch-sizes 8"
else
  NARROW=(); BUDGET=0.25
  PROFILE="--model resnet50 --batch-size 32"; TRAIN_IMAGES=50000; TRAIN_EPOCHS=2
  CLOCK="--model resnet50 --batch-size 128 --setting tf32 --processes 2 --rounds 3 --budget 0.5"
  BENCH="--rb-models resnet50 --rb-batch-sizes 32 --rb-settings bf16+cl"
fi

finish() {
  echo "=== done; steps (name, exit code, seconds):" | tee -a "$LOG"
  cat "$STATUS"
  if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    tar -czf "$OUT/gpu-check.tar.gz" --exclude=.data --exclude=checkpoint.pt "$RUN"
    cp "$LOG" "$STATUS" "$OUT/" 2>/dev/null
    cp "$RUN/sweep/summary.md" "$OUT/sweep-summary.md" 2>/dev/null
    cp "$RUN/clock.json" "$RUN/train-compare.md" "$OUT/" 2>/dev/null
    echo "copied $RUN to $OUT/gpu-check.tar.gz"
  fi
}
trap finish EXIT
CHILD=""
stop() {  # a TERM or Ctrl-C: the step in flight stops (a sweep keeps its finished Results), then finish
  echo "=== stopped by a signal" >> "$LOG"
  [ -n "$CHILD" ] && kill -TERM "$CHILD" 2>/dev/null && wait "$CHILD"
  exit 143
}
trap stop TERM INT

left() { echo $((DEADLINE - SECONDS - RESERVE)); }

step() {  # step NAME SECONDS CMD...: run within min(SECONDS, time left), log it, record its status
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  if grep -qx "$name" <<< "${SKIP//,/$'\n'}"; then
    printf '%s\tskipped\t0s (--skip)\n' "$name" | tee -a "$STATUS"
    return 0
  fi
  if grep -qx "$name" <<< "$PASSED"; then
    printf '%s\t0\t0s (passed in an earlier run)\n' "$name" | tee -a "$STATUS"
    return 0
  fi
  [ "$(left)" -lt "$limit" ] && limit=$(left)
  if [ "$limit" -lt 10 ]; then
    printf '%s\tskipped\t0s (deadline)\n' "$name" | tee -a "$STATUS"
    return 0
  fi
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$LOG"
  # in the background so that a signal reaches stop() at once, not when the step ends
  timeout --signal=TERM --kill-after=15 "$limit" "$@" >>"$LOG" 2>&1 &
  CHILD=$!
  wait "$CHILD"
  local rc=$?
  CHILD=""
  printf '%s\t%s\t%ss\n' "$name" "$rc" "$((SECONDS - t0))" | tee -a "$STATUS"
  return 0
}

step env 60 bash -c "$PY -m resbench.env > '$RUN/env.json' && (nvidia-smi > '$RUN/nvidia-smi.txt' 2>&1 || true)"
step tests-cuda 180 $PY -m pytest tests -m cuda -q -p no:cacheprovider -o addopts="" --junitxml="$RUN/pytest-cuda.xml"
step clock 150 $PY scripts/clock_check.py --device "$DEVICE" $CLOCK --out "$RUN/clock.json"
step profile 120 $PY -m resbench.profile $PROFILE --device "$DEVICE" --precision bf16 \
  --channels-last on --mode train --steps 3 --out "$RUN/profile"
# the trainer at its default setting, then at its best: bf16, NHWC and CUDA graphs
# (reduce-overhead), for a network that is launch-bound at batch 128; same data, same recipe
DATA="[ -f '$RUN/.data/cifar-10-batches-py/test_batch' ] || $PY -m resbench.data --data-dir '$RUN/.data' --synthetic $TRAIN_IMAGES"
TRAIN="$PY -m resbench.train --data-dir '$RUN/.data' --no-verify --device $DEVICE --epochs $TRAIN_EPOCHS \
  --target-acc 0.5 --target-acc 0.9 --no-progress --overwrite"  # a rerun restarts a failed step
step train 150 bash -c "$DATA && $TRAIN --out '$RUN/train'"
step train-best 240 bash -c "$DATA && $TRAIN --precision bf16 --channels-last on \
  --compile reduce-overhead --out '$RUN/train-best'"
rm -rf "$RUN/.data" "$RUN/train/checkpoint.pt" "$RUN/train-best/checkpoint.pt"
[ -f "$RUN/train/train.csv" ] && [ -f "$RUN/train-best/train.csv" ] && \
  step train-compare 30 $PY scripts/train_compare.py "$RUN/train" "$RUN/train-best" \
  --out "$RUN/train-compare.md"
step bench 90 $PY -m pytest benchmarks -q -p no:cacheprovider --rb-device "$DEVICE" $BENCH \
  --benchmark-json="$RUN/pytest-benchmark.json"
[ -f "$RUN/pytest-benchmark.json" ] && \
  step bench-report 60 $PY -m resbench.report --pytest-benchmark "$RUN/pytest-benchmark.json" --out "$RUN/bench"
# the sweep takes what is left; it stops starting Configs 20 s before its limit and writes its
# summary.md and plots; a rerun resumes it
RESUME=(); [ -f "$RUN/sweep/results.jsonl" ] && RESUME=(--resume)
RESERVE=5
MINUTES_LEFT=$(awk -v s="$(left)" 'BEGIN { m = s - 20; print (m > 1 ? m : 1) / 60 }')
step sweep 600 $PY -m resbench.sweep --device "$DEVICE" --preset gpu "${NARROW[@]}" --isolate on \
  --budget "$BUDGET" --max-minutes "$MINUTES_LEFT" --no-progress "${RESUME[@]}" --out "$RUN/sweep"

# the exit status: 0 when every step passed or was left out by --skip
awk -F'\t' '$2 != "0" && $3 !~ /--skip/ { bad = 1 } END { exit bad }' "$STATUS"
