"""The registry of runtime backends.

Each backend lives in its own module and is imported only when asked for, so
``import autoinfer`` stays fast and imports no runtime. Names are the
runtimes' package names, the names users pass to ``Session(backends=[...])``.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from .base import (
    OBJECTIVES,
    Availability,
    Backend,
    Candidate,
    Capabilities,
    Estimate,
    Hints,
    LoadContext,
    Problem,
    Runner,
    Unsupported,
)

# name -> "module:Class", in the order the doctor lists them
_REGISTRY: dict[str, str] = {
    "onnxruntime": "autoinfer.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "autoinfer.backends.openvino:OpenVinoBackend",
    "ncnn": "autoinfer.backends.ncnn:NcnnBackend",
    "tensorrt": "autoinfer.backends.tensorrt:TensorRTBackend",
}
_instances: dict[str, Backend] = {}
_lock = threading.Lock()
log = logging.getLogger("autoinfer.backends")

__all__ = [
    "OBJECTIVES",
    "Availability",
    "Backend",
    "Candidate",
    "Capabilities",
    "Estimate",
    "Hints",
    "LoadContext",
    "Problem",
    "Runner",
    "Unsupported",
    "names",
    "get",
    "resolve",
    "register",
    "child_environment",
    "thread_env_vars",
    "known_domains",
    "claim_app_options",
]


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


def resolve(include: Iterable[str] | None = None, exclude: Iterable[str] | None = None) -> list[Backend]:
    """The backends named by ``include`` (default all) minus ``exclude``; an unknown name
    is a ConfigError that lists the known ones."""
    inc = list(include) if include is not None else list(_REGISTRY)
    exc = set(exclude or ())
    for n in [*inc, *exc]:
        if n not in _REGISTRY:
            raise ConfigError(f"unknown backend {n!r}. Expected one of: {', '.join(_REGISTRY)}")
    return [get(n) for n in inc if n not in exc]


def _each() -> list[Backend]:
    """Every registered backend whose module imports; a broken one is logged and skipped."""
    out = []
    for name in names():
        try:
            out.append(get(name))
        except Exception as exc:  # noqa: BLE001 - one broken backend must not hide the others
            log.debug("backend %s skipped: %s: %s", name, type(exc).__name__, exc)
    return out


def child_environment(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` plus every backend's :meth:`Backend.child_env`: the environment for any
    process autoinfer starts (measuring worker, converter, self-check), so that no
    runtime in it phones home. The backends' values win over ``base``."""
    env = dict(base)
    for backend in _each():
        env.update(backend.child_env())
    return env


def thread_env_vars() -> tuple[str, ...]:
    """The thread-count environment variables the registered runtimes read."""
    seen: dict[str, None] = {}
    for backend in _each():
        seen.update(dict.fromkeys(backend.thread_env_vars))
    return tuple(seen)


def known_domains() -> frozenset[str]:
    """Custom operator domains some registered runtime implements."""
    return frozenset(d for backend in _each() for d in backend.domains)


def claim_app_options(
    sess_options: Any = None,
    providers: Sequence[Any] | None = None,
    provider_options: Sequence[Mapping[Any, Any]] | None = None,
    **kwargs: Any,
) -> Hints | None:
    """What a runtime's own session arguments mean to autoinfer: the first registered
    backend that claims them (:meth:`Backend.claim_app_options`); None when none does."""
    for backend in _each():
        hints = backend.claim_app_options(sess_options, providers, provider_options, **kwargs)
        if hints is not None:
            return hints
    return None
