#!/usr/bin/env bash
# Times every HASTE layer of the shared models against its dense kernel, as HASTE's time
# model is fitted (src/haste/cost.rs, `CostModel`), and fits it:
#
#   bench/cost_model_runs.sh [OUT_DIR]          # HASTE_ISA=avx2 bench/... for another tier
#
# One thread, `--all-layers --include-1x1`, tiles 4, 8 and 16, L = 10 and 16 (different
# shares merged and patch sizes separate the constants); the CIFAR ResNets on CIFAR-10 test
# images at batch 32, the ImageNet models on imagenet-val-1300 at batch 8. Each run's JSON
# goes to OUT_DIR (default /tmp/haste-cost-runs), then `bench/fit_cost_model.py` prints the
# refitted constants and writes them as a cost model file (OUT_DIR/cost-model.json), which
# `HASTE_COST_MODEL=...` makes haste use without a rebuild. A tool, not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-/tmp/haste-cost-runs}"
shared="${SHARED:-../shared}"
tiles="${TILES:-4 8 16}"
ls_="${HYPERPLANES:-10 16}"
mkdir -p "$out"
cargo build --release -q
haste=./target/release/haste
cifar="$shared/data/cifar10/test_batch_jpeg.bin"
imagenet="$shared/data/imagenet-val-1300/val"
runs=(
  "resnet20-cifar10 $cifar 32"
  "resnet56-cifar10 $cifar 32"
  "tiny-darknet-imagenet $imagenet 8"
  "efficientnet-lite1-imagenet $imagenet 8"
  "resnet18-randominit-imagenet $imagenet 8"
  "mobilenet_v2-randominit-imagenet $imagenet 8"
  "efficientnet_b0-randominit-imagenet $imagenet 8"
)
isa="${HASTE_ISA:-best}"
for r in "${runs[@]}"; do
  read -r model data batch <<< "$r"
  for tile in $tiles; do
    for l in $ls_; do
      f="$out/$isa-$model-t$tile-l$l.json"
      echo "$model tile $tile L $l" >&2
      "$haste" bench --model "$shared/models/$model.onnx" --data "$data" --batch "$batch" \
        --hyperplanes "$l" --tile "$tile" --all-layers --include-1x1 --layers --runs 4 \
        --threads 1 --json > "$f.part"
      mv "$f.part" "$f"
    done
  done
done
python3 bench/fit_cost_model.py --out "$out/cost-model.json" "$out"/"$isa"-*.json
