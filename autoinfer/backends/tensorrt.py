"""TensorRT: builds an engine for one NVIDIA GPU and runs it there.

TensorRT compiles an ONNX model into an engine specialised for one GPU model,
one TensorRT version, one precision and a range of input shapes. Building takes
seconds to minutes, so engines are cached in the candidate's artifact
directory, keyed by everything that makes them differ, with a SHA-256 manifest;
a damaged or mismatching engine is rebuilt, never trusted.

Works with TensorRT 8.6, 10.x and 11.x through the named-tensor API (8.5 and
later: ``num_io_tensors``, ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``); the binding-index API of older versions is not used.
Device memory, copies and streams go through cuda-python (see ``_cuda``).
Neither ``tensorrt`` nor ``cuda`` is imported until a method needs it.

Precisions. Up to 10.x, fp16 and int8 are builder flags (weak typing). TensorRT
11 removed those flags: every network is strongly typed and runs in the types
the model declares. There fp16 is not offered (it needs the model converted to
fp16 first, which autoinfer does not do), and int8 is a Q/DQ model built as it is.

Devices. A candidate's ``cuda:N`` names NVML's GPU N; the CUDA ordinal is found
by PCI bus id (then UUID), and a GPU in MIG mode runs on the MIG instance CUDA
sees. GPUs CUDA does not see get no candidate.

Kernel timings are kept in a TensorRT timing cache beside the engines (one per
model directory, TensorRT version and GPU), so variants do not re-time kernels.

Shapes. An input with dynamic dimensions needs a concrete shape in
``LoadContext.input_shapes``. The engine gets one optimization profile: a
dynamic first (batch) dimension ranges from 1 to ``PROFILE_BATCH_MULTIPLE``
times the given value (optimised for the given value); other dynamic
dimensions are fixed at the given value. A feed outside that range is an
InputError that says the range.

Candidate settings (all optional):

  opt_level     builder optimization level 0-5 (TensorRT's default is 3; 5
                tries more kernels, builds slower)
  tf32          fp32 candidates: allow TF32 tensor-core math (Ampere and newer).
                Off by default so that "fp32" means fp32.
  workspace_mb  cap on the builder's scratch memory pool
  contexts      execution contexts kept for concurrent run() calls (default 4);
                each holds its own activation memory and I/O buffers
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._hw import threads_for
from .._lazy import import_errors, import_optional, present
from .._util import exclusive, stable_json
from ..errors import AutoinferError, BackendError, BackendUnavailable, InputError, UnsupportedModel
from ._common import dist_version
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
    resolve_shapes,
)

if TYPE_CHECKING:  # pragma: no cover
    from probes import Hardware, NvidiaGPU

    from ..model import ModelFacts
    from ._cuda import CudaError, Cudart, Placement

log = logging.getLogger("autoinfer.backends.tensorrt")

NAME = "tensorrt"
INSTALL_FIX = 'pip install "autoinfer[tensorrt]" (needs an NVIDIA GPU and driver)'
# The batch dimension of a dynamic input may grow to this multiple of the given size.
PROFILE_BATCH_MULTIPLE = 4
DEFAULT_CONTEXTS = 4
ENGINE_FORMAT = 1  # bump when the cache layout or key changes meaning

_SETTINGS = frozenset({"opt_level", "tf32", "workspace_mb", "contexts"})
# ONNX tensor types TensorRT takes as network inputs and outputs. int64 is cast to
# int32 by the 8.x parser and is native from 10.0; the backend converts either way.
_IO_DTYPES = frozenset({"float32", "float16", "int8", "int32", "int64", "bool", "uint8"})
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_DIST_NAMES = (
    "tensorrt",
    "tensorrt-cu11",
    "tensorrt-cu12",
    "tensorrt-cu13",
    "tensorrt-cu11-bindings",
    "tensorrt-cu12-bindings",
    "tensorrt-cu13-bindings",
    "tensorrt-cu11-libs",
    "tensorrt-cu12-libs",
    "tensorrt-cu13-libs",
    "tensorrt-bindings",
    "tensorrt-libs",
    "cuda-python",
    "cuda-bindings",
)


# -- versions and hardware --------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _installed_dists() -> dict[str, str]:
    """The TensorRT and cuda-python distributions installed, with their versions."""
    return {d: v for d in _DIST_NAMES if (v := dist_version(d))}


def _vtuple(version: str | None) -> tuple[int, ...]:
    nums = re.findall(r"\d+", version or "")
    return tuple(int(n) for n in nums[:3])


def _cuda_version(text: str | None) -> tuple[int, int] | None:
    """ "12.4" -> (12, 4); None when absent or unreadable."""
    v = _vtuple(text)
    return (v[0], v[1] if len(v) > 1 else 0) if v else None


def min_compute_capability(trt_version: str | None) -> tuple[int, int]:
    """The oldest GPU architecture a TensorRT release runs on (its support matrix).

    8.6 still supports Maxwell (5.0; dropped in 9.0), 10.0-10.4 start at Volta
    (7.0), and 10.5 removed Volta.
    """
    v = _vtuple(trt_version)
    if not v or v[0] < 9:
        return (5, 0)
    if v[0] == 9:
        return (6, 0)
    if v[0] == 10 and (len(v) < 2 or v[1] < 5):
        return (7, 0)
    return (7, 5)


def _required_cuda(dists: Mapping[str, str]) -> list[tuple[int, str]]:
    """(CUDA major version, what needs it) for each installed package built for one."""
    out: list[tuple[int, str]] = []
    seen: set[int] = set()
    for dist, version in sorted(dists.items()):
        m = re.fullmatch(r"tensorrt-cu(\d+)(?:-\w+)?", dist)
        if m and int(m.group(1)) not in seen:
            seen.add(int(m.group(1)))
            out.append((int(m.group(1)), f"TensorRT {version} (built for CUDA {m.group(1)})"))
    for dist in ("cuda-bindings", "cuda-python"):
        if dist in dists and _vtuple(dists[dist]):
            major = _vtuple(dists[dist])[0]
            out.append((major, f"{dist} {dists[dist]} (CUDA {major} bindings)"))
            break
    return out


def _gpus(hw: Any) -> tuple[NvidiaGPU, ...]:
    return tuple(getattr(hw, "nvidia_gpus", ()) or ())


def strongly_typed_only(trt_version: str | None) -> bool:
    """TensorRT 11 removed the FP16/INT8 builder flags: networks are always strongly typed."""
    v = _vtuple(trt_version)
    return bool(v) and v[0] >= 11


FP16_NEEDS_CONVERSION = (
    "TensorRT {version} builds strongly typed networks only and has no fp16 "
    "builder flag: fp16 needs the model converted to fp16 first (ModelOpt "
    "AutoCast), which autoinfer does not do; the fp32 candidate runs the "
    "model in the types it declares"
)


def _device(gpu: NvidiaGPU) -> str:
    return f"cuda:{gpu.index}"


def _device_index(device: str) -> int | None:
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    return None if m is None else int(m.group(1) or 0)


def _gpu_for(hw: Any, device: str) -> NvidiaGPU | None:
    index = _device_index(device)
    return next((g for g in _gpus(hw) if g.index == index), None)


def _cc(gpu: NvidiaGPU) -> str:
    major, minor = gpu.compute_capability
    return f"{major}.{minor}"


def _import_trt() -> Any:
    return import_optional("tensorrt", fix=INSTALL_FIX)


def _import_cuda() -> Cudart:
    from . import _cuda

    with import_errors(
        "cuda-python",
        INSTALL_FIX,
        missing="cuda-python is not installed; TensorRT needs it here for device memory",
    ):
        return _cuda.load()


@dataclass(frozen=True)
class _GpuStatus:
    gpu: NvidiaGPU
    reason: str = ""  # empty: TensorRT can use this GPU
    fix: str = ""
    placement: Placement | None = None  # where CUDA has it; None with a reason

    @property
    def device(self) -> str:
        return _device(self.gpu)


@dataclass(frozen=True)
class _Report:
    installed: bool
    version: str | None = None
    reason: str = ""  # why the runtime cannot be used at all
    fix: str = ""
    gpus: tuple[_GpuStatus, ...] = ()

    @property
    def usable(self) -> tuple[_GpuStatus, ...]:
        return tuple(s for s in self.gpus if not s.reason)


def _gpu_status(gpu: NvidiaGPU, trt_version: str | None, required: list[tuple[int, str]]) -> _GpuStatus:
    from ._cuda import MIN_DRIVER_FOR_CUDA

    need = min_compute_capability(trt_version)
    cc = tuple(gpu.compute_capability)
    if cc < need:
        if cc >= (7, 0):
            fix = "TensorRT 10.4 still supports it: pip install 'tensorrt<10.5'"
        elif cc >= (5, 0):
            fix = "TensorRT 8.6 still supports it: pip install 'tensorrt==8.6.*'"
        else:
            fix = "no TensorRT release supports this GPU; use another backend"
        return _GpuStatus(
            gpu,
            f"{gpu.name} has compute capability {_cc(gpu)} and TensorRT "
            f"{trt_version} needs {need[0]}.{need[1]} or newer",
            fix,
        )
    driver = _cuda_version(gpu.cuda_driver_version)
    if driver is not None:
        for major, what in required:
            if driver[0] < major:
                least = MIN_DRIVER_FOR_CUDA.get(major, "a newer one")
                fix = f"upgrade the NVIDIA driver to {least} or newer (CUDA {major}.x)"
                if driver[0] in MIN_DRIVER_FOR_CUDA:
                    fix += (
                        f", or install builds for CUDA {driver[0]}: pip install "
                        f"tensorrt-cu{driver[0]} 'cuda-python<{driver[0] + 1}'"
                    )
                return _GpuStatus(
                    gpu,
                    f"the NVIDIA driver {gpu.driver_version} supports CUDA up "
                    f"to {driver[0]}.{driver[1]}, but {what} needs CUDA "
                    f"{major}.x",
                    fix,
                )
    return _GpuStatus(gpu)


def _inspect(hw: Any) -> _Report:
    """Everything availability() and candidates() need; imports only when a GPU exists."""
    if not present("tensorrt"):
        return _Report(False, reason="tensorrt is not installed", fix=INSTALL_FIX)
    dists = _installed_dists()
    version = dists.get("tensorrt") or next((v for d, v in dists.items() if d.startswith("tensorrt")), None)
    gpus = _gpus(hw)
    if not gpus:
        return _Report(True, version, reason="no NVIDIA GPU", fix="TensorRT runs on NVIDIA GPUs only")
    try:
        trt = _import_trt()
        version = str(getattr(trt, "__version__", "") or version or "") or None
        cuda = _import_cuda()
    except BackendUnavailable as exc:
        return _Report(True, version, reason=str(exc).split(" (fix:")[0], fix=exc.fix)
    from ._cuda import CudaError, place

    try:
        placed, hidden = place(gpus, cuda.devices())
    except CudaError as exc:  # no device, driver too old: CUDA sees none of them
        placed, hidden = {}, {g.index: f"CUDA sees no device ({exc.name})" for g in gpus}
    required = _required_cuda(dists)
    out = []
    for g in gpus:
        status = _gpu_status(g, version, required)
        if status.reason:
            out.append(status)
        elif g.index in placed:
            out.append(_GpuStatus(g, placement=placed[g.index]))
        else:
            out.append(
                _GpuStatus(
                    g,
                    hidden.get(g.index, f"CUDA does not see {g.name}"),
                    "check CUDA_VISIBLE_DEVICES and that `nvidia-smi` lists the GPU",
                )
            )
    return _Report(True, version, gpus=tuple(out))


# -- TensorRT's logger ------------------------------------------------------------------


class _LogBook:
    """TensorRT's recent warnings and errors, so that failures can say what TensorRT said."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._recent: deque[tuple[int, bool, str]] = deque(maxlen=256)

    def add(self, is_error: bool, msg: str) -> None:
        with self._lock:
            self._seq += 1
            self._recent.append((self._seq, is_error, msg))

    def mark(self) -> int:
        with self._lock:
            return self._seq

    def errors_since(self, mark: int) -> list[str]:
        with self._lock:
            return [m for seq, err, m in self._recent if seq > mark and err]


_LOGGERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_LOGGERS_LOCK = threading.Lock()


def _logger(trt: Any) -> Any:
    """One ILogger per process (TensorRT keeps the first it is given, globally)."""
    with _LOGGERS_LOCK:
        existing = _LOGGERS.get(trt)
        if existing is not None:
            return existing
        sev = trt.ILogger.Severity
        errors = {int(sev.INTERNAL_ERROR), int(sev.ERROR)}
        warning = int(sev.WARNING)

        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.book = _LogBook()

            def log(self, severity: Any, msg: str) -> None:
                level = int(severity)
                if level in errors:
                    self.book.add(True, str(msg))
                    log.debug("tensorrt error: %s", msg)
                elif level == warning:
                    self.book.add(False, str(msg))
                    log.debug("tensorrt warning: %s", msg)

        logger = _LOGGERS[trt] = _Logger()
        return logger


def _progress_monitor(trt: Any, deadline: float) -> Any:
    """A build-progress monitor that cancels the build after ``deadline`` (TensorRT >= 10)."""

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.cancelled = False

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            pass

        def step_complete(self, phase_name: str, step: int) -> bool:
            if time.monotonic() > deadline:
                self.cancelled = True
                return False
            return True

        def phase_finish(self, phase_name: str) -> None:
            pass

    return _Monitor()


def _parser_error(err: Any) -> str:
    """One ONNX parser error as text: node, operator and description where known."""
    try:
        desc = str(err.desc()).strip()
        parts = []
        for attr in ("node_name", "node_operator"):
            fn = getattr(err, attr, None)  # TensorRT >= 8.6
            value = str(fn()).strip() if callable(fn) else ""
            if value:
                parts.append(value)
        node = err.node() if callable(getattr(err, "node", None)) else -1
        where = f"node {node}" + (f" ({', '.join(parts)})" if parts else "") if node >= 0 else ""
        code = getattr(err.code(), "name", str(err.code()))
        return f"{where + ': ' if where else ''}{code}: {desc}"
    except Exception:
        return str(err)


