"""ONNX Runtime's session arguments read as hints for autoinfer's choice.

Under :func:`autoinfer.patch`, an application's ``InferenceSession(model,
sess_options=..., providers=[...], provider_options=...)`` becomes an autoinfer
``Session``. The application wrote those arguments for ONNX Runtime; most say
*where* to run (CPU, a CUDA GPU) and *how much* of the machine to use, and
autoinfer honours that while it still chooses the runtime. A few only make sense
on ONNX Runtime itself; they pin the session to ONNX Runtime with exactly the
application's arguments, as a plain ``autoinfer.Session`` does.

:func:`hints_from_ort` is the whole translation; docs/dropin.md has the table.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

log = logging.getLogger("autoinfer.hints")

ORT_BACKEND = "onnxruntime"

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


@dataclass
class Hints:
    """The translation of ONNX Runtime's arguments.

    session_kwargs: keyword arguments for ``autoinfer.Session``.
    devices:        device kinds the application asked for ("cpu", "cuda:0", "gpu"...),
                    in its order of preference; empty: no preference.
    pinned:         the session stays on ONNX Runtime with the application's arguments.
    notes:          one line per argument that was read, and what it became.
    """

    session_kwargs: dict[str, Any] = field(default_factory=dict)
    devices: tuple[str, ...] = ()
    pinned: bool = False
    notes: list[str] = field(default_factory=list)


def _provider_list(providers: Sequence[Any] | None,
                   provider_options: Sequence[dict[Any, Any]] | None
                   ) -> list[tuple[str, dict[str, Any]]]:
    """ONNX Runtime's accepted forms: names, (name, options) pairs, or names plus a
    parallel list of options."""
    out: list[tuple[str, dict[str, Any]]] = []
    for i, p in enumerate(providers or ()):
        if isinstance(p, (tuple, list)) and len(p) == 2:
            name, opts = str(p[0]), dict(p[1] or {})
        else:
            name = str(p)
            opts = dict(provider_options[i]) if provider_options and i < len(provider_options) \
                else {}
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


def _pin_reasons(sess_options: Any, providers: list[tuple[str, dict[str, Any]]],
                 ort_kwargs: dict[str, Any]) -> list[str]:
    reasons = [f"provider {name} has no autoinfer counterpart" for name, _ in providers
               if name not in PROVIDER_DEVICES]
    if sess_options is not None:
        if getattr(sess_options, "enable_profiling", False):
            reasons.append("sess_options.enable_profiling: the application reads ONNX "
                           "Runtime's profile")
        if getattr(sess_options, "optimized_model_filepath", ""):
            reasons.append("sess_options.optimized_model_filepath: the application wants "
                           "ONNX Runtime's optimized model written")
    reasons += [f"{k}= is an ONNX Runtime argument" for k in sorted(ort_kwargs)]
    return reasons


def hints_from_ort(sess_options: Any = None, providers: Sequence[Any] | None = None,
                   provider_options: Sequence[dict[Any, Any]] | None = None,
                   **ort_kwargs: Any) -> Hints:
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
    if reasons:
        for r in reasons:
            log.info("autoinfer.patch: staying on ONNX Runtime: %s", r)
        return Hints({"sess_options": sess_options, "providers": providers,
                      "provider_options": provider_options},
                     devices=tuple(d for n, o in plist if (d := _device_of(n, o))),
                     pinned=True, notes=reasons)
    hints = Hints()
    devices = tuple(dict.fromkeys(d for n, o in plist if (d := _device_of(n, o))))
    hints.devices = devices
    if devices and all(d == "cpu" for d in devices):
        from . import backends as registry

        no_cpu = [n for n in registry.names() if "cpu" not in registry.get(n).capabilities.devices]
        if no_cpu:
            hints.session_kwargs["exclude"] = no_cpu
        hints.notes.append(f"providers {[n for n, _ in plist]}: CPU runtimes only")
    elif devices:
        hints.notes.append(f"providers {[n for n, _ in plist]}: devices {list(devices)} "
                           "preferred, CPU runtimes as the fallback")
    if any(n == "TensorrtExecutionProvider" and str(o.get("trt_fp16_enable", "")).lower()
           in ("1", "true") for n, o in plist):
        hints.session_kwargs["precision"] = "auto"
        hints.notes.append("trt_fp16_enable: reduced precision allowed (precision='auto')")
    threads = int(getattr(sess_options, "intra_op_num_threads", 0) or 0) if sess_options \
        is not None else 0
    if threads > 0:
        hints.session_kwargs["threads"] = threads
        hints.notes.append(f"intra_op_num_threads={threads}: threads={threads}")
    return hints
