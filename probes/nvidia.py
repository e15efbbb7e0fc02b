"""NVIDIA GPUs through NVML (pynvml from nvidia-ml-py, or any object with its API).

No NVML library and no loaded driver are ordinary answers ("absent"), not
errors: most machines have no NVIDIA GPU, and Jetson boards have no NVML.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from . import bounded
from .records import MigInstance, NvidiaGPU, ProbeNote, Status

PROBE = "nvml"

# How long the live NVML query may take. nvmlInit alone can take seconds on a host
# without persistence mode (the driver initialises every GPU), so NVML gets its own
# bound instead of sharing one with quicker probes.
TIMEOUT_S = 10.0

# NVML return codes (nvml.h), matched by value so any pynvml-like module works.
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_DEVICE_MIG_ENABLE = 1


class NvmlMissing(Exception):
    """pynvml itself is not importable."""


class NvmlTimeout(Exception):
    """The live NVML query did not answer within :data:`TIMEOUT_S`."""


class NvmlGpus(tuple[NvidiaGPU, ...]):
    """The GPUs NVML listed, and ``problems``: one line per GPU or field it could not read.

    A GPU that fails (no permission, fallen off the bus) is left out and named in
    ``problems``; the others are kept.
    """

    problems: tuple[str, ...]
    denied: bool  # every problem was NVML_ERROR_NO_PERMISSION

    def __new__(
        cls, gpus: Iterable[NvidiaGPU] = (), problems: Iterable[str] = (), denied: bool = False
    ) -> NvmlGpus:
        obj = super().__new__(cls, gpus)
        obj.problems = tuple(problems)
        obj.denied = denied
        return obj


# What a loaded NVIDIA kernel driver shows on Linux: its /proc entry and control device,
# or under WSL 2 the paravirtual GPU device through which NVML reaches the host's driver.
DRIVER_PATHS = ("proc/driver/nvidia", "dev/nvidiactl", "dev/dxg")


# Set (to anything) to ask NVML even where no driver shows: for a stand-in pynvml on a
# machine without one (scripts/gpu_check.sh's dry run).
ASK_ALWAYS_ENV = "PROBES_ASK_NVML"


def driver_present(system: Any) -> bool:
    """Whether NVML can find a driver here, read from files (``system``: a live
    :class:`~probes.system.SystemView` on Linux), or ``PROBES_ASK_NVML`` is set. Without
    one, NVML fails with "driver not loaded" or "library not found"; importing pynvml to
    hear it costs ~25 ms (ctypes), paid by every process's first probe."""
    return bool(os.environ.get(ASK_ALWAYS_ENV)) or any(system.exists(p) for p in DRIVER_PATHS)


def load_pynvml() -> Any:
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise NvmlMissing("pynvml is not installed (pip install nvidia-ml-py)") from None


_live_lock = threading.Lock()
_live: Future[NvmlGpus] | None = None


def query(nvml: Any | None) -> NvmlGpus:
    """All GPUs NVML lists. Blocking; run it under :mod:`probes.bounded`.

    With ``nvml`` None the real pynvml is asked, at most :data:`TIMEOUT_S`
    seconds (NvmlTimeout after that); a query still running from an earlier call
    is joined, not started again, so a slow ``nvmlInit`` is never stacked.
    """
    if nvml is not None:
        return _query(nvml)
    global _live
    with _live_lock:
        if _live is None or _live.done():
            _live = bounded.start(lambda: _query(load_pynvml()), "nvml-live")
        future = _live
    try:
        return future.result(timeout=TIMEOUT_S)
    except FutureTimeout:
        raise NvmlTimeout(
            f"NVML gave no answer within {TIMEOUT_S:g} s "
            "(nvmlInit is slow without persistence mode: nvidia-smi -pm 1)"
        ) from None


def _query(nvml: Any) -> NvmlGpus:
    nvml.nvmlInit()
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        try:
            cuda = cuda_version_string(nvml.nvmlSystemGetCudaDriverVersion())
        except Exception:
            cuda = None
        gpus: list[NvidiaGPU] = []
        problems: list[str] = []
        codes: set[Any] = set()
        for index in range(int(nvml.nvmlDeviceGetCount())):
            try:  # one GPU failing (no permission, lost) must not hide the others
                gpus.append(_device(nvml, index, driver, cuda, problems))
            except Exception as exc:
                codes.add(getattr(exc, "value", None))
                problems.append(f"GPU {index} left out: {_describe(exc)}")
        return NvmlGpus(gpus, problems, denied=codes == {NVML_ERROR_NO_PERMISSION})
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def _device(nvml: Any, index: int, driver: str, cuda: str | None, problems: list[str]) -> NvidiaGPU:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    try:
        uuid: str | None = _text(nvml.nvmlDeviceGetUUID(handle))
    except Exception:
        uuid = None
    try:
        bus_id = normal_bus_id(_text(nvml.nvmlDeviceGetPciInfo(handle).busId))
    except Exception:
        bus_id = None
    major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
    mig_enabled, instances = _mig(nvml, handle, index, problems)
    return NvidiaGPU(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        uuid=uuid,
        memory_total_mb=int(nvml.nvmlDeviceGetMemoryInfo(handle).total) // (1 << 20),
        compute_capability=(int(major), int(minor)),
        driver_version=driver,
        cuda_driver_version=cuda,
        pci_bus_id=bus_id,
        mig_enabled=mig_enabled,
        mig_instances=instances,
    )