# -- shapes -------------------------------------------------------------------------------

Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def _profile(model: ModelFacts, shapes: Mapping[str, tuple[int, ...]]) -> Profile:
    """min/opt/max of every input with dynamic dimensions (see the module docstring)."""
    out: Profile = {}
    for spec in model.inputs:
        if not spec.is_dynamic:
            continue
        given = tuple(int(d) for d in shapes[spec.name])
        declared = spec.shape if spec.shape is not None else (None,) * len(given)
        if len(declared) != len(given):
            raise UnsupportedModel(
                NAME,
                f"input_shapes gives input {spec.name!r} shape "
                f"{list(given)}, but the model declares rank "
                f"{len(declared)} ({list(declared)})",
            )
        lo, hi = list(given), list(given)
        for i, (d, g) in enumerate(zip(declared, given, strict=True)):
            if g < 1:
                raise UnsupportedModel(
                    NAME,
                    f"input_shapes gives input {spec.name!r} a dimension {g}; TensorRT needs positive sizes",
                )
            if isinstance(d, int):
                if d != g:
                    raise UnsupportedModel(
                        NAME,
                        f"input_shapes gives input {spec.name!r} shape "
                        f"{list(given)}, but dimension {i} is fixed "
                        f"at {d}",
                    )
            elif i == 0:
                lo[0], hi[0] = 1, g * PROFILE_BATCH_MULTIPLE
        out[spec.name] = (tuple(lo), given, tuple(hi))
    return out


def _volume(shape: Sequence[int]) -> int:
    return int(math.prod(int(d) for d in shape))


# -- the engine cache ---------------------------------------------------------------------


def _no_file_lock(exc: OSError) -> None:  # read-only, or no locks here: threads still excluded
    log.debug("tensorrt: no file lock on the engine cache: %s", exc)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _EngineStore:
    """One engine file and its manifest ({key, sha256, bytes, build_s}) in the artifact dir."""

    def __init__(
        self, directory: Path, key: dict[str, Any], timing_key: dict[str, Any] | None = None
    ) -> None:
        self.key = json.loads(stable_json(key))
        digest = hashlib.sha256(stable_json(self.key).encode()).hexdigest()[:24]
        self.directory = directory
        self.engine = directory / f"trt-{digest}.engine"
        self.manifest = directory / f"trt-{digest}.json"
        self.lock = directory / f"trt-{digest}.lock"
        # Kernel timings depend on the TensorRT version and the GPU only, so every
        # candidate of the model (the artifact directories of one parent) shares them.
        tdigest = hashlib.sha256(stable_json(timing_key or {}).encode()).hexdigest()[:16]
        self.timing = directory.parent / f"tensorrt-timing-{tdigest}.cache"

    def read(self) -> tuple[bytes, float] | None:
        """The cached engine and its build time, or None when absent or not trustworthy."""
        try:
            meta = json.loads(self.manifest.read_text())
            data = self.engine.read_bytes()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("tensorrt: ignoring unreadable cached engine %s: %s", self.engine, exc)
            return None
        if not isinstance(meta, dict) or meta.get("key") != self.key:
            log.warning("tensorrt: cached engine %s was built for something else; rebuilding", self.engine)
            return None
        if hashlib.sha256(data).hexdigest() != meta.get("sha256") or len(data) != meta.get("bytes"):
            log.warning("tensorrt: cached engine %s is damaged (hash mismatch); rebuilding", self.engine)
            return None
        return data, float(meta.get("build_s", 0.0))

    def write(self, data: bytes, build_s: float) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.engine, data)
            meta = {
                "key": self.key,
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                "build_s": round(build_s, 3),
                "engine": self.engine.name,
            }
            _atomic_write(self.manifest, json.dumps(meta, indent=1, sort_keys=True).encode())
        except OSError as exc:  # a read-only cache costs a rebuild next time, nothing else
            log.warning("tensorrt: cannot cache the engine in %s: %s", self.directory, exc)

    def discard(self) -> None:
        for p in (self.manifest, self.engine):
            with contextlib.suppress(OSError):
                p.unlink()


# -- the backend --------------------------------------------------------------------------


def _cuda_failure(exc: CudaError, doing: str) -> BackendError:
    if exc.out_of_memory:
        return BackendError(NAME, f"out of GPU memory while {doing} ({exc.name} in {exc.call})")
    return BackendError(
        NAME, f"CUDA error {exc.name} in {exc.call} while {doing}" + (f": {exc.detail}" if exc.detail else "")
    )


def _run_failure(exc: Exception, doing: str) -> BackendError:
    from ._cuda import CudaError

    if isinstance(exc, CudaError):
        return _cuda_failure(exc, doing)
    return BackendError(NAME, f"{doing} failed: {type(exc).__name__}: {exc}")


def _out_of_memory(exc: BaseException) -> bool:
    from ._cuda import CudaError

    if isinstance(exc, CudaError):
        return exc.out_of_memory
    return isinstance(exc, BackendError) and "GPU memory" in str(exc)


def _mentions_memory(messages: Sequence[str]) -> bool:
    text = " ".join(messages).lower()
    return any(
        w in text
        for w in ("out of memory", "outofmemory", "memory allocation", "gpu memory", "insufficient memory")
    )


def _check_settings(candidate: Candidate) -> None:
    o = candidate.settings_dict
    unknown = set(o) - _SETTINGS
    if unknown:
        raise BackendError(
            NAME, f"unknown candidate settings {sorted(unknown)}; expected some of {sorted(_SETTINGS)}"
        )

    def _int(name: str, lo: int, hi: int) -> None:
        v = o.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi):
            raise BackendError(NAME, f"{name}: expected an integer from {lo} to {hi}, received {v!r}")

    _int("opt_level", 0, 5)
    _int("workspace_mb", 1, 1 << 24)
    _int("contexts", 1, 64)
    if "tf32" in o and not isinstance(o["tf32"], bool):
        raise BackendError(NAME, f"tf32: expected true or false, received {o['tf32']!r}")
    if candidate.precision not in ("fp32", "fp16", "int8"):
        raise BackendError(NAME, f"precision: expected fp32, fp16 or int8, received {candidate.precision!r}")


def _model_problem(model: ModelFacts) -> str:
    for kind, specs in (("input", model.inputs), ("output", model.outputs)):
        for s in specs:
            if s.dtype not in _IO_DTYPES:
                return (
                    f"{kind} {s.name!r} is {s.dtype}, which TensorRT does not take as a "
                    "network input or output"
                )
    return ""


def _is_qdq(model: ModelFacts) -> bool:
    return model.op_count(*_QDQ_OPS) > 0


def _io_bytes(model: ModelFacts) -> int:
    total = 0
    for s in (*model.inputs, *model.outputs):
        n = 1
        for d in s.shape or ():
            n *= d if isinstance(d, int) and d > 0 else 1
        total += n * (np.dtype(s.dtype).itemsize if s.dtype in _IO_DTYPES else 4)
    return total


def _gpu_rates(gpu: NvidiaGPU) -> tuple[float, float]:
    """Assumed sustained (fp32, fp16) FLOP/s of a GPU generation on convolutions and GEMMs.

    Peak numbers of a typical part of each generation, times 35% utilisation.
    fp16 is only faster with tensor cores (7.0+) or on the few parts with fast
    half math (6.0, 5.3); elsewhere TensorRT falls back to fp32 kernels.
    """
    cc = tuple(gpu.compute_capability)
    if cc >= (9, 0):
        peak = (60e12, 800e12)
    elif cc >= (8, 0):
        peak = (25e12, 200e12)
    elif cc >= (7, 0):
        peak = (12e12, 90e12)
    elif cc == (6, 0):
        peak = (9e12, 18e12)
    elif cc >= (6, 1):
        peak = (8e12, 8e12)
    elif cc == (5, 3):
        peak = (0.5e12, 1e12)
    else:
        peak = (4e12, 4e12)
    share = _mig_share(gpu)
    return peak[0] * 0.35 * share, peak[1] * 0.35 * share


