"""OpenVINO: Intel's runtime, for x86 CPUs (Intel and AMD), Intel GPUs and NPUs.

OpenVINO reads the ONNX file itself and compiles it for a device. Compiles are
cached in the candidate's artifact directory (``CACHE_DIR``), so the second
load of the same model reads a blob instead of compiling: about 4x faster on
ResNet-50 on a CPU.

Telemetry: ``import openvino`` imports ``openvino.tools.ovc``, whose
``__init__`` sends a Google Analytics event ("ov import") from a forked
process unless the user opted out. autoinfer makes no network connections, so
:func:`import_openvino` -- the only way autoinfer imports OpenVINO -- imports it
with ``openvino_telemetry`` hidden (even when the application imported that
package already); OpenVINO then binds its no-op telemetry stub. Nothing else
autoinfer calls (``Core.read_model``, ``compile_model``, inference) sends
telemetry; only the model converter ``ovc``/``convert_model`` does, and
autoinfer never calls it. The installed openvino-telemetry (2025.2) reads no
opt-out environment variable (``OPENVINO_TELEMETRY_DISABLE`` is ignored; only
``CI=true`` or a consent file in ``$HOME`` turn it off), so the hiding is the
guard, in every process that imports OpenVINO through autoinfer. If the
application imported OpenVINO before autoinfer, the event was sent by then
(autoinfer logs it once); opt out for good with ``opt_in_out --opt_out``.

Devices: the probes say which Intel GPUs and NPUs sysfs shows; this backend
asks OpenVINO which of them it drives (:func:`device_report`) and pairs the two
(:func:`pair_accelerators`). OpenVINO names a lone GPU plain ``GPU`` and
numbers several ``GPU.0``, ``GPU.1``; autoinfer calls them ``gpu:0``, ``gpu:1``
and maps back through the device list (:func:`ov_device_name`).

Candidate settings are OpenVINO property names passed to ``compile_model``
(PERFORMANCE_HINT, NUM_STREAMS, INFERENCE_NUM_THREADS, ENABLE_CPU_PINNING,
ENABLE_HYPER_THREADING, CPU_DENORMALS_OPTIMIZATION, ...). The precision sets
INFERENCE_PRECISION_HINT explicitly, because OpenVINO's own default is bf16 on
CPUs with AMX or AVX-512 BF16 and f16 on GPUs: an "fp32" candidate must not
quietly compute in 16 bits.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._hw import threads_for
from .._lazy import import_optional
from ..errors import BackendError, BackendUnavailable, UnsupportedModel
from ._common import cpu_has, dist_version
from .base import (
    Availability,
    Backend,
    Candidate,
    Capabilities,
    Estimate,
    LoadContext,
    Problem,
    Runner,
    Unsupported,
)

if TYPE_CHECKING:  # pragma: no cover
    from probes import Hardware

    from ..model import ModelFacts

log = logging.getLogger("autoinfer.backends.openvino")

NAME = "openvino"
FIX = "pip install 'autoinfer[openvino]'"
_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
# The CPU flags with which OpenVINO's CPU plugin computes a reduced precision natively
# (its docs: bf16 on x86 only; fp16 on x86 with AVX-512 FP16 or AMX-FP16, and on ARMv8.2+).
_CPU_PRECISION_FLAGS = {
    "bf16": ("avx512_bf16", "amx_bf16"),
    "fp16": ("avx512_fp16", "amx_fp16", "fphp", "asimdhp"),
}
# Settings a candidate may carry: OpenVINO compile properties, passed through.
_SETTINGS = frozenset(
    {
        "PERFORMANCE_HINT",
        "PERFORMANCE_HINT_NUM_REQUESTS",
        "NUM_STREAMS",
        "INFERENCE_NUM_THREADS",
        "ENABLE_CPU_PINNING",
        "ENABLE_HYPER_THREADING",
        "SCHEDULING_CORE_TYPE",
        "CPU_DENORMALS_OPTIMIZATION",
        "EXECUTION_MODE_HINT",
        "MODEL_DISTRIBUTION_POLICY",
    }
)
_HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT", "load_time": "LATENCY", "memory": "LATENCY"}

_INT32_MAX, _INT32_MIN = 2**31 - 1, -(2**31)

_warned_foreign_import = False


@contextlib.contextmanager
def _telemetry_hidden() -> Iterator[None]:
    """Around the import: every openvino_telemetry module hidden, even one the application
    imported, so that OpenVINO's converter binds its stub; put back afterwards. An OpenVINO
    the application imported before autoinfer is noticed (logged once) instead."""
    if hasattr(sys.modules.get("openvino"), "Core"):
        _note_foreign_import()
        yield
        return
    saved = {
        k: sys.modules.pop(k)
        for k in list(sys.modules)
        if k == "openvino_telemetry" or k.startswith("openvino_telemetry.")
    }
    sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get("openvino_telemetry", 0) is None:
            del sys.modules["openvino_telemetry"]
        sys.modules.update(saved)


def import_openvino() -> Any:
    """``import openvino`` without the telemetry event its import sends (see module doc)."""
    return import_optional("openvino", extra=OpenVinoBackend.pip_extra, guard=_telemetry_hidden)


def telemetry_bound() -> bool:
    """Whether OpenVINO's converter in this process is bound to the real telemetry package."""
    utils = sys.modules.get("openvino.tools.ovc.telemetry_utils")
    tm = getattr(utils, "tm", None)
    return getattr(tm, "__name__", "").startswith("openvino_telemetry")


