#!/usr/bin/env bash
# Loads and runs every convolutional classifier torchvision ships, exported by
# torch.onnx.export (random weights) at opset 13 without constant folding, opset 17 with it,
# and the default dynamo exporter, and prints haste's largest logit difference to
# onnxruntime, relative to the largest logit, at batch 2 on 2 threads. A coverage check for
# developers (torch is a large download), not part of the tests.
#
#   bench/torchvision_coverage.sh                 # venv in $TMPDIR/haste-torch-venv
#   MODELS=resnet18,mobilenet_v3_small bench/torchvision_coverage.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${HASTE_TORCH_VENV:-${TMPDIR:-/tmp}/haste-torch-venv}
OUT=${OUT:-${TMPDIR:-/tmp}/haste-torchvision}
MODELS=${MODELS:-alexnet,vgg11,vgg11_bn,resnet18,resnext50_32x4d,wide_resnet50_2,squeezenet1_0,squeezenet1_1,densenet121,googlenet,inception_v3,mobilenet_v2,mobilenet_v3_small,mobilenet_v3_large,mnasnet0_5,shufflenet_v2_x0_5,efficientnet_b0,efficientnet_v2_s,regnet_x_400mf,regnet_y_400mf,convnext_tiny}
if ! "$VENV/bin/python" -c 'import torch, torchvision, onnx, onnxscript, onnxruntime' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch torchvision onnx onnxscript onnxruntime numpy
fi
cargo build --release -q --example raw_run
for variant in "13 0" "17 1" "0 1"; do
  set -- $variant
  "$VENV/bin/python" bench/torchvision_export.py "$OUT" "$1" "$2" "$MODELS" 2>&1 | grep -v -i warn || true
done
printf '%-40s %s\n' export "max |haste - onnxruntime| / max |logit|"
for f in "$OUT"/*.onnx; do
  [ -f "$f.y" ] || continue
  scale=$("$VENV/bin/python" -c "import numpy as np; print(np.abs(np.fromfile('$f.y', '<f4')).max())")
  if r=$(./target/release/examples/raw_run "$f" "$f.x" "$f.y" 2 2 2>&1); then
    d=${r##*= }
    printf '%-40s %.1e\n' "$(basename "$f" .onnx)" "$(python3 -c "print($d / $scale)")"
  else
    printf '%-40s %s\n' "$(basename "$f" .onnx)" "$(echo "$r" | tail -1 | cut -c1-150)"
  fi
done
