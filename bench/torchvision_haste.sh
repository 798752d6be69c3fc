#!/usr/bin/env bash
# HASTE's default layer choice on torchvision's convolutional classifiers (random weights,
# exported at opset 17 with constant folding by bench/torchvision_export.py), on the shared
# ImageNet images: does the time gate keep every network at dense speed or better on
# architectures the cost model was not fitted on, and how much of the speedup its FLOPs
# reduction implies does each reach? One `haste bench --json` per model (both networks
# timed in turns), two threads. A benchmark for developers (torch is a large download),
# not a test; random weights merge more channels than trained ones do.
#
#   bench/torchvision_haste.sh                       # L = 14, batch 8, 3 runs
#   MODELS_LIST=resnet34,vgg11_bn HYPERPLANES=12 bench/torchvision_haste.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LIST=${MODELS_LIST:-resnet34,resnet50,wide_resnet50_2,resnext50_32x4d,vgg11_bn,densenet121,googlenet,squeezenet1_1,regnet_y_400mf,shufflenet_v2_x1_0,mobilenet_v3_large}
DATA=${DATA:-../shared/data/imagenet-val-1300/val}
. bench/torchvision_exports.sh
cargo build --release -q
printf '%-20s %9s %9s %9s %9s %8s\n' model FLOPs-% speedup paired implied of-impl
for m in ${LIST//,/ }; do
  model="$OUT/$m-op17-fold1.onnx"
  [ -f "$model" ] || continue
  # torchvision's ImageNet preprocessing, as the model card beside the model says.
  size=224
  [ "$m" = inception_v3 ] && size=299
  cat > "${model%.onnx}.json" <<EOF
{"name": "$m", "input": {"layout": "NCHW", "channels": 3, "height": $size, "width": $size,
 "pixel_scale": 0.00392156862745098, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
 "resize_shorter_side": $((size * 8 / 7)), "center_crop": $size, "interpolation": "bilinear"}}
EOF
  target/release/haste bench --model "$model" --data "$DATA" --hyperplanes "${HYPERPLANES:-14}" \
    --batch "${BATCH:-8}" --threads "${THREADS:-2}" --runs "${RUNS:-3}" --json 2>/dev/null |
    python3 -c '
import json, sys
d = json.load(sys.stdin)
s, p, i = d["speedup"], d["speedup_paired"], d["speedup_implied_by_flops"]
print(f"%-20s %8.1f%% %8.2fx %8.2fx %8.2fx %8.2f" % (sys.argv[1], d["flops_reduction"], s, p, i, p / i))
' "$m"
done
