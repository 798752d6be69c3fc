"""haste: make any pretrained CNN cheaper at inference time with HASTE (LSH channel merging),
with no data and no fine-tuning.

>>> import numpy as np, haste
>>> m = haste.Model("resnet56-cifar10.onnx")        # the card beside the model is read
>>> y = m.run(x)                                    # float32 NCHW -> logits
>>> m.compress(hyperplanes=14)                      # or policy="policy.json"; m.dense()
>>> m.flops()                                       # dense / HASTE FLOPs per image
>>> haste.evaluate("resnet56-cifar10.onnx", "test_batch.bin", hyperplanes=14, limit=1000)

``evaluate``, ``sweep``, ``calibrate`` and ``inspect`` return what the command line's
``--json`` prints (dicts with the same keys). Every error is a :class:`HasteError`
(:class:`InputError`, a ``ValueError``, for bad input; :class:`InternalError`, a
``RuntimeError``, for bugs) with the command line's one-line message.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from . import _haste
from ._errors import HasteError, InputError, InternalError

__all__ = [
    "Model",
    "from_torch",
    "evaluate",
    "sweep",
    "calibrate",
    "inspect",
    "HasteError",
    "InputError",
    "InternalError",
    "__version__",
]

__version__ = _haste.__version__

PathLike = Union[str, "os.PathLike[str]"]


class Model:
    """A pretrained ONNX CNN loaded for inference, dense or with HASTE.

    ``Model(path, threads=0)`` loads the model (``threads=0``: one worker per core). The
    model card ``NAME.json`` beside the model supplies the class labels when present.
    A Model may be called from several Python threads: runs release the GIL and take turns
    on the model's plan.
    """

    def __init__(self, path: PathLike, threads: int = 0) -> None:
        if threads < 0:
            raise InputError(f"threads must be 0 (one per core) or more, not {threads}")
        self._native = _haste.NativeModel(os.fspath(path), int(threads))

    @property
    def path(self) -> str:
        """The model file."""
        return os.fspath(self._native.path)

    @property
    def image_shape(self) -> tuple:
        """The shape of one input image, ``(C, H, W)``."""
        return tuple(self._native.image_shape)

    @property
    def labels(self) -> Optional[List[str]]:
        """Class labels from the model card, if it names them."""
        return self._native.labels

    @property
    def threads(self) -> int:
        """Worker threads."""
        return self._native.threads

    def run(self, x: np.ndarray) -> np.ndarray:
        """Runs a batch ``x`` (float32, ``(N, C, H, W)`` with ``(C, H, W)`` the model's image
        shape, any ``N >= 1``; a single ``(C, H, W)`` image is a batch of one) and returns the
        network's output (``(N, classes)`` logits for a classifier) as a new float32 array.
        The GIL is released while the network runs."""
        if not isinstance(x, np.ndarray):
            raise InputError(f"x must be a numpy array of float32 {self._expected()}, not {type(x).__name__}")
        if x.dtype != np.float32:
            raise InputError(f"x must be float32 {self._expected()}, not {x.dtype}")
        if x.ndim == len(self.image_shape):
            x = x[np.newaxis]
        if x.ndim != 1 + len(self.image_shape) or tuple(x.shape[1:]) != self.image_shape or x.shape[0] == 0:
            raise InputError(f"x must have shape {self._expected()}, not {tuple(x.shape)}")
        if not x.flags["C_CONTIGUOUS"]:
            raise InputError(
                f"x must be C-contiguous (use np.ascontiguousarray(x)); shape {tuple(x.shape)}"
            )
        return self._native.run(x)

    __call__ = run

    def compress(
        self,
        hyperplanes: Optional[int] = None,
        *,
        policy: Optional[PathLike] = None,
        sparsity: float = 2.0 / 3.0,
        tile: Optional[int] = None,
        seed: int = 0,
        all_layers: bool = False,
    ) -> "Model":
        """Puts HASTE on the model: ``hyperplanes=L`` (the default layer choice, made on the
        next batch run, as ``haste eval`` makes it on the first batch; ``all_layers=True`` for
        every eligible layer), or ``policy="policy.json"`` from ``haste calibrate``. ``tile``:
        the output patch side; ``None`` lets each layer take 4, 8 or 16, whichever the next
        batch predicts faster. Returns the model."""
        if (hyperplanes is None) == (policy is None):
            raise InputError("give either hyperplanes=L or policy=PATH")
        if policy is not None:
            self._native.compress_policy(os.fspath(policy))
        else:
            self._native.compress(int(hyperplanes), float(sparsity), None if tile is None else int(tile), int(seed), bool(all_layers))
        return self

    def dense(self) -> "Model":
        """Back to the dense network. Returns the model."""
        self._native.dense()
        return self

    def flops(self) -> Dict[str, Any]:
        """FLOPs (multiply-accumulates) per image: ``dense_flops``, and ``flops``,
        ``flops_overhead`` (HASTE's hashing and merging, included in ``flops``) and
        ``flops_reduction`` (percent) as measured on the last batch run (None before a run
        with HASTE on)."""
        return json.loads(self._native.flops_json())

    def _expected(self) -> str:
        return "(N, " + ", ".join(str(d) for d in self.image_shape) + ")"

    def __repr__(self) -> str:
        return f"haste.Model({self.path!r}, image_shape={self.image_shape}, threads={self.threads})"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _args(sub: str, model: PathLike, data: Optional[PathLike], options: Dict[str, Any]) -> List[str]:
    args = [sub, "--model", os.fspath(model)]
    if data is not None:
        args += ["--data", os.fspath(data)]
    for name, value in options.items():
        if value is None or value is False:
            continue
        if value is True:
            args.append(_flag(name))
        elif isinstance(value, (list, tuple)):
            args += [_flag(name), ",".join(str(v) for v in value)]
        elif isinstance(value, os.PathLike):
            args += [_flag(name), os.fspath(value)]
        else:
            args += [_flag(name), str(value)]
    return args


def _run(args: List[str], progress: bool) -> Any:
    return json.loads(_haste.run_json(args, bool(progress)))


def evaluate(
    model: PathLike,
    data: PathLike,
    *,
    hyperplanes: Optional[int] = None,
    policy: Optional[PathLike] = None,
    limit: Optional[int] = None,
    progress: bool = False,
    **options: Any,
) -> Dict[str, Any]:
    """Top-1/top-5, FLOPs and speed of ``model`` on ``data`` (a CIFAR-10 binary file or an
    image folder), dense and, with ``hyperplanes``, ``policy`` or ``max_drop`` (calibrate
    on the first ``calibration_images``, score the images after them), with HASTE: the dict
    ``haste eval --json`` prints. Other options are the command line's flags with
    underscores (``batch=64``, ``threads=2``, ``skip=128``, ``all_layers=True``,
    ``objective="time"``, ``skip_bad=True`` ...)."""
    opts = dict(hyperplanes=hyperplanes, policy=policy, limit=limit, **options)
    return _run(_args("eval", model, data, opts), progress)


def sweep(
    model: PathLike,
    data: PathLike,
    *,
    hyperplanes: Optional[Sequence[int]] = None,
    max_drop: Optional[Sequence[float]] = None,
    limit: Optional[int] = None,
    progress: bool = False,
    **options: Any,
) -> List[Dict[str, Any]]:
    """The accuracy / FLOPs trade-off over several ``hyperplanes`` (or calibrated
    ``max_drop`` targets): one dict per point, as in ``haste sweep --json``'s ``points``.
    ``plot="curve.svg"``, ``csv=...``, ``json_out=...`` write files as the command line
    does."""
    opts = dict(hyperplanes=hyperplanes, max_drop=max_drop, limit=limit, **options)
    return _run(_args("sweep", model, data, opts), progress)["points"]


def calibrate(
    model: PathLike,
    data: PathLike,
    *,
    max_drop: Optional[float] = None,
    flops_reduction: Optional[float] = None,
    out: Optional[PathLike] = None,
    progress: bool = False,
    **options: Any,
) -> Dict[str, Any]:
    """Label-free calibration on the first images of ``data``: the policy for the saving
    or accuracy asked for (``max_drop`` points or ``flops_reduction`` percent), as
    ``haste calibrate --json`` prints it; ``out="policy.json"`` also writes the policy file,
    which :meth:`Model.compress` and :func:`evaluate` take as ``policy=``."""
    opts = dict(max_drop=max_drop, flops_reduction=flops_reduction, out=out, **options)
    return _run(_args("calibrate", model, data, opts), progress)


def inspect(
    model: PathLike,
    data: PathLike,
    *,
    hyperplanes: Optional[int] = None,
    progress: bool = False,
    **options: Any,
) -> Dict[str, Any]:
    """Per-layer diagnostics (``haste inspect --json``)."""
    opts = dict(hyperplanes=hyperplanes, **options)
    return _run(_args("inspect", model, data, opts), progress)


def from_torch(module: Any, example_input: Any, threads: int = 0, opset: int = 17) -> Model:
    """A :class:`Model` of a PyTorch module, exported with ``torch.onnx.export`` (on
    ``example_input``, an ``(N, C, H, W)`` tensor) to a temporary file, loaded and then
    removed (so :meth:`Model.compress` takes ``hyperplanes=``; a policy needs the model file
    it was calibrated on). Needs torch, which haste does not depend on."""
    import tempfile

    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise InputError("haste.from_torch needs PyTorch (pip install torch)") from e
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.onnx")
        module.eval()
        with torch.no_grad():
            torch.onnx.export(module, example_input, path, opset_version=opset, input_names=["input"])
        return Model(path, threads=threads)
