"""A fake of the ``tensorrt`` Python module (8.6, 10.x or 11.x), computing with ONNX Runtime.

TensorRT 11 is modelled as its migration guide describes it: every network is
strongly typed, and ``BuilderFlag`` has no FP16, INT8, BF16, FP8, INT4, FP4 or
OBEY/PREFER_PRECISION_CONSTRAINTS member (using one raises AttributeError, as
the real bindings do). Timing caches (``create_timing_cache``,
``set_timing_cache``, ``get_timing_cache().serialize()``) exist in 8.6 to 11.

The classes answer the calls the TensorRT backend makes, with TensorRT's
semantics where they matter to the caller:

- the ONNX parser reads the file, rejects operators listed as unsupported with
  TensorRT's error codes and messages, and (8.x) turns int64 I/O into int32
  and needs the explicit-batch network flag;
- the builder checks the optimization profile against the network's dynamic
  inputs, can fail or run out of memory on request, reports progress to an
  ``IProgressMonitor`` (10.x) and stops when it returns False;
- the serialized engine embeds the model, the profile, the precision flags,
  the TensorRT version and the GPU it was built on, with a checksum; the
  runtime refuses damaged plans, plans of another version or another GPU;
- an execution context checks input shapes against the profile, infers output
  shapes statically (-1 where they depend on data), requires every tensor
  address to lie inside a device allocation large enough for its shape, and
  queues its work on the CUDA stream: inputs are read from and outputs written
  to fake device memory when the stream is synchronised, computed by ONNX
  Runtime (outputs rounded through fp16 when the FP16 flag was set).

Using one context from two threads at once is recorded in ``env.violations``.
"""

from __future__ import annotations

import enum
import functools
import json
import struct
import threading
import time
import types
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .fake_cuda import FakeCuda

MAGIC = b"FTRT"


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8


_NP = {
    DataType.FLOAT: np.float32,
    DataType.HALF: np.float16,
    DataType.INT8: np.int8,
    DataType.INT32: np.int32,
    DataType.BOOL: np.bool_,
    DataType.UINT8: np.uint8,
    DataType.INT64: np.int64,
}
_FROM_ONNX = {
    1: DataType.FLOAT,
    10: DataType.HALF,
    3: DataType.INT8,
    6: DataType.INT32,
    9: DataType.BOOL,
    2: DataType.UINT8,
    7: DataType.INT64,
    16: DataType.BF16,
}


def nptype(dtype: DataType) -> type:
    try:
        return _NP[DataType(dtype)]
    except KeyError:
        raise TypeError(
            f"Could not resolve TensorRT datatype to an equivalent numpy datatype: {DataType(dtype).name}"
        ) from None


def volume(shape: Any) -> int:
    return int(np.prod([int(d) for d in shape], dtype=np.int64))


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    INT8 = 1
    DEBUG = 2
    GPU_FALLBACK = 3
    REFIT = 5
    TF32 = 7
    BF16 = 13


class BuilderFlag11(enum.IntEnum):
    """TensorRT 11's BuilderFlag: the weak-typing precision flags are gone."""

    DEBUG = 2
    GPU_FALLBACK = 3
    REFIT = 5
    TF32 = 7


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class ErrorCode(enum.IntEnum):
    SUCCESS = 0
    INTERNAL_ERROR = 1
    MEM_ALLOC_FAILED = 2
    MODEL_DESERIALIZE_FAILED = 3
    INVALID_VALUE = 4
    INVALID_GRAPH = 5
    INVALID_NODE = 6
    UNSUPPORTED_GRAPH = 7
    UNSUPPORTED_NODE = 8


