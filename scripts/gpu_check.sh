#!/usr/bin/env bash
# One prepared check of everything that needs a GPU (issue 13, "feed the GPU"), at most
# 8 minutes on one GPU, writing ONE JSON-lines file of figures:
#   $OUT/gpu_check.jsonl when $OUT is set, else runs/gpu_check/gpu_check.jsonl
# (the step logs go beside it, in logs/). One record per step, in this order:
#   environment          torch, CUDA, the device
#   cuda_tests           pytest -m cuda (tests/test_cuda.py): bf16 step, filters on a CUDA
#                        generator, torch.compile, channels-last ResNet, SyncBatchNorm, data path
#   bench_step           folk bench, ViT-B/16 at 224 px, batch 128, eager, DINO step beside it
#   bench_step_compile   the same with --compile
#   bench_data           folk bench --data on JPEG photographs (folk prepare photos)
#   pretrain_resume      a ~2-minute pre-training on the photographs, SIGTERM part-way (the
#                        engine checkpoints), then the same command again: did it finish, at
#                        what images/s
#   gpu_mini             params/gpu-mini.yaml through Snakemake, only if the time is left
#                        (and Fashion-MNIST is installed); else recorded as skipped
# Each step runs under `timeout` with a hard limit, never more than the time left of the
# budget (GPU_CHECK_BUDGET seconds, default 480); a step that fails or times out is recorded
# with its status and the next one runs. The record of a step: {"type": "gpu_check",
# "step", "status": ok | failed | timeout | skipped, "rc", "seconds", "figures", "log", ...}.
#
#   bash scripts/gpu_check.sh              # on the GPU machine
#   bash scripts/gpu_check.sh --dry-run    # on a CPU: the same steps at toy sizes, < 2 min
#
# The dry run checks the plumbing, not the figures: tiny ViT, 32-64 px, a few iterations,
# the CUDA tests skipped, torch.compile disabled (TORCHDYNAMO_DISABLE=1: compiling on a CPU
# takes longer than the whole dry run may), and the gpu-mini step a Snakemake dry run.
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3).
set -uo pipefail

usage() { echo "usage: bash scripts/gpu_check.sh [--dry-run]" >&2; exit 2; }
DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) usage ;;
  esac
done

cd "$(dirname "$0")/.." || exit 1
REPO=$PWD
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
OUT_DIR=${OUT:-$REPO/runs/gpu_check}
FILE=$OUT_DIR/gpu_check.jsonl
LOGS=$OUT_DIR/logs
mkdir -p "$LOGS" || exit 1
: > "$FILE"
# bulky things (photographs, run directories) stay out of $OUT, which travels back
WORK=$(mktemp -d "${TMPDIR:-/tmp}/folk-gpu-check.XXXXXX") || exit 1
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHON REPO WORK LOGS DRY
BUDGET=${GPU_CHECK_BUDGET:-$([ "$DRY" = 1 ] && echo 110 || echo 480)}
START=$(date +%s)

# sizes: the GPU's, or toys that a CPU runs in seconds
if [ "$DRY" = 1 ]; then
  VIT_B=(--set model.arch=vit_tiny_patch16_224 --set model.img_size=32 --set model.patch_size=8
         --set model.depth=1 --set model.embed_dim=32 --set model.num_heads=2
         --set model.head_out_dim=64 --set model.head_hidden_dim=32
         --set model.head_bottleneck_dim=16)
  BATCH=4; STEPS=(--steps 2 --warmup 1); PHOTOS=32; WORKERS=1
  DATA_RUN=(--rounds 1 --images 4 --steps 1 --warmup 0 --iterations 2 --set model.img_size=64
            --set augment.compile=off)
  SMALL=("${VIT_B[@]}" --set model.img_size=64); KILL_AFTER=2; ITERATIONS=24
  TIMEOUTS=(30 60 25 25 30 40 30)
else
  VIT_B=(--set model.arch=vit_base_patch16_224 --set model.img_size=224
         --set model.patch_size=16)
  BATCH=128; STEPS=(--steps 20 --warmup 5); PHOTOS=1500; WORKERS=14
  # eager CPU operations: 14 workers compiling them cold would spend the step's 120 s
  # (the compiled CPU path is what the CPU bench measures)
  DATA_RUN=(--rounds 12 --images 32 --steps 10 --warmup 3 --iterations 20
            --set augment.compile=off)
  SMALL=(--set model.arch=vit_small_patch16_224 --set model.img_size=224
         --set model.patch_size=16); KILL_AFTER=45; ITERATIONS=
  TIMEOUTS=(60 100 70 120 110 170 300)
