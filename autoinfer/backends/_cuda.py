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
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from probes.nvidia import normal_bus_id

if TYPE_CHECKING:  # pragma: no cover
    from probes import MigInstance, NvidiaGPU

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


def visible_from_env(
    gpus: Sequence[NvidiaGPU], env: os._Environ[str] | dict[str, str] | None = None
) -> tuple[list[CudaDevice] | None, str]:
    """CUDA's devices worked out from NVML's GPUs and the environment, without CUDA.

    CUDA_VISIBLE_DEVICES lists ordinals (in CUDA_DEVICE_ORDER: fastest first by
    default, or PCI_BUS_ID) or UUIDs ("GPU-...", "MIG-...", a unique prefix
    suffices); CUDA stops at the first entry it cannot resolve. NVML lists GPUs
    in PCI order, which is CUDA's order only with CUDA_DEVICE_ORDER=PCI_BUS_ID or
    when the GPUs are alike. (devices, "") or (None, why it cannot be told).
    """
    env = os.environ if env is None else env
    whole = [g for g in gpus if not g.mig_enabled]
    pci_order = (
        env.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST").strip().upper() == "PCI_BUS_ID"
        or len({(g.name, tuple(g.compute_capability)) for g in whole}) <= 1
    )
    order = sorted(whole, key=lambda g: (normal_bus_id(g.pci_bus_id) or "", g.index))
    units: list[tuple[str, str | None, str | None]] = (  # (uuid as listed, bare uuid, bus id)
        [(g.uuid or "", bare_uuid(g.uuid), normal_bus_id(g.pci_bus_id)) for g in whole]
        + [
            (m.uuid or "", bare_uuid(m.uuid), normal_bus_id(g.pci_bus_id))
            for g in gpus
            if g.mig_enabled
            for m in g.mig_instances
        ]
    )
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        if any(g.mig_enabled for g in gpus):
            return None, (
                "a GPU is in MIG mode; which instance CUDA shows cannot be told without "
                "cuda-bindings (pip install cuda-python) or CUDA_VISIBLE_DEVICES=MIG-<uuid>"
            )
        if not pci_order:
            return None, (
                "CUDA orders unlike GPUs fastest-first, which NVML cannot tell; set "
                "CUDA_DEVICE_ORDER=PCI_BUS_ID or install cuda-bindings"
            )
        return [
            CudaDevice(i, normal_bus_id(g.pci_bus_id), bare_uuid(g.uuid)) for i, g in enumerate(order)
        ], ""
    out: list[CudaDevice] = []
    for entry in (e.strip() for e in listed.split(",")):
        if entry.lstrip("-").isdigit():
            if not pci_order:
                return None, (
                    "CUDA_VISIBLE_DEVICES lists ordinals of unlike GPUs in CUDA's "
                    "fastest-first order, which NVML cannot tell; list UUIDs, set "
                    "CUDA_DEVICE_ORDER=PCI_BUS_ID or install cuda-bindings"
                )
            if not 0 <= int(entry) < len(order):
                break
            g = order[int(entry)]
            found = (g.uuid or "", bare_uuid(g.uuid), normal_bus_id(g.pci_bus_id))
        else:
            hits = [u for u in units if entry and u[0].lower().startswith(entry.lower())]
            if len(hits) != 1:
                break
            found = hits[0]
        if any(d.uuid == found[1] and d.pci_bus_id == found[2] for d in out):
            break  # a repeated device: CUDA stops there too
        out.append(CudaDevice(len(out), found[2], found[1]))
    return out, ""


def placements(
    gpus: Sequence[NvidiaGPU], env: os._Environ[str] | dict[str, str] | None = None
) -> tuple[dict[int, Placement], dict[int, str]]:
    """:func:`place` against CUDA's own device list when cuda-bindings is installed, else
    against :func:`visible_from_env`; every GPU left out has its reason."""
    try:
        cuda = load()
    except Exception:  # ImportError, or bindings that fail to load: the environment decides
        cuda = None
    if cuda is not None:
        try:
            return place(gpus, cuda.devices())
        except CudaError as exc:
            return {}, {g.index: f"CUDA sees no device ({exc.name})" for g in gpus}
    devices, why = visible_from_env(gpus, env)
    if devices is None:
        return {}, {g.index: why for g in gpus}
    return place(gpus, devices)


def load() -> Cudart:
    """The CUDA runtime bindings; ImportError when cuda-python is not installed."""
    try:
        rt = importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        rt = importlib.import_module("cuda.cudart")  # cuda-python < 12.6.1
    return Cudart(rt)


def _native_handle(obj: Any) -> int:
    """The address behind a cuda-python handle object (a stream), as an int.

    cuda-bindings 12.9.1 and 13.0 deprecate ``int(handle)`` in favour of
    ``cuda.bindings.utils.get_cuda_native_handle``, which raises TypeError for a
    type it does not know; older versions only have ``int``.
    """
    try:
        utils = importlib.import_module("cuda.bindings.utils")
        get = getattr(utils, "get_cuda_native_handle", None)
        if get is not None:
            return int(get(obj))
    except (ImportError, TypeError):
        pass
    return int(obj)


def bare_uuid(uuid: str | None) -> str | None:
    """A GPU or MIG UUID without its "GPU-"/"MIG-" prefix, lower case; None when absent."""
    if not uuid:
        return None
    text = uuid.strip().lower()
    for prefix in ("gpu-", "mig-"):
        text = text.removeprefix(prefix)
    return text or None


@dataclass(frozen=True)
class CudaDevice:
    """A device as CUDA numbers it in this process (after CUDA_VISIBLE_DEVICES)."""

    ordinal: int
    pci_bus_id: str | None  # "0000:3b:00.0"; a MIG instance shares its GPU's
    uuid: str | None  # bare hex, as bare_uuid() spells it; None when unreadable