def _mig_share(gpu: NvidiaGPU) -> float:
    """The part of the GPU one process gets: its largest MIG instance's share of the memory
    (MIG slices compute and memory alike), or all of it without MIG."""
    if not gpu.mig_enabled or not gpu.mig_instances or gpu.memory_total_mb <= 0:
        return 1.0
    return min(1.0, max(m.memory_total_mb for m in gpu.mig_instances) / gpu.memory_total_mb)


def _check_request(
    candidate: Candidate, model: ModelFacts, ctx: LoadContext
) -> tuple[int, NvidiaGPU | None, Profile]:
    """(CUDA index, the GPU of the hardware facts, the optimisation profile) of a load request,
    or the reason it cannot be served; nothing of TensorRT is imported for these checks."""
    _check_settings(candidate)
    index = _device_index(candidate.device)
    if index is None:
        raise BackendError(NAME, f"device: expected cuda or cuda:N, received {candidate.device!r}")
    problem = _model_problem(model)
    if problem:
        raise UnsupportedModel(NAME, problem)
    gpu = _gpu_for(ctx.hardware, candidate.device) if ctx.hardware is not None else None
    if ctx.hardware is not None and gpu is None:
        raise BackendUnavailable(f"tensorrt: no NVIDIA GPU {candidate.device} on this machine")
    if gpu is not None:
        if candidate.precision == "fp16" and not gpu.supports_fp16:
            raise UnsupportedModel(NAME, f"{gpu.name} has no fp16 arithmetic")
        if candidate.precision == "int8" and not gpu.supports_int8:
            raise UnsupportedModel(NAME, f"{gpu.name} has no INT8 support")
    if candidate.precision == "int8" and not _is_qdq(model):
        raise UnsupportedModel(
            NAME,
            "INT8 needs calibration data, and this model has no QuantizeLinear/DequantizeLinear nodes",
        )
    try:
        shapes = resolve_shapes(model, ctx.input_shapes)
    except ValueError as exc:
        raise UnsupportedModel(
            NAME,
            f"needs input_shapes: {exc}; TensorRT builds its "
            "engine for a range of shapes chosen at load "
            "time",
        ) from None
    return index, gpu, _profile(model, shapes)


def _check_version(trt_version: str, candidate: Candidate, gpu: NvidiaGPU | None) -> None:
    """Refuses what the installed TensorRT cannot do: this GPU, or fp16 on a strongly typed build."""
    if gpu is not None:
        need = min_compute_capability(trt_version)
        if tuple(gpu.compute_capability) < need:
            raise BackendUnavailable(
                f"tensorrt {trt_version} does not support {gpu.name} (compute "
                f"capability {_cc(gpu)}, needs {need[0]}.{need[1]})"
            )
    if candidate.precision == "fp16" and strongly_typed_only(trt_version):
        raise UnsupportedModel(NAME, FP16_NEEDS_CONVERSION.format(version=trt_version))


def _place(cuda: Cudart, device: str, gpu: NvidiaGPU | None, index: int) -> tuple[int, dict[str, Any]]:
    """(CUDA ordinal, the GPU's part of the engine key) after making ``device`` current."""
    from ._cuda import CudaError

    try:
        if gpu is not None:
            placement = cuda.place(gpu)
            ordinal = placement.ordinal
            gpu_key: dict[str, Any] = {"name": gpu.name, "cc": list(gpu.compute_capability)}
            if placement.mig is not None:
                gpu_key["mig"] = [placement.mig.name, placement.mig.memory_total_mb]
        else:  # no hardware facts: cuda:N is CUDA's own ordinal N
            ordinal = index
            gpu_key = {"ordinal": ordinal, "uuid": cuda.device_uuid(ordinal)}
        cuda.set_device(ordinal)
    except CudaError as exc:
        raise _cuda_failure(exc, f"selecting {device}") from None
    except ValueError as exc:
        raise BackendUnavailable(f"tensorrt: {device}: {exc}") from None
    except Exception as exc:  # bindings without a function we call
        raise BackendError(NAME, f"selecting {device} failed: {type(exc).__name__}: {exc}") from None
    return ordinal, gpu_key


# The least an engine build takes (parsing, tactic timing), for the selection's time budget.
ENGINE_BUILD_S = 20.0


