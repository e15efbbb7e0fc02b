"""A fake of cuda-python's runtime module (``cuda.bindings.runtime``), backed by NumPy.

It answers like the real bindings: every function returns a tuple whose first
element is a ``cudaError_t``. Device memory is a dict of NumPy byte arrays keyed
by fake device addresses far above any host address, so mixing up host and
device pointers is caught. Page-locked host memory is real host memory, so the
code under test can view it with ctypes as it would on a GPU machine.

Copies and kernels are *queued* on their stream and only happen at
``cudaStreamSynchronize``, as on a GPU where nothing is guaranteed before the
sync: code that reads outputs before synchronising reads garbage here too.
New device memory is filled with 0xCD, as uninitialised GPU memory is garbage.

Failure injection: ``fail_next["cudaMemcpyAsync"] = cudaError_t.cudaErrorIllegalAddress``
makes the next such call fail; a device's ``memory_bytes`` bounds cudaMalloc.
"""

from __future__ import annotations

import bisect
import ctypes
import enum
import threading
import types
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

DEVICE_BASE = 1 << 52  # above every user-space host address on 64-bit Linux
GARBAGE = 0xCD


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInitializationError = 3
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalAddress = 700


_STRINGS = {
    cudaError_t.cudaSuccess: "no error",
    cudaError_t.cudaErrorInvalidValue: "invalid argument",
    cudaError_t.cudaErrorMemoryAllocation: "out of memory",
    cudaError_t.cudaErrorInitializationError: "initialization error",
    cudaError_t.cudaErrorInsufficientDriver: "CUDA driver version is insufficient for CUDA runtime version",
    cudaError_t.cudaErrorNoDevice: "no CUDA-capable device is detected",
    cudaError_t.cudaErrorInvalidDevice: "invalid device ordinal",
    cudaError_t.cudaErrorInvalidResourceHandle: "invalid resource handle",
    cudaError_t.cudaErrorIllegalAddress: "an illegal memory access was encountered",
}


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStream_t:
    """Like cuda-python's: ``int()`` is the handle; ``getPtr()`` is *not* the handle."""

    def __init__(self, handle: int = 0) -> None:
        self._handle = int(handle)

    def __int__(self) -> int:
        return self._handle

    def getPtr(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"<cudaStream_t 0x{self._handle:x}>"


class cudaUUID_t:
    def __init__(self, raw: bytes) -> None:
        self.bytes = raw


class cudaDeviceProp:
    def __init__(
        self, name: str, uuid: str, cc: tuple[int, int], memory: int, uuid_cut: int | None = None
    ) -> None:
        self.name = name.encode()
        raw = bytes.fromhex(uuid.lower().removeprefix("gpu-").removeprefix("mig-").replace("-", ""))
        # Some bindings hand the 16 UUID bytes over as a C string, cut at the first zero byte.
        self.uuid = cudaUUID_t(raw[:uuid_cut] if uuid_cut is not None else raw)
        self.major, self.minor = cc
        self.totalGlobalMem = memory


@dataclass
class FakeDevice:
    """A device as CUDA lists it: a whole GPU ("GPU-..." UUID) or a MIG instance ("MIG-...")."""

    name: str
    uuid: str  # NVML spelling, "GPU-xxxxxxxx-..." or "MIG-xxxxxxxx-..."
    compute_capability: tuple[int, int]
    memory_bytes: int
    pci_bus_id: str | None = None  # CUDA's spelling, "0000:3b:00.0"; a MIG instance has its GPU's
    uuid_cut: int | None = None  # cudaGetDeviceProperties returns only this many UUID bytes


def cuda_visible(host: list[FakeDevice], env: str | None) -> list[FakeDevice]:
    """The devices CUDA exposes, in its order, under ``CUDA_VISIBLE_DEVICES=env``.

    ``host``: every device in CUDA's own order (fastest first; a GPU in MIG mode
    appears as its instances). Entries are ordinals into ``host`` or UUIDs
    ("GPU-..."/"MIG-...", a unique prefix is enough); CUDA stops at the first
    entry it cannot resolve, as the real runtime does. None: all devices.
    """
    if env is None:
        return list(host)
    out: list[FakeDevice] = []
    for entry in (e.strip() for e in env.split(",")):
        if entry.isdigit():
            if int(entry) >= len(host):
                break
            found = host[int(entry)]
        else:
            hits = [d for d in host if d.uuid.lower().startswith(entry.lower())] if entry else []
            if len(hits) != 1:
                break
            found = hits[0]
        if found in out:
            break
        out.append(found)
    return out


class FakeCuda:
    """The state of the fake GPUs, and the cuda-python functions over it."""

    def __init__(
        self, devices: list[FakeDevice], driver_version: int = 12040, runtime_version: int = 12040
    ) -> None:
        self.devices = list(devices)
        self.driver_version = driver_version
        self.runtime_version = runtime_version
        self.lock = threading.RLock()
        self.allocs: dict[int, tuple[int, np.ndarray]] = {}  # base -> (ordinal, bytes)
        self._bases: list[int] = []
        self.used = [0] * len(self.devices)
        self.reserved = [0] * len(self.devices)  # TensorRT's own activation memory
        self.pinned: dict[int, np.ndarray] = {}
        self.streams: dict[int, list[Callable[[], None]]] = {}
        self.calls: Counter[str] = Counter()
        self.set_device_calls: list[int] = []
        self.fail_next: dict[str, cudaError_t] = {}
        self.pageable_copies = 0
        self._tls = threading.local()
        self._next_ptr = DEVICE_BASE
        self._next_stream = 0x7000

    # -- bookkeeping the fake TensorRT uses --------------------------------------------

    @property
    def current(self) -> int:
        return getattr(self._tls, "device", 0)

    def reserve(self, nbytes: int) -> bool:
        """TensorRT's activation memory for a context; False when it does not fit."""
        with self.lock:
            d = self.current
            if self.used[d] + self.reserved[d] + nbytes > self.devices[d].memory_bytes:
                return False
            self.reserved[d] += nbytes
            return True

    def unreserve(self, ordinal: int, nbytes: int) -> None:
        with self.lock:
            self.reserved[ordinal] -= nbytes

    def region(self, ptr: int, nbytes: int) -> np.ndarray | None:
        """The device bytes [ptr, ptr + nbytes), or None when not inside one allocation."""
        with self.lock:
            i = bisect.bisect_right(self._bases, ptr) - 1
            if i < 0:
                return None
            base = self._bases[i]
            _, buf = self.allocs[base]
            off = ptr - base
            if off + nbytes > buf.size:
                return None
            return buf[off : off + nbytes]

    def enqueue(self, handle: int, op: Callable[[], None]) -> bool:
        with self.lock:
            if handle not in self.streams:
                return False
            self.streams[handle].append(op)
            return True

    @property
    def device_bytes_in_use(self) -> int:
        with self.lock:
            return sum(self.used)

    def _pinned_covers(self, ptr: int, n: int) -> bool:
        for base, arr in self.pinned.items():
            if base <= ptr and ptr + n <= base + arr.size:
                return True
        return False

    def _failing(self, name: str) -> cudaError_t | None:
        with self.lock:
            self.calls[name] += 1
            return self.fail_next.pop(name, None)

    def _stream(self, stream: Any) -> int:
        return int(stream) if stream is not None else 0

    # -- the cuda-python runtime functions -------------------------------------------------

    def cudaGetErrorName(self, err: Any) -> tuple[cudaError_t, bytes]:
        return cudaError_t.cudaSuccess, cudaError_t(int(err)).name.encode()

    def cudaGetErrorString(self, err: Any) -> tuple[cudaError_t, bytes]:
        return cudaError_t.cudaSuccess, _STRINGS.get(cudaError_t(int(err)), "unknown").encode()

    def cudaDriverGetVersion(self) -> tuple[cudaError_t, int]:
        return cudaError_t.cudaSuccess, self.driver_version

    def cudaRuntimeGetVersion(self) -> tuple[cudaError_t, int]:
        return cudaError_t.cudaSuccess, self.runtime_version

    def cudaGetDeviceCount(self) -> tuple[cudaError_t, int]:
        if err := self._failing("cudaGetDeviceCount"):
            return err, 0
        if not self.devices:
            return cudaError_t.cudaErrorNoDevice, 0
        return cudaError_t.cudaSuccess, len(self.devices)

    def cudaGetDeviceProperties(self, device: int) -> tuple[cudaError_t, Any]:
        if not 0 <= device < len(self.devices):
            return cudaError_t.cudaErrorInvalidDevice, None
        d = self.devices[device]
        return cudaError_t.cudaSuccess, cudaDeviceProp(
            d.name, d.uuid, d.compute_capability, d.memory_bytes, d.uuid_cut
        )

    def cudaDeviceGetPCIBusId(self, length: int, device: int) -> tuple[cudaError_t, bytes]:
        if not 0 <= device < len(self.devices):
            return cudaError_t.cudaErrorInvalidDevice, b""
        bus = self.devices[device].pci_bus_id
        if bus is None:
            return cudaError_t.cudaErrorInvalidValue, b""
        return cudaError_t.cudaSuccess, (bus.upper().encode() + b"\x00" * length)[:length]

    def cudaSetDevice(self, device: int) -> tuple[cudaError_t]:
        if err := self._failing("cudaSetDevice"):
            return (err,)
        if not 0 <= device < len(self.devices):
            return (cudaError_t.cudaErrorInvalidDevice,)
        self._tls.device = device
        with self.lock:
            self.set_device_calls.append(device)
        return (cudaError_t.cudaSuccess,)

    def cudaGetDevice(self) -> tuple[cudaError_t, int]:
        return cudaError_t.cudaSuccess, self.current

    def cudaMemGetInfo(self) -> tuple[cudaError_t, int, int]:
        d = self.current
        total = self.devices[d].memory_bytes
        return cudaError_t.cudaSuccess, total - self.used[d] - self.reserved[d], total

    def cudaMalloc(self, size: int) -> tuple[cudaError_t, int]:
        if err := self._failing("cudaMalloc"):
            return err, 0
        with self.lock:
            d = self.current
            if size <= 0:
                return cudaError_t.cudaErrorInvalidValue, 0
            if self.used[d] + self.reserved[d] + size > self.devices[d].memory_bytes:
                return cudaError_t.cudaErrorMemoryAllocation, 0
            ptr = self._next_ptr
            self._next_ptr += (size + 511) // 256 * 256  # aligned, with a gap
            self.allocs[ptr] = (d, np.full(size, GARBAGE, dtype=np.uint8))
            bisect.insort(self._bases, ptr)
            self.used[d] += size
            return cudaError_t.cudaSuccess, ptr

    def cudaFree(self, ptr: int) -> tuple[cudaError_t]:
        if err := self._failing("cudaFree"):
            return (err,)
        with self.lock:
            if ptr == 0:
                return (cudaError_t.cudaSuccess,)
            if ptr not in self.allocs:
                return (cudaError_t.cudaErrorInvalidValue,)
            d, buf = self.allocs.pop(ptr)
            self._bases.remove(ptr)
            self.used[d] -= buf.size
            return (cudaError_t.cudaSuccess,)

    def cudaMallocHost(self, size: int) -> tuple[cudaError_t, int]:
        if err := self._failing("cudaMallocHost"):
            return err, 0
        arr = np.full(max(int(size), 1), GARBAGE, dtype=np.uint8)
        ptr = arr.ctypes.data
        with self.lock:
            self.pinned[ptr] = arr
        return cudaError_t.cudaSuccess, ptr

    def cudaFreeHost(self, ptr: int) -> tuple[cudaError_t]:
        with self.lock:
            if self.pinned.pop(ptr, None) is None:
                return (cudaError_t.cudaErrorInvalidValue,)
        return (cudaError_t.cudaSuccess,)

    def cudaStreamCreate(self) -> tuple[cudaError_t, cudaStream_t | None]:
        if err := self._failing("cudaStreamCreate"):
            return err, None
        with self.lock:
            self._next_stream += 16
            self.streams[self._next_stream] = []
            return cudaError_t.cudaSuccess, cudaStream_t(self._next_stream)

    def cudaStreamDestroy(self, stream: Any) -> tuple[cudaError_t]:
        with self.lock:
            if self.streams.pop(self._stream(stream), None) is None:
                return (cudaError_t.cudaErrorInvalidResourceHandle,)
        return (cudaError_t.cudaSuccess,)

    def cudaMemsetAsync(self, dst: Any, value: int, count: int, stream: Any) -> tuple[cudaError_t]:
        region = self.region(dst, count) if isinstance(dst, int) else None
        if region is None:
            return (cudaError_t.cudaErrorInvalidValue,)

        def op() -> None:
            region[:] = value & 0xFF

        if not self.enqueue(self._stream(stream), op):
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        return (cudaError_t.cudaSuccess,)

    def cudaMemcpyAsync(self, dst: Any, src: Any, count: int, kind: Any, stream: Any) -> tuple[cudaError_t]:
        if err := self._failing("cudaMemcpyAsync"):
            return (err,)
        if not isinstance(dst, int) or not isinstance(src, int):
            return (cudaError_t.cudaErrorInvalidValue,)
        handle = self._stream(stream)
        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
            region = self.region(dst, count)
            if region is None or src >= DEVICE_BASE:
                return (cudaError_t.cudaErrorInvalidValue,)
            pinned = self._pinned_covers(src, count)

            def op() -> None:
                region[:] = np.frombuffer(ctypes.string_at(src, count), dtype=np.uint8)
        elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
            region = self.region(src, count)
            if region is None or dst >= DEVICE_BASE:
                return (cudaError_t.cudaErrorInvalidValue,)
            pinned = self._pinned_covers(dst, count)

            def op() -> None:
                ctypes.memmove(dst, region.ctypes.data, count)
        else:
            return (cudaError_t.cudaErrorInvalidValue,)
        if not pinned:
            with self.lock:
                self.pageable_copies += 1
        if not self.enqueue(handle, op):
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        return (cudaError_t.cudaSuccess,)

    def cudaStreamSynchronize(self, stream: Any) -> tuple[cudaError_t]:
        if err := self._failing("cudaStreamSynchronize"):
            return (err,)
        handle = self._stream(stream)
        with self.lock:
            if handle not in self.streams:
                return (cudaError_t.cudaErrorInvalidResourceHandle,)
            ops, self.streams[handle] = self.streams[handle], []
        for op in ops:  # outside the lock: other streams run concurrently
            op()
        return (cudaError_t.cudaSuccess,)

    # -- as a module ------------------------------------------------------------------------

    def module(self, name: str = "cuda.bindings.runtime") -> types.ModuleType:
        m = types.ModuleType(name)
        for attr in dir(self):
            if attr.startswith("cuda") and callable(getattr(self, attr)):
                setattr(m, attr, getattr(self, attr))
        m.cudaError_t = cudaError_t
        m.cudaMemcpyKind = cudaMemcpyKind
        m.cudaStream_t = cudaStream_t
        return m
