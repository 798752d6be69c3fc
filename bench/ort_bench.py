"""onnxruntime images/s on one model: ort_bench.py MODEL BATCH RUNS THREADS

Prints one JSON object: median and min seconds per batch and images per second, on the same
kind of synthetic input haste bench uses when no data is given (speed does not depend on the
pixels for a dense network)."""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

model, batch, runs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
inp = session.get_inputs()[0]
shape = [batch] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
# Warm-up: at least one run and 0.3 s, as haste bench does.
start = time.perf_counter()
session.run(None, {inp.name: x})
while time.perf_counter() - start < 0.3:
    session.run(None, {inp.name: x})
times = []
for _ in range(runs):
    t = time.perf_counter()
    session.run(None, {inp.name: x})
    times.append(time.perf_counter() - t)
times.sort()
median = times[len(times) // 2]
print(json.dumps({"engine": "onnxruntime " + ort.__version__, "batch": batch, "threads": threads,
                  "seconds_median": median, "seconds_min": times[0], "images_per_second": batch / median}))