class TensorRTBackend(Backend):
    name = NAME
    package = "tensorrt"
    pip_extra = "tensorrt"
    capabilities = Capabilities(
        devices=("cuda",),
        precisions=("fp32", "fp16", "int8"),
        dynamic_shapes=True,
        needs_conversion=True,
        reference=False,
    )

    # -- facts ----------------------------------------------------------------------

    def versions(self) -> dict[str, str]:
        return dict(_installed_dists()) or super().versions()

    def availability(self, hw: Hardware) -> Availability:
        try:
            rep = _inspect(hw)
        except Exception as exc:  # never raises
            return Availability(
                NAME,
                installed=True,
                usable=False,
                reason=f"checking TensorRT failed: {type(exc).__name__}: {exc}",
            )
        if not rep.installed or rep.reason:
            return Availability(NAME, rep.installed, False, rep.version, reason=rep.reason, fix=rep.fix)
        usable = rep.usable
        if not usable:
            return Availability(
                NAME,
                True,
                False,
                rep.version,
                reason="; ".join(s.reason for s in rep.gpus),
                fix=next((s.fix for s in rep.gpus if s.fix), ""),
            )
        return Availability(NAME, True, True, rep.version, devices=tuple(s.device for s in usable))

    def diagnose(self, hw: Hardware) -> list[Problem]:
        try:
            rep = _inspect(hw)
        except Exception as exc:
            return [Problem("error", f"checking TensorRT failed: {exc}")]
        if rep.installed and rep.reason == "no NVIDIA GPU":
            return [Problem("info", "tensorrt is installed but this machine has no NVIDIA GPU", rep.fix)]
        problems = super().diagnose(hw)
        if rep.usable:  # usable overall: still say which GPUs it cannot use
            problems += [
                Problem("warning", f"tensorrt cannot use {s.device}: {s.reason}", s.fix)
                for s in rep.gpus
                if s.reason
            ]
        return problems

    # -- choice -----------------------------------------------------------------------

    def candidates(self, model: ModelFacts, hw: Hardware, objective: str) -> list[Candidate | Unsupported]:
        try:
            rep = _inspect(hw)
        except Exception as exc:  # damaged hardware facts: say so, do not fail the selection
            return [
                Unsupported(NAME, "cuda", "fp32", f"checking TensorRT failed: {type(exc).__name__}: {exc}")
            ]
        if not rep.installed or rep.reason:
            return [Unsupported(NAME, "cuda", "fp32", rep.reason)]
        problem = _model_problem(model)
        out: list[Candidate | Unsupported] = []
        for st in rep.gpus:
            dev, gpu = st.device, st.gpu
            if st.reason or st.placement is None:
                out += [Unsupported(NAME, dev, p, st.reason or "not placed") for p in ("fp32", "fp16")]
                continue
            if problem:
                out.append(Unsupported(NAME, dev, "fp32", problem))
                continue
            gpu_bytes = int(st.placement.memory_mb) << 20
            if model.size_bytes > 0.9 * gpu_bytes:
                out.append(
                    Unsupported(
                        NAME,
                        dev,
                        "fp32",
                        (
                            f"the weights ({model.size_bytes / 2**30:.1f} GiB) do not fit in "
                            f"{st.placement.label}'s {gpu_bytes / 2**30:.1f} GiB"
                        ),
                    )
                )
                continue
            fp32: Candidate | Unsupported = Candidate.make(NAME, dev, "fp32")
            fp16: Candidate | Unsupported = (
                Unsupported(NAME, dev, "fp16", FP16_NEEDS_CONVERSION.format(version=rep.version))
                if strongly_typed_only(rep.version)
                else Candidate.make(NAME, dev, "fp16")
                if gpu.supports_fp16
                else Unsupported(
                    NAME,
                    dev,
                    "fp16",
                    f"{gpu.name} (compute capability {_cc(gpu)}) has no fp16 arithmetic (needs 5.3 or newer)",
                )
            )
            if not _is_qdq(model):
                int8: Candidate | Unsupported = Unsupported(
                    NAME,
                    dev,
                    "int8",
                    "INT8 needs calibration data, and this model has no "
                    "QuantizeLinear/DequantizeLinear nodes to take scales from",
                )
            elif not gpu.supports_int8:
                int8 = Unsupported(
                    NAME,
                    dev,
                    "int8",
                    f"{gpu.name} (compute capability {_cc(gpu)}) has no INT8 support (6.1+)",
                )
            else:
                int8 = Candidate.make(NAME, dev, "int8")
            first = [fp16, fp32] if gpu.has_tensor_cores else [fp32, fp16]
            out += [*first, int8]
        return out

    def variants(
        self, candidate: Candidate, model: ModelFacts, hw: Hardware, objective: str
    ) -> list[Candidate]:
        gpu = _gpu_for(hw, candidate.device)
        out: list[Candidate] = []
        if objective in ("latency", "throughput"):
            out.append(candidate.with_settings(opt_level=5))
            if candidate.precision == "fp32" and gpu is not None and tuple(gpu.compute_capability) >= (8, 0):
                out.append(candidate.with_settings(tf32=True))
        elif objective == "load_time":
            out.append(candidate.with_settings(opt_level=1))
        elif objective == "memory":
            out.append(candidate.with_settings(workspace_mb=256, contexts=1))
        return [v for v in out if v != candidate][:3]

    def expected_load_s(
        self, candidate: Candidate, model: ModelFacts, ctx: LoadContext, reference_load_s: float
    ) -> float:
        """An engine build takes tens of seconds at least (kernel timing); an engine cached in
        the artifact directory for this candidate only deserialises (its manifest says so)."""
        for manifest in Path(ctx.artifact_dir).glob("trt-*.json"):
            try:
                meta = json.loads(manifest.read_text())
            except (OSError, ValueError):
                continue
            key = meta.get("key") if isinstance(meta, dict) else None
            if isinstance(key, dict) and (key.get("candidate"), key.get("model_sha256")) == (
                candidate.key,
                model.sha256,
            ):
                return 2.0 * reference_load_s
        return ENGINE_BUILD_S + 20.0 * reference_load_s

    def estimate(self, candidate: Candidate, model: ModelFacts, hw: Hardware, objective: str) -> Estimate:
        gpu = _gpu_for(hw, candidate.device)
        if gpu is None:
            return Estimate(1000.0, (f"no NVIDIA GPU {candidate.device} on this machine",))
        cores = threads_for(hw, default=os.cpu_count() or 1)
        nodes = sum(c for _, c in model.op_histogram) or 1
        flops = max(model.flops, 1)
        opt = candidate.get("opt_level")
        prec = candidate.precision
        reasons: list[str] = []

        if objective == "load_time":
            build = 4.0 + nodes * 0.08 * (1.5 if prec != "fp32" else 1.0) + model.size_bytes / 1e8
            if isinstance(opt, int):
                build *= {0: 0.3, 1: 0.4, 2: 0.6, 3: 1.0, 4: 1.5, 5: 2.5}.get(opt, 1.0)
            ort = 0.05 + model.size_bytes / 1e9 + nodes * 2e-4
            return Estimate(
                build / ort,
                (
                    f"the first load builds a TensorRT engine (~{build:.0f} s for {nodes} nodes) "
                    f"where ONNX Runtime loads in ~{ort:.2f} s",
                    "later loads deserialize the cached engine in about a second",
                ),
            )
        if objective == "memory":
            trt_mb = 400 + model.size_bytes / 2**20 * 0.5
            ort_mb = 30 + model.size_bytes / 2**20 * 1.5
            return Estimate(
                trt_mb / ort_mb,
                (
                    "the CUDA context and TensorRT's libraries take ~400 MiB of host memory; "
                    "weights and activations live in GPU memory",
                ),
            )

        fp32_rate, fp16_rate = _gpu_rates(gpu)
        if prec == "fp16":
            rate = fp16_rate
            if gpu.has_tensor_cores:
                reasons.append(
                    f"fp16 on {gpu.name}'s tensor cores (~{rate / 1e12:.0f} TFLOP/s assumed sustained)"
                )
            else:
                reasons.append(f"{gpu.name} has no tensor cores: fp16 is little faster than fp32")
        elif prec == "int8":
            rate = fp16_rate * 1.6
            reasons.append("int8 from the model's Q/DQ scales, on tensor cores")
        else:
            rate = fp32_rate
            if candidate.get("tf32") and tuple(gpu.compute_capability) >= (8, 0):
                rate = min(fp32_rate * 4, fp16_rate / 2)
                reasons.append("TF32 tensor-core math for fp32 layers")
            else:
                reasons.append(f"fp32 on {gpu.name} (~{rate / 1e12:.0f} TFLOP/s assumed sustained)")
        cpu_rate = cores * 25e9
        t_cpu = 30e-6 + nodes * 2e-6 + flops / cpu_rate
        overhead = 60e-6 + nodes * 1.5e-6  # launches after fusion, the run call, the sync
        copy = _io_bytes(model) / 12e9  # pinned PCIe copies
        compute = flops / rate
        if objective == "throughput":  # several contexts overlap copies and launches
            overhead, copy = overhead * 0.3, copy * 0.5
        if isinstance(opt, int):
            compute *= {0: 1.3, 1: 1.2, 2: 1.1, 3: 1.0, 4: 0.97, 5: 0.95}.get(opt, 1.0)
        t_gpu = overhead + copy + compute
        reasons.append(
            f"~{flops / 1e9:.2f} GFLOP: GPU ~{t_gpu * 1e3:.2f} ms vs ONNX Runtime "
            f"on {cores} CPU core(s) ~{t_cpu * 1e3:.2f} ms"
        )
        if overhead + copy > compute:
            reasons.append(
                f"small model: kernel launches and host-device copies "
                f"(~{(overhead + copy) * 1e6:.0f} us) outweigh the arithmetic"
            )
        return Estimate(max(0.001, min(1000.0, t_gpu / t_cpu)), tuple(reasons))

    # -- loading ----------------------------------------------------------------------

    def load(self, candidate: Candidate, model: ModelFacts, ctx: LoadContext) -> Runner:
        index, gpu, profile = _check_request(candidate, model, ctx)
        trt = _import_trt()
        cuda = _import_cuda()
        _check_version(trt.__version__, candidate, gpu)
        ordinal, gpu_key = _place(cuda, candidate.device, gpu, index)

        logger = _logger(trt)
        key = {
            "format": ENGINE_FORMAT,
            "model_sha256": model.sha256,
            "candidate": candidate.key,
            "profile": {n: [list(s) for s in p] for n, p in sorted(profile.items())},
            "tensorrt": str(trt.__version__),
            "gpu": gpu_key,
        }
        store = _EngineStore(
            Path(ctx.artifact_dir), key, timing_key={"tensorrt": str(trt.__version__), "gpu": gpu_key}
        )
        engine, runtime, built, build_s = self._engine(
            trt, cuda, logger, store, candidate, model, profile, ctx
        )
        try:
            return TensorRTRunner(
                trt,
                cuda,
                logger,
                engine,
                runtime,
                candidate,
                model,
                profile,
                ordinal,
                built=built,
                build_s=build_s,
                engine_path=store.engine,
            )
        except AutoinferError:
            raise
        except Exception as exc:
            raise _run_failure(exc, "preparing the engine to run") from None

    def _engine(
        self,
        trt: Any,
        cuda: Cudart,
        logger: Any,
        store: _EngineStore,
        candidate: Candidate,
        model: ModelFacts,
        profile: Profile,
        ctx: LoadContext,
    ) -> tuple[Any, Any, bool, float]:
        """(engine, runtime, built now, build seconds): the cached engine, or a new build."""
        try:
            store.directory.mkdir(parents=True, exist_ok=True)
            lock_ctx: contextlib.AbstractContextManager[bool] = exclusive(store.lock, on_error=_no_file_lock)
        except OSError as exc:
            log.warning(
                "tensorrt: artifact directory %s unusable (%s); building without a cache",
                store.directory,
                exc,
            )
            lock_ctx = contextlib.nullcontext(False)
        with lock_ctx:
            cached = store.read()
            for _attempt in range(2):
                built = cached is None
                if cached is None:
                    data, build_s = self._build(trt, logger, candidate, model, profile, ctx, store.timing)
                    store.write(data, build_s)
                else:
                    data, build_s = cached
                mark = logger.book.mark()
                try:
                    runtime = trt.Runtime(logger)
                    engine = runtime.deserialize_cuda_engine(data)
                except Exception as exc:
                    engine, runtime = None, None
                    logger.book.add(True, f"{type(exc).__name__}: {exc}")
                if engine is not None:
                    return engine, runtime, built, build_s
                errors = logger.book.errors_since(mark)
                if built:
                    why = "; ".join(errors[-3:]) or "no reason given"
                    raise BackendError(NAME, f"TensorRT cannot deserialize the engine it just built: {why}")
                log.warning(
                    "tensorrt: cached engine %s does not deserialize (%s); rebuilding",
                    store.engine,
                    "; ".join(errors[-2:]) or "no reason given",
                )
                store.discard()
                cached = None
        raise AssertionError("unreachable")  # pragma: no cover

    def _build(
        self,
        trt: Any,
        logger: Any,
        candidate: Candidate,
        model: ModelFacts,
        profile: Profile,
        ctx: LoadContext,
        timing: Path | None = None,
    ) -> tuple[bytes, float]:
        mark = logger.book.mark()
        try:
            return self._build_unchecked(trt, logger, candidate, model, profile, ctx, mark, timing)
        except AutoinferError:
            raise
        except Exception as exc:  # the TensorRT API raising (bad argument, internal error)
            errors = logger.book.errors_since(mark)
            raise BackendError(
                NAME,
                f"building the engine failed: {type(exc).__name__}: {exc}"
                + (f" ({'; '.join(errors[-3:])})" if errors else ""),
            ) from None

    def _build_unchecked(
        self,
        trt: Any,
        logger: Any,
        candidate: Candidate,
        model: ModelFacts,
        profile: Profile,
        ctx: LoadContext,
        mark: int,
        timing: Path | None = None,
    ) -> tuple[bytes, float]:
        t0 = time.perf_counter()
        major = _vtuple(trt.__version__)[:1] or (10,)
        builder = trt.Builder(logger)
        flags = 0
        if major[0] < 10:  # implicit batch is the default before 10.0; the parser needs explicit
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(model.path)):
            errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
            errors = errors or logger.book.errors_since(mark) or ["the parser gave no reason"]
            raise UnsupportedModel(
                NAME, "the TensorRT ONNX parser rejects the model: " + "; ".join(errors[:5])
            )
        for i in range(network.num_inputs):
            t = network.get_input(i)
            if any(int(d) < 0 for d in t.shape) and t.name not in profile:
                raise UnsupportedModel(
                    NAME,
                    f"needs input_shapes: input {t.name!r} has dynamic "
                    f"shape {list(t.shape)} in the parsed network",
                )

        config = builder.create_builder_config()
        o = candidate.settings_dict
        _set_precision(trt, config, candidate)
        timing_cache = _use_timing_cache(config, timing)
        if "opt_level" in o and hasattr(config, "builder_optimization_level"):
            config.builder_optimization_level = int(o["opt_level"])  # type: ignore[arg-type]
        if "workspace_mb" in o:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(o["workspace_mb"]) << 20)  # type: ignore[arg-type]
        if profile:
            p = builder.create_optimization_profile()
            for name, (lo, opt, hi) in profile.items():
                p.set_shape(name, lo, opt, hi)
            config.add_optimization_profile(p)
        monitor = None
        if ctx.timeout_s and hasattr(trt, "IProgressMonitor") and hasattr(config, "progress_monitor"):
            monitor = _progress_monitor(trt, time.monotonic() + float(ctx.timeout_s))
            config.progress_monitor = monitor
        plan = builder.build_serialized_network(network, config)
        build_s = time.perf_counter() - t0
        if plan is None:
            errors = logger.book.errors_since(mark)
            if monitor is not None and monitor.cancelled:
                raise BackendError(
                    NAME,
                    f"building the engine took longer than "
                    f"{ctx.timeout_s:g} s (LoadContext.timeout_s) and was "
                    "cancelled",
                )
            if _mentions_memory(errors):
                raise BackendError(
                    NAME, "building the engine ran out of GPU memory: " + "; ".join(errors[-3:])
                )
            raise BackendError(
                NAME, "TensorRT failed to build an engine: " + ("; ".join(errors[-3:]) or "no reason given")
            )
        data = bytes(memoryview(plan))
        log.info("tensorrt: built %s in %.1f s (%d bytes)", candidate.key, build_s, len(data))
        if timing_cache is not None and timing is not None:
            _save_timing_cache(config, timing)
        return data, build_s


