"""One-line adoption: ``onnxruntime.InferenceSession`` becomes autoinfer's ``Session``.

    import autoinfer
    autoinfer.patch()        # before the application creates its sessions
    ...
    autoinfer.unpatch()      # ONNX Runtime's own class again

or, with the application unmodified, as ``coverage run`` does:

    python -m autoinfer.patch app.py ARGS...
    python -m autoinfer.patch -m package.module ARGS...

The launcher also honours ``AUTOINFER_PATCH=0`` (run the application unpatched,
to compare) and any other value or none (patch).

Under the patch, the application's ``providers`` and ``sess_options`` are hints,
not pins: the backend whose runtime defines them reads them
(:func:`autoinfer.backends.claim_app_options`; for ONNX Runtime,
:func:`autoinfer.backends.onnxruntime_api.hints_from_ort`).
``isinstance(s, onnxruntime.InferenceSession)`` holds for autoinfer's sessions and
for ONNX Runtime's own (those created before the patch); applications may subclass
the patched class. Code that bound the class before the patch (``from onnxruntime
import InferenceSession`` at import time) keeps ONNX Runtime's: patch first, or use
the launcher. autoinfer's own modules always get ONNX Runtime's class. ``patch()``
imports ONNX Runtime and autoinfer's session module, and no other runtime; it touches
no network.

What is ONNX Runtime's (the class replaced, its original, its arguments, its surface)
lives in :mod:`autoinfer.backends.onnxruntime_api`; this module is the mechanics of
standing in and the launcher.
"""

from __future__ import annotations

import inspect
import logging
import os
import runpy
import sys
import threading
import types
import weakref
from typing import Any

from . import backends as registry
from .backends import onnxruntime_api as app

log = logging.getLogger("autoinfer.patch")

_lock = threading.RLock()
_patched: type | None = None  # autoinfer's class while the patch is on
_sessions: weakref.WeakSet[Any] = weakref.WeakSet()  # sessions created under the patch


def sessions() -> list[Any]:
    """The live sessions the patched class created (for benchmarks and diagnostics)."""
    with _lock:
        return list(_sessions)


def is_patched() -> bool:
    return _patched is not None


def _called_from_autoinfer(depth: int) -> bool:
    """Whether the code creating a session is autoinfer's own (a runtime it loads)."""
    try:
        name = sys._getframe(depth).f_globals.get("__name__", "")
    except ValueError:
        return False
    return name == "autoinfer" or (name.startswith("autoinfer.") and name != __name__)


def _session_params() -> frozenset[str]:
    from .session import Session

    return frozenset(inspect.signature(Session.__init__).parameters)


class _StandIn(type):
    """The patched class's metaclass: autoinfer's own modules get the original class, and
    the original's instances and subclasses count as the patched class's."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is _patched and _called_from_autoinfer(2):
            return app.original_class()(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    def __instancecheck__(cls, obj: Any) -> bool:
        if cls is _patched and isinstance(obj, app.original_class()):
            return True
        return super().__instancecheck__(obj)

    def __subclasscheck__(cls, sub: type) -> bool:
        if cls is _patched and isinstance(sub, type) and issubclass(sub, app.original_class()):
            return True
        return super().__subclasscheck__(sub)


def _hinted_args(
    accepted: frozenset[str], sess_options: Any, providers: Any, provider_options: Any, kwargs: dict[str, Any]
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The hints read from the application's arguments, the arguments that are autoinfer's
    own, and the arguments for autoinfer's Session (hints first, its own arguments win)."""
    own = {k: v for k, v in kwargs.items() if k in accepted}
    foreign = {k: v for k, v in kwargs.items() if k not in accepted}
    hints = (
        registry.claim_app_options(sess_options, providers, provider_options, **foreign) or registry.Hints()
    )
    args = dict(hints.session_kwargs)
    if hints.devices and "devices" in accepted and not hints.pinned:
        args["devices"] = list(hints.devices)
    args.update(own)
    return hints, own, args


def _warn_staying(model_name: str, exc: Exception, backend: str) -> None:
    log.warning(
        "autoinfer.patch: no runtime could be checked for %s (%s); this "
        "session stays on %s with the application's arguments",
        model_name,
        str(exc).splitlines()[0],
        backend,
    )


