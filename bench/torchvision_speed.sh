#!/usr/bin/env bash
# haste against onnxruntime on every convolutional classifier torchvision ships (random
# weights, exported at opset 17 with constant folding by bench/torchvision_export.py), at a
# batch and at batch 1 on two threads: bench/vs_onnxruntime.sh's table for models that are
# not in ../shared. A benchmark for developers (torch is a large download), not a test.
#
#   bench/torchvision_speed.sh                       # IMAGENET_BATCH=8 ROUNDS=2 by default
#   MODELS_LIST=resnet50,shufflenet_v2_x1_0 bench/torchvision_speed.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LIST=${MODELS_LIST:-alexnet,vgg11_bn,resnet18,resnet50,resnext50_32x4d,wide_resnet50_2,squeezenet1_1,densenet121,googlenet,inception_v3,mobilenet_v2,mobilenet_v3_small,mobilenet_v3_large,mnasnet1_0,shufflenet_v2_x1_0,efficientnet_b0,efficientnet_v2_s,regnet_x_400mf,regnet_y_400mf,convnext_tiny}
. bench/torchvision_exports.sh
models=$(for m in ${LIST//,/ }; do echo "$OUT/$m-op17-fold1.onnx"; done)
MODELS="$models" IMAGENET_BATCH=${IMAGENET_BATCH:-8} HASTE_ORT_VENV="$VENV" bench/vs_onnxruntime.sh
