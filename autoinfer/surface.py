"""The rest of ``onnxruntime.InferenceSession``'s public surface, for ``Session``.

``Session`` defines ``run``, ``get_inputs``, ``get_outputs`` and ``get_modelmeta``
itself; this mixin adds every other public name of ``InferenceSession``, by three
rules:

* On ONNX Runtime, each name calls the live ``InferenceSession`` and returns what
  it returns, exactly (``io_binding``, ``run_with_ort_values``, ``set_providers``...).
* On another runtime, the names that make sense there are provided:
  ``get_providers`` (``["openvino(CPU)"]``: the registry name of the runtime and
  the device), ``get_provider_options``, ``get_session_options`` (the thread
  count the runtime was given), ``run_async`` (a worker thread; the callback gets
  ``(outputs, user_data, err)`` as ONNX Runtime calls it), ``end_profiling``,
  ``enable_fallback`` / ``disable_fallback`` (autoinfer's own fallback) and
  ``get_overridable_initializers`` (none).
* The rest raise :class:`~autoinfer.errors.UnsupportedOnRuntime`, which names the
  runtime in use and the way out (``backends=["onnxruntime"]``).

The protocol a class must follow to inherit this mixin (``Session`` does):

    _current_runner() -> Runner | None
        The runner serving ``run()`` now; None while no runtime is chosen yet.
        A runner on ONNX Runtime has ``.session``, the live ``InferenceSession``.
        Any runner has ``.candidate`` (backend, device, precision, settings).
    run(output_names, input_feed, run_options=None) -> list[numpy.ndarray]
    _fallback: bool
        Whether a failing runtime hands over to the next candidate (writable).
    _hw (optional)
        The probed hardware, for the thread count reported on other runtimes;
        ``_threads`` (optional int) overrides it.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Sequence

from .errors import UnsupportedOnRuntime

log = logging.getLogger("autoinfer.surface")

# Public InferenceSession names with no meaning off ONNX Runtime.
ORT_ONLY = (
    "create_ortvalue_from_shape_and_type", "get_input_epdevices", "get_input_memory_infos",
    "get_output_memory_infos", "get_profiling_start_time_ns",
    "get_provider_graph_assignment_info", "get_tuning_results", "io_binding",
    "release_captured_graph", "run_with_iobinding", "run_with_ort_values",
    "run_with_ortvaluevector", "set_ep_dynamic_options", "set_providers", "set_tuning_results",
)
# What get_providers() answers while no runtime is chosen yet.
PENDING = "autoinfer(selecting)"


def original_inference_session() -> type:
    """ONNX Runtime's own ``InferenceSession`` class, also while autoinfer.patch() is on."""
    from .patch import original_class

    return original_class()


def provider_name(candidate: Any) -> str:
    """Where a candidate runs, in the shape of a provider name: ``openvino(CPU)``,
    ``tensorrt(CUDA:0, fp16)``."""
    device = str(candidate.device).upper()
    extra = "" if candidate.precision == "fp32" else f", {candidate.precision}"
    return f"{candidate.backend}({device}{extra})"


class SessionOptionsView:
    """What ``get_session_options()`` returns off ONNX Runtime when ONNX Runtime is not
    importable: the settings that have a meaning on every runtime."""

    def __init__(self, intra_op_num_threads: int) -> None:
        self.intra_op_num_threads = intra_op_num_threads
        self.inter_op_num_threads = 1
        self.enable_profiling = False

    def __repr__(self) -> str:
        return f"SessionOptionsView(intra_op_num_threads={self.intra_op_num_threads})"