class Dims(tuple):
    """trt.Dims: iterable, indexable, len()."""


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass

    def log(self, severity: Severity, msg: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class Logger(ILogger):
    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def __init__(self, min_severity: Severity = Severity.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity
        self.messages: list[tuple[Severity, str]] = []

    def log(self, severity: Severity, msg: str) -> None:
        if severity <= self.min_severity:
            self.messages.append((severity, msg))


class IProgressMonitor:
    def __init__(self) -> None:
        pass


@dataclass
class FakeTRTEnv:
    """What a test controls and observes about the fake TensorRT."""

    version: str
    cuda: FakeCuda
    unsupported_ops: frozenset[str] = frozenset()
    fail_build: str | None = None  # an error TensorRT logs, then the build returns None
    build_oom: bool = False
    build_step_s: float = 0.0  # time per builder step (to exercise the timeout)
    activation_bytes: int = 1 << 20  # device memory per execution context
    builds: int = 0
    deserializations: int = 0
    contexts: int = 0
    last_build: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    timing_cache_loaded: int = 0  # builds given a non-empty timing cache
    timing_cache_rejected: int = 0  # caches refused (damaged, other GPU or version)

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


def _log(logger: ILogger, severity: Severity, msg: str) -> None:
    logger.log(severity, msg)


# -- network and parser ---------------------------------------------------------------------


@dataclass
class ITensor:
    name: str
    dtype: DataType
    shape: Dims


class INetworkDefinition:
    def __init__(self, explicit_batch: bool) -> None:
        self.explicit_batch = explicit_batch
        self.inputs: list[ITensor] = []
        self.outputs: list[ITensor] = []
        self.model: bytes = b""
        self.onnx_dtypes: dict[str, str] = {}
        self.strongly_typed = False

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_input(self, i: int) -> ITensor:
        return self.inputs[i]

    def get_output(self, i: int) -> ITensor:
        return self.outputs[i]


class IParserError:
    def __init__(
        self, code: ErrorCode, desc: str, node: int = -1, node_name: str = "", node_operator: str = ""
    ) -> None:
        self._code, self._desc, self._node = code, desc, node
        self._node_name, self._node_operator = node_name, node_operator

    def code(self) -> ErrorCode:
        return self._code

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def node_name(self) -> str:
        return self._node_name

    def node_operator(self) -> str:
        return self._node_operator

    def __str__(self) -> str:
        return (
            f"In node {self._node} with name: {self._node_name} and operator: "
            f"{self._node_operator} ({self._code.name}): {self._desc}"
        )


class OnnxParser:
    def __init__(self, env: FakeTRTEnv, network: INetworkDefinition, logger: ILogger) -> None:
        self.env, self.network, self.logger = env, network, logger
        self.errors: list[IParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> IParserError:
        return self.errors[i]

    def clear_errors(self) -> None:
        self.errors.clear()

    def _fail(self, err: IParserError) -> bool:
        self.errors.append(err)
        _log(self.logger, Severity.ERROR, str(err))
        return False

    def parse_from_file(self, model: str) -> bool:
        import onnx

        try:
            proto = onnx.load(model)  # external data resolved next to the file
        except Exception as exc:
            return self._fail(
                IParserError(
                    ErrorCode.MODEL_DESERIALIZE_FAILED,
                    f"Failed to parse ONNX model from file: {model}: {exc}",
                )
            )
        return self._parse(proto)

    def parse(self, model: bytes, path: str | None = None) -> bool:
        import onnx

        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as exc:
            return self._fail(IParserError(ErrorCode.MODEL_DESERIALIZE_FAILED, str(exc)))
        return self._parse(proto)

    def _parse(self, proto: Any) -> bool:
        net = self.network
        if not net.explicit_batch:
            return self._fail(
                IParserError(
                    ErrorCode.INVALID_GRAPH,
                    "The ONNX parser only supports networks with an explicit batch dimension",
                )
            )
        for i, node in enumerate(proto.graph.node):
            if node.op_type in self.env.unsupported_ops:
                return self._fail(
                    IParserError(
                        ErrorCode.UNSUPPORTED_NODE,
                        f"No importer registered for op: {node.op_type}. Attempting to import as plugin.",
                        i,
                        node.name,
                        node.op_type,
                    )
                )
        inits = {t.name for t in proto.graph.initializer}

        def tensor(vi: Any) -> ITensor:
            tt = vi.type.tensor_type
            dtype = _FROM_ONNX.get(tt.elem_type)
            if dtype is None:
                raise ValueError(f"unsupported data type {tt.elem_type} of {vi.name}")
            if dtype == DataType.INT64 and self.env.major < 10:
                _log(
                    self.logger,
                    Severity.WARNING,
                    "Your ONNX model has been generated with INT64 weights, while TensorRT does "
                    "not natively support INT64. Attempting to cast down to INT32.",
                )
                dtype = DataType.INT32
            dims = Dims(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
            return ITensor(vi.name, dtype, dims)

        try:
            net.inputs = [tensor(vi) for vi in proto.graph.input if vi.name not in inits]
            net.outputs = [tensor(vi) for vi in proto.graph.output]
        except ValueError as exc:
            return self._fail(IParserError(ErrorCode.UNSUPPORTED_GRAPH, str(exc)))
        net.onnx_dtypes = {
            vi.name: _onnx_np(vi.type.tensor_type.elem_type)
            for vi in [*proto.graph.input, *proto.graph.output]
        }
        net.model = proto.SerializeToString()
        return True


def _onnx_np(elem: int) -> str:
    return np.dtype(_NP[_FROM_ONNX[elem]]).name


# -- builder ----------------------------------------------------------------------------------


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[Dims, Dims, Dims]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002
        self.shapes[input] = (Dims(int(d) for d in min), Dims(int(d) for d in opt), Dims(int(d) for d in max))

    def get_shape(self, input: str) -> list[Dims]:  # noqa: A002
        return list(self.shapes.get(input, ()))


TIMING_MAGIC = b"FTTC"


class ITimingCache:
    """Kernel timings: ``entries`` grows with every build that uses the cache."""

    def __init__(self, key: str, entries: int = 0) -> None:
        self.key, self.entries = key, entries

    def serialize(self) -> IHostMemory:
        return IHostMemory(TIMING_MAGIC + json.dumps({"key": self.key, "entries": self.entries}).encode())


class IBuilderConfig:
    """TensorRT 8.6's builder config: no progress_monitor attribute."""

    __slots__ = ("flags", "pools", "profiles", "builder_optimization_level", "env", "timing_cache")

    def __init__(self, env: FakeTRTEnv | None = None) -> None:
        self.env = env
        self.flags = {BuilderFlag.TF32}  # TF32 is on by default, as in TensorRT
        self.pools: dict[MemoryPoolType, int] = {}
        self.profiles: list[IOptimizationProfile] = []
        self.builder_optimization_level = 3
        self.timing_cache: ITimingCache | None = None

    def set_flag(self, flag: BuilderFlag) -> None:
        self.flags.add(BuilderFlag(flag))

    def clear_flag(self, flag: BuilderFlag) -> None:
        self.flags.discard(BuilderFlag(flag))

    def get_flag(self, flag: BuilderFlag) -> bool:
        return BuilderFlag(flag) in self.flags

    def _cache_key(self) -> str:
        assert self.env is not None
        dev = self.env.cuda.devices[self.env.cuda.current]
        return f"{self.env.version}|{dev.name}|{dev.compute_capability}"

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        data = bytes(serialized_timing_cache)
        if not data:
            return ITimingCache(self._cache_key())
        if not data.startswith(TIMING_MAGIC):
            raise RuntimeError("Error Code 1: Serialization (timing cache is corrupted)")
        info = json.loads(data[len(TIMING_MAGIC) :])
        return ITimingCache(info["key"], int(info["entries"]))

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        if cache.key != self._cache_key() and not ignore_mismatch:
            assert self.env is not None
            self.env.timing_cache_rejected += 1
            return False
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self.timing_cache

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        self.pools[MemoryPoolType(pool)] = int(pool_size)

    def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
        return self.pools.get(MemoryPoolType(pool), 1 << 40)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.profiles)


class IBuilderConfig10(IBuilderConfig):
    __slots__ = ("progress_monitor",)

    def __init__(self, env: FakeTRTEnv | None = None) -> None:
        super().__init__(env)
        self.progress_monitor: Any = None


class IHostMemory(bytearray):
    @property
    def nbytes(self) -> int:
        return len(self)


class Builder:
    def __init__(self, env: FakeTRTEnv, logger: ILogger) -> None:
        self.env, self.logger = env, logger

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        explicit = bool(flags & (1 << NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
        if self.env.major >= 10:
            if explicit:
                _log(self.logger, Severity.WARNING, "kEXPLICIT_BATCH is deprecated and has no effect")
            explicit = True
        network = INetworkDefinition(explicit)
        network.strongly_typed = self.env.major >= 11 or bool(
            flags & (1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        )
        return network

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig10(self.env) if self.env.major >= 10 else IBuilderConfig(self.env)

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def _error(self, msg: str) -> None:
        _log(self.logger, Severity.ERROR, msg)

    def build_serialized_network(
        self, network: INetworkDefinition, config: IBuilderConfig
    ) -> IHostMemory | None:
        env = self.env
        env.builds += 1
        env.last_build = {
            "flags": set(config.flags),
            "pools": dict(config.pools),
            "strongly_typed": network.strongly_typed,
            "timing_cache": config.timing_cache is not None,
            "opt_level": config.builder_optimization_level,
            "profiles": [dict(p.shapes) for p in config.profiles],
            "device": env.cuda.current,
        }
        if not network.model:
            self._error("Network must have at least one output")
            return None
        profile = config.profiles[0].shapes if config.profiles else {}
        for t in network.inputs:
            dynamic = any(d < 0 for d in t.shape)
            if dynamic and t.name not in profile:
                self._error(
                    f"IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error "
                    f"(Network has dynamic or shape inputs, but no optimization profile "
                    f"has been defined. {t.name})"
                )
                return None
            if t.name in profile:
                lo, opt, hi = profile[t.name]
                ok = len(lo) == len(opt) == len(hi) == len(t.shape) and all(
                    a <= b <= c and (d < 0 or a == b == c == d)
                    for a, b, c, d in zip(lo, opt, hi, t.shape, strict=True)
                )
                if not ok:
                    self._error(
                        f"Error Code 4: API Usage Error (optimization profile of "
                        f"{t.name} is invalid: {lo} {opt} {hi} for {t.shape})"
                    )
                    return None
        monitor = getattr(config, "progress_monitor", None)
        steps = 3
        if monitor is not None:
            monitor.phase_start("Building engine", None, steps)
        for step in range(steps):
            if env.build_step_s:
                time.sleep(env.build_step_s)
            if monitor is not None and not monitor.step_complete("Building engine", step):
                monitor.phase_finish("Building engine")
                self._error("Error Code 1: Internal Error (Build was cancelled)")
                return None
        if monitor is not None:
            monitor.phase_finish("Building engine")
        if env.fail_build:
            self._error(env.fail_build)
            return None
        if env.build_oom:
            self._error("Error Code 2: OutOfMemory (Requested size was 68719476736 bytes.)")
            return None
        if config.timing_cache is not None:
            if config.timing_cache.entries:
                env.timing_cache_loaded += 1
            config.timing_cache.entries += 1
        dev = env.cuda.devices[env.cuda.current]
        header = {
            "version": env.version,
            "device_uuid": dev.uuid,
            "device": [dev.name, list(dev.compute_capability)],
            "inputs": [[t.name, int(t.dtype), list(t.shape)] for t in network.inputs],
            "outputs": [[t.name, int(t.dtype), list(t.shape)] for t in network.outputs],
            "onnx_dtypes": network.onnx_dtypes,
            "profile": {k: [list(s) for s in v] for k, v in profile.items()},
            "fp16": BuilderFlag.FP16 in config.flags,
        }
        head = json.dumps(header).encode()
        body = MAGIC + struct.pack("<I", len(head)) + head + network.model
        return IHostMemory(body + struct.pack("<I", zlib.crc32(body)))


# -- runtime, engine, context --------------------------------------------------------------


class Runtime:
    def __init__(self, env: FakeTRTEnv, logger: ILogger) -> None:
        self.env, self.logger = env, logger

    def deserialize_cuda_engine(self, serialized_engine: Any) -> ICudaEngine | None:
        data = bytes(serialized_engine)
        self.env.deserializations += 1
        if len(data) < 12 or data[:4] != MAGIC or struct.unpack("<I", data[-4:])[0] != zlib.crc32(data[:-4]):
            _log(
                self.logger,
                Severity.ERROR,
                "1: [stdArchiveReader.cpp::StdArchiveReader::32] Error Code 1: Serialization "
                "(Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not "
                "match)",
            )
            return None
        n = struct.unpack("<I", data[4:8])[0]
        header = json.loads(data[8 : 8 + n])
        if header["version"] != self.env.version:
            _log(
                self.logger,
                Severity.ERROR,
                f"The engine plan file is not compatible with this version of TensorRT, "
                f"expecting library version {self.env.version} got {header['version']}, "
                "please rebuild.",
            )
            return None
        here = self.env.cuda.devices[self.env.cuda.current]
        if header["device"] != [here.name, list(here.compute_capability)]:
            # Engines move between GPUs of one model, not across models.
            _log(
                self.logger,
                Severity.ERROR,
                "The engine plan file is generated on an incompatible device, please rebuild.",
            )
            return None
        return ICudaEngine(self.env, self.logger, header, data[8 + n : -4])


class ICudaEngine:
    def __init__(self, env: FakeTRTEnv, logger: ILogger, header: dict[str, Any], model: bytes) -> None:
        self.env, self.logger, self.model = env, logger, model
        self.inputs = {n: (DataType(d), Dims(s)) for n, d, s in header["inputs"]}
        self.outputs = {n: (DataType(d), Dims(s)) for n, d, s in header["outputs"]}
        self.onnx_dtypes: dict[str, str] = header["onnx_dtypes"]
        self.profile = {k: tuple(Dims(s) for s in v) for k, v in header["profile"].items()}
        self.fp16 = header["fp16"]
        # Not the model's order: callers must go by name.
        self.names = [*reversed(list(self.outputs)), *reversed(list(self.inputs))]
        self._session: Any = None
        self._lock = threading.Lock()
        self._shapes: dict[tuple, dict[str, Dims]] = {}

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    @property
    def num_optimization_profiles(self) -> int:
        return 1

    @property
    def device_memory_size(self) -> int:
        return self.env.activation_bytes

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        if name in self.inputs:
            return TensorIOMode.INPUT
        if name in self.outputs:
            return TensorIOMode.OUTPUT
        return TensorIOMode.NONE

    def get_tensor_dtype(self, name: str) -> DataType:
        return {**self.inputs, **self.outputs}[name][0]

    def get_tensor_shape(self, name: str) -> Dims:
        return {**self.inputs, **self.outputs}[name][1]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
        return list(self.profile[name])

    def is_shape_inference_io(self, name: str) -> bool:
        return False

    def create_execution_context(self) -> IExecutionContext | None:
        if not self.env.cuda.reserve(self.device_memory_size):
            _log(
                self.logger,
                Severity.ERROR,
                f"1: [defaultAllocator.cpp::allocate::31] Error Code 1: Cuda Runtime (out of "
                f"memory) Requested amount of GPU memory ({self.device_memory_size} bytes) could "
                "not be allocated. There may not be enough free memory for allocation to succeed.",
            )
            return None
        self.env.contexts += 1
        return IExecutionContext(self)

    # -- what the fake computes with ------------------------------------------------------

    def session(self) -> Any:
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                so = ort.SessionOptions()
                so.intra_op_num_threads = 1
                self._session = ort.InferenceSession(self.model, so, providers=["CPUExecutionProvider"])
            return self._session

    def output_shapes(self, inputs: dict[str, tuple[int, ...]]) -> dict[str, Dims]:
        """Static shape inference at these input shapes; -1 where shapes depend on data."""
        key = tuple(sorted(inputs.items()))
        with self._lock:
            if key in self._shapes:
                return self._shapes[key]
        import onnx

        proto = onnx.load_from_string(self.model)
        for vi in proto.graph.input:
            if vi.name in inputs:
                dims = vi.type.tensor_type.shape.dim
                for d, v in zip(dims, inputs[vi.name], strict=True):
                    d.Clear()
                    d.dim_value = int(v)
        for vi in proto.graph.output:
            vi.type.tensor_type.ClearField("shape")
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        out = {}
        for vi in inferred.graph.output:
            tt = vi.type.tensor_type
            out[vi.name] = (
                Dims(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
                if tt.HasField("shape")
                else Dims((-1,))
            )
        with self._lock:
            self._shapes[key] = out
        return out


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self.env = engine.env
        self.ordinal = engine.env.cuda.current
        self.shapes: dict[str, Dims] = {n: s for n, (_, s) in engine.inputs.items() if all(d >= 0 for d in s)}
        self.addresses: dict[str, int] = {}
        self._busy = threading.Lock()
        self._pending_thread: int | None = None

    def __del__(self) -> None:
        self.env.cuda.unreserve(self.ordinal, self.engine.device_memory_size)

    # one thread at a time, and not another thread while this context's work is queued
    def _enter(self, what: str) -> None:
        me = threading.get_ident()
        if not self._busy.acquire(blocking=False):
            self.env.violations.append(f"{what}: context used by two threads at once")
            self._busy.acquire()
        pending = self._pending_thread
        if pending is not None and pending != me:
            self.env.violations.append(
                f"{what}: context reused by another thread before its queued work finished"
            )

    def _exit(self) -> None:
        self._busy.release()

    def _log_error(self, msg: str) -> None:
        _log(self.engine.logger, Severity.ERROR, msg)

    def set_input_shape(self, name: str, shape: Any) -> bool:
        self._enter("set_input_shape")
        try:
            shape = Dims(int(d) for d in shape)
            if name not in self.engine.inputs:
                self._log_error(f"3: setInputShape: {name} is not an input tensor")
                return False
            declared = self.engine.inputs[name][1]
            if len(shape) != len(declared):
                self._log_error(f"3: setInputShape: rank of {name} is {len(declared)}")
                return False
            if name in self.engine.profile:
                lo, _, hi = self.engine.profile[name]
                if not all(a <= d <= b for d, a, b in zip(shape, lo, hi, strict=True)):
                    self._log_error(
                        f"3: [executionContext.cpp::setInputShape] Error Code 3: API "
                        f"Usage Error (Given invalid tensor shape {list(shape)} of "
                        f"{name}: must be within {list(lo)} and {list(hi)})"
                    )
                    return False
            elif shape != declared:
                self._log_error(f"3: setInputShape: {name} has static shape {list(declared)}")
                return False
            self.shapes[name] = shape
            return True
        finally:
            self._exit()

    def get_tensor_shape(self, name: str) -> Dims:
        if name in self.engine.inputs:
            return self.shapes.get(name, self.engine.inputs[name][1])
        if name not in self.engine.outputs:
            return Dims((-1,))
        if set(self.shapes) != set(self.engine.inputs):
            return self.engine.outputs[name][1]
        return self.engine.output_shapes({k: tuple(v) for k, v in self.shapes.items()})[name]

    @property
    def all_input_dimensions_specified(self) -> bool:
        return set(self.shapes) == set(self.engine.inputs)

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self._enter("set_tensor_address")
        try:
            if self.engine.get_tensor_mode(name) == TensorIOMode.NONE:
                self._log_error(f"3: setTensorAddress: {name} is not an I/O tensor")
                return False
            self.addresses[name] = int(memory)
            return True
        finally:
            self._exit()

    def get_tensor_address(self, name: str) -> int:
        return self.addresses.get(name, 0)

    def execute_async_v3(self, stream_handle: int) -> bool:
        self._enter("execute_async_v3")
        try:
            return self._execute(int(stream_handle))
        finally:
            self._exit()

    def _execute(self, stream: int) -> bool:
        eng, cuda = self.engine, self.env.cuda
        if cuda.current != self.ordinal:
            self._log_error("execute_async_v3 called with another device current")
            return False
        if not self.all_input_dimensions_specified:
            self._log_error("3: Not all input dimensions are specified")
            return False
        io: dict[str, tuple[np.ndarray, np.dtype, Dims]] = {}
        out_shapes = eng.output_shapes({k: tuple(v) for k, v in self.shapes.items()})
        for name in eng.names:
            is_input = name in eng.inputs
            dtype = np.dtype(nptype(eng.get_tensor_dtype(name)))
            shape = self.shapes[name] if is_input else out_shapes[name]
            if any(d < 0 for d in shape):
                self._log_error(f"output {name} has a data-dependent shape and no output allocator is set")
                return False
            if name not in self.addresses:
                self._log_error(f"3: Error Code 3: API Usage Error (address of {name} is not set)")
                return False
            nbytes = volume(shape) * dtype.itemsize
            region = cuda.region(self.addresses[name], max(nbytes, 1))
            if region is None:
                self._log_error(
                    f"1: Error Code 1: Cuda Runtime (an illegal memory access was "
                    f"encountered: {name} at 0x{self.addresses[name]:x}, "
                    f"{nbytes} bytes)"
                )
                return False
            io[name] = (region[:nbytes], dtype, shape)
        me = threading.get_ident()
        self._pending_thread = me

        def run() -> None:
            try:
                feeds = {}
                for name in eng.inputs:
                    buf, dtype, shape = io[name]
                    x = buf.view(dtype).reshape(shape).copy()
                    feeds[name] = x.astype(eng.onnx_dtypes[name])
                sess = eng.session()
                names = [o.name for o in sess.get_outputs()]
                for name, y in zip(names, sess.run(None, feeds), strict=True):
                    buf, dtype, shape = io[name]
                    if tuple(y.shape) != tuple(shape):
                        raise AssertionError(f"fake engine: {name} is {y.shape}, inferred {shape}")
                    if eng.fp16 and y.dtype == np.float32:
                        y = y.astype(np.float16).astype(np.float32)
                    buf[:] = np.ascontiguousarray(y.astype(dtype)).reshape(-1).view(np.uint8)
            finally:
                self._pending_thread = None

        if not cuda.enqueue(stream, run):
            self._log_error("1: Cuda Runtime (invalid resource handle)")
            self._pending_thread = None
            return False
        return True


# -- the module --------------------------------------------------------------------------------


def module(env: FakeTRTEnv) -> types.ModuleType:
    """A ``tensorrt`` module bound to ``env``; 10.x has IProgressMonitor and native int64."""
    m = types.ModuleType("tensorrt")
    m.__version__ = env.version
    for obj in (
        DataType,
        TensorIOMode,
        NetworkDefinitionCreationFlag,
        BuilderFlag,
        MemoryPoolType,
        ErrorCode,
        Dims,
        ILogger,
        Logger,
        nptype,
        volume,
        ITimingCache,
    ):
        setattr(m, obj.__name__, obj)
    if env.major >= 11:
        m.BuilderFlag = BuilderFlag11
    m.Builder = functools.partial(Builder, env)
    m.OnnxParser = functools.partial(OnnxParser, env)
    m.Runtime = functools.partial(Runtime, env)
    if env.major >= 10:
        m.IProgressMonitor = IProgressMonitor
    return m


def engine_header(path: Path) -> dict[str, Any]:
    """The header of a serialized fake engine (what it was built for)."""
    data = path.read_bytes()
    n = struct.unpack("<I", data[4:8])[0]
    return json.loads(data[8 : 8 + n])
