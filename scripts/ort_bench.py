"""images/s of onnxruntime on random input: ort_bench.py MODEL BATCH RUNS THREADS"""
import sys, time
import numpy as np
import onnxruntime as ort

model, batch, runs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
inp = s.get_inputs()[0]
shape = [batch] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
s.run(None, {inp.name: x})
best = []
for _ in range(runs):
    t = time.perf_counter()
    s.run(None, {inp.name: x})
    best.append(time.perf_counter() - t)
best.sort()
print(f"ort {model.split('/')[-1]} b{batch} t{threads}: {batch / best[len(best)//2]:.1f} img/s (median of {runs})")
