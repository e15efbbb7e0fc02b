"""autoinfer: run an ONNX model on the fastest correct runtime of this machine.

    import autoinfer
    sess = autoinfer.Session("model.onnx")      # drop-in for onnxruntime.InferenceSession
    outputs = sess.run(None, {"input": x})
    print(sess.explain())

    autoinfer.patch()   # or: python -m autoinfer.patch app.py  (onnxruntime.InferenceSession
                        # becomes autoinfer's for the whole process; unpatch() restores it)

Importing autoinfer imports no inference runtime; each is imported when used.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .errors import (
    AutoinferError,
    BackendError,
    BackendUnavailable,
    CacheError,
    ConfigError,
    InputError,
    ModelError,
    NoCandidateError,
    UnsupportedModel,
    UnsupportedOnRuntime,
)

__version__ = "0.1.0"

logging.getLogger("autoinfer").addHandler(logging.NullHandler())

__all__ = [
    "AutoinferError",
    "BackendError",
    "BackendUnavailable",
    "CacheError",
    "ConfigError",
    "InputError",
    "ModelError",
    "NoCandidateError",
    "UnsupportedModel",
    "UnsupportedOnRuntime",
    "Session",
    "select",
    "patch",
    "unpatch",
    "__version__",
]

if TYPE_CHECKING:  # pragma: no cover
    from .patch import patch, unpatch
    from .policy import select
    from .session import Session

_LAZY = {
    "Session": ("session", "Session"),
    "select": ("policy", "select"),
    "patch": ("patch", "patch"),
    "unpatch": ("patch", "unpatch"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{mod}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'autoinfer' has no attribute {name!r}")