def _note_foreign_import() -> None:
    global _warned_foreign_import
    if not _warned_foreign_import and telemetry_bound():
        _warned_foreign_import = True
        log.warning(
            "openvino was imported before autoinfer, with its telemetry: that import "
            "may have sent a usage event (autoinfer itself sends none); opt out with "
            "`opt_in_out --opt_out`"
        )


_core_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def core() -> Any:
    """One ``openvino.Core`` per process: creating one loads plugins and is not free."""
    with _core_lock:
        return import_openvino().Core()


@functools.lru_cache(maxsize=1)
def device_report() -> tuple[tuple[str, str, frozenset[str], frozenset[str]], ...]:
    """(OpenVINO device, full name, optimization capabilities, supported properties)."""
    c = core()
    out = []
    for dev in c.available_devices:
        try:
            full = str(c.get_property(dev, "FULL_DEVICE_NAME"))
        except Exception:
            full = dev
        try:
            caps = frozenset(str(x) for x in c.get_property(dev, "OPTIMIZATION_CAPABILITIES"))
        except Exception:
            caps = frozenset()
        try:
            props = frozenset(str(p) for p in c.get_property(dev, "SUPPORTED_PROPERTIES"))
        except Exception:
            props = frozenset()
        out.append((str(dev), full, caps, props))
    return tuple(out)


def cpu_precisions(hw: Any, full_name: str, caps: Iterable[str]) -> list[str]:
    """The reduced precisions OpenVINO computes natively on the CPU of the hardware facts.

    The facts' CPU flags decide: they may describe a recorded machine, not this one. When
    they name the CPU OpenVINO runs on here (``full_name``), OpenVINO must also report the
    capability (``caps``, its OPTIMIZATION_CAPABILITIES)."""
    model_name = str(getattr(getattr(hw, "cpu", None), "model_name", "") or "")
    here = " ".join(model_name.split()).casefold() == " ".join(str(full_name).split()).casefold()
    reported = {str(c).upper() for c in caps}
    return [
        precision
        for precision, flags in _CPU_PRECISION_FLAGS.items()
        if any(cpu_has(hw, f) for f in flags) and (not here or precision.upper() in reported)
    ]


