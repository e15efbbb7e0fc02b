"""ONNX Runtime's application API, as autoinfer offers it.

An application written for ONNX Runtime meets autoinfer in three places, all here:

* the class :func:`autoinfer.patch` stands in for, ``onnxruntime.InferenceSession``
  (:data:`TARGET`): :func:`replace_class` puts another in its place, :func:`restore_class`
  puts it back, :func:`original_class` is ONNX Runtime's own throughout;
* that class's arguments, read as hints for autoinfer's choice (:func:`hints_from_ort`,
  offered through the registry as ``OnnxRuntimeBackend.claim_app_options``);
* the rest of that class's public surface, for ``Session`` (:class:`OrtSurface`).

ONNX Runtime is imported only when used, and then through
:func:`~autoinfer.backends.onnxruntime.import_ort` (its telemetry off).

The arguments as hints
----------------------
Under :func:`autoinfer.patch`, an application's ``InferenceSession(model,
sess_options=..., providers=[...], provider_options=...)`` becomes an autoinfer
``Session``. The application wrote those arguments for ONNX Runtime; most say
*where* to run (CPU, a CUDA GPU) and *how much* of the machine to use, and
autoinfer honours that while it still chooses the runtime. A few only make sense
on ONNX Runtime itself; they pin the session to ONNX Runtime with exactly the
application's arguments, as a plain ``autoinfer.Session`` does.

:func:`hints_from_ort` is the whole translation; docs/dropin.md has the table.

The surface
-----------
``Session`` defines ``run``, ``get_inputs``, ``get_outputs`` and ``get_modelmeta``
itself; the mixin :class:`OrtSurface` adds every other public name of
``InferenceSession``, by three rules:

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
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import BackendUnavailable, UnsupportedOnRuntime
from .base import Hints
from .onnxruntime import CPU_EP, NAME, import_ort

log = logging.getLogger("autoinfer.backends.onnxruntime_api")

# The class autoinfer.patch() stands in for: its module and name.
MODULE = NAME
CLASS = "InferenceSession"
TARGET = f"{MODULE}.{CLASS}"

_original: type | None = None  # ONNX Runtime's class while another stands in its place


def original_class() -> type:
    """ONNX Runtime's own ``InferenceSession``, also while another class stands in its place."""
    return _original if _original is not None else getattr(import_ort(), CLASS)


def replace_class(cls: type) -> None:
    """Put ``cls`` in place of ``onnxruntime.InferenceSession``, keeping the original for
    :func:`original_class` and :func:`restore_class`. The caller serialises the calls."""
    global _original
    ort = import_ort()
    if _original is None:
        _original = getattr(ort, CLASS)
    if getattr(ort, CLASS) is not cls:
        setattr(ort, CLASS, cls)


def restore_class() -> None:
    """Put ONNX Runtime's own class back; nothing to do when it was not replaced."""
    global _original
    if _original is None:
        return
    setattr(import_ort(), CLASS, _original)
    _original = None


# -- the arguments, read as hints ---------------------------------------------------------
# Execution provider -> the device kind it asks for. An unlisted provider (a custom or
# vendor EP: QNN, Vitis AI, ROCm...) pins the session to ONNX Runtime.
PROVIDER_DEVICES = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "cuda",
    "NvTensorRTRTXExecutionProvider": "cuda",
    "DmlExecutionProvider": "gpu",
    "CoreMLExecutionProvider": "coreml",
    "OpenVINOExecutionProvider": "cpu",  # its device_type option may say GPU or NPU
    "XnnpackExecutionProvider": "cpu",
    "DnnlExecutionProvider": "cpu",
    "AzureExecutionProvider": "cpu",  # listed by default builds; not a local device
}


