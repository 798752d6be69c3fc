#!/usr/bin/env bash
# haste against onnxruntime (CPU provider, PyPI) on the shared models, in one run, same threads
# and batch on both sides: images/s, their ratio, batch-1 latency, and haste with HASTE on Tiny
# Darknet at its operating point. A benchmark, not a test: CI does not run it.
#
#   bench/vs_onnxruntime.sh            # THREADS=2 RUNS=7 ROUNDS=2 by default
#   THREADS=1 RUNS=11 bench/vs_onnxruntime.sh
#   IMAGENET_BATCH=8 CIFAR_BATCH=256 bench/vs_onnxruntime.sh
#   MODELS="/tmp/haste-torchvision/*-op17-fold1.onnx" bench/vs_onnxruntime.sh   # other models
#                                      # (bench/torchvision_speed.sh exports torchvision's)
#
# Each side is timed ROUNDS times, alternating haste and onnxruntime, and its best median is
# kept: on a shared VM a run can lose a core to another tenant for seconds (batch-1 runs on
# two threads are the most exposed), and alternating keeps such spells from landing on one
# side only. The last column is the cross-core round trip before and after the row's runs
# (examples/core_latency.rs): on a VM whose two cores are at times far apart (about 400 ns
# instead of 40-120), batch-1 runs on two threads slow down by a third on both sides.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=../shared
THREADS=${THREADS:-2}
RUNS=${RUNS:-7}
ROUNDS=${ROUNDS:-2}
VENV=${HASTE_ORT_VENV:-${TMPDIR:-/tmp}/haste-ort-venv}
if ! "$VENV/bin/python" -c 'import onnxruntime, numpy' 2>/dev/null; then
  echo "installing onnxruntime into $VENV ..." >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q onnxruntime numpy
fi
cargo build --release -q
cargo build --release -q --example core_latency
HASTE=./target/release/haste
# How far apart the two cores are right now (see examples/core_latency.rs): batch-1 runs on
# two threads move with it, on both sides.
rtt() { ./target/release/examples/core_latency | awk '{print $4}'; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

printf '%-30s %6s %12s %12s %7s %12s\n' model batch "haste img/s" "ort img/s" ratio "core rtt ns"
# Every model in ../shared, at a batch (256 for the CIFAR networks, 16 for the ImageNet ones,
# 8 with MODELS_BATCH=8 ...) and at batch 1.
for m in ${MODELS:-"$SHARED"/models/*.onnx}; do
  name=$(basename "$m" .onnx)
  case "$name" in *cifar10) batch=${CIFAR_BATCH:-256} ;; *) batch=${IMAGENET_BATCH:-16} ;; esac
  set -- "$name" "$batch"
  for b in $2 1; do
    # Batch 1 runs are a few ms: time more of them, or the median catches the clock ramping up.
    r=$RUNS; [ "$b" = 1 ] && r=$((RUNS * 8))
    h=0; o=0
    before=$(rtt)
    for _ in $(seq "$ROUNDS"); do
      hr=$($HASTE bench --model "$m" --batch "$b" --threads "$THREADS" --runs "$r" --json | field '["dense_images_per_second"]')
      or=$("$VENV/bin/python" bench/ort_bench.py "$m" "$b" "$r" "$THREADS" | field '["images_per_second"]')
      h=$(python3 -c "print(max($h, $hr))"); o=$(python3 -c "print(max($o, $or))")
    done
    printf '%-30s %6s %12.1f %12.1f %6.2fx %12s\n' "$1" "$b" "$h" "$o" "$(python3 -c "print($h/$o)")" "$before-$(rtt)"
  done
done

# HASTE on Tiny Darknet at an operating point within 1 point of dense (see README), on real images.
[ -n "${MODELS:-}" ] && exit 0
L=${TINY_L:-12}
j=$($HASTE bench --model $SHARED/models/tiny-darknet-imagenet.onnx --data $SHARED/data/imagenet-val-1300/val \
      --hyperplanes "$L" --batch 32 --threads "$THREADS" --runs "$RUNS" --json)
o=$("$VENV/bin/python" bench/ort_bench.py $SHARED/models/tiny-darknet-imagenet.onnx 32 "$RUNS" "$THREADS" | field '["images_per_second"]')
echo "$j" | python3 -c "
import json, sys
j = json.load(sys.stdin); o = $o
print(f\"tiny-darknet HASTE L=$L: haste dense {j['dense_images_per_second']:.1f} img/s, HASTE {j['haste_images_per_second']:.1f} img/s \"
      f\"(x{j['speedup']:.2f}; FLOPs -{j['flops_reduction']:.1f} % implies x{j['speedup_implied_by_flops']:.2f}), onnxruntime {o:.1f} img/s\")
print(f\"peak RSS of that haste run: {j['peak_rss_bytes'] / 2**20:.1f} MiB\")"