fi
PHOTOS_CFG=(--config "$REPO/params/bench-photos.yaml" --set "data.root=$WORK/photos"
            --set "data.num_workers=$WORKERS")

say() { echo "[gpu_check $(date +%H:%M:%S)] $*"; }
folk() { "$PYTHON" -m folk.cli "$@"; }
export -f folk

# run_step NAME LIMIT COMMAND...: COMMAND under `timeout` (limit capped by the time left),
# its output in logs/NAME.log, then one record of its figures (scripts/gpu_check_figures.py)
run_step() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) ))
  local log=$LOGS/$name.log
  if [ "$left" -lt 10 ]; then
    say "$name: skipped (${left}s of the ${BUDGET}s budget left)"
    record "$name" skipped "" 0 "$log" "only ${left}s of the ${BUDGET}s budget left"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "$name: starting (at most ${limit}s)"
  local t0 rc status ms
  t0=$(date +%s%N)
  timeout -k 10 "$limit" "$@" > "$log" 2>&1
  rc=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  case $rc in
    0) status=ok ;;
    124|137) status=timeout ;;
    *) status=failed ;;
  esac
  record "$name" "$status" "$rc" "$ms" "$log" ""
  say "$name: $(tail -n 1 "$FILE" | "$PYTHON" -c 'import json,sys; r=json.load(sys.stdin); print(r["status"], "in", r["seconds"], "s:", json.dumps(r["figures"])[:300])' 2>/dev/null || echo "$status (rc $rc)")"
}

record() {  # NAME STATUS RC MILLISECONDS LOG REASON
  "$PYTHON" "$REPO/scripts/gpu_check_figures.py" --file "$FILE" --work "$WORK" \
    --step "$1" --status "$2" --rc "$3" --ms "$4" --log "$5" --reason "$6" \
    --dry-run "$DRY" || echo "{\"type\": \"gpu_check\", \"step\": \"$1\", \"status\": \"$2\", \"rc\": ${3:-null}, \"figures\": {}, \"reason\": \"the figures helper failed\"}" >> "$FILE"
}

# ------------------------------------------------------------------ the steps

