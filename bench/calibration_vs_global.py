"""Calibrated policies against the best single global HASTE setting, on the real shared models:
calibrate on the first 128 images (labels unread), score on the rest; the global settings are
searched with the labels of those same held-out images (L x start layer x magnitude bins x 1x1),
which favours them. A benchmark (minutes per model), not a test.

    python3 bench/calibration_vs_global.py [MODEL ...]      # after cargo build --release
"""
import itertools, json, subprocess, sys, time

SHARED = "../shared"
CIFAR = f"{SHARED}/data/cifar10/test_batch_jpeg.bin"
IMAGENET = f"{SHARED}/data/imagenet-val-1300/val"
MODELS = {
    "resnet20-cifar10": CIFAR, "resnet32-cifar10": CIFAR, "resnet56-cifar10": CIFAR,
    "tiny-darknet-imagenet": IMAGENET, "efficientnet-lite1-imagenet": IMAGENET,
}
HASTE = __import__("os").environ.get("HASTE_BIN", "./target/release/haste")
CALIB = 128
# The L values of the labelled global search (GLOBAL_L=8,12,16 for a shorter run).
GLOBAL_L = [int(v) for v in __import__("os").environ.get("GLOBAL_L", "6,8,10,12,14,16,20,24,32").split(",")]


def run(*args):
    out = subprocess.run([HASTE, *args, "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main(names):
    print(f"{'model':28} {'max drop':>8} {'calibrated: drop':>17} {'FLOPs -%':>9} {'passes':>6} {'s':>6}"
          f" {'best global: drop':>18} {'FLOPs -%':>9}  setting")
    for name in names or MODELS:
        model, data = f"{SHARED}/models/{name}.onnx", MODELS[name]
        common = ["--model", model, "--data", data]
        best = None
        for L, start, mag, one in itertools.product(
                GLOBAL_L, [1, 2], ["auto", "off"], [False, True]):
            extra = ["--include-1x1"] if one else []
            r = run("eval", *common, "--skip", str(CALIB), "--hyperplanes", str(L), "--all-layers",
                    "--start-layer", str(start), "--magnitude-bins", mag, *extra)
            if r["top1_drop"] <= 1.0 and (best is None or r["flops_reduction"] > best[1]):
                best = (r["top1_drop"], r["flops_reduction"], f"L={L} start={start} mag={mag} 1x1={'on' if one else 'off'}")
        for drop in [1.0]:
            t = time.time()
            c = run("calibrate", *common, "--images", str(CALIB), "--max-drop", str(drop),
                    "--out", f"/tmp/{name}.policy.json")
            seconds = time.time() - t
            e = run("eval", *common, "--skip", str(CALIB), "--policy", f"/tmp/{name}.policy.json")
            glob = f"{best[0]:18.2f} {best[1]:9.1f}  {best[2]}" if best else f"{'none within 1.0':>28}"
            print(f"{name:28} {drop:8.2f} {e['top1_drop']:17.2f} {e['flops_reduction']:9.1f} "
                  f"{c['forward_passes']:6d} {seconds:6.0f} {glob}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