def _set_precision(trt: Any, config: Any, candidate: Candidate) -> None:
    """The builder flags for the candidate's precision, on weakly and strongly typed TensorRT."""
    prec = candidate.precision
    if strongly_typed_only(trt.__version__):
        # 11.x: the network runs in the types the model declares; a Q/DQ model is int8
        # through its Q/DQ nodes, with no flag. fp16 was refused before the build.
        if prec == "fp16":
            raise UnsupportedModel(NAME, FP16_NEEDS_CONVERSION.format(version=trt.__version__))
    elif prec in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
        if prec == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if prec == "fp32" and not candidate.get("tf32") and tf32 is not None:
        config.clear_flag(tf32)


def _use_timing_cache(config: Any, path: Path | None) -> Any:
    """Give the builder the timing cache stored at ``path`` (or a new one); None without the API."""
    if path is None or not hasattr(config, "create_timing_cache"):
        return None
    try:
        data = path.read_bytes()
    except OSError:
        data = b""
    try:
        cache = config.create_timing_cache(data)
        if config.set_timing_cache(cache, False):
            return cache
        log.info("tensorrt: timing cache %s is for another GPU or version; starting afresh", path)
    except Exception as exc:  # damaged: TensorRT refuses to deserialize it
        log.warning("tensorrt: ignoring unreadable timing cache %s: %s", path, exc)
    try:
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
        return cache
    except Exception as exc:
        log.debug("tensorrt: no timing cache: %s", exc)
        return None


