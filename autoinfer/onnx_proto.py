"""ONNX's protobuf message classes, without importing the ``onnx`` package.

A session reads its model's facts with the message classes alone (``ModelProto``,
``TensorProto``), but ``import onnx`` brings its helpers, its numpy type tables, JSON
formats and more along: ~60 ms of a process's first ``Session()``, which plain ONNX
Runtime never pays. :func:`messages` loads only the module protoc generated for ONNX's
schema (``onnx/onnx_ml_pb2.py``), by its path. Its descriptors go into protobuf's default
pool, where ``onnx``'s own import later finds them identical and reuses them: both give
the very same classes. Where that cannot be done (a source checkout, an unexpected
layout), it is ``onnx``'s own module.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

_lock = threading.Lock()
_module: ModuleType | None = None


def messages() -> ModuleType:
    """The module that holds ONNX's message classes (``ModelProto``, ``TensorProto``...)."""
    global _module
    with _lock:
        if _module is None:
            _module = _standalone() or _from_onnx()
        return _module


def parse_model(data: bytes) -> Any:
    """A ``ModelProto`` parsed from ``data``, as ``onnx.load_model_from_string`` parses it
    (bytes it does not consume are an error)."""
    model = messages().ModelProto()
    used = model.ParseFromString(data)
    if used is not None and used != len(data):
        from google.protobuf.message import DecodeError

        raise DecodeError(f"Protobuf decoding consumed too few bytes: {used} out of {len(data)}")
    return model


def _from_onnx() -> ModuleType:
    import onnx

    return onnx.onnx_ml_pb2 if hasattr(onnx, "onnx_ml_pb2") else onnx.onnx_pb


def _standalone() -> ModuleType | None:
    """``onnx_ml_pb2`` loaded by its path, without ``onnx/__init__``; None where ``onnx`` is
    imported already (its module is at hand) or the file is not where a wheel puts it."""
    if "onnx" in sys.modules:
        return None
    try:
        spec = importlib.util.find_spec("onnx")  # finds the package, does not import it
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / "onnx_ml_pb2.py"
        if not path.is_file():
            return None
        # the name protoc gave it: its classes say they come from there, as onnx's do
        pb2 = importlib.util.spec_from_file_location("onnx.onnx_ml_pb2", path)
        if pb2 is None or pb2.loader is None:
            return None
        module = importlib.util.module_from_spec(pb2)
        pb2.loader.exec_module(module)  # not put in sys.modules: onnx's import makes its own
        return module if hasattr(module, "ModelProto") else None
    except Exception:  # noqa: BLE001 - any surprise: onnx's own import is the way
        return None
