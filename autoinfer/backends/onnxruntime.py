"""ONNX Runtime: the reference backend, and the execution providers that really load here.

ONNX Runtime lists execution providers it was *built* with
(``get_available_providers()``), not the ones that work: the CUDA provider is
listed by ``onnxruntime-gpu`` even when the CUDA or cuDNN libraries it needs
are missing, and a session asked for it quietly runs on the CPU instead. So
each non-CPU provider is tried once per process on a one-node model, and only
those that end up in the session's provider list count.

Candidate settings (all optional; the defaults are ONNX Runtime's, with the
thread pool sized to the CPU quota the probes found):

  provider            execution provider; absent means CPUExecutionProvider
  device_id           GPU index for the CUDA, TensorRT and DirectML providers. For CUDA and
                      TensorRT it is CUDA's ordinal (after CUDA_VISIBLE_DEVICES), found from
                      the GPU's PCI bus id or UUID; the device "cuda:N" names NVML's GPU N
  intra_op_threads    threads of one inference (never more than the quota)
  graph_optimization  "all" | "extended" | "basic" | "disable"
  allow_spinning      whether idle pool threads spin (fast wake-up, burns CPU)
  execution_mode      "sequential" | "parallel"
  denormal_as_zero    flush denormal floats to zero. Never tried automatically: ONNX Runtime
                      sets the flush-to-zero flags of the thread that creates the session,
                      which is the application's own thread.

Telemetry: ONNX Runtime 1.32 on Linux records usage and error events from
``import onnxruntime`` on (process info, session creation, model load, error
messages), stores them under ``~/.cache/Microsoft/DeveloperTools/.onnxruntime``
and uploads them to ``mobile.events.data.microsoft.com`` from a background
thread. autoinfer makes no network connections, so :func:`import_ort` sets
``ORT_DISABLE_TELEMETRY=1`` in the process environment before the first import
(the variable is read at import; ``disable_telemetry_events()`` afterwards is
too late for the import's own event and files) and calls
``disable_telemetry_events()`` when the application imported ONNX Runtime first.
Every process autoinfer starts carries the variable too (:meth:`child_env`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .._hw import threads_for
from .._lazy import import_optional
from ..errors import BackendError, BackendUnavailable, InputError, UnsupportedModel
from ._common import dist_version, distributions_of
from .base import (
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

if TYPE_CHECKING:  # pragma: no cover
    from probes import Hardware

    from ..model import ModelFacts

log = logging.getLogger("autoinfer.backends.onnxruntime")

NAME = "onnxruntime"
CPU_EP = "CPUExecutionProvider"

# Execution providers autoinfer offers as candidates: device prefix, precisions, whether
# the device is indexed (cuda:0), and how to fix the provider when it does not load.
_EPS: dict[str, tuple[str, tuple[str, ...], bool, str]] = {
    "CUDAExecutionProvider": (
        "cuda",
        ("fp32",),
        True,
        "install the CUDA and cuDNN libraries this onnxruntime-gpu build needs "
        "(pip install 'onnxruntime-gpu[cuda,cudnn]' and call onnxruntime.preload_dlls(), or "
        "the system CUDA toolkit and cuDNN), and check that `nvidia-smi` sees the GPU",
    ),
    "TensorrtExecutionProvider": (
        "cuda",
        ("fp32", "fp16"),
        True,
        "install the TensorRT libraries this onnxruntime-gpu build was linked against "
        "(pip install tensorrt) and make them findable (LD_LIBRARY_PATH)",
    ),
    "OpenVINOExecutionProvider": (
        "cpu",
        ("fp32",),
        False,
        "install the OpenVINO runtime that matches onnxruntime-openvino "
        "(see its release notes) and source its setupvars script",
    ),
    "DmlExecutionProvider": (
        "gpu",
        ("fp32",),
        True,
        "update the GPU driver and DirectX 12 runtime; onnxruntime-directml needs a DirectX 12 capable GPU",
    ),
    "CoreMLExecutionProvider": (
        "coreml",
        ("fp32",),
        False,
        "CoreML needs macOS 10.15 or later; use the onnxruntime wheel for macOS",
    ),
}
# Providers that are listed but are not a device of this machine.
_NOT_LOCAL = {"AzureExecutionProvider": "it runs models on a remote endpoint"}

_OPT_LEVELS = ("all", "extended", "basic", "disable")
_SETTINGS = frozenset(
    {
        "provider",
        "device_id",
        "intra_op_threads",
        "graph_optimization",
        "allow_spinning",
        "execution_mode",
        "denormal_as_zero",
    }
)
# ``[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : message`` -> ``message``
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")


# ONNX Runtime's opt-out of its telemetry (see the module docstring).
TELEMETRY_OPT_OUT = {"ORT_DISABLE_TELEMETRY": "1"}


_warned_foreign_import = False


@contextlib.contextmanager
def _telemetry_off() -> Iterator[None]:
    """Around the import: the opt-out set before it, and noticed when it came too late."""
    global _warned_foreign_import
    foreign = "onnxruntime" in sys.modules and os.environ.get("ORT_DISABLE_TELEMETRY") != "1"
    os.environ.update(TELEMETRY_OPT_OUT)
    yield
    if foreign:
        # Imported by the application before autoinfer: the variable came too late. Stop new
        # events; the uploader ONNX Runtime started at that import keeps running.
        disable = getattr(sys.modules.get("onnxruntime"), "disable_telemetry_events", None)
        if callable(disable):
            try:
                disable()
            except Exception as exc:  # noqa: BLE001 - a build without telemetry
                log.debug("onnxruntime.disable_telemetry_events() failed: %s", exc)
        if not _warned_foreign_import:
            _warned_foreign_import = True
            log.warning(
                "onnxruntime was imported before autoinfer, with its telemetry on: "
                "it may upload usage events (autoinfer itself sends none); set "
                "ORT_DISABLE_TELEMETRY=1 before the application starts"
            )


def import_ort() -> Any:
    """``import onnxruntime`` with its telemetry off: the one way autoinfer imports it."""
    return import_optional("onnxruntime", guard=_telemetry_off)


def _message(exc: BaseException) -> str:
    text = _ORT_PREFIX.sub("", str(exc).strip())
    return " ".join(text.split())[:500] or type(exc).__name__


def _probe_model() -> bytes:
    """A one-node float model, built in memory, to try providers on."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


