"""caffe-tensorflow weight files: ``np.save`` of ``{layer: {param: array}}``, loaded safely.

Such a file is a pickled object, and ``np.load(allow_pickle=True)`` would run whatever
the pickle asks for.  :func:`load_npy_weights` unpickles with a whitelist: numpy arrays
and dtypes, dicts, lists, strings and numbers — any other class or function in the
file is refused with :class:`~proto2torch.errors.DSLError` before it is touched.

:func:`dsl_blobs` then turns the TensorFlow layouts into Caffe's: convolution kernels
HWIO → OIHW, fully connected (in, out) → (out, in) with rows reordered from H·W·C to
C·H·W when the layer reads a feature map (TFFRCNN's fc flattens in C·H·W order already), batch norm (mean, variance, scale, offset —
or the slim names moving_mean, moving_variance, gamma, beta) → BatchNorm + Scale.
"""

from __future__ import annotations

import ast
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DSLError, LimitError
from ..ir.graph import Net

MAX_NPY_BYTES = 2**31 - 1
_MAGIC = b"\x93NUMPY"
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            if module == "_codecs":
                import codecs

                return codecs.encode
            if name == "_reconstruct":
                return np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct  # type: ignore[attr-defined]
            if name == "scalar":
                return np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar  # type: ignore[attr-defined]
            return getattr(np, name)
        raise DSLError(f"the weights file asks to load {module}.{name}; only arrays, dicts, lists, strings and numbers are accepted")


def load_npy_weights(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """``{layer: {param: float32 array}}`` from a caffe-tensorflow ``.npy`` file, without arbitrary unpickling."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_NPY_BYTES:
            raise LimitError(f"{path}: {size} bytes is over the 2 GB limit for a weights file")
        data = path.read_bytes()
    except OSError as exc:
        raise DSLError(f"cannot read {path}: {exc.strerror}") from None
    return npy_weights_from_bytes(data, str(path))


def npy_weights_from_bytes(data: bytes, name: str = "<npy>") -> dict[str, dict[str, np.ndarray]]:
    if not data.startswith(_MAGIC) or len(data) < 10:
        raise DSLError(f"{name}: not a .npy file")
    major = data[6]
    if major == 1:
        header_len = int.from_bytes(data[8:10], "little")
        start = 10
    elif major in (2, 3):
        header_len = int.from_bytes(data[8:12], "little")
        start = 12
    else:
        raise DSLError(f"{name}: unknown .npy format version {major}")
    try:
        header = ast.literal_eval(data[start : start + header_len].decode("latin1"))
    except (ValueError, SyntaxError, UnicodeDecodeError):
        raise DSLError(f"{name}: the .npy header is damaged") from None
    if not isinstance(header, dict) or "descr" not in header:
        raise DSLError(f"{name}: the .npy header is damaged")
    if header["descr"] != "|O":
        raise DSLError(f"{name}: holds a plain {header['descr']} array, not caffe-tensorflow's {{layer: {{param: array}}}} dict")
    try:
        value = _Restricted(io.BytesIO(data[start + header_len :]), encoding="latin1").load()
    except DSLError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as exc:
        raise DSLError(f"{name}: the weights cannot be read ({type(exc).__name__}: {exc})") from None
    if isinstance(value, np.ndarray) and value.dtype == object and value.shape == ():
        value = value.item()
    if not isinstance(value, dict):
        raise DSLError(f"{name}: expected a dict of layers, found {type(value).__name__}")
    out: dict[str, dict[str, np.ndarray]] = {}
    for layer, params in value.items():
        layer = layer.decode("latin1") if isinstance(layer, bytes) else layer
        if not isinstance(layer, str) or not isinstance(params, dict):
            raise DSLError(f"{name}: layer {layer!r} should map parameter names to arrays")
        arrays = {}
        for key, array in params.items():
            key = key.decode("latin1") if isinstance(key, bytes) else key
            if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
                raise DSLError(f"{name}: {layer}/{key} is not a numeric array")
            arrays[str(key)] = np.ascontiguousarray(array, dtype=np.float32)
        out[layer] = arrays
    return out


_BN_KEYS = {
    "mean": ("mean", "moving_mean"),
    "variance": ("variance", "moving_variance"),
    "scale": ("scale", "gamma"),
    "offset": ("offset", "beta"),
}


def _pick(params: dict[str, np.ndarray], role: str, layer: str) -> np.ndarray | None:
    for key in _BN_KEYS[role]:
        if key in params:
            return params[key].reshape(-1)
    return None


def dsl_blobs(net: Net, weights: dict[str, dict[str, np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """IR node name → blobs in Caffe's layout, from a caffe-tensorflow weights dict."""
    plan: dict[str, tuple[str, tuple[str, ...]]] = net.meta.get("dsl_weights", {})
    blobs: dict[str, list[np.ndarray]] = {}
    problems = []
    for layer, (kind, nodes) in plan.items():
        params = weights.get(layer)
        if params is None:
            problems.append(f"layer '{layer}' has no entry in the weights file")
            continue
        try:
            if kind == "conv":
                w = params["weights"]
                if w.ndim != 4:
                    raise ValueError(f"weights of shape {list(w.shape)} are not HWIO")
                blobs[nodes[0]] = [np.ascontiguousarray(w.transpose(3, 2, 0, 1))] + ([params["biases"].reshape(-1)] if "biases" in params else [])
            elif kind in ("fc", "fc_chw"):
                node = net.node(nodes[0])
                in_shape = net.values[node.inputs[0]].shape or ()
                w = params["weights"]
                if len(in_shape) == 4 and kind == "fc":
                    _, c, h, wd = in_shape
                    w = w.reshape(h, wd, c, -1).transpose(3, 2, 0, 1).reshape(-1, c * h * wd)
                else:
                    w = w.T
                blobs[nodes[0]] = [np.ascontiguousarray(w)] + ([params["biases"].reshape(-1)] if "biases" in params else [])
            elif kind == "bn":
                mean, var = _pick(params, "mean", layer), _pick(params, "variance", layer)
                if mean is None or var is None:
                    raise ValueError(f"no mean/variance (keys: {', '.join(params)})")
                blobs[nodes[0]] = [mean, var, np.ones(1, np.float32)]
                gamma, beta = _pick(params, "scale", layer), _pick(params, "offset", layer)
                for extra in nodes[1:]:
                    if extra.endswith(":scale"):
                        blobs[extra] = [gamma if gamma is not None else np.ones_like(mean), beta if beta is not None else np.zeros_like(mean)]
                    else:
                        blobs[extra] = [beta if beta is not None else np.zeros_like(mean)]
            elif kind == "depthwise":  # slim's depthwise_weights (k, k, C, multiplier 1) -> Caffe's (C, 1, k, k)
                w = params["depthwise_weights"]
                if w.ndim != 4 or w.shape[3] != 1:
                    raise ValueError(f"depthwise weights of shape {list(w.shape)} are not (k, k, C, 1)")
                blobs[nodes[0]] = [np.ascontiguousarray(w.transpose(2, 3, 0, 1))]
            elif kind == "prelu":
                blobs[nodes[0]] = [params["alpha"].reshape(-1)]
        except KeyError as exc:
            problems.append(f"layer '{layer}': no '{exc.args[0]}' array (keys: {', '.join(params)})")
        except ValueError as exc:
            problems.append(f"layer '{layer}': {exc}")
    unused = sorted(set(weights) - set(plan))
    if problems:
        raise DSLError("the weights do not fit the DSL net:\n  " + "\n  ".join(problems))
    if unused:
        net.meta.setdefault("unused_weights", unused)  # type: ignore[union-attr]
    return blobs