def to_device(ov_device: str) -> str:
    """OpenVINO's device name -> autoinfer's: CPU -> cpu, GPU -> gpu:0, GPU.1 -> gpu:1, NPU -> npu."""
    kind, _, index = ov_device.partition(".")
    kind = kind.lower()
    if kind == "gpu":
        return f"gpu:{index or 0}"
    return kind + (f":{index}" if index else "")


def to_ov_device(device: str) -> str:
    """autoinfer's device name -> OpenVINO's numbered form (gpu:0 -> GPU.0); see ov_device_name."""
    kind, _, index = device.partition(":")
    return kind.upper() + (f".{index}" if index else "")


def ov_device_name(device: str, listed: Iterable[str] | None = None) -> str:
    """The name OpenVINO lists for autoinfer's ``device``: a lone GPU is plain ``GPU``.

    ``listed`` is OpenVINO's device list (default: this machine's); a name it does
    not contain is returned in the numbered form.
    """
    numbered = to_ov_device(device)
    if listed is None:
        try:
            listed = [d for d, _, _, _ in device_report()]
        except Exception:  # noqa: BLE001 - OpenVINO unusable: the numbered form
            return numbered
    names = set(listed)
    if numbered in names:
        return numbered
    same = [d for d in names if to_device(d) == device]
    return same[0] if same else numbered


def pair_accelerators(accelerators: Iterable[Any], devices: Mapping[str, str]) -> dict[str, Any]:
    """OpenVINO device name -> the probed accelerator it drives (GPUs and NPUs only).

    OpenVINO's GPU numbering puts an integrated GPU first ("GPU.0", or plain
    "GPU" when there is one GPU); the order of discrete GPUs after it is up to
    the driver, so they are paired with the Intel GPUs sysfs lists (integrated
    first, then in card order) only when the counts agree. A device left
    unpaired is described from its FULL_DEVICE_NAME ("(iGPU)"/"(dGPU)").
    """
    accels = [a for a in accelerators if str(getattr(a, "vendor", "")).lower() == "intel"]
    ov_gpus = sorted((d for d in devices if d == "GPU" or d.startswith("GPU.")), key=_gpu_order)
    ov_npus = sorted(d for d in devices if d == "NPU" or d.startswith("NPU."))
    sys_gpus = sorted(
        (a for a in accels if getattr(a, "kind", "") in ("igpu", "dgpu", "gpu")),
        key=lambda a: getattr(a, "kind", "") != "igpu",
    )
    sys_npus = [a for a in accels if getattr(a, "kind", "") == "npu"]
    paired: dict[str, Any] = {}
    for found, names in ((sys_gpus, ov_gpus), (sys_npus, ov_npus)):
        if len(found) == len(names):
            paired.update(zip(names, found, strict=True))
            continue
        for name in names:
            full = devices[name]
            kind = (
                "npu"
                if name.startswith("NPU")
                else "igpu"
                if "(iGPU)" in full
                else "dgpu"
                if "(dGPU)" in full
                else "gpu"
            )
            paired[name] = _Unpaired(kind=kind, vendor="intel", name=full)
    return paired


@dataclass(frozen=True)
class _Unpaired:
    """An OpenVINO device no probed accelerator matched."""

    kind: str
    vendor: str
    name: str


def _gpu_order(name: str) -> tuple[int, str]:
    _, _, index = name.partition(".")
    return (int(index), name) if index.isdigit() else (-1, name)


def _full_names() -> dict[str, str]:
    return {d: full for d, full, _, _ in device_report()}