@functools.lru_cache(maxsize=1)
def provider_report() -> tuple[tuple[str, bool, str], ...]:
    """(provider, really loads, why not) for each listed non-CPU provider; once per process."""
    try:
        ort = import_ort()
        listed = ort.get_available_providers()
    except Exception as exc:  # a broken install is reported by availability()
        log.debug("onnxruntime provider probe skipped: %s", exc)
        return ()
    report = []
    data = None
    for ep in listed:
        if ep == CPU_EP:
            continue
        if ep in _NOT_LOCAL:
            report.append((ep, False, f"not a local device: {_NOT_LOCAL[ep]}"))
            continue
        try:
            data = data or _probe_model()
            so = ort.SessionOptions()
            so.log_severity_level = 4  # the failure is reported here, not on stderr
            sess = ort.InferenceSession(data, so, providers=[ep, CPU_EP])
            if ep not in sess.get_providers():
                report.append(
                    (
                        ep,
                        False,
                        "listed, but the session fell back to the CPU "
                        "(the provider's libraries did not load)",
                    )
                )
                continue
            sess.run(None, {"x": np.ones((1, 4), np.float32)})
            report.append((ep, True, ""))
        except Exception as exc:
            report.append((ep, False, _message(exc)))
    return tuple(report)


def _working_providers() -> tuple[str, ...]:
    return tuple(ep for ep, ok, _ in provider_report() if ok)


def _cuda_ordinals(hw: Hardware) -> tuple[dict[int, int], dict[int, str]]:
    """({NVML index: CUDA ordinal}, {NVML index: why CUDA has no such device}).

    NVML numbers all GPUs in PCI order; CUDA numbers the ones CUDA_VISIBLE_DEVICES
    leaves, fastest first. The PCI bus id (then the UUID) ties them.
    """
    gpus = tuple(getattr(hw, "nvidia_gpus", ()) or ())
    if not gpus:
        return {}, {}
    from ._cuda import placements

    try:
        placed, why = placements(gpus)
    except Exception as exc:  # damaged hardware facts: no GPU candidate, and why
        return {}, {g.index: f"cannot map it to a CUDA device: {type(exc).__name__}: {exc}" for g in gpus}
    return {i: p.ordinal for i, p in placed.items()}, why


def _nvidia_outside_nvml(hw: Hardware) -> bool:
    """Whether the hardware facts show an NVIDIA GPU among the devices found outside NVML."""
    return any(
        getattr(a, "vendor", None) == "nvidia" and getattr(a, "kind", None) in ("igpu", "dgpu", "gpu")
        for a in getattr(hw, "accelerators", ()) or ()
    )


