"""onnxruntime time per node: ort_profile.py MODEL BATCH RUNS THREADS

Runs the model with onnxruntime's profiler on and prints, per node, the mean milliseconds per
run and its share of the total, in graph order, so a layer of haste's `examples/profile.rs`
can be set beside onnxruntime's. Note that onnxruntime fuses nodes (Conv+Relu, Conv+Add), so
one of its rows can cover several ONNX nodes."""
import json
import os
import sys
import tempfile
from collections import OrderedDict

import numpy as np
import onnxruntime as ort

model, batch, runs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
so.enable_profiling = True
so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
inp = session.get_inputs()[0]
shape = [batch] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
for _ in range(3):
    session.run(None, {inp.name: x})
path = session.end_profiling()
# Profile again, warm, for the timed runs only.
so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
for _ in range(runs):
    session.run(None, {inp.name: x})
events = json.load(open(session.end_profiling()))
warm = OrderedDict()
for e in events:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        name = e["name"][: -len("_kernel_time")]
        op = e.get("args", {}).get("op_name", "")
        warm.setdefault((name, op), []).append(e["dur"])
# The median of the runs: a run that lost its core to another tenant does not count.
median = {k: sorted(v)[len(v) // 2] for k, v in warm.items()}
total = sum(median.values())
for (name, op), us in median.items():
    ms = us / 1000
    print(f"{name[:44]:>44} {op:>16} {ms:8.3f} ms {100 * ms * 1000 / total:5.1f} %")
print(f"{'total':>44} {'':>16} {total / 1000:8.3f} ms")