def _save_timing_cache(config: Any, path: Path) -> None:
    try:
        cache = config.get_timing_cache()
        if cache is None:
            return
        _atomic_write(path, bytes(memoryview(cache.serialize())))
    except Exception as exc:  # a lost timing cache costs build time, nothing else
        log.warning("tensorrt: cannot save the timing cache %s: %s", path, exc)


# -- running ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tensor:
    name: str
    is_input: bool
    engine_dtype: np.dtype  # what TensorRT reads or writes
    model_dtype: np.dtype  # what the ONNX model declares
    max_shape: tuple[int, ...]  # for inputs; outputs learn theirs from the context

    @property
    def max_bytes(self) -> int:
        return _volume(self.max_shape) * self.engine_dtype.itemsize


@dataclass
class _Slot:
    """One execution context with its own stream and I/O buffers; used by one thread at a time."""

    context: Any
    stream: Any
    handle: int
    device: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (ptr, nbytes)
    host: dict[str, Any] = field(default_factory=dict)  # name -> PinnedBuffer
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


class _Pool:
    """The engine's execution contexts, and everything on the GPU that has to be freed.

    Separate from the runner so that a runner dropped without close() frees its
    GPU memory through a finalizer that does not keep the runner alive. A slot in
    use when the pool closes is freed when its run returns it.
    """

    def __init__(self, cuda: Cudart, ordinal: int, engine: Any, runtime: Any, limit: int) -> None:
        self.cuda = cuda
        self.ordinal = ordinal
        self.engine = engine
        self.runtime = runtime
        self.limit = limit
        self.idle: list[_Slot] = []
        self.created = 0  # idle + in use + being created
        self.closed = False
        self.cond = threading.Condition()
        self.create_lock = threading.Lock()

    def destroy(self, slot: _Slot) -> None:
        """Free one slot's context, memory and stream; errors are logged, never raised."""
        cuda = self.cuda
        try:
            cuda.set_device(self.ordinal)
        except Exception as exc:
            log.debug("tensorrt: cudaSetDevice during cleanup: %s", exc)
        slot.context = None  # before the memory it points at
        for ptr, _ in slot.device.values():
            try:
                cuda.free(ptr)
            except Exception as exc:
                log.warning("tensorrt: cudaFree failed during cleanup: %s", exc)
        for buf in slot.host.values():
            try:
                cuda.free_host(buf)
            except Exception as exc:
                log.warning("tensorrt: cudaFreeHost failed during cleanup: %s", exc)
        slot.device.clear()
        slot.host.clear()
        if slot.stream is not None:
            with contextlib.suppress(Exception):
                cuda.stream_destroy(slot.stream)
            slot.stream = None

    def release(self, slot: _Slot, healthy: bool) -> None:
        """Return a slot after a run; a slot that saw a CUDA error is freed, not reused."""
        with self.cond:
            keep = healthy and not self.closed
            if keep:
                self.idle.append(slot)
            else:
                self.created -= 1
            last = self.closed and self.created == 0
            self.cond.notify()
        if not keep:
            self.destroy(slot)
        if last:
            self._drop_engine()

    def close(self) -> None:
        with self.cond:
            if self.closed and self.engine is None:
                return
            self.closed = True
            idle, self.idle = self.idle, []
            self.created -= len(idle)
            busy = self.created
            self.cond.notify_all()
        for slot in idle:
            self.destroy(slot)
        if busy == 0:
            self._drop_engine()

    def _drop_engine(self) -> None:
        # Contexts are gone; the engine goes before the runtime that deserialized it.
        self.engine = None
        self.runtime = None