class OnnxRuntimeBackend(Backend):
    name = NAME
    package = "onnxruntime"
    pip_extra = None  # a core dependency of autoinfer
    capabilities = Capabilities(
        devices=("cpu", "cuda", "gpu", "coreml"),
        precisions=("fp32", "fp16"),
        dynamic_shapes=True,
        needs_conversion=False,
        reference=True,
        opaque_io=True,
    )
    thread_env_vars = ("ORT_NUM_THREADS",)
    # Contrib, layout-transformed and internal-layout operators ONNX Runtime implements.
    domains = ("com.microsoft", "com.microsoft.nchwc", "com.ms.internal.nhwc")

    def child_env(self) -> dict[str, str]:
        return dict(TELEMETRY_OPT_OUT)

    def claim_app_options(
        self, sess_options: Any = None, providers: Any = None, provider_options: Any = None, **kwargs: Any
    ) -> Hints:
        """``InferenceSession``'s arguments: autoinfer.patch() stands in for that class."""
        from .onnxruntime_api import hints_from_ort

        return hints_from_ort(sess_options, providers, provider_options, **kwargs)

    # -- facts ------------------------------------------------------------------

    def versions(self) -> dict[str, str]:
        """Every installed distribution that provides the ``onnxruntime`` module."""
        out = {d: v for d in distributions_of("onnxruntime") if (v := dist_version(d))}
        return out or super().versions()

    def availability(self, hw: Hardware) -> Availability:
        dists = distributions_of("onnxruntime")
        try:
            ort = import_ort()
            version = str(ort.__version__)
        except BackendUnavailable as exc:
            if dists:
                return Availability(
                    NAME,
                    installed=True,
                    usable=False,
                    reason=str(exc),
                    fix=f"reinstall it: pip install --force-reinstall {dists[0]}",
                )
            return Availability(
                NAME,
                installed=False,
                usable=False,
                reason="onnxruntime is not installed",
                fix="pip install onnxruntime",
            )
        except Exception as exc:  # never raises
            return Availability(
                NAME,
                installed=True,
                usable=False,
                reason=f"onnxruntime fails on import: {_message(exc)}",
                fix="pip install --force-reinstall onnxruntime",
            )
        devices = ["cpu"]
        for ep in _working_providers():
            for dev in self._devices_for(ep, hw):
                if dev not in devices:
                    devices.append(dev)
        return Availability(NAME, installed=True, usable=True, version=version, devices=tuple(devices))

    @staticmethod
    def _devices_for(ep: str, hw: Hardware) -> list[str]:
        prefix, _, indexed, _ = _EPS[ep] if ep in _EPS else (None, (), False, "")
        if prefix is None:
            return []
        if not indexed:
            return [prefix]
        if prefix == "cuda":
            if getattr(hw, "nvidia_gpus", None):
                return [f"cuda:{i}" for i in sorted(_cuda_ordinals(hw)[0])]
            # NVML lists none: CUDA's first device only where the facts still show an NVIDIA
            # GPU (Jetson's integrated one, which has no NVML; a card NVML could not read)
            return ["cuda:0"] if _nvidia_outside_nvml(hw) else []
        return [f"{prefix}:0"]

    # -- choice -----------------------------------------------------------------

    def candidates(self, model: ModelFacts, hw: Hardware, objective: str) -> list[Candidate | Unsupported]:
        out: list[Candidate | Unsupported] = [Candidate.make(NAME, "cpu", "fp32")]
        for ep in _working_providers():
            if ep not in _EPS:
                continue
            precisions = _EPS[ep][1]
            ordinals, hidden = _cuda_ordinals(hw) if _EPS[ep][0] == "cuda" else ({}, {})
            devices = self._devices_for(ep, hw)
            if not devices and not hidden and _EPS[ep][0] == "cuda":
                why = f"{ep} loads, but the hardware facts show no NVIDIA GPU"
                out.append(Unsupported(NAME, "cuda", "fp32", why))
            for dev in devices:
                extra: dict[str, Any] = {"provider": ep}
                if ":" in dev:
                    index = int(dev.split(":")[1])
                    extra["device_id"] = ordinals.get(index, index)
                for prec in precisions:
                    out.append(Candidate.make(NAME, dev, prec, **extra))
            out += [
                Unsupported(NAME, f"cuda:{i}", "fp32", f"{ep}: {why}") for i, why in sorted(hidden.items())
            ]
        for ep, ok, why in provider_report():
            if not ok and ep in _EPS:
                out.append(
                    Unsupported(NAME, _EPS[ep][0], "fp32", f"{ep} is listed but does not load here: {why}")
                )
        return out

    def variants(
        self, candidate: Candidate, model: ModelFacts, hw: Hardware, objective: str
    ) -> list[Candidate]:
        if candidate.get("provider") not in (None, CPU_EP):
            return []
        cores = threads_for(hw)
        small = model.flops < 20_000_000  # ~20 MFLOP: thread wake-ups cost more than they save
        out: list[Candidate] = []
        if objective == "throughput":
            # Callers run requests concurrently: spinning threads steal their cores.
            out.append(candidate.with_settings(allow_spinning=False))
        if cores > 1:
            fewer = 1 if small else max(1, cores // 2)
            out.append(candidate.with_settings(intra_op_threads=fewer))
        # Level "all" adds NCHWc layout changes that can lose on small or odd models.
        out.append(candidate.with_settings(graph_optimization="extended"))
        if objective != "throughput" and cores > 1:
            out.append(candidate.with_settings(allow_spinning=False))
        # Not denormal_as_zero: it would switch the application's own thread to flush-to-zero.
        return out[:4]

    def estimate(self, candidate: Candidate, model: ModelFacts, hw: Hardware, objective: str) -> Estimate:
        provider = candidate.get("provider") or CPU_EP
        gflop = model.flops / 1e9
        if provider == CPU_EP:
            cost, reasons = 1.0, ["ONNX Runtime's CPU provider at default settings is the reference cost"]
            threads = candidate.get("intra_op_threads")
            cores = threads_for(hw)
            if isinstance(threads, int) and threads < cores:
                if gflop < 0.02:
                    cost *= 0.95
                    reasons.append(
                        f"{threads} thread(s) instead of {cores}: a small model "
                        "spends less on thread synchronisation"
                    )
                else:
                    cost *= (cores / max(threads, 1)) ** 0.7
                    reasons.append(f"{threads} thread(s) instead of {cores}: less parallelism")
            if candidate.get("graph_optimization") not in (None, "all"):
                cost *= 1.05
                reasons.append("fewer graph optimizations than the default")
            return Estimate(cost, tuple(reasons))
        if provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
            if gflop < 0.05:
                cost, why = (
                    1.2,
                    (
                        f"~{gflop:.3f} GFLOP is too little work to hide the host-device "
                        "copies and kernel launches"
                    ),
                )
            elif gflop < 1:
                cost, why = 0.5, f"~{gflop:.2f} GFLOP: a GPU helps moderately"
            else:
                cost, why = 0.15, f"~{gflop:.1f} GFLOP: enough work for a GPU to win clearly"
            reasons = [f"{provider} on {candidate.device}", why]
            if provider == "TensorrtExecutionProvider":
                cost *= 0.5 if candidate.precision == "fp16" else 0.8
                reasons.append(
                    "TensorRT fuses layers"
                    + (" and runs in fp16 on tensor cores" if candidate.precision == "fp16" else "")
                )
            return Estimate(cost, tuple(reasons))
        if provider == "OpenVINOExecutionProvider":
            return Estimate(
                0.9,
                (
                    "OpenVINO's CPU kernels through ONNX Runtime, usually a little "
                    "faster than the default CPU provider on x86",
                ),
            )
        return Estimate(0.6, (f"{provider} runs the model on {candidate.device}",))

    # -- loading ----------------------------------------------------------------

    def keeps_artifacts(self, candidate: Candidate) -> bool:
        """Only the TensorRT and OpenVINO providers keep files (engines, a compile cache)."""
        return str(candidate.get("provider") or CPU_EP) in (
            "TensorrtExecutionProvider",
            "OpenVINOExecutionProvider",
        )

    def load(self, candidate: Candidate, model: ModelFacts, ctx: LoadContext) -> Runner:
        ort = import_ort()
        unknown = set(candidate.settings_dict) - _SETTINGS
        if unknown:
            raise BackendError(
                NAME, f"unknown candidate settings {sorted(unknown)}; expected some of {sorted(_SETTINGS)}"
            )
        user_options = ctx.app_options.get("sess_options")
        user_providers = ctx.app_options.get("providers")
        so = user_options if user_options is not None else self._session_options(ort, candidate, ctx)
        if user_providers is not None:
            providers = list(user_providers)
            provider_options = ctx.app_options.get("provider_options")
        else:
            try:
                providers, provider_options = self._providers(candidate, ctx)
            except OSError as exc:
                raise BackendError(
                    NAME, f"cannot create the artifact directory {ctx.artifact_dir}: {exc.strerror}"
                ) from None
        try:
            sess = ort.InferenceSession(
                str(model.path), sess_options=so, providers=providers, provider_options=provider_options
            )
        except Exception as exc:
            raise self._load_error(exc) from None
        first = providers[0] if providers else CPU_EP
        wanted = first if isinstance(first, str) else first[0]
        if wanted not in sess.get_providers():
            msg = f"{wanted} did not load and ONNX Runtime fell back to {sess.get_providers()}"
            if user_providers is None:
                raise BackendError(NAME, msg)
            log.warning("%s: %s", NAME, msg)
        # ONNX Runtime retries a failed GPU run on the CPU and prints about it: a silent
        # fallback would make measurements and results lie, so errors surface instead.
        sess.disable_fallback()
        return OrtRunner(sess, candidate, model)

    @staticmethod
    def _session_options(ort: Any, candidate: Candidate, ctx: LoadContext) -> Any:
        o = candidate.settings_dict
        so = ort.SessionOptions()
        quota = max(1, int(ctx.threads))
        threads = o.get("intra_op_threads")
        if isinstance(threads, int) and threads > 0:
            so.intra_op_num_threads = min(int(threads), quota)
        elif not _default_pool_fits(ctx):
            so.intra_op_num_threads = quota
        # else 0, ONNX Runtime's default: a thread per physical core, each pinned to its core
        level = o.get("graph_optimization", "all")
        if level not in _OPT_LEVELS:
            raise BackendError(NAME, f"graph_optimization: expected one of {_OPT_LEVELS}, received {level!r}")
        so.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[level]
        mode = o.get("execution_mode", "sequential")
        if mode == "parallel":
            so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
            so.inter_op_num_threads = quota
        elif mode == "sequential":
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.inter_op_num_threads = 1
        else:
            raise BackendError(
                NAME, f"execution_mode: expected 'sequential' or 'parallel', received {mode!r}"
            )
        if "allow_spinning" in o:
            flag = "1" if o["allow_spinning"] else "0"
            so.add_session_config_entry("session.intra_op.allow_spinning", flag)
            so.add_session_config_entry("session.inter_op.allow_spinning", flag)
        if o.get("denormal_as_zero"):
            so.add_session_config_entry("session.set_denormal_as_zero", "1")
        so.log_severity_level = 4  # errors reach the caller as exceptions, not on stderr
        return so

    @staticmethod
    def _providers(candidate: Candidate, ctx: LoadContext) -> tuple[list[str], list[dict]]:
        ep = str(candidate.get("provider") or CPU_EP)
        if ep == CPU_EP:
            return [CPU_EP], [{}]
        opts: dict[str, Any] = {}
        device_id = candidate.get("device_id")
        if device_id is not None and ep in (
            "CUDAExecutionProvider",
            "TensorrtExecutionProvider",
            "DmlExecutionProvider",
        ):
            opts["device_id"] = int(device_id)
        if ep == "TensorrtExecutionProvider":
            ctx.artifact_dir.mkdir(parents=True, exist_ok=True)
            opts.update(
                trt_fp16_enable=candidate.precision == "fp16",
                trt_engine_cache_enable=True,
                trt_engine_cache_path=str(ctx.artifact_dir),
                trt_timing_cache_enable=True,
                trt_timing_cache_path=str(ctx.artifact_dir),
            )
        elif ep == "OpenVINOExecutionProvider":
            ctx.artifact_dir.mkdir(parents=True, exist_ok=True)
            opts.update(
                device_type="CPU",
                precision="FP32",
                cache_dir=str(ctx.artifact_dir),
                num_of_threads=max(1, int(ctx.threads)),
            )
        # The CPU provider takes the nodes the device provider cannot run; behind TensorRT,
        # CUDA takes them first so that they stay on the GPU (ONNX Runtime's advice).
        if ep == "TensorrtExecutionProvider" and "CUDAExecutionProvider" in _working_providers():
            cuda_opts = {"device_id": opts["device_id"]} if "device_id" in opts else {}
            return [ep, "CUDAExecutionProvider", CPU_EP], [opts, cuda_opts, {}]
        return [ep, CPU_EP], [opts, {}]

    @staticmethod
    def _load_error(exc: Exception) -> Exception:
        kind = type(exc).__name__
        msg = _message(exc)
        if (
            kind in ("NotImplemented", "InvalidGraph", "InvalidProtobuf", "Fail", "RuntimeException")
            and "alloc" not in msg.lower()
        ):
            return UnsupportedModel(NAME, f"ONNX Runtime rejects the model: {msg}")
        return BackendError(NAME, f"loading failed ({kind}): {msg}")

    # -- doctor -----------------------------------------------------------------

    def diagnose(self, hw: Hardware) -> list[Problem]:
        problems = super().diagnose(hw)
        dists = distributions_of("onnxruntime")
        if len(dists) > 1:
            problems.append(
                Problem(
                    "error",
                    f"{len(dists)} ONNX Runtime distributions are installed together "
                    f"({', '.join(dists)}); they overwrite each other's files in the same "
                    "`onnxruntime` package, so which providers work depends on install order",
                    f"pip uninstall -y {' '.join(dists)} && pip install <the one you want, e.g. "
                    f"{next((d for d in dists if d != 'onnxruntime'), dists[0])}>",
                )
            )
        for ep, ok, why in provider_report():
            if ok or ep in _NOT_LOCAL:
                continue
            fix = _EPS[ep][3] if ep in _EPS else "see the provider's installation notes"
            # onnxruntime-gpu lists TensorRT whether or not TensorRT is installed: optional.
            severity = "info" if ep == "TensorrtExecutionProvider" else "warning"
            problems.append(Problem(severity, f"{ep} is listed by onnxruntime but does not load: {why}", fix))
        if getattr(hw, "nvidia_gpus", None) and not any(
            ep in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for ep, _, _ in provider_report()
        ):
            problems.append(
                Problem(
                    "info",
                    "an NVIDIA GPU is present but this ONNX Runtime has no CUDA provider",
                    "pip uninstall -y onnxruntime && pip install onnxruntime-gpu",
                )
            )
        return problems


def _default_pool_fits(ctx: LoadContext) -> bool:
    """May ONNX Runtime size its thread pool itself? Only where its default (a thread per
    physical core, each pinned to its core) takes nothing the process was not given: no
    CPU quota, every CPU in the affinity mask, and no thread count the application named.
    The reference is then ONNX Runtime exactly at its defaults. (An explicit count, which
    leaves the threads unpinned, is not a variant: it times within noise of the default
    and took race places from other runtimes.)"""
    cpu = getattr(ctx.hardware, "cpu", None)
    if cpu is None or ctx.threads_asked:
        return False
    return (
        cpu.quota_cores is None
        and cpu.usable_cores == cpu.logical_cores
        and int(ctx.threads) == cpu.usable_cores
    )


def _closed(*_: Any) -> Any:
    raise BackendError(NAME, "run() on a closed runner")


class OrtRunner(Runner):
    """An ``InferenceSession``; its ``run`` is thread-safe, so this adds no lock."""

    def __init__(self, sess: Any, candidate: Candidate, model: ModelFacts) -> None:
        self.candidate = candidate
        self.session = sess
        self.input_names = tuple(i.name for i in sess.get_inputs())
        self.output_names = tuple(o.name for o in sess.get_outputs())
        self.providers = tuple(sess.get_providers())
        self._outputs = list(self.output_names)
        # The binding under InferenceSession.run: that wrapper's per-call Python checks cost a
        # third of a small model's call, and ONNX Runtime checks the feed itself. The same
        # signature, so the wrapper stands in where the binding is not where it was.
        inner_run = getattr(getattr(sess, "_sess", None), "run", None)
        self._run = inner_run if callable(inner_run) else sess.run
        self.direct_run = self._run  # the session's fast path
        self._model = model
        self._lock = threading.Lock()

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._run(self._outputs, feeds, None)
        except BackendError:
            raise
        except Exception as exc:
            raise self._run_error(exc) from None

    def plain_run(self, feed: Mapping[str, np.ndarray]) -> Any:
        """``InferenceSession.run`` as an application calls it without autoinfer."""
        return self.session.run(None, feed)

    @staticmethod
    def _run_error(exc: Exception) -> Exception:
        # The Session checked the feed: ONNX Runtime's own complaint about an argument is
        # about values inside the graph (a Reshape that does not fit), still the input's.
        if type(exc).__name__ == "InvalidArgument" or isinstance(exc, (ValueError, TypeError)):
            return InputError(f"{NAME}: {_message(exc)}")
        return BackendError(NAME, f"run failed ({type(exc).__name__}): {_message(exc)}")

    def close(self) -> None:
        with self._lock:
            self._run = self.direct_run = _closed  # the binding holds the session's memory
            self.session = None