def _provider_list(
    providers: Sequence[Any] | None, provider_options: Sequence[dict[Any, Any]] | None
) -> list[tuple[str, dict[str, Any]]]:
    """ONNX Runtime's accepted forms: names, (name, options) pairs, or names plus a
    parallel list of options."""
    out: list[tuple[str, dict[str, Any]]] = []
    for i, p in enumerate(providers or ()):
        if isinstance(p, (tuple, list)) and len(p) == 2:
            name, opts = str(p[0]), dict(p[1] or {})
        else:
            name = str(p)
            opts = dict(provider_options[i]) if provider_options and i < len(provider_options) else {}
        out.append((name, {str(k): v for k, v in opts.items()}))
    return out


def _device_of(name: str, opts: dict[str, Any]) -> str | None:
    kind = PROVIDER_DEVICES.get(name)
    if kind is None:
        return None
    if name == "OpenVINOExecutionProvider":
        kind = str(opts.get("device_type", "CPU")).split("_")[0].split(".")[0].lower() or "cpu"
    if kind == "cuda" and "device_id" in opts:
        kind = f"cuda:{int(opts['device_id'])}"
    return kind


def _pin_reasons(
    sess_options: Any, providers: list[tuple[str, dict[str, Any]]], ort_kwargs: dict[str, Any]
) -> list[str]:
    reasons = [
        f"provider {name} has no autoinfer counterpart"
        for name, _ in providers
        if name not in PROVIDER_DEVICES
    ]
    if sess_options is not None:
        if getattr(sess_options, "enable_profiling", False):
            reasons.append("sess_options.enable_profiling: the application reads ONNX Runtime's profile")
        if getattr(sess_options, "optimized_model_filepath", ""):
            reasons.append(
                "sess_options.optimized_model_filepath: the application wants "
                "ONNX Runtime's optimized model written"
            )
    reasons += [f"{k}= is an ONNX Runtime argument" for k in sorted(ort_kwargs)]
    return reasons


def hints_from_ort(
    sess_options: Any = None,
    providers: Sequence[Any] | None = None,
    provider_options: Sequence[dict[Any, Any]] | None = None,
    **ort_kwargs: Any,
) -> Hints:
    """Translate ``InferenceSession``'s arguments into autoinfer ``Session`` arguments.

    * providers: CPU-only lists let autoinfer choose among its CPU runtimes (runtimes
      without a CPU device are excluded); GPU providers (CUDA, TensorRT, DirectML)
      keep GPU candidates in, as device hints; TensorRT's ``trt_fp16_enable`` allows
      reduced precision (``precision="auto"``). A provider autoinfer has no
      counterpart for pins the session to ONNX Runtime.
    * sess_options: ``intra_op_num_threads`` > 0 becomes ``threads=``; profiling and
      ``optimized_model_filepath`` pin to ONNX Runtime (the application expects ONNX
      Runtime's files); the rest (optimization level, inter-op threads, execution
      mode, memory arena, logging) tune ONNX Runtime's own internals and are not
      carried to other runtimes.
    * other ONNX Runtime keyword arguments (``disabled_optimizers``...) pin.
    """
    plist = _provider_list(providers, provider_options)
    reasons = _pin_reasons(sess_options, plist, ort_kwargs)
    stay = {
        "sess_options": sess_options,
        "providers": providers or [CPU_EP],
        "provider_options": provider_options,
    }
    if reasons:
        for r in reasons:
            log.info("autoinfer.patch: staying on ONNX Runtime: %s", r)
        return Hints(
            NAME,
            {"sess_options": sess_options, "providers": providers, "provider_options": provider_options},
            devices=tuple(d for n, o in plist if (d := _device_of(n, o))),
            pinned=True,
            stay_kwargs=stay,
            notes=reasons,
        )
    hints = Hints(NAME, stay_kwargs=stay)
    devices = tuple(dict.fromkeys(d for n, o in plist if (d := _device_of(n, o))))
    hints.devices = devices
    if devices and all(d == "cpu" for d in devices):
        from . import get, names

        no_cpu = [n for n in names() if "cpu" not in get(n).capabilities.devices]
        if no_cpu:
            hints.session_kwargs["exclude"] = no_cpu
        hints.notes.append(f"providers {[n for n, _ in plist]}: CPU runtimes only")
    elif devices:
        hints.notes.append(
            f"providers {[n for n, _ in plist]}: devices {list(devices)} "
            "preferred, CPU runtimes as the fallback"
        )
    if any(
        n == "TensorrtExecutionProvider" and str(o.get("trt_fp16_enable", "")).lower() in ("1", "true")
        for n, o in plist
    ):
        hints.session_kwargs["precision"] = "auto"
        hints.notes.append("trt_fp16_enable: reduced precision allowed (precision='auto')")
    threads = int(getattr(sess_options, "intra_op_num_threads", 0) or 0) if sess_options is not None else 0
    if threads > 0:
        hints.session_kwargs["threads"] = threads
        hints.notes.append(f"intra_op_num_threads={threads}: threads={threads}")
    return hints