def _ort_only(name: str) -> Callable[..., Any]:
    def method(self: "OrtSurface", *args: Any, **kwargs: Any) -> Any:
        return getattr(self._live_ort(name), name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = (f"``InferenceSession.{name}`` of the live ONNX Runtime session; "
                      "raises UnsupportedOnRuntime on another runtime.")
    return method


class OrtSurface:
    """``onnxruntime.InferenceSession``'s public names beyond ``run`` and the
    introspection; see the module docstring for the rules and the protocol."""

    _fallback: bool

    # -- the protocol ---------------------------------------------------------
    def _current_runner(self) -> Any:  # pragma: no cover - provided by the session
        raise NotImplementedError

    def run(self, output_names: Sequence[str] | None, input_feed: Any,
            run_options: Any = None) -> Any:  # pragma: no cover - provided by the session
        raise NotImplementedError

    # -- helpers --------------------------------------------------------------
    def _ort_session(self) -> Any:
        """The live ``InferenceSession`` when the session runs on ONNX Runtime, else None."""
        live = getattr(self._current_runner(), "session", None)
        if live is not None and isinstance(live, original_inference_session()):
            return live
        return None

    def _runtime_name(self) -> str:
        runner = self._current_runner()
        return provider_name(runner.candidate) if runner is not None else \
            "no runtime yet (the model has dynamic inputs: the choice is made on the first run)"

    def _live_ort(self, method: str) -> Any:
        live = self._ort_session()
        if live is None:
            raise UnsupportedOnRuntime(method, self._runtime_name())
        return live

    def _threads_now(self) -> int:
        threads = getattr(self, "_threads", None)
        if threads:
            return int(threads)
        hw = getattr(self, "_hw", None)
        return max(1, int(getattr(getattr(hw, "cpu", None), "usable_cores", 1) or 1))

    # -- provided on every runtime ----------------------------------------------
    def get_providers(self) -> list[str]:
        """ONNX Runtime's providers on ONNX Runtime; elsewhere where the session runs."""
        live = self._ort_session()
        if live is not None:
            return live.get_providers()
        runner = self._current_runner()
        return [provider_name(runner.candidate)] if runner is not None else [PENDING]

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        live = self._ort_session()
        if live is not None:
            return live.get_provider_options()
        runner = self._current_runner()
        if runner is None:
            return {PENDING: {}}
        cand = runner.candidate
        return {provider_name(cand): {str(k): str(v) for k, v in cand.settings}}

    def get_session_options(self) -> Any:
        """ONNX Runtime's options on ONNX Runtime; elsewhere an ``onnxruntime.SessionOptions``
        (a :class:`SessionOptionsView` without ONNX Runtime) with the runtime's thread count."""
        live = self._ort_session()
        if live is not None:
            return live.get_session_options()
        threads = self._threads_now()
        try:
            import onnxruntime
        except ImportError:
            return SessionOptionsView(threads)
        so = onnxruntime.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        return so

    def get_overridable_initializers(self) -> list[Any]:
        live = self._ort_session()
        return live.get_overridable_initializers() if live is not None else []

    def end_profiling(self) -> str:
        """The profile file on ONNX Runtime; "" elsewhere, as ONNX Runtime answers when
        profiling was not enabled."""
        live = self._ort_session()
        return live.end_profiling() if live is not None else ""

    def enable_fallback(self) -> None:
        """ONNX Runtime's fallback (on ONNX Runtime) and autoinfer's to the next candidate."""
        live = self._ort_session()
        self._fallback = True
        if live is not None:
            live.enable_fallback()

    def disable_fallback(self) -> None:
        live = self._ort_session()
        self._fallback = False
        if live is not None:
            live.disable_fallback()

    def run_async(self, output_names: Sequence[str] | None, input_feed: Any,
                  callback: Callable[[Any, Any, str], None], user_data: Any,
                  run_options: Any = None) -> None:
        """Run on another thread and call ``callback(outputs, user_data, err)``: ``err`` is ""
        on success, and ``outputs`` is None on failure, as ONNX Runtime does."""
        live = self._ort_session()
        if live is not None:
            return live.run_async(output_names, input_feed, callback, user_data, run_options)

        def work() -> None:
            try:
                outs = self.run(output_names, input_feed, run_options)
            except Exception as exc:  # noqa: BLE001 - handed to the callback, as ORT does
                callback(None, user_data, f"{type(exc).__name__}: {exc}")
                return
            callback(outs, user_data, "")

        threading.Thread(target=work, name="autoinfer-run-async", daemon=True).start()
        return None


for _name in ORT_ONLY:
    setattr(OrtSurface, _name, _ort_only(_name))
del _name

__all__ = ["ORT_ONLY", "OrtSurface", "PENDING", "SessionOptionsView", "provider_name",
           "original_inference_session"]
