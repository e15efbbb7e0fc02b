"""The CUDA runtime calls the TensorRT backend needs, through cuda-python.

cuda-python installs from wheels with no compiler (pycuda builds from source),
and its runtime bindings return ``(error, value...)`` tuples instead of raising;
:class:`Cudart` checks every tuple and raises :class:`CudaError` carrying the
CUDA error's name (``cudaErrorMemoryAllocation``), which the backend turns into
its own exceptions. The module lives at ``cuda.bindings.runtime`` since
cuda-python 12.6.1 and at ``cuda.cudart`` before (removed in 13.0); both work.

Device memory is plain integers (device addresses). Host staging buffers are
page-locked (``cudaMallocHost``) so that copies are truly asynchronous, and
exposed as NumPy views.

Nothing here is imported by ``import autoinfer``; the runtime module is
imported when :func:`load` is called.
"""
from __future__ import annotations

import ctypes
import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np

# Smallest NVIDIA driver for each CUDA major version on Linux (CUDA release notes,
# "minimum required driver version for CUDA minor version compatibility").
MIN_DRIVER_FOR_CUDA = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}

OUT_OF_MEMORY = "cudaErrorMemoryAllocation"


class CudaError(RuntimeError):
    """A CUDA runtime call failed; ``name`` is the CUDA error's name."""

    def __init__(self, call: str, name: str, code: int, detail: str = "") -> None:
        self.call = call
        self.name = name
        self.code = code
        self.detail = detail
        super().__init__(f"{call} failed with {name} ({code})" + (f": {detail}" if detail else ""))

    @property
    def out_of_memory(self) -> bool:
        return self.name == OUT_OF_MEMORY


def load() -> "Cudart":
    """The CUDA runtime bindings; ImportError when cuda-python is not installed."""
    try:
        rt = importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        rt = importlib.import_module("cuda.cudart")  # cuda-python < 12.6.1
    return Cudart(rt)


def _native_handle(obj: Any) -> int:
    """The address behind a cuda-python handle object (a stream), as an int.

    cuda-python 13 deprecates ``int(handle)`` in favour of
    ``cuda.bindings.utils.get_cuda_native_handle``; older versions only have ``int``.
    """
    try:
        utils = importlib.import_module("cuda.bindings.utils")
        get = getattr(utils, "get_cuda_native_handle", None)
        if get is not None:
            return int(get(obj))
    except ImportError:
        pass
    return int(obj)


@dataclass
class PinnedBuffer:
    """Page-locked host memory and a uint8 NumPy view of it."""

    ptr: int
    nbytes: int
    array: np.ndarray


class Cudart:
    """Checked wrappers of the cuda-python runtime functions the backend calls."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self._success = rt.cudaError_t.cudaSuccess
        self._h2d = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._d2h = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost

    # -- errors ---------------------------------------------------------------------

    def _error(self, call: str, err: Any) -> CudaError:
        name = getattr(err, "name", None)
        detail = ""
        try:
            res = self.rt.cudaGetErrorName(err)
            if res[0] == self._success:
                raw = res[1]
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
            res = self.rt.cudaGetErrorString(err)
            if res[0] == self._success:
                raw = res[1]
                detail = raw.decode() if isinstance(raw, bytes) else str(raw)
        except Exception:  # the name from the enum is enough
            pass
        try:
            code = int(err)
        except (TypeError, ValueError):
            code = -1
        return CudaError(call, str(name or f"cudaError {code}"), code, detail)

    def _check(self, call: str, result: Any) -> Any:
        """``(err, *values)`` -> values (None, one value, or a tuple); raises on error."""
        if not isinstance(result, tuple):
            result = (result,)
        err, values = result[0], result[1:]
        if err != self._success:
            raise self._error(call, err)
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    # -- versions and devices ---------------------------------------------------------

    def driver_version(self) -> tuple[int, int]:
        v = int(self._check("cudaDriverGetVersion", self.rt.cudaDriverGetVersion()))
        return v // 1000, (v % 1000) // 10

    def device_count(self) -> int:
        return int(self._check("cudaGetDeviceCount", self.rt.cudaGetDeviceCount()))

    def device_uuid(self, ordinal: int) -> str:
        """The device's UUID in NVML's spelling, without the ``GPU-`` prefix."""
        prop = self._check("cudaGetDeviceProperties", self.rt.cudaGetDeviceProperties(ordinal))
        raw: Any = getattr(getattr(prop, "uuid", None), "bytes", b"")
        try:
            raw = raw.encode("latin-1") if isinstance(raw, str) else bytes(raw)
        except (TypeError, ValueError):
            return ""
        h = raw[:16].hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}" if len(h) == 32 else ""

    def ordinal_of(self, uuid: str | None, index: int) -> int:
        """The CUDA ordinal of the GPU NVML calls ``uuid`` (index ``index``).

        CUDA numbers devices fastest-first and after CUDA_VISIBLE_DEVICES; NVML in
        PCI order over all devices. They agree only by accident, so the UUID
        decides. Without a UUID, NVML's index is the best guess. ValueError when
        CUDA does not see the GPU at all.
        """
        if not uuid:
            return index
        want = uuid.lower().removeprefix("gpu-")
        n = self.device_count()
        seen = [self.device_uuid(ordinal) for ordinal in range(n)]
        if want in seen:
            return seen.index(want)
        if not any(seen):  # these bindings do not expose UUIDs (or it is a MIG instance)
            return index
        raise ValueError(f"CUDA sees {n} device(s) and none has UUID {uuid} "
                         "(is it hidden by CUDA_VISIBLE_DEVICES?)")

    def set_device(self, ordinal: int) -> None:
        self._check("cudaSetDevice", self.rt.cudaSetDevice(ordinal))

    # -- memory -------------------------------------------------------------------------

    def malloc(self, nbytes: int) -> int:
        return int(self._check("cudaMalloc", self.rt.cudaMalloc(max(int(nbytes), 1))))

    def free(self, ptr: int) -> None:
        self._check("cudaFree", self.rt.cudaFree(ptr))

    def malloc_host(self, nbytes: int) -> PinnedBuffer:
        n = max(int(nbytes), 1)
        ptr = int(self._check("cudaMallocHost", self.rt.cudaMallocHost(n)))
        array = np.ctypeslib.as_array((ctypes.c_ubyte * n).from_address(ptr))
        return PinnedBuffer(ptr, n, array)

    def free_host(self, buf: PinnedBuffer) -> None:
        self._check("cudaFreeHost", self.rt.cudaFreeHost(buf.ptr))

    # -- streams and copies -------------------------------------------------------------

    def stream_create(self) -> Any:
        return self._check("cudaStreamCreate", self.rt.cudaStreamCreate())

    def stream_destroy(self, stream: Any) -> None:
        self._check("cudaStreamDestroy", self.rt.cudaStreamDestroy(stream))

    def stream_handle(self, stream: Any) -> int:
        return _native_handle(stream)

    def copy_to_device(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self._check("cudaMemcpyAsync",
                    self.rt.cudaMemcpyAsync(dst, src, nbytes, self._h2d, stream))

    def copy_to_host(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self._check("cudaMemcpyAsync",
                    self.rt.cudaMemcpyAsync(dst, src, nbytes, self._d2h, stream))

    def synchronize(self, stream: Any) -> None:
        self._check("cudaStreamSynchronize", self.rt.cudaStreamSynchronize(stream))