# -- the surface --------------------------------------------------------------------------
# Public InferenceSession names with no meaning off ONNX Runtime.
ORT_ONLY = (
    "create_ortvalue_from_shape_and_type",
    "get_input_epdevices",
    "get_input_memory_infos",
    "get_output_memory_infos",
    "get_profiling_start_time_ns",
    "get_provider_graph_assignment_info",
    "get_tuning_results",
    "io_binding",
    "release_captured_graph",
    "run_with_iobinding",
    "run_with_ort_values",
    "run_with_ortvaluevector",
    "set_ep_dynamic_options",
    "set_providers",
    "set_tuning_results",
)
# What get_providers() answers while no runtime is chosen yet.
PENDING = "autoinfer(selecting)"


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
    def method(self: OrtSurface, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._live_ort(name), name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = (
        f"``InferenceSession.{name}`` of the live ONNX Runtime session; "
        "raises UnsupportedOnRuntime on another runtime."
    )
    return method


class OrtSurface:
    """``onnxruntime.InferenceSession``'s public names beyond ``run`` and the
    introspection; see the module docstring for the rules and the protocol."""

    _fallback: bool

    # -- the protocol ---------------------------------------------------------
    def _current_runner(self) -> Any:  # pragma: no cover - provided by the session
        raise NotImplementedError

    def run(
        self, output_names: Sequence[str] | None, input_feed: Any, run_options: Any = None
    ) -> Any:  # pragma: no cover - provided by the session
        raise NotImplementedError

    # -- helpers --------------------------------------------------------------
    def _ort_session(self) -> Any:
        """The live ``InferenceSession`` when the session runs on ONNX Runtime, else None."""
        live = getattr(self._current_runner(), "session", None)
        if live is not None and isinstance(live, original_class()):
            return live
        return None

    def _runtime_name(self) -> str:
        runner = self._current_runner()
        return (
            provider_name(runner.candidate)
            if runner is not None
            else "no runtime yet (the model has dynamic inputs: the choice is made on the first run)"
        )

    def _live_ort(self, method: str) -> Any:
        live = self._ort_session()
        if live is None:
            raise UnsupportedOnRuntime(method, self._runtime_name(), NAME)
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
            ort = import_ort()
        except BackendUnavailable:
            return SessionOptionsView(threads)
        so = ort.SessionOptions()
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

    def run_async(
        self,
        output_names: Sequence[str] | None,
        input_feed: Any,
        callback: Callable[[Any, Any, str], None],
        user_data: Any,
        run_options: Any = None,
    ) -> None:
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

__all__ = [
    "CLASS",
    "MODULE",
    "ORT_ONLY",
    "OrtSurface",
    "PENDING",
    "PROVIDER_DEVICES",
    "SessionOptionsView",
    "TARGET",
    "hints_from_ort",
    "original_class",
    "provider_name",
    "replace_class",
    "restore_class",
]
