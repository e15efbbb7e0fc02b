"""NVIDIA GPUs through NVML (pynvml from nvidia-ml-py, or any object with its API).

No NVML library and no loaded driver are ordinary answers ("absent"), not
errors: most machines have no NVIDIA GPU, and Jetson boards have no NVML.
"""

from __future__ import annotations

import importlib
from typing import Any

from .model import NvidiaGPU, ProbeNote

PROBE = "nvml"

# NVML return codes (nvml.h), matched by value so any pynvml-like module works.
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13


class NvmlMissing(Exception):
    """pynvml itself is not importable."""


def load_pynvml() -> Any:
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise NvmlMissing("pynvml is not installed (pip install nvidia-ml-py)") from None


def query(nvml: Any | None) -> tuple[NvidiaGPU, ...]:
    """All GPUs NVML lists. Blocking; run it under :mod:`probes.bounded`."""
    if nvml is None:
        nvml = load_pynvml()
    nvml.nvmlInit()
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        try:
            cuda = cuda_version_string(nvml.nvmlSystemGetCudaDriverVersion())
        except Exception:
            cuda = None
        gpus = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            try:
                uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            except Exception:
                uuid = None
            major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(NvidiaGPU(
                index=index,
                name=_text(nvml.nvmlDeviceGetName(handle)),
                uuid=uuid,
                memory_total_mb=int(nvml.nvmlDeviceGetMemoryInfo(handle).total) // (1 << 20),
                compute_capability=(int(major), int(minor)),
                driver_version=driver,
                cuda_driver_version=cuda,
            ))
        return tuple(gpus)
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def found_note(gpus: tuple[NvidiaGPU, ...]) -> ProbeNote:
    if not gpus:
        return ProbeNote(PROBE, "absent", "no device: NVML is loaded but lists no GPU")
    names = ", ".join(g.name for g in gpus)
    return ProbeNote(PROBE, "ok", f"{len(gpus)} GPU(s): {names}; driver {gpus[0].driver_version}")


def failure_note(exc: BaseException) -> ProbeNote:
    """Explain why the NVML query failed, telling normal absence from real errors."""
    if isinstance(exc, NvmlMissing):
        return ProbeNote(PROBE, "absent", f"library missing: {exc}")
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
