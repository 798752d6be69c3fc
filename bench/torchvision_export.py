"""Exports torchvision's classifiers (random weights, BatchNorm statistics randomized so a
wrong fold shows) to ONNX and records onnxruntime's logits on a random batch of two, for
bench/torchvision_coverage.sh. Usage: torchvision_export.py OUT_DIR OPSET FOLD NAME[,NAME...]
with OPSET 0 for torch.onnx.export's default (dynamo) exporter."""
import os, sys

import numpy as np
import onnxruntime as ort
import torch
import torchvision.models as tvm

out, opset, fold, names = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
for name in names.split(","):
    size = 299 if name == "inception_v3" else 224
    kw = {"aux_logits": False, "init_weights": True} if name in ("inception_v3", "googlenet") else {}
    model = getattr(tvm, name)(weights=None, **kw).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, size, size)
    path = f"{out}/{name}-op{opset}-fold{int(fold)}.onnx"
    if opset == 0:
        kw = {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1, max=64)},)}
    else:
        kw = {"opset_version": opset, "do_constant_folding": fold, "dynamo": False,
              "dynamic_axes": {"input": {0: "batch"}, "logits": {0: "batch"}}}
    try:
        torch.onnx.export(model, x[:1], path, input_names=["input"], output_names=["logits"], **kw)
    except Exception as e:  # an export torch itself cannot do is not haste's to run
        print(f"{name}: export failed: {str(e).splitlines()[0][:160]}", file=sys.stderr)
        continue
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    y = s.run(None, {s.get_inputs()[0].name: x.numpy()})[0]
    x.numpy().astype("<f4").tofile(path + ".x")
    y.astype("<f4").tofile(path + ".y")
