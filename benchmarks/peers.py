"""What autoinfer's users would otherwise pick, each behind one small interface.

A peer loads a model file and returns a :class:`Loaded` whose ``run(feeds)``
gives the outputs in the model's declared order. Each peer is a runtime the
way its own documentation starts you off:

  ort           onnxruntime.InferenceSession(path): default options, default providers
                (on a machine with only the CPU provider this is also "ONNX Runtime
                CPU at its defaults")
  ort-maxperf   ONNX Runtime's own automatic selection:
                SessionOptions.set_provider_selection_policy(MAX_PERFORMANCE)
  ov-auto       OpenVINO's AUTO device with PERFORMANCE_HINT=LATENCY
  ov-cpu        OpenVINO's CPU device at its defaults
  ov-cpu-f32    OpenVINO's CPU device asked for f32 (INFERENCE_PRECISION_HINT), as a user
                who wants fp32 results sets it where the default is bf16; where the
                default is f32 already, it is ov-cpu and not run twice
  ncnn          ncnn through pnnx's conversion (autoinfer's ncnn backend, fp32, its
                thread count = the usable cores, as ncnn's default)
  autoinfer     autoinfer.Session(path): selection done once beforehand

Each loaded peer states the precision it computes in (``info["precision"]``): OpenVINO's
CPU plugin computes in bf16 by default on CPUs with AVX-512 BF16 or AMX, and autoinfer's
default (``precision="fp32"``) is compared with the peers that compute in fp32.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PEERS = ("ort", "ort-maxperf", "ov-auto", "ov-cpu", "ov-cpu-f32", "ncnn", "autoinfer")
LABELS = {
    "ort": "ONNX Runtime (plain)",
    "ort-maxperf": "ORT MAX_PERFORMANCE policy",
    "ov-auto": "OpenVINO AUTO (LATENCY)",
    "ov-cpu": "OpenVINO CPU",
    "ov-cpu-f32": "OpenVINO CPU f32",
    "ncnn": "ncnn (pnnx)",
    "autoinfer": "autoinfer",
}
# The peer whose load time is "the runtime's own load" for a winner of each backend.
OWN_LOAD_PEER = {"onnxruntime": "ort", "openvino": "ov-cpu", "ncnn": "ncnn"}


def precision_of(result: Mapping[str, Any]) -> str:
    """The precision a peer's results entry says it computed in (its ``info["precision"]``;
    fp32 for an entry without it, as in results files written before peers stated it)."""
    return str((result.get("info") or {}).get("precision") or "fp32")


class PeerUnsupported(Exception):
    """The peer cannot run this model here; the message says why."""


@dataclass
class Loaded:
    run: Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]
    close: Callable[[], None] = lambda: None
    info: dict[str, Any] = field(default_factory=dict)
    handle: Any = None  # the runtime object (autoinfer: the Session)


@dataclass
class Context:
    """What loading needs besides the model path."""

    input_shapes: dict[str, tuple[int, ...]]
    autoinfer_cache: Path | None = None
    ncnn_artifacts: Path | None = None
    threads: int = 1


# -- ONNX Runtime -------------------------------------------------------------------------


def _ort_outputs(sess: Any) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
    run = sess.run

    def call(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return run(None, feeds)

    return call


def _ort() -> Any:
    """ONNX Runtime itself, imported with its telemetry off (as autoinfer imports it)."""
    from autoinfer.backends.onnxruntime import import_ort

    return import_ort()


def load_ort(path: Path, ctx: Context) -> Loaded:
    ort = _ort()

    sess = ort.InferenceSession(str(path))
    return Loaded(
        _ort_outputs(sess), info={"providers": sess.get_providers(), "precision": "fp32"}, handle=sess
    )


def load_ort_maxperf(path: Path, ctx: Context) -> Loaded:
    ort = _ort()

    so = ort.SessionOptions()
    setter = getattr(so, "set_provider_selection_policy", None)
    policy = getattr(getattr(ort, "OrtExecutionProviderDevicePolicy", None), "MAX_PERFORMANCE", None)
    if setter is None or policy is None:
        raise PeerUnsupported(
            f"onnxruntime {ort.__version__} has no "
            "SessionOptions.set_provider_selection_policy / "
            "OrtExecutionProviderDevicePolicy.MAX_PERFORMANCE (added in 1.22)"
        )
    setter(policy)
    sess = ort.InferenceSession(str(path), sess_options=so)
    devices = (
        sorted({f"{d.ep_name}/{d.device.type.name}" for d in ort.get_ep_devices()})
        if hasattr(ort, "get_ep_devices")
        else []
    )
    return Loaded(
        _ort_outputs(sess),
        info={"providers": sess.get_providers(), "ep_devices": devices, "precision": "fp32"},
        handle=sess,
    )


# -- OpenVINO -------------------------------------------------------------------------------


def _ov() -> Any:
    # autoinfer's import skips the analytics event ``import openvino`` sends; nothing
    # else about OpenVINO changes.
    from autoinfer.backends.openvino import import_openvino

    return import_openvino()


def _ov_loaded(compiled: Any, device: str, core: Any) -> Loaded:
    req = compiled.create_infer_request()
    ports = list(compiled.outputs)

    def call(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        res = req.infer(feeds)  # copies the outputs out of the request (share_outputs=False)
        return [res[p] for p in ports]

    info = {"device": device, "precision": _ov_precision(compiled, core)}
    try:
        info["execution_devices"] = [str(d) for d in compiled.get_property("EXECUTION_DEVICES")]
    except Exception:  # noqa: BLE001 - informational only
        pass
    return Loaded(call, info=info, handle=compiled)


_OV_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def _ov_precision(compiled: Any, core: Any) -> str:
    """The precision the compiled model computes in: its INFERENCE_PRECISION_HINT, or for
    AUTO (which does not forward it) that of the device it runs on."""
    try:
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    except Exception:  # noqa: BLE001 - AUTO: ask the device it chose
        try:
            device = str(list(compiled.get_property("EXECUTION_DEVICES"))[0])
            hint = core.get_property(device.split(".")[0], "INFERENCE_PRECISION_HINT")
        except Exception:  # noqa: BLE001
            return "unknown"
    return _precision_name(hint)


def _precision_name(hint: Any) -> str:
    name = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    return _OV_PRECISIONS.get(name.lower(), name.lower())


def load_ov_auto(path: Path, ctx: Context) -> Loaded:
    core = _ov().Core()
    return _ov_loaded(core.compile_model(str(path), "AUTO", {"PERFORMANCE_HINT": "LATENCY"}), "AUTO", core)


def load_ov_cpu(path: Path, ctx: Context) -> Loaded:
    core = _ov().Core()
    return _ov_loaded(core.compile_model(str(path), "CPU"), "CPU", core)


def load_ov_cpu_f32(path: Path, ctx: Context) -> Loaded:
    core = _ov().Core()
    default = _precision_name(core.get_property("CPU", "INFERENCE_PRECISION_HINT"))
    if default == "fp32":
        raise PeerUnsupported("OpenVINO's CPU device computes in f32 here at its defaults: that is ov-cpu")
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return _ov_loaded(compiled, "CPU", core)


# -- ncnn -----------------------------------------------------------------------------------


def load_ncnn(path: Path, ctx: Context) -> Loaded:
    from autoinfer import backends
    from autoinfer.backends.base import Candidate, LoadContext
    from autoinfer.errors import AutoinferError, UnsupportedModel
    from autoinfer.model import load_facts

    if ctx.ncnn_artifacts is None:
        raise PeerUnsupported("no directory for the ncnn conversion was given")
    backend = backends.get("ncnn")
    av = backend.availability(None)
    if not av.usable:
        raise PeerUnsupported(f"ncnn is not usable here: {av.reason}")
    facts = load_facts(path)
    lctx = LoadContext(
        artifact_dir=ctx.ncnn_artifacts, threads=ctx.threads, input_shapes=dict(ctx.input_shapes)
    )
    try:
        runner = backend.load(Candidate("ncnn", "cpu", "fp32"), facts, lctx)
    except UnsupportedModel as exc:
        raise PeerUnsupported(exc.reason) from None
    except AutoinferError as exc:
        raise PeerUnsupported(str(exc)) from None
    return Loaded(runner.run, runner.close, info={"threads": ctx.threads, "precision": "fp32"}, handle=runner)


# -- autoinfer ------------------------------------------------------------------------------


def load_autoinfer(path: Path, ctx: Context, *, input_shapes: bool = True) -> Loaded:
    import autoinfer

    kwargs: dict[str, Any] = {}
    if input_shapes and ctx.input_shapes:
        kwargs["input_shapes"] = ctx.input_shapes
    sess = autoinfer.Session(str(path), cache_dir=ctx.autoinfer_cache, **kwargs)
    run = sess.run

    def call(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return run(None, feeds)

    return Loaded(call, sess.close, info={}, handle=sess)


LOADERS: dict[str, Callable[[Path, Context], Loaded]] = {
    "ort": load_ort,
    "ort-maxperf": load_ort_maxperf,
    "ov-auto": load_ov_auto,
    "ov-cpu": load_ov_cpu,
    "ov-cpu-f32": load_ov_cpu_f32,
    "ncnn": load_ncnn,
    "autoinfer": load_autoinfer,
}

# Modules each peer imports, imported before a load is timed (an import is paid once
# per process, a load once per model).
IMPORTS = {
    "ort": ("onnxruntime",),
    "ort-maxperf": ("onnxruntime",),
    "ov-auto": ("openvino",),
    "ov-cpu": ("openvino",),
    "ov-cpu-f32": ("openvino",),
    "ncnn": ("ncnn", "onnxruntime", "autoinfer.backends.ncnn"),
    # autoinfer's own modules too: a Session's first-use imports are an import cost
    # (reported apart), not a load cost
    "autoinfer": (
        "autoinfer",
        "autoinfer.session",
        "autoinfer.policy",
        "autoinfer.cache",
        "autoinfer.measure",
        "autoinfer.loader",
        "autoinfer.decision",
        "probes",
        "importlib.metadata",
        "autoinfer.backends.onnxruntime",
        "autoinfer.backends.openvino",
        "autoinfer.backends.ncnn",
        "autoinfer.backends.tensorrt",
        "onnxruntime",
    ),
}


def preimport(peer: str) -> None:
    import importlib

    for mod in IMPORTS[peer]:
        if mod == "openvino":
            _ov()
        else:
            importlib.import_module(mod)


def load(peer: str, path: Path, ctx: Context) -> tuple[Loaded, float]:
    """(the loaded peer, seconds the load took). Raises PeerUnsupported or the runtime's error."""
    loader = LOADERS[peer]
    t0 = time.perf_counter()
    loaded = loader(path, ctx)
    return loaded, time.perf_counter() - t0