@dataclass(frozen=True)
class Placement:
    """Where an NVML GPU is for CUDA: its ordinal and, in MIG mode, the instance."""

    gpu: NvidiaGPU
    ordinal: int
    mig: MigInstance | None = None

    @property
    def memory_mb(self) -> int:
        """What a process on it can use: the MIG instance's memory, or the whole card's."""
        return self.mig.memory_total_mb if self.mig is not None else self.gpu.memory_total_mb

    @property
    def label(self) -> str:
        return f"{self.gpu.name} MIG {self.mig.name}" if self.mig is not None else self.gpu.name


def place(
    gpus: Sequence[NvidiaGPU], devices: Sequence[CudaDevice]
) -> tuple[dict[int, Placement], dict[int, str]]:
    """Match NVML's GPUs to CUDA's devices: ({NVML index: placement}, {NVML index: why none}).

    The PCI bus id decides; the UUID is the second key (a truncated UUID reads as
    None and matches nothing). A GPU in MIG mode is matched through its
    instances' UUIDs, since CUDA lists instances, not the GPU. A GPU CUDA does
    not see (CUDA_VISIBLE_DEVICES) gets a reason, never a guessed ordinal.
    """
    by_bus = {d.pci_bus_id: d for d in devices if d.pci_bus_id}
    by_uuid = {d.uuid: d for d in devices if d.uuid}
    placed: dict[int, Placement] = {}
    why: dict[int, str] = {}
    for gpu in gpus:
        bus, uuid = normal_bus_id(gpu.pci_bus_id), bare_uuid(gpu.uuid)
        if gpu.mig_enabled:
            hit = next(
                ((m, by_uuid[u]) for m in gpu.mig_instances if (u := bare_uuid(m.uuid)) and u in by_uuid),
                None,
            )
            if hit is None and len(gpu.mig_instances) == 1 and bus in by_bus and by_bus[bus].uuid is None:
                hit = (gpu.mig_instances[0], by_bus[bus])
            if hit is not None:
                placed[gpu.index] = Placement(gpu, hit[1].ordinal, hit[0])
            elif not gpu.mig_instances:
                why[gpu.index] = f"{gpu.name} is in MIG mode and has no MIG instance to run on"
            else:
                why[gpu.index] = (
                    f"{gpu.name} is in MIG mode and CUDA sees none of its "
                    f"{len(gpu.mig_instances)} instance(s) (choose one with "
                    "CUDA_VISIBLE_DEVICES=MIG-<uuid>)"
                )
            continue
        device = (by_bus.get(bus) if bus else None) or (by_uuid.get(uuid) if uuid else None)
        if device is not None:
            placed[gpu.index] = Placement(gpu, device.ordinal)
        elif not bus and not uuid:
            why[gpu.index] = (
                f"NVML gave neither a PCI bus id nor a UUID for {gpu.name}, so its CUDA device cannot be told"
            )
        else:
            why[gpu.index] = (
                f"CUDA does not see {gpu.name} (NVML index {gpu.index}); "
                "CUDA_VISIBLE_DEVICES hides it, or it is not usable by CUDA"
            )
    return placed, why


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
        """The device's UUID without the ``GPU-``/``MIG-`` prefix; "" when unreadable.

        ``cudaUUID_t.bytes`` may come back shorter than 16 bytes (cut at a zero
        byte); such a UUID is unreadable, never a prefix to match on.
        """
        prop = self._check("cudaGetDeviceProperties", self.rt.cudaGetDeviceProperties(ordinal))
        raw: Any = getattr(getattr(prop, "uuid", None), "bytes", b"")
        try:
            raw = raw.encode("latin-1") if isinstance(raw, str) else bytes(raw)
        except (TypeError, ValueError):
            return ""
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}" if len(h) == 32 else ""

    def device_bus_id(self, ordinal: int) -> str | None:
        """The device's PCI address, "0000:3b:00.0"; None when unreadable."""
        try:
            raw = self._check("cudaDeviceGetPCIBusId", self.rt.cudaDeviceGetPCIBusId(32, ordinal))
        except Exception:  # bindings without the function, or the call failing: not a key
            return None
        text = raw.decode("ascii", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
        return normal_bus_id(text.split("\x00")[0])

    def devices(self) -> list[CudaDevice]:
        """Every device CUDA sees in this process, in CUDA's order."""
        return [
            CudaDevice(o, self.device_bus_id(o), bare_uuid(self.device_uuid(o)))
            for o in range(self.device_count())
        ]

    def place(self, gpu: NvidiaGPU) -> Placement:
        """Where CUDA has the GPU NVML describes; ValueError, saying why, when CUDA has it nowhere.

        CUDA numbers devices fastest-first and after CUDA_VISIBLE_DEVICES; NVML in
        PCI order over all devices. They agree only by accident, so the PCI bus id
        (then the UUID) decides, and there is no guess.
        """
        placed, why = place([gpu], self.devices())
        if gpu.index in placed:
            return placed[gpu.index]
        raise ValueError(why.get(gpu.index, f"CUDA does not see {gpu.name}"))

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
        self._check("cudaMemcpyAsync", self.rt.cudaMemcpyAsync(dst, src, nbytes, self._h2d, stream))

    def copy_to_host(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self._check("cudaMemcpyAsync", self.rt.cudaMemcpyAsync(dst, src, nbytes, self._d2h, stream))

    def synchronize(self, stream: Any) -> None:
        self._check("cudaStreamSynchronize", self.rt.cudaStreamSynchronize(stream))
