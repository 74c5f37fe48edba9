#!/usr/bin/env bash
# The measurement behind FOLK's default blur per view (augment.blur_prob of the folk preset,
# folk/recipes.py): the demo's FOLK pre-training with each blur setting and seed, then
# k-NN on its backbone; prints loss_rec (mean of the last logged quarter of the run) and
# k-NN top-1 per run. Two runs at a time (one thread each). Takes ~15 minutes on 2 cores.
#   bash scripts/measure_folk_blur.sh [OUT_DIR]     (default runs/blur-study)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
out=${1:-runs/blur-study}
settings=${SETTINGS:-"1.0,0.1 0.5,0.5 0.1,0.1"}
seeds=${SEEDS:-"0 1"}
folk prepare fashion_mnist --config params/demo.yaml >/dev/null

run_one() {  # blur seed
  local dir="$out/blur${1/,/_}-seed$2"
  mkdir -p "$dir"
  OMP_NUM_THREADS=1 folk pretrain --config params/demo.yaml --set pretrain.variant=folk \
    --set "augment.blur_prob=[$1]" --set "experiment.seed=$2" --set pretrain.knn_every=0 \
    --out "$dir" > "$dir.log" 2>&1
  OMP_NUM_THREADS=1 folk eval knn --run "$dir" >> "$dir.log" 2>&1
}

jobs=()
for blur in $settings; do for seed in $seeds; do jobs+=("$blur $seed"); done; done
for ((i = 0; i < ${#jobs[@]}; i += 2)); do
  run_one ${jobs[i]} &
  [ $((i + 1)) -lt ${#jobs[@]} ] && run_one ${jobs[i + 1]} &
  wait
done

python - "$out" <<'EOF'
import json, sys
from pathlib import Path

from folk.utils.io import read_jsonl

rows = []
for run in sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir()):
    train = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("type") == "train"]
    tail = train[-max(1, len(train) // 4):]
    knn = json.loads((run / "eval" / "knn" / "metrics.json").read_text())["metrics"]
    rows.append((run.name, sum(r["loss_rec"] for r in tail) / len(tail),
                 sum(r["loss_kd"] for r in tail) / len(tail), knn.get("top1_k20")))
print(f"{'run':28s} {'loss_rec':>9s} {'loss_kd':>8s} {'knn@20':>7s}")
for name, rec, kd, knn in rows:
    print(f"{name:28s} {rec:9.4f} {kd:8.4f} {knn:7.2f}")
EOF