def _message(exc: BaseException) -> str:
    """OpenVINO's messages start with a stack of 'Exception from src/...' lines."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("Exception from src/")]
    return " ".join(lines)[:500] or type(exc).__name__


def refuse(model: ModelFacts) -> str:
    """Why OpenVINO would run ``model`` wrongly, or "" when it can run it."""
    strings = [s.name for s in (*model.inputs, *model.outputs) if s.dtype == "str"]
    if strings:
        # OpenVINO implements no ONNX string operator, and a string tensor that merely
        # passes through frees its buffer twice: the process aborts at exit.
        return f"OpenVINO does not run string tensors (string inputs/outputs: {strings})"
    f64 = [s.name for s in (*model.inputs, *model.outputs) if s.dtype == "float64"]
    if f64:
        # Found by the conformance suite: values beyond float32's range become inf/max.
        return (
            f"OpenVINO computes float64 tensors in float32 (precision drops to ~7 digits "
            f"and values beyond 3.4e38 overflow); float64 inputs/outputs: {f64}"
        )
    return ""


# A first compilation takes about this many loads of the model by the reference.
COMPILE_LOADS = 4.0


class OpenVinoBackend(Backend):
    name = NAME
    package = "openvino"
    pip_extra = "openvino"
    capabilities = Capabilities(
        devices=("cpu", "gpu", "npu"),
        precisions=("fp32", "bf16", "fp16"),
        dynamic_shapes=True,
        needs_conversion=False,
        reference=False,
    )
    thread_env_vars = ("OV_CPU_THREADS_NUM",)
    domains = ("org.openvinotoolkit",)  # OpenVINO's own operators in ONNX files it exported
    # child_env() stays empty: openvino-telemetry reads no opt-out variable (see the module
    # docstring); every child imports OpenVINO through import_openvino() instead.

    # -- facts ------------------------------------------------------------------

    def availability(self, hw: Hardware) -> Availability:
        try:
            ov = import_openvino()
        except BackendUnavailable as exc:
            installed = dist_version("openvino") is not None
            return Availability(
                NAME,
                installed=installed,
                usable=False,
                version=dist_version("openvino"),
                reason=str(exc) if installed else "openvino is not installed",
                fix=FIX if not installed else "pip install --force-reinstall openvino",
            )
        except Exception as exc:  # never raises
            return Availability(
                NAME,
                installed=True,
                usable=False,
                reason=f"openvino fails on import: {exc}",
                fix="pip install --force-reinstall openvino",
            )
        version = dist_version("openvino") or str(getattr(ov, "__version__", "")).split("-")[0]
        try:
            devices = tuple(to_device(d) for d, _, _, _ in device_report())
        except Exception as exc:
            return Availability(
                NAME,
                installed=True,
                usable=False,
                version=version,
                reason=f"OpenVINO cannot list its devices: {_message(exc)}",
                fix="pip install --force-reinstall openvino",
            )
        if not devices:
            return Availability(
                NAME,
                installed=True,
                usable=False,
                version=version,
                reason="OpenVINO found no device it can run on (it needs an x86 "
                "CPU with SSE4.2, an ARM CPU, an Intel GPU or NPU)",
                fix="",
            )
        return Availability(NAME, installed=True, usable=True, version=version, devices=devices)

    # -- choice -----------------------------------------------------------------

    def candidates(self, model: ModelFacts, hw: Hardware, objective: str) -> list[Candidate | Unsupported]:
        try:
            report = device_report()
        except Exception as exc:
            return [Unsupported(NAME, "cpu", "fp32", f"OpenVINO is not usable: {exc}")]
        out: list[Candidate | Unsupported] = []
        refused = refuse(model)
        for ov_dev, full_name, caps, _ in report:
            dev = to_device(ov_dev)
            kind = ov_dev.split(".")[0]
            if refused:
                out.append(Unsupported(NAME, dev, "fp32", refused))
                continue
            if kind == "NPU" and model.has_dynamic_inputs:
                dyn = [
                    f"{s.name}{list(s.shape) if s.shape is not None else '[?]'}"
                    for s in model.inputs
                    if s.is_dynamic
                ]
                out.append(
                    Unsupported(
                        NAME,
                        dev,
                        "fp16",
                        f"the NPU needs static input shapes and {', '.join(dyn)} "
                        "are dynamic; give input_shapes to fix them",
                    )
                )
                continue
            if kind == "NPU":  # the NPU computes in fp16 whatever the hint says
                out.append(Candidate.make(NAME, dev, "fp16"))
                continue
            out.append(Candidate.make(NAME, dev, "fp32"))
            if kind == "CPU":
                out += [Candidate.make(NAME, dev, p) for p in cpu_precisions(hw, full_name, caps)]
            if kind == "GPU" and "FP16" in caps:
                out.append(Candidate.make(NAME, dev, "fp16"))
        return out

    def variants(
        self, candidate: Candidate, model: ModelFacts, hw: Hardware, objective: str
    ) -> list[Candidate]:
        kind = to_ov_device(candidate.device).split(".")[0]
        cores = threads_for(hw)
        out: list[Candidate] = []
        if kind == "CPU":
            if objective == "throughput":
                out.append(candidate.with_settings(NUM_STREAMS=cores, INFERENCE_NUM_THREADS=cores))
                if cores >= 4:
                    out.append(candidate.with_settings(NUM_STREAMS=cores // 2))
                out.append(candidate.with_settings(PERFORMANCE_HINT="LATENCY"))
            else:
                if cores >= 4:
                    out.append(candidate.with_settings(INFERENCE_NUM_THREADS=cores // 2))
                logical = getattr(getattr(hw, "cpu", None), "logical_cores", 0) or 0
                physical = getattr(getattr(hw, "cpu", None), "physical_cores", 0) or 0
                if logical > physical > 0:
                    out.append(candidate.with_settings(ENABLE_HYPER_THREADING=False))
                # Pinning helps on a quiet machine and hurts when a container shares cores.
                out.append(candidate.with_settings(ENABLE_CPU_PINNING=False))
            # Not CPU_DENORMALS_OPTIMIZATION: flush-to-zero flags may reach the caller's thread.
        elif kind == "GPU":
            other = "LATENCY" if objective == "throughput" else "THROUGHPUT"
            out.append(candidate.with_settings(PERFORMANCE_HINT=other))
        return out[:4]

    def expected_load_s(
        self, candidate: Candidate, model: ModelFacts, ctx: LoadContext, reference_load_s: float
    ) -> float:
        """A first compilation takes a few reference loads (measured on x86 CPUs: 2x to 5x);
        with its blob in the artifact directory (the compile cache), about one."""
        try:
            cached = any(Path(ctx.artifact_dir).glob("*.blob"))
        except OSError:
            cached = False
        return reference_load_s if cached else 0.2 + COMPILE_LOADS * reference_load_s

    def estimate(self, candidate: Candidate, model: ModelFacts, hw: Hardware, objective: str) -> Estimate:
        kind = to_ov_device(candidate.device).split(".")[0]
        gflop = model.flops / 1e9
        vendor = str(getattr(getattr(hw, "cpu", None), "vendor", "unknown")).lower()
        reasons: list[str] = []
        if kind == "CPU":
            if vendor == "intel":
                cost = 0.8
                reasons.append("OpenVINO's CPU kernels are tuned for Intel CPUs")
            else:
                cost = 0.95
                reasons.append(
                    f"OpenVINO's CPU kernels run well on {vendor} x86 CPUs but are tuned for Intel's"
                )
            if candidate.precision == "bf16":
                if cpu_has(hw, "amx_bf16"):
                    cost *= 0.35
                    reasons.append("bf16 on AMX tiles")
                else:
                    cost *= 0.65
                    reasons.append("bf16 with AVX-512 BF16 instructions")
            elif candidate.precision == "fp16":
                if cpu_has(hw, "amx_fp16"):
                    cost *= 0.35
                    reasons.append("fp16 on AMX tiles")
                elif cpu_has(hw, "avx512_fp16"):
                    cost *= 0.65
                    reasons.append("fp16 with AVX-512 FP16 instructions")
                else:
                    cost *= 0.75
                    reasons.append("fp16 with the ARM CPU's half-precision arithmetic")
            if gflop < 0.01:
                # measured on a 2-core Xeon: 1.6x plain ONNX Runtime's time on models of
                # 50 kFLOP and less (an LSTM, a dynamic MLP), 11x on one of 0.5 kFLOP: the
                # call, not the kernels or the precision, sets the time
                cost = 1.6
                reasons.append("a tiny model: OpenVINO's per-call cost outweighs its kernels")
        elif kind == "GPU":
            discrete = self._is_discrete(candidate.device, hw)
            if gflop < 0.1:
                cost = 1.5
                reasons.append(f"~{gflop:.3f} GFLOP is too little work to repay GPU dispatch")
            else:
                cost = 0.3 if discrete else 0.6
                reasons.append(
                    ("a discrete" if discrete else "an integrated") + f" Intel GPU on ~{gflop:.2f} GFLOP"
                )
            if candidate.precision == "fp16":
                cost *= 0.6
                reasons.append("fp16 halves memory traffic")
        else:
            cost = 1.5 if gflop < 0.1 else 0.7
            reasons.append(f"{kind} on ~{gflop:.2f} GFLOP (efficient, not always fast)")
        if objective == "load_time":
            cost *= 1.5
            reasons.append("compiles the model at load (a cached compile loads ~4x faster)")
        return Estimate(cost, tuple(reasons))

    @staticmethod
    def _is_discrete(device: str, hw: Hardware) -> bool:
        try:
            full = _full_names()
        except Exception:  # noqa: BLE001 - OpenVINO unusable: assume the common case
            return False
        paired = pair_accelerators(getattr(hw, "accelerators", ()) or (), full)
        accel = paired.get(ov_device_name(device, full))
        return getattr(accel, "kind", "") == "dgpu"

    def diagnose(self, hw: Hardware) -> list[Problem]:
        problems = super().diagnose(hw)
        if self.availability(hw).usable:
            problems += diagnose_extra(hw)
        return problems

    # -- loading ----------------------------------------------------------------

    def load(self, candidate: Candidate, model: ModelFacts, ctx: LoadContext) -> Runner:
        unknown = set(candidate.settings_dict) - _SETTINGS
        if unknown:
            raise BackendError(
                NAME, f"unknown candidate settings {sorted(unknown)}; expected some of {sorted(_SETTINGS)}"
            )
        refused = refuse(model)
        if refused:
            raise UnsupportedModel(NAME, refused)
        c = core()
        ov_device = ov_device_name(candidate.device)
        kind = ov_device.split(".")[0]
        try:
            supported = next((p for d, _, _, p in device_report() if d == ov_device), None)
            if supported is None:
                supported = frozenset(str(p) for p in c.get_property(ov_device, "SUPPORTED_PROPERTIES"))
        except Exception as exc:
            raise BackendError(NAME, f"device {ov_device} is not available: {_message(exc)}") from None
        config = self._config(candidate, ctx, supported)
        # The NPU compiles for fixed shapes only: fix the dynamic ones from ctx.input_shapes.
        reshape: dict[str, tuple[int, ...]] = {}
        if model.has_dynamic_inputs and kind == "NPU":
            if not ctx.input_shapes:
                raise UnsupportedModel(
                    NAME, f"{ov_device} needs static input shapes; give input_shapes for the dynamic inputs"
                )
            reshape = {k: tuple(v) for k, v in ctx.input_shapes.items()}
        try:
            if reshape:
                ov_model = c.read_model(str(model.path))
                ov_model.reshape(reshape)
                source: Any = ov_model
            else:
                # Compiling from the path lets a cache hit skip reading the ONNX file.
                source = str(model.path)
        except Exception as exc:
            raise UnsupportedModel(NAME, f"OpenVINO cannot read the model: {_message(exc)}") from None
        try:
            compiled = c.compile_model(source, ov_device, config)
        except Exception as exc:
            msg = _message(exc)
            low = msg.lower()
            if any(
                w in low
                for w in (
                    "not supported",
                    "unsupported",
                    "conversion",
                    "cannot create",
                    "no conversion rule",
                    "not implemented",
                    "doesn't support",
                    "does not support",
                    "check '",
                )
            ):
                raise UnsupportedModel(
                    NAME, f"OpenVINO cannot compile the model for {ov_device}: {msg}"
                ) from None
            raise BackendError(NAME, f"compiling for {ov_device} failed: {msg}") from None
        return OvRunner(compiled, candidate, model)

    @staticmethod
    def _config(candidate: Candidate, ctx: LoadContext, supported: frozenset[str]) -> dict:
        o = candidate.settings_dict
        config: dict[str, Any] = {}

        def put(key: str, value: Any) -> None:
            if not supported or key in supported:
                config[key] = value
            elif key in o:
                raise BackendError(NAME, f"{candidate.device} does not support property {key}")

        put("PERFORMANCE_HINT", str(o.get("PERFORMANCE_HINT") or _HINTS.get(ctx.objective, "LATENCY")))
        quota = max(1, int(ctx.threads))
        threads = o.get("INFERENCE_NUM_THREADS")
        if to_ov_device(candidate.device).startswith("CPU"):
            put(
                "INFERENCE_NUM_THREADS",
                min(int(threads), quota) if isinstance(threads, int) and threads > 0 else quota,
            )
        if candidate.precision in _PRECISION_HINT and "INFERENCE_PRECISION_HINT" in supported:
            config["INFERENCE_PRECISION_HINT"] = _PRECISION_HINT[candidate.precision]
        for key, value in o.items():
            if key not in ("PERFORMANCE_HINT", "INFERENCE_NUM_THREADS"):
                put(key, value)
        try:
            ctx.artifact_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(
                NAME, f"cannot create the artifact directory {ctx.artifact_dir}: {exc.strerror}"
            ) from None
        config["CACHE_DIR"] = str(ctx.artifact_dir)
        config.update(ctx.app_options.get("openvino_config") or {})
        return config


class OvRunner(Runner):
    """A compiled model and a pool of infer requests, one per concurrent caller.

    A request is taken from the pool for one call and given back after the
    outputs are copied out of it (its tensors are reused by the next call).
    At most OPTIMAL_NUMBER_OF_INFER_REQUESTS requests exist; more callers wait.
    """

    def __init__(self, compiled: Any, candidate: Candidate, model: ModelFacts) -> None:
        self.candidate = candidate
        self.compiled = compiled
        self.input_names = tuple(s.name for s in model.inputs)
        self.output_names = tuple(s.name for s in model.outputs)
        self._tensor = import_openvino().Tensor
        self._in_index = self._match(compiled.inputs, self.input_names, "input")
        self._out_index = self._match(compiled.outputs, self.output_names, "output")
        self._wide_ints = tuple(
            i for i, s in enumerate(model.inputs) if s.dtype in ("int64", "uint64", "uint32")
        )
        # Declared dtype where OpenVINO's differs (it may narrow int64, or return f16).
        self._casts: list[np.dtype | None] = []
        for spec, idx in zip(model.outputs, self._out_index, strict=True):
            try:
                got = np.dtype(compiled.outputs[idx].get_element_type().to_dtype())
            except Exception:
                got = None
            want = _np_dtype(spec.dtype)
            self._casts.append(want if want is not None and got != want else None)
        try:
            self._max = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        except Exception:
            self._max = 1
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._created = 0
        self._lock = threading.Lock()

    @staticmethod
    def _match(ports: Any, names: tuple[str, ...], what: str) -> tuple[int, ...]:
        by_name: dict[str, int] = {}
        for i, port in enumerate(ports):
            for n in port.get_names():
                by_name.setdefault(n, i)
        if all(n in by_name for n in names):
            return tuple(by_name[n] for n in names)
        if len(ports) == len(names):  # unnamed ports: OpenVINO keeps ONNX's order
            return tuple(range(len(names)))
        raise BackendError(
            NAME,
            f"the compiled model's {what}s "
            f"{[sorted(p.get_names()) for p in ports]} do not match the "
            f"model's {list(names)}",
        )

    def _acquire(self) -> Any:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._created < self._max:
                self._created += 1
                return self.compiled.create_infer_request()
        return self._idle.get()

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        arrays = [feeds[n] for n in self.input_names]  # checked by the Session
        for i in self._wide_ints:
            self._check_int32(i, arrays[i])
        return self._infer(arrays)

    def _check_int32(self, i: int, x: np.ndarray) -> None:
        # OpenVINO's CPU plugin computes 64-bit integers in 32 bits: 2**40 + 1 gives 1.
        if x.size and (x.max() > _INT32_MAX or (x.dtype.kind == "i" and x.min() < _INT32_MIN)):
            raise BackendError(
                NAME,
                f"input {self.input_names[i]!r} holds values beyond the "
                "int32 range, and OpenVINO computes 64-bit integers in 32 "
                "bits (the results would be wrong)",
            )

    def _infer(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if self.compiled is None:
            raise BackendError(NAME, "run() on a closed runner")
        tensor = self._tensor
        # A shared-memory Tensor does not keep its array alive: ``keep`` does, until the
        # inference is over (a copy made here would otherwise be freed and reused).
        keep = []
        try:
            req = self._acquire()
        except Exception as exc:
            raise BackendError(NAME, f"cannot create an infer request: {_message(exc)}") from None
        try:
            for idx, x in zip(self._in_index, arrays, strict=True):
                if not (x.flags.c_contiguous and x.flags.writeable):
                    x = np.array(x, order="C")  # OpenVINO shares only writeable C arrays
                keep.append(x)
                req.set_input_tensor(idx, tensor(x, shared_memory=True))
            req.infer()
            outs = []
            for idx, cast in zip(self._out_index, self._casts, strict=True):
                data = req.get_output_tensor(idx).data
                # A copy either way: the request reuses its output tensors.
                outs.append(data.astype(cast) if cast is not None else data.copy())
            return outs
        except Exception as exc:
            raise BackendError(NAME, f"inference failed: {_message(exc)}") from None
        finally:
            if self.compiled is not None:  # closed meanwhile: the request goes with the model
                self._idle.put(req)

    def close(self) -> None:
        with self._lock:
            self.compiled = None
            while True:  # idle requests hold the compiled model (and its memory)
                try:
                    self._idle.get_nowait()
                except queue.Empty:
                    break


def _np_dtype(name: str) -> np.dtype | None:
    try:
        return np.dtype(name)
    except TypeError:
        return None


def diagnose_extra(hw: Hardware) -> list[Problem]:
    """Intel accelerators the probes found that OpenVINO does not list."""
    problems: list[Problem] = []
    try:
        full = _full_names()
    except Exception:
        return problems
    accelerators = tuple(getattr(hw, "accelerators", ()) or ())
    driven = [id(a) for a in pair_accelerators(accelerators, full).values()]
    for acc in accelerators:
        vendor = str(getattr(acc, "vendor", "")).lower()
        kind = str(getattr(acc, "kind", ""))
        if vendor == "intel" and kind in ("igpu", "dgpu", "gpu", "npu") and id(acc) not in driven:
            fix = (
                "install the NPU driver (intel-driver-compiler-npu, intel-level-zero-npu)"
                if kind == "npu"
                else "install Intel's compute runtime (intel-opencl-icd, level-zero) and add the "
                "user to the 'render' group"
            )
            problems.append(
                Problem(
                    "warning",
                    f"OpenVINO does not see the Intel {kind} {getattr(acc, 'name', '')}".rstrip(),
                    fix,
                )
            )
    return problems
