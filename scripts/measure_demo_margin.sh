#!/usr/bin/env bash
# How far the demo's FOLK pre-training gets above its own random initialisation, for one
# setting: pre-trains folk with params/demo.yaml plus the given --set items, writes the same
# run's initialisation (pretrain.epochs=0, set last so that it wins), and evaluates both with
# k-NN and the linear probe (and the evaluations named in $TASKS, e.g. TASKS=finetune). Prints
# one line: pre-training seconds, then k-NN top-1 (k = 20), linear top-1 (and each extra
# task's primary metric) of the trained backbone and of its initialisation.
#   [TASKS=finetune] bash scripts/measure_demo_margin.sh NAME [KEY=VALUE ...]  (runs/margin/NAME/)
# e.g. bash scripts/measure_demo_margin.sh p8e4 model.patch_size=8 pretrain.epochs=4
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
[ $# -ge 1 ] || { echo "usage: $0 NAME [KEY=VALUE ...]" >&2; exit 2; }
name=$1; shift
case "$name" in */*|.*) echo "NAME must be a plain directory name, got '$name'" >&2; exit 2;; esac
base=runs/margin/$name
mkdir -p "$base"
sets=(--set pretrain.knn_every=0); for s in "$@"; do sets+=(--set "$s"); done
folk prepare fashion_mnist --config params/demo.yaml >/dev/null
start=$(date +%s)
folk pretrain --config params/demo.yaml "${sets[@]}" --out "$base/folk" > "$base/folk.log" 2>&1
seconds=$(( $(date +%s) - start ))
folk pretrain --config params/demo.yaml "${sets[@]}" --set pretrain.epochs=0 \
  --out "$base/init" > "$base/init.log" 2>&1
for run in folk init; do
  for task in knn linear ${TASKS:-}; do folk eval "$task" --run "$base/$run" >> "$base/$run.log" 2>&1; done
done
python - "$base" "$name" "$seconds" ${TASKS:-} <<'PY'
import json, sys
from pathlib import Path

base, name, seconds, extra = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
def metric(run, task):
    record = json.loads((base / run / "eval" / task / "metrics.json").read_text())
    key = "top1_k20" if task == "knn" else record["primary"]
    return record["metrics"][key]
tasks = ["knn", "linear", *extra]
cells = {run: [metric(run, task) for task in tasks] for run in ("folk", "init")}
def row(run):
    return " ".join(f"{task} {value:.1f}" for task, value in zip(tasks, cells[run]))
margin = " / ".join(f"{f - i:+.1f}" for f, i in zip(cells["folk"], cells["init"]))
print(f"{name}: pre-training {seconds} s; folk {row('folk')}; initialisation {row('init')}; "
      f"margin {margin}")
PY