step_environment() {
  "$PYTHON" - <<'PY'
import json, platform, torch
info = {"python": platform.python_version(), "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
        "devices": torch.cuda.device_count()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(device=p.name, memory_gib=round(p.total_memory / 2**30, 1),
                bf16=torch.cuda.is_bf16_supported())
print("ENV " + json.dumps(info))
PY
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
}

step_cuda_tests() {
  "$PYTHON" -m pytest -q -rs -p no:cacheprovider -m cuda "$REPO/tests"
}

step_bench() {  # extra args: --compile, or nothing
  local tag=eager; [ "$#" -gt 0 ] && tag=compile
  folk bench --variants folk --batch-size "$BATCH" "${STEPS[@]}" "${VIT_B[@]}" \
    --peak-tflops 989 --out "$WORK/bench_$tag.jsonl" "$@"
}

step_bench_data() {
  folk prepare photos "${PHOTOS_CFG[@]}" --count "$PHOTOS" &&
  folk bench --data "${PHOTOS_CFG[@]}" --batch-size "$BATCH" "${VIT_B[@]}" "${DATA_RUN[@]}" \
    --out "$WORK/bench_data.jsonl"
}

step_pretrain_resume() {
  local run=$WORK/pretrain
  [ -d "$WORK/photos/train" ] || folk prepare photos "${PHOTOS_CFG[@]}" --count "$PHOTOS" || return 1
  local n=$ITERATIONS
  if [ -z "$n" ]; then  # ~100 s of training at the whole path's measured rate
    n=$("$PYTHON" - "$WORK/bench_data.jsonl" "$BATCH" <<'PY'
import json, sys
try:
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    ips = next(r["images_per_s"] for r in rows if r.get("measure") == "whole")
except (OSError, StopIteration, ValueError, KeyError):
    ips = 500.0  # no measurement: a loader-bound guess
print(max(50, min(3000, int(ips * 100 / int(sys.argv[2])))))
PY
)
  fi
  # whole epochs of the photographs, the last one cut at n iterations
  local epochs=$(( (n + PHOTOS / BATCH - 1) / (PHOTOS / BATCH) ))
  local argv=(pretrain "${PHOTOS_CFG[@]}" "${SMALL[@]}" --set "pretrain.batch_size=$BATCH"
              --set "pretrain.epochs=$epochs" --set "pretrain.max_iterations=$n"
              --set pretrain.log_every=5 --set pretrain.checkpoint_every=100000
              --set pretrain.knn_every=0 --out "$run")
  echo "pretrain: $n iterations of $BATCH, SIGTERM after ${KILL_AFTER}s of training"
  "$PYTHON" -m folk.cli "${argv[@]}" > "$LOGS/pretrain_first.log" 2>&1 &
  local pid=$! t0 killed=0
  t0=$(date +%s)
  # the kill comes once training is under way (a train record) and KILL_AFTER has passed
  while kill -0 "$pid" 2> /dev/null; do
    if grep -q '"type": "train"' "$run/metrics.jsonl" 2> /dev/null &&
       [ $(( $(date +%s) - t0 )) -ge "$KILL_AFTER" ]; then
      kill -TERM "$pid"; killed=1; break
    fi
    sleep 0.5
  done
  wait "$pid"; local first_rc=$?
  local at_kill=0
  [ -f "$run/checkpoints/last.pt" ] && at_kill=$(grep -c '"type": "train"' "$run/metrics.jsonl")
  printf '{"iterations": %s, "batch_size": %s, "killed": %s, "first_rc": %s, "checkpoint_after_kill": %s, "train_records_at_kill": %s, "kill_after_s": %s}\n' \
    "$n" "$BATCH" "$([ $killed = 1 ] && echo true || echo false)" "$first_rc" \
    "$([ -f "$run/checkpoints/last.pt" ] && echo true || echo false)" "$at_kill" \
    "$KILL_AFTER" > "$WORK/pretrain_resume.json"
  tail -n 5 "$LOGS/pretrain_first.log"
  echo "first run: rc $first_rc; resuming with the same command"
  "$PYTHON" -m folk.cli "${argv[@]}"
}

step_gpu_mini() {  # in a directory of its own: data, runs and Snakemake's state stay there
  local snakemake
  snakemake=$(dirname "$PYTHON")/snakemake
  [ -x "$snakemake" ] || snakemake=snakemake
  local plan=(); [ "$DRY" = 1 ] && plan=(--dry-run)
  mkdir -p "$WORK/gpu_mini"
  "$snakemake" "${plan[@]}" --cores 16 --snakefile "$REPO/Snakefile" \
    --directory "$WORK/gpu_mini" --configfile "$REPO/params/gpu-mini.yaml"
}
export -f step_environment step_cuda_tests step_bench step_bench_data step_pretrain_resume \
  step_gpu_mini
export BATCH KILL_AFTER ITERATIONS PHOTOS FILE
# bash exports no arrays: the steps get them as declarations
ARRAYS=$(declare -p VIT_B STEPS DATA_RUN SMALL PHOTOS_CFG)

# ------------------------------------------------------------------ run them

say "writing $FILE ($([ "$DRY" = 1 ] && echo "dry run, toy sizes" || echo GPU), budget ${BUDGET}s)"
run_step environment "${TIMEOUTS[0]}" bash -c step_environment
run_step cuda_tests "${TIMEOUTS[1]}" bash -c step_cuda_tests
run_step bench_step "${TIMEOUTS[2]}" bash -c "$ARRAYS; step_bench"
if [ "$DRY" = 1 ]; then
  run_step bench_step_compile "${TIMEOUTS[3]}" env TORCHDYNAMO_DISABLE=1 \
    bash -c "$ARRAYS; step_bench --compile --no-baseline"
else
  run_step bench_step_compile "${TIMEOUTS[3]}" bash -c "$ARRAYS; step_bench --compile"
fi
run_step bench_data "${TIMEOUTS[4]}" bash -c "$ARRAYS; step_bench_data"
run_step pretrain_resume "${TIMEOUTS[5]}" bash -c "$ARRAYS; step_pretrain_resume"
left=$(( BUDGET - ($(date +%s) - START) ))
if [ "$DRY" = 0 ] && [ "$left" -lt "${TIMEOUTS[6]}" ]; then
  say "gpu_mini: skipped (${left}s left, it needs ~${TIMEOUTS[6]}s)"
  record gpu_mini skipped "" 0 "$LOGS/gpu_mini.log" \
    "${left}s of the ${BUDGET}s budget left, the mini-reproduction needs ~${TIMEOUTS[6]}s: run it alone (snakemake --cores 16 --configfile params/gpu-mini.yaml)"
elif [ "$DRY" = 0 ] && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] &&
     [ ! -f data/fashion_mnist/train-images-idx3-ubyte.gz ]; then
  say "gpu_mini: skipped (no Fashion-MNIST)"
  record gpu_mini skipped "" 0 "$LOGS/gpu_mini.log" \
    "Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist) and this machine has no network"
else
  run_step gpu_mini "${TIMEOUTS[6]}" bash -c step_gpu_mini
fi
say "done in $(( $(date +%s) - START ))s: $FILE"
