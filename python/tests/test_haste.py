"""The Python package against the real shared models: the same logits as onnxruntime, the
same results as the command line, errors as exceptions, threads and growing batches.
Run from the repository root: `python -m pytest python/tests` (needs ../shared)."""

import json
import os
import re
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

import haste

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
RESNET20 = SHARED / "models" / "resnet20-cifar10.onnx"
RESNET56 = SHARED / "models" / "resnet56-cifar10.onnx"
FIRST20 = SHARED / "data" / "cifar10" / "test_first20_lossless.bin"


def cifar_first20():
    """The 20 images of test_first20_lossless.bin, preprocessed as the model card says."""
    card = json.loads((SHARED / "models" / "resnet20-cifar10.json").read_text())["input"]
    raw = np.fromfile(FIRST20, dtype=np.uint8).reshape(20, 3073)
    pixels = raw[:, 1:].reshape(20, 3, 32, 32).astype(np.float32) * np.float32(card["pixel_scale"])
    mean = np.array(card["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.array(card["std"], np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((pixels - mean) / std, dtype=np.float32), raw[:, 0]


def reference_logits(name):
    d = json.loads((SHARED / "models" / "reference_logits_first20.json").read_text())
    return np.array(d["logits"][name], np.float32)


def haste_cli(*args):
    exe = os.environ.get("HASTE_BIN", str(ROOT / "target" / "release" / "haste"))
    out = subprocess.run([exe, *args, "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_logits_match_onnxruntime_at_any_batch_size():
    x, _ = cifar_first20()
    want = reference_logits("resnet20-cifar10")
    m = haste.Model(RESNET20, threads=2)
    assert m.image_shape == (3, 32, 32)
    assert m.labels[0] == "airplane"
    for n in (1, 3, 20):  # the plan grows as larger batches arrive
        y = m.run(x[:n])
        assert y.dtype == np.float32 and y.shape == (n, 10)
        np.testing.assert_allclose(y, want[:n], atol=1e-4)
    np.testing.assert_allclose(m.run(x[0]), want[:1], atol=1e-4)  # one (C, H, W) image


def test_compress_dense_and_flops():
    x, _ = cifar_first20()
    m = haste.Model(RESNET56, threads=2)
    dense = m.run(x)
    assert m.flops()["flops_reduction"] == 0.0
    m.compress(hyperplanes=14, all_layers=True)
    y = m.run(x)
    f = m.flops()
    assert f["setting"] == "haste"
    assert 0 < f["flops"] < f["dense_flops"] and f["flops_overhead"] > 0
    assert 0 < f["flops_reduction"] < 100
    assert not np.array_equal(y, dense)  # merged channels change the logits a little
    assert (y.argmax(1) == dense.argmax(1)).mean() >= 0.8
    assert np.array_equal(m.run(x), y)  # deterministic
    m.dense()
    assert np.array_equal(m.run(x), dense)


def test_evaluate_gives_what_the_command_line_gives():
    args = dict(hyperplanes=14, all_layers=True, limit=20, batch=10)
    got = haste.evaluate(RESNET56, FIRST20, **args)
    want = haste_cli("eval", "--model", str(RESNET56), "--data", str(FIRST20),
                     "--hyperplanes", "14", "--all-layers", "--limit", "20", "--batch", "10")
    assert set(got) == set(want)
    timing = {k for k in got if "second" in k or k == "speedup"}
    for k in set(got) - timing:
        assert got[k] == want[k], k
    rows = haste.sweep(RESNET20, FIRST20, hyperplanes=[10, 14], all_layers=True)
    assert [r["hyperplanes"] for r in rows] == [10, 14]
    assert all(r["flops"] > 0 for r in rows)


def test_evaluate_reproduces_the_command_line_on_all_cifar_test_images():
    data = SHARED / "data" / "cifar10" / "test_batch_jpeg.bin"
    got = haste.evaluate(RESNET20, data, hyperplanes=13, all_layers=True)
    want = haste_cli("eval", "--model", str(RESNET20), "--data", str(data),
                     "--hyperplanes", "13", "--all-layers")
    assert got["images"] == 10000
    assert round(got["top1_dense"], 2) == 81.03
    for k in ("top1_dense", "top1", "top5", "flops", "flops_overhead", "flops_reduction",
              "top1_disagreements", "compressed_convs"):
        assert got[k] == want[k], k


def test_calibrated_policy_round_trip(tmp_path):
    policy = tmp_path / "policy.json"
    c = haste.calibrate(RESNET20, FIRST20, max_drop=5.0, images=20, hyperplanes="10,14", out=policy)
    assert policy.exists() and "layers" in json.loads(policy.read_text())
    assert "predicted_top1_drop" in json.dumps(c)
    x, _ = cifar_first20()
    m = haste.Model(RESNET20).compress(policy=policy)
    assert m.run(x).shape == (20, 10)
    r = haste.evaluate(RESNET20, FIRST20, policy=policy)
    assert r["images"] == 20
    # Calibrated and scored in one call: the images after the calibration's.
    e = haste.evaluate(RESNET20, FIRST20, max_drop=5.0, calibration_images=12, objective="time")
    assert (e["first_image"], e["images"], e["objective"]) == (12, 8, "time")


def test_bad_input_raises_value_errors_naming_the_problem():
    m = haste.Model(RESNET20, threads=1)
    x, _ = cifar_first20()
    for bad, needle in [
        (x.astype(np.float64), "float32"),
        (x[:, :2], "(N, 3, 32, 32)"),
        (x[:, :, ::2], "(N, 3, 32, 32)"),
        (x[:0], "(N, 3, 32, 32)"),
        ([1, 2, 3], "numpy array"),
        (x[::2], "C-contiguous"),
    ]:
        with pytest.raises(ValueError, match=re.escape(needle)):
            m.run(bad)
    with pytest.raises(haste.InputError, match="character device"):
        haste.Model("/dev/zero")
    with pytest.raises(haste.HasteError, match="No such file"):
        haste.Model("/nonexistent.onnx")
    corrupt = Path(os.environ.get("TMPDIR", "/tmp")) / f"haste-corrupt-{os.getpid()}.onnx"
    corrupt.write_bytes(RESNET20.read_bytes()[:5000])
    try:
        with pytest.raises(haste.InputError, match=re.escape(str(corrupt))):
            haste.Model(corrupt)
    finally:
        corrupt.unlink()
    with pytest.raises(haste.InputError, match="L must be 1 to 64|hyperplanes"):
        m.compress(hyperplanes=0)
    with pytest.raises(haste.InputError, match="unexpected argument"):
        haste.evaluate(RESNET20, FIRST20, bogus=1)
    assert issubclass(haste.InputError, ValueError) and issubclass(haste.InternalError, RuntimeError)


def test_one_model_from_several_python_threads():
    x, _ = cifar_first20()
    m = haste.Model(RESNET20, threads=2)
    want = m.run(x)
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                results.append(m.run(x))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 20 and all(np.array_equal(r, want) for r in results)