def _mig(
    nvml: Any, handle: Any, index: int, problems: list[str]
) -> tuple[bool | None, tuple[MigInstance, ...]]:
    """(MIG mode now, its instances); (None, ()) where the GPU or driver has no MIG."""
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except Exception:  # NOT_SUPPORTED on GPUs without MIG, FUNCTION_NOT_FOUND on old drivers
        return None, ()
    if int(current) != NVML_DEVICE_MIG_ENABLE:
        return False, ()
    instances: list[MigInstance] = []
    try:
        for slot in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except Exception as exc:
                if getattr(exc, "value", None) == NVML_ERROR_NOT_FOUND:
                    continue  # an empty slot
                raise
            try:
                uuid: str | None = _text(nvml.nvmlDeviceGetUUID(mig))
            except Exception:
                uuid = None
            instances.append(
                MigInstance(
                    index=slot,
                    uuid=uuid,
                    name=_text(nvml.nvmlDeviceGetName(mig)),
                    memory_total_mb=int(nvml.nvmlDeviceGetMemoryInfo(mig).total) // (1 << 20),
                )
            )
    except Exception as exc:
        problems.append(f"GPU {index}: MIG is on but its instances are unreadable: {_describe(exc)}")
    return True, tuple(instances)


def normal_bus_id(text: str | None) -> str | None:
    """A PCI address in one spelling: NVML's "00000000:3B:00.0" and CUDA's "0000:3b:00.0"
    both become "0000:3b:00.0". None when ``text`` is not a PCI address."""
    m = re.fullmatch(
        r"\s*(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])\s*",
        (text or "").rstrip("\x00"),
    )
    if m is None:
        return None
    domain, bus, dev, fn = m.groups()
    return f"{int(domain or '0', 16):04x}:{int(bus, 16):02x}:{int(dev, 16):02x}.{fn}"


def found_note(gpus: tuple[NvidiaGPU, ...]) -> ProbeNote:
    problems = tuple(getattr(gpus, "problems", ()))
    bad: Status = "permission" if getattr(gpus, "denied", False) else "error"
    if not gpus and problems:
        return ProbeNote(PROBE, bad, "no GPU readable: " + "; ".join(problems))
    if not gpus:
        return ProbeNote(PROBE, "absent", "no device: NVML is loaded but lists no GPU")
    names = ", ".join(
        g.name + (f" (MIG: {len(g.mig_instances)} instance(s))" if g.mig_enabled else "") for g in gpus
    )
    detail = f"{len(gpus)} GPU(s): {names}; driver {gpus[0].driver_version}"
    if problems:
        return ProbeNote(PROBE, bad, detail + "; but " + "; ".join(problems))
    return ProbeNote(PROBE, "ok", detail)


def failure_note(exc: BaseException) -> ProbeNote:
    """Explain why the NVML query failed, telling normal absence from real errors."""
    if isinstance(exc, NvmlMissing):
        return ProbeNote(PROBE, "absent", f"library missing: {exc}")
    if isinstance(exc, NvmlTimeout):
        return ProbeNote(PROBE, "timeout", str(exc))
    code = getattr(exc, "value", None)
    if code == NVML_ERROR_LIBRARY_NOT_FOUND:
        return ProbeNote(PROBE, "absent", "no driver: the NVML library (libnvidia-ml) is not installed")
    if code == NVML_ERROR_DRIVER_NOT_LOADED:
        return ProbeNote(PROBE, "absent", "no driver: the NVIDIA kernel driver is not loaded")
    if code == NVML_ERROR_NO_PERMISSION:
        return ProbeNote(PROBE, "permission", "permission denied by NVML")
    if isinstance(exc, PermissionError):
        return ProbeNote(PROBE, "permission", f"permission denied: {exc}")
    return ProbeNote(PROBE, "error", f"NVML failed: {_describe(exc)}")


def cuda_version_string(version: int) -> str:
    """NVML's integer CUDA version (12040) as "12.4"."""
    version = int(version)
    return f"{version // 1000}.{(version % 1000) // 10}"


def _text(value: Any) -> str:
    """Old pynvml returns bytes, new returns str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # pynvml's __str__ calls into the library, which may be gone
        text = ""
    code = getattr(exc, "value", None)
    label = type(exc).__name__ + (f" {code}" if code is not None else "")
    return f"{label}: {text}" if text else label