def _make_class() -> type:
    from .errors import NoCandidateError
    from .session import Session

    accepted = _session_params()

    class InferenceSession(Session, metaclass=_StandIn):
        """autoinfer's ``Session`` in place of ``onnxruntime.InferenceSession``: ONNX
        Runtime's arguments are read as hints (:func:`autoinfer.backends.claim_app_options`).

        The patch never makes an application fail where ONNX Runtime runs it: when
        autoinfer's choice finds no runtime it can check (its sample inputs do not suit
        the model, say), the session stays on ONNX Runtime with the application's own
        arguments, and says so once in the log."""

        _delegate: Any = None

        def __init__(
            self,
            path_or_bytes: Any,
            sess_options: Any = None,
            providers: Any = None,
            provider_options: Any = None,
            **kwargs: Any,
        ) -> None:
            hints, own, args = _hinted_args(accepted, sess_options, providers, provider_options, kwargs)
            self._stay = (hints, own)
            log.debug("autoinfer.patch: %s", "; ".join(hints.notes) or "no hints")
            try:
                super().__init__(path_or_bytes, **args)
            except NoCandidateError as exc:
                if hints.pinned or not hints.stay_kwargs or not hasattr(self, "_facts"):
                    raise
                self._stay_with_app_args(path_or_bytes, exc)
            with _lock:
                _sessions.add(self)

        def _stay_with_app_args(self, model: Any, exc: Exception) -> Any:
            hints, own = self._stay
            _warn_staying(self._facts.path.name, exc, hints.backend)
            own = {k: v for k, v in own.items() if k in ("cache_dir", "input_shapes")}
            self._delegate = Session(model, **hints.stay_kwargs, **own)
            return self._delegate

        def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
            d = self._delegate
            if d is not None:
                return d.run(output_names, input_feed, run_options)
            try:
                return super().run(output_names, input_feed, run_options)
            except NoCandidateError as exc:
                if not self._stay[0].stay_kwargs:
                    raise
                with _lock:
                    d = self._delegate or self._stay_with_app_args(self._facts.path, exc)
                return d.run(output_names, input_feed, run_options)

        def _current_runner(self) -> Any:
            d = self._delegate
            return d._current_runner() if d is not None else super()._current_runner()

        def explain(self) -> str:
            d = self._delegate
            if d is None:
                return super().explain()
            return f"on {self._stay[0].backend} with the application's arguments: {d.explain()}"

        def close(self) -> None:
            if self._delegate is not None:
                self._delegate.close()
            super().close()

    InferenceSession.__module__ = app.MODULE
    InferenceSession.__qualname__ = app.CLASS
    return InferenceSession


def patch() -> type:
    """Replace ``onnxruntime.InferenceSession`` with autoinfer's; returns the class in
    place. Idempotent and thread-safe."""
    global _patched
    with _lock:
        if _patched is None:
            app.original_class()  # the runtime imports (or fails) before anything changes
            _patched = _make_class()
        app.replace_class(_patched)
        log.info("autoinfer.patch: %s is autoinfer's Session", app.TARGET)
        return _patched


def unpatch() -> None:
    """Put ONNX Runtime's own class back. Idempotent; sessions already created keep
    working."""
    global _patched
    with _lock:
        if _patched is None:
            return
        app.restore_class()
        _patched = None


def _usage() -> str:
    return (
        "usage: python -m autoinfer.patch SCRIPT [ARGS...]\n"
        "       python -m autoinfer.patch -m MODULE [ARGS...]\n"
        f"Runs the application with {app.TARGET} replaced by autoinfer's\n"
        "Session (AUTOINFER_PATCH=0 runs it unpatched)."
    )


def main(argv: list[str] | None = None) -> int:
    """The launcher: run a script or module as ``__main__`` under the patch."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        sys.stderr.write(_usage() + "\n")
        return 0 if args else 2
    if os.environ.get("AUTOINFER_PATCH", "1").strip().lower() not in ("0", "false", "no", "off"):
        patch()
    if args[0] == "-m":
        if len(args) < 2:
            sys.stderr.write(_usage() + "\n")
            return 2
        sys.argv = args[1:]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        return 0
    sys.argv = args
    sys.path[0] = os.path.dirname(os.path.abspath(args[0]))
    runpy.run_path(args[0], run_name="__main__")
    return 0


class _CallableModule(types.ModuleType):
    """``import autoinfer.patch`` makes ``autoinfer.patch`` this module (Python sets the
    submodule on its package); calling it still patches, as ``autoinfer.patch()`` reads."""

    def __call__(self) -> type:
        return patch()


if __name__ == "__main__":
    # Run as a script, this file is "__main__": patch through the one autoinfer.patch
    # module, whose state autoinfer's other modules read.
    from autoinfer.patch import main as _main

    sys.exit(_main())
else:
    sys.modules[__name__].__class__ = _CallableModule
