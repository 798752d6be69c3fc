"""haste against onnxruntime on single inverted-residual blocks, op by op, one thread.

    bench/mbconv_blocks.py [RUNS]

Builds, in a temporary directory, random-weight ONNX models of one block each (1x1
expansion + ReLU, depthwise KxK + ReLU, 1x1 projection) at the shapes of EfficientNet-Lite1's
and MobileNetV2's late stages, where haste's depthwise layers trail onnxruntime's in the
networks, and prints each op's time from haste's `examples/profile` and from onnxruntime's
profiler (`bench/ort_profile.py`), batch 1. A block alone keeps its operands in cache, so it
separates the kernels from the network's cache traffic. The depthwise op is the clean
comparison (pixel-major in and out, as in the networks); the expansion reads the model's
NCHW input and the projection writes its NCHW output, so on haste's side those two include
a change of layout the networks do not have. onnxruntime runs every op in its
channel-blocked layout (NCHWc). Needs the onnxruntime venv of
bench/vs_onnxruntime.sh, plus `onnx` (installed into it if missing)."""
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV = os.environ.get("HASTE_ORT_VENV", os.path.join(os.environ.get("TMPDIR", "/tmp"), "haste-ort-venv"))
PY = os.path.join(VENV, "bin", "python")

# (input channels, widened channels, kernel, side, output channels)
BLOCKS = [(192, 1152, 5, 8, 320), (80, 480, 3, 15, 80), (96, 576, 3, 14, 96), (64, 384, 3, 14, 64)]

BUILD = r'''
import sys, numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
cin, c, k, side, cout = map(int, sys.argv[1:6])
path = sys.argv[6]
rng = np.random.default_rng(0)
nodes, inits = [], []
def conv(inp, out, shape, group=1):
    inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), out + "w"))
    inits.append(numpy_helper.from_array(np.zeros(shape[0], np.float32), out + "b"))
    nodes.append(helper.make_node("Conv", [inp, out + "w", out + "b"], [out], kernel_shape=list(shape[2:]),
                                  pads=[shape[2] // 2] * 4, group=group))
conv("x", "e", (c, cin, 1, 1)); nodes.append(helper.make_node("Relu", ["e"], ["er"]))
conv("er", "d", (c, 1, k, k), group=c); nodes.append(helper.make_node("Relu", ["d"], ["dr"]))
conv("dr", "p", (cout, c, 1, 1))
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, side, side])
y = helper.make_tensor_value_info("p", TensorProto.FLOAT, None)
graph = helper.make_graph(nodes, "block", [x], [y], inits)
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
'''


def main():
    runs = sys.argv[1] if len(sys.argv) > 1 else "3000"
    if subprocess.run([PY, "-c", "import onnx, onnxruntime"], capture_output=True).returncode:
        subprocess.run([PY, "-m", "pip", "install", "-q", "onnx", "onnxruntime", "numpy"], check=True)
    subprocess.run(["cargo", "build", "--release", "-q", "--example", "profile"], cwd=ROOT, check=True)
    profile = os.path.join(ROOT, "target", "release", "examples", "profile")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'block':>28} {'op':>10} {'haste ms':>9} {'ort ms':>8} {'ratio':>6}")
        for cin, c, k, side, cout in BLOCKS:
            path = os.path.join(tmp, f"block_{c}_{k}_{side}.onnx")
            subprocess.run([PY, "-c", BUILD, *map(str, (cin, c, k, side, cout)), path], check=True)
            h = subprocess.run([profile, path, "1", runs, "1"], capture_output=True, text=True, check=True).stdout
            o = subprocess.run([PY, os.path.join(HERE, "ort_profile.py"), path, "1", runs, "1"],
                               capture_output=True, text=True, check=True).stdout
            hs = [float(m) for m in re.findall(r"GFLOP/s\s+([\d.]+) ms", h)]
            os_ = [float(m) for m in re.findall(r"\s+Conv\s+([\d.]+) ms", o)]
            name = f"{cin}>{c}>{cout} {k}x{k} @{side}"
            for op, a, b in zip(["expand", "depthwise", "project"], hs, os_):
                print(f"{name:>28} {op:>10} {a:9.3f} {b:8.3f} {a / b:5.2f}x")


if __name__ == "__main__":
    main()
