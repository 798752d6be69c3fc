# Sourced by bench/torchvision_speed.sh and bench/torchvision_haste.sh (after `cd` to the
# project root and with $LIST set): a venv with torch in $VENV, made once, and torchvision's
# classifiers in $LIST (comma-separated) exported at opset 17 with constant folding into
# $OUT, those not there yet.
VENV=${HASTE_TORCH_VENV:-${TMPDIR:-/tmp}/haste-torch-venv}
OUT=${OUT:-${TMPDIR:-/tmp}/haste-torchvision}
if ! "$VENV/bin/python" -c 'import torch, torchvision, onnx, onnxruntime' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch torchvision onnx onnxscript onnxruntime numpy
fi
missing=$(for m in ${LIST//,/ }; do [ -f "$OUT/$m-op17-fold1.onnx" ] || echo "$m"; done | paste -sd, -)
if [ -n "$missing" ]; then
  "$VENV/bin/python" bench/torchvision_export.py "$OUT" 17 1 "$missing" 2>&1 | grep -v -i warn || true
fi