class TensorRTRunner(Runner):
    """A deserialized engine and a pool of execution contexts to run it from many threads."""

    def __init__(
        self,
        trt: Any,
        cuda: Cudart,
        logger: Any,
        engine: Any,
        runtime: Any,
        candidate: Candidate,
        model: ModelFacts,
        profile: Profile,
        ordinal: int,
        *,
        built: bool,
        build_s: float,
        engine_path: Path,
    ) -> None:
        self.candidate = candidate
        self.input_names = tuple(s.name for s in model.inputs)
        self.output_names = tuple(s.name for s in model.outputs)
        self.built = built  # False: the engine came from the cache
        self.build_s = build_s
        self.engine_path = engine_path
        self._trt = trt
        self._cuda = cuda
        self._logger = logger
        self._ordinal = ordinal
        self._profile = profile
        self._inputs = tuple(self._tensor(trt, engine, s, True, profile) for s in model.inputs)
        self._outputs = tuple(self._tensor(trt, engine, s, False, profile) for s in model.outputs)
        extra = sorted(
            {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
            - {*self.input_names, *self.output_names}
        )
        if extra:
            raise BackendError(NAME, f"the engine has I/O tensors the model does not declare: {extra}")
        self._pool = _Pool(cuda, ordinal, engine, runtime, int(candidate.get("contexts") or DEFAULT_CONTEXTS))
        self._finalizer = weakref.finalize(self, self._pool.close)
        # The first context now: out-of-memory and unsupported outputs surface at load time.
        try:
            slot = self._new_slot()
        except BaseException:
            self._finalizer()
            raise
        with self._pool.cond:
            self._pool.created = 1
            self._pool.idle.append(slot)

    @staticmethod
    def _tensor(trt: Any, engine: Any, spec: Any, is_input: bool, profile: Profile) -> _Tensor:
        name = spec.name
        try:
            mode = engine.get_tensor_mode(name)
        except Exception:
            mode = None
        want = trt.TensorIOMode.INPUT if is_input else trt.TensorIOMode.OUTPUT
        if mode != want:
            raise BackendError(NAME, f"the engine has no {'input' if is_input else 'output'} tensor {name!r}")
        trt_dtype = engine.get_tensor_dtype(name)
        try:
            engine_dtype = np.dtype(trt.nptype(trt_dtype))
        except Exception:
            raise UnsupportedModel(
                NAME, f"tensor {name!r} has TensorRT type {trt_dtype}, which NumPy cannot hold"
            ) from None
        model_dtype = np.dtype(spec.dtype)
        if not is_input:
            max_shape: tuple[int, ...] = ()  # learnt from the context
        elif name in profile:  # every dynamic input has a profile
            max_shape = profile[name][2]
        else:
            max_shape = tuple(int(d) for d in spec.shape)  # declared wins over input_shapes
        return _Tensor(name, is_input, engine_dtype, model_dtype, max_shape)

    # -- contexts ---------------------------------------------------------------------

    def _errors_since(self, mark: int) -> str:
        return "; ".join(self._logger.book.errors_since(mark)[-3:]) or "no reason given"

    def _alloc(self, slot: _Slot, name: str, nbytes: int) -> None:
        """Device and pinned host buffers of at least ``nbytes`` for tensor ``name``."""
        cur = slot.device.get(name)
        if cur is not None and cur[1] >= nbytes:
            return
        cuda = self._cuda
        if cur is not None:
            cuda.free(cur[0])
            del slot.device[name]
            cuda.free_host(slot.host.pop(name))
        ptr = cuda.malloc(nbytes)
        slot.device[name] = (ptr, max(nbytes, 1))
        slot.host[name] = cuda.malloc_host(nbytes)
        if slot.context is not None and not slot.context.set_tensor_address(name, ptr):
            raise BackendError(NAME, f"set_tensor_address({name!r}) failed")

    def _new_slot(self) -> _Slot:
        pool, cuda = self._pool, self._cuda
        with pool.create_lock:
            cuda.set_device(self._ordinal)
            stream = cuda.stream_create()
            slot = _Slot(None, stream, cuda.stream_handle(stream))
            try:
                for t in self._inputs:
                    self._alloc(slot, t.name, t.max_bytes)
                mark = self._logger.book.mark()
                context = pool.engine.create_execution_context()
                if context is None:
                    errors = self._logger.book.errors_since(mark)
                    what = "out of GPU memory" if _mentions_memory(errors) or not errors else "failed"
                    why = "; ".join(errors[-3:]) or "TensorRT could not allocate its activation memory"
                    raise BackendError(NAME, f"creating an execution context {what}: {why}")
                slot.context = context
                for t in self._inputs:
                    slot.context.set_tensor_address(t.name, slot.device[t.name][0])
                    if not context.set_input_shape(t.name, t.max_shape):
                        raise BackendError(
                            NAME,
                            f"the engine rejects input {t.name!r} at its "
                            f"largest shape {list(t.max_shape)}: " + self._errors_since(mark),
                        )
                    slot.shapes[t.name] = t.max_shape
                for t in self._outputs:
                    shape = tuple(int(d) for d in context.get_tensor_shape(t.name))
                    if any(d < 0 for d in shape):
                        raise UnsupportedModel(
                            NAME,
                            f"output {t.name!r} has a data-dependent "
                            f"shape {list(shape)}, which this backend "
                            "does not support",
                        )
                    self._alloc(slot, t.name, _volume(shape) * t.engine_dtype.itemsize)
                return slot
            except BaseException:
                pool.destroy(slot)
                raise

    def _acquire(self) -> _Slot:
        pool = self._pool
        with pool.cond:
            while True:
                if pool.closed:
                    raise BackendError(NAME, "the runner is closed")
                if pool.idle:
                    return pool.idle.pop()
                if pool.created < pool.limit:
                    pool.created += 1
                    break
                pool.cond.wait()
        try:
            return self._new_slot()
        except BaseException as exc:
            with pool.cond:
                pool.created -= 1
                if pool.created > 0 and _out_of_memory(exc):
                    # No room for another context: share the ones there are.
                    pool.limit = pool.created
                    log.info("tensorrt: GPU memory allows %d execution context(s)", pool.limit)
                    retry = True
                else:
                    retry = False
                pool.cond.notify()
            if retry:
                return self._acquire()
            raise

    # -- running ----------------------------------------------------------------------

    def _prepare(self, t: _Tensor, x: np.ndarray) -> np.ndarray:
        if t.name in self._profile:
            lo, _, hi = self._profile[t.name]
            if x.ndim != len(lo) or any(not a <= d <= b for d, a, b in zip(x.shape, lo, hi, strict=True)):
                raise InputError(
                    f"input {t.name!r} has shape {list(x.shape)}, outside the range the TensorRT "
                    f"engine was built for: {list(lo)} to {list(hi)} (load with a larger "
                    "input_shapes to build for larger inputs)"
                )
        if x.dtype != t.engine_dtype:
            if t.engine_dtype == np.int32 and x.dtype == np.int64 and x.size:
                info = np.iinfo(np.int32)
                if x.min() < info.min or x.max() > info.max:
                    raise InputError(
                        f"input {t.name!r}: values outside int32, which this "
                        "TensorRT engine takes in place of int64"
                    )
            x = x.astype(t.engine_dtype)
        return x if x.flags.c_contiguous else np.ascontiguousarray(x)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        arrays = [self._prepare(t, feeds[t.name]) for t in self._inputs]  # checked by the Session
        try:
            slot = self._acquire()
        except AutoinferError:
            raise
        except Exception as exc:
            raise _run_failure(exc, "creating an execution context") from None
        healthy = False
        try:
            outputs = self._run_on(slot, arrays)
            healthy = True
            return outputs
        except InputError:
            healthy = True
            raise
        except AutoinferError:
            raise
        except Exception as exc:
            raise _run_failure(exc, "running the engine") from None
        finally:
            self._pool.release(slot, healthy)

    def _run_on(self, slot: _Slot, arrays: list[np.ndarray]) -> list[np.ndarray]:
        cuda, ctx = self._cuda, slot.context
        cuda.set_device(self._ordinal)
        mark = self._logger.book.mark()
        for t, x in zip(self._inputs, arrays, strict=True):
            if slot.shapes.get(t.name) != x.shape:
                if not ctx.set_input_shape(t.name, x.shape):
                    slot.shapes.pop(t.name, None)
                    raise InputError(
                        f"input {t.name!r}: the TensorRT engine rejects shape "
                        f"{list(x.shape)}: {self._errors_since(mark)}"
                    )
                slot.shapes[t.name] = x.shape
            n = x.nbytes
            self._alloc(slot, t.name, n)
            if n:
                host = slot.host[t.name]
                host.array[:n] = x.reshape(-1).view(np.uint8)
                cuda.copy_to_device(slot.device[t.name][0], host.ptr, n, slot.stream)
        out_shapes = []
        for t in self._outputs:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(t.name))
            if any(d < 0 for d in shape):
                raise BackendError(
                    NAME,
                    f"output {t.name!r} has an unknown shape {list(shape)} "
                    "after setting the input shapes: " + self._errors_since(mark),
                )
            self._alloc(slot, t.name, _volume(shape) * t.engine_dtype.itemsize)
            out_shapes.append(shape)
        if not ctx.execute_async_v3(slot.handle):
            raise BackendError(NAME, "execute_async_v3 failed: " + self._errors_since(mark))
        sizes = []
        for t, shape in zip(self._outputs, out_shapes, strict=True):
            n = _volume(shape) * t.engine_dtype.itemsize
            if n:
                cuda.copy_to_host(slot.host[t.name].ptr, slot.device[t.name][0], n, slot.stream)
            sizes.append(n)
        cuda.synchronize(slot.stream)
        results = []
        for t, shape, n in zip(self._outputs, out_shapes, sizes, strict=True):
            arr = slot.host[t.name].array[:n].view(t.engine_dtype).reshape(shape).copy()
            results.append(arr if t.engine_dtype == t.model_dtype else arr.astype(t.model_dtype))
        return results

    def close(self) -> None:
        self._finalizer()
