"""The registry of runtime backends.

Each backend lives in its own module and is imported only when asked for, so
``import autoinfer`` stays fast and imports no runtime. Names are the
runtimes' package names, the names users pass to ``Session(backends=[...])``.
"""
from __future__ import annotations

import importlib
import threading
from typing import Iterable

from ..errors import ConfigError
from .base import (OBJECTIVES, Availability, Backend, Capabilities, Candidate, Estimate,
                   LoadContext, Problem, Runner, Unsupported)

# name -> "module:Class", in the order the doctor lists them
_REGISTRY: dict[str, str] = {
    "onnxruntime": "autoinfer.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "autoinfer.backends.openvino:OpenVinoBackend",
    "ncnn": "autoinfer.backends.ncnn:NcnnBackend",
    "tensorrt": "autoinfer.backends.tensorrt:TensorRTBackend",
}
_instances: dict[str, Backend] = {}
_lock = threading.Lock()

__all__ = ["OBJECTIVES", "Availability", "Backend", "Candidate", "Capabilities", "Estimate",
           "LoadContext", "Problem", "Runner", "Unsupported", "names", "get", "select",
           "register"]


def names() -> tuple[str, ...]:
    """Every registered backend name."""
    return tuple(_REGISTRY)


def register(name: str, target: str | Backend) -> None:
    """Add a backend: ``"module:Class"`` or an instance (tests register fakes this way)."""
    with _lock:
        if isinstance(target, Backend):
            _instances[name] = target
            _REGISTRY[name] = f"{type(target).__module__}:{type(target).__qualname__}"
        else:
            _instances.pop(name, None)
            _REGISTRY[name] = target


def unregister(name: str) -> None:
    with _lock:
        _REGISTRY.pop(name, None)
        _instances.pop(name, None)


def get(name: str) -> Backend:
    """The backend called ``name``; its module is imported on first use."""
    with _lock:
        inst = _instances.get(name)
        if inst is not None:
            return inst
        target = _REGISTRY.get(name)
        if target is None:
            raise ConfigError(f"unknown backend {name!r}. Expected one of: {', '.join(_REGISTRY)}")
        mod_name, cls_name = target.split(":")
        cls = getattr(importlib.import_module(mod_name), cls_name)
        inst = _instances[name] = cls()
        return inst


def select(include: Iterable[str] | None = None,
           exclude: Iterable[str] | None = None) -> list[Backend]:
    """Backends named by ``include`` (default all) minus ``exclude``, validated."""
    inc = list(include) if include is not None else list(_REGISTRY)
    exc = set(exclude or ())
    for n in [*inc, *exc]:
        if n not in _REGISTRY:
            raise ConfigError(f"unknown backend {n!r}. Expected one of: {', '.join(_REGISTRY)}")
    return [get(n) for n in inc if n not in exc]
