"""Recorded machines, for testing anything that decides from hardware.

A recorded machine is a directory::

    probes-meta.json   {"machine": "x86_64", "os": "Linux"}
    proc/..., sys/...  the files the probes read, at their usual paths
    nvml.json          optional: what NVML answers (see FakeNVML.from_dict), MIG included;
                       absent means the machine has no NVML library
    cuda.json          optional, read by tests and never by the probes: what CUDA saw in the
                       recording process, {"env": {"CUDA_VISIBLE_DEVICES": "2,3"}, "devices":
                       [{"ordinal": 0, "pci_bus_id": ..., "uuid": ..., "name": ..., "memory_bytes": ...}]}
    *.json             other optional answers of runtimes (openvino.json), read by their
                       backends' tests, never by the probes

``replay(directory)`` detects it; ``record(directory)`` writes the live machine
in that form, so a user's machine can become a test case.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from . import bounded, nvidia
from .detect import DEFAULT_TIMEOUT_S, _detect, detect
from .records import Hardware, NvidiaGPU
from .system import META_FILE, LiveSystem

NVML_ERRORS = {
    "UNINITIALIZED": 1,
    "NOT_SUPPORTED": 3,
    "NO_PERMISSION": nvidia.NVML_ERROR_NO_PERMISSION,
    "NOT_FOUND": 6,
    "DRIVER_NOT_LOADED": nvidia.NVML_ERROR_DRIVER_NOT_LOADED,
    "LIBRARY_NOT_FOUND": nvidia.NVML_ERROR_LIBRARY_NOT_FOUND,
    "FUNCTION_NOT_FOUND": nvidia.NVML_ERROR_FUNCTION_NOT_FOUND,
    "GPU_IS_LOST": 15,
    "LIB_RM_VERSION_MISMATCH": 18,
    "UNKNOWN": 999,
}


class FakeNVMLError(Exception):
    """Like ``pynvml.NVMLError``: carries the NVML return code in ``.value``."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        names = {v: k for k, v in NVML_ERRORS.items()}
        return f"NVML_ERROR_{names.get(self.value, self.value)}"


class FakeNVML:
    """Stands in for the ``pynvml`` module: the functions the probes call, answering from data.

    ``block``: an event ``nvmlInit`` waits on before answering, to emulate a hung driver.
    ``names_as_bytes``: answer strings as bytes, like pynvml before 11.5.
    """

    NVMLError = FakeNVMLError

    def __init__(
        self,
        devices: list[dict[str, Any]] | None = None,
        driver_version: str = "",
        cuda_driver_version: int | None = None,
        error: str | None = None,
        block: threading.Event | None = None,
        names_as_bytes: bool = False,
    ) -> None:
        self.devices = list(devices or [])
        self.driver_version = driver_version
        self.cuda_driver_version = cuda_driver_version
        self.error = error
        self.block = block
        self.names_as_bytes = names_as_bytes
        self.initialised = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FakeNVML:
        """From ``{"driver_version": "580.159.04", "cuda_driver_version": 13000, "devices": [{"name": ...,
        "uuid": ..., "memory_total_bytes": ..., "compute_capability": [9, 0]}]}``,
        or ``{"error": "LIBRARY_NOT_FOUND"}`` (any key of NVML_ERRORS).

        Optional per device: ``"pci_bus_id": "00000000:3B:00.0"``; ``"error": "GPU_IS_LOST"``
        (getting its handle fails) or ``"errors": {"nvmlDeviceGetMemoryInfo": "NO_PERMISSION"}``
        (that call fails); ``"mig_mode": 1`` (absent: the GPU has no MIG) with ``"mig_devices":
        [{"slot": 0, "uuid": "MIG-...", "name": ..., "memory_total_bytes": ...}]`` and
        ``"max_mig_devices"`` (default 7)."""
        return cls(
            devices=data.get("devices", []),
            driver_version=data.get("driver_version", ""),
            cuda_driver_version=data.get("cuda_driver_version"),
            error=data.get("error"),
        )

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> FakeNVML:
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def failing(cls, error: str = "LIBRARY_NOT_FOUND") -> FakeNVML:
        """NVML that fails to initialise, as on a machine without the NVIDIA driver."""
        return cls(error=error)

    def _str(self, value: str) -> str | bytes:
        return value.encode() if self.names_as_bytes else value

    def _check(self) -> None:
        if not self.initialised:
            raise FakeNVMLError(NVML_ERRORS["UNINITIALIZED"])

    def nvmlInit(self) -> None:
        if self.block is not None:
            self.block.wait()
        if self.error:
            raise FakeNVMLError(NVML_ERRORS.get(self.error, NVML_ERRORS["UNKNOWN"]))
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._check()
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        self._check()
        return self._str(self.driver_version)

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._check()
        if self.cuda_driver_version is None:
            raise FakeNVMLError(NVML_ERRORS["FUNCTION_NOT_FOUND"])
        return self.cuda_driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        self._check()
        try:
            device = self.devices[index]
        except IndexError:
            raise FakeNVMLError(2) from None  # NVML_ERROR_INVALID_ARGUMENT
        if device.get("error"):
            raise FakeNVMLError(NVML_ERRORS.get(device["error"], NVML_ERRORS["UNKNOWN"]))
        return device

    def _call(self, call: str, handle: dict[str, Any]) -> None:
        self._check()
        error = (handle.get("errors") or {}).get(call)
        if error:
            raise FakeNVMLError(NVML_ERRORS.get(error, NVML_ERRORS["UNKNOWN"]))

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> str | bytes:
        self._call("nvmlDeviceGetName", handle)
        return self._str(handle["name"])

    def nvmlDeviceGetUUID(self, handle: dict[str, Any]) -> str | bytes:
        self._call("nvmlDeviceGetUUID", handle)
        if handle.get("uuid") is None:
            raise FakeNVMLError(NVML_ERRORS["NOT_SUPPORTED"])
        return self._str(handle["uuid"])

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> SimpleNamespace:
        self._call("nvmlDeviceGetMemoryInfo", handle)
        total = int(handle["memory_total_bytes"])
        return SimpleNamespace(total=total, free=total, used=0)

    def nvmlDeviceGetCudaComputeCapability(self, handle: dict[str, Any]) -> tuple[int, int]:
        self._call("nvmlDeviceGetCudaComputeCapability", handle)
        major, minor = handle["compute_capability"]
        return int(major), int(minor)

    def nvmlDeviceGetPciInfo(self, handle: dict[str, Any]) -> SimpleNamespace:
        self._call("nvmlDeviceGetPciInfo", handle)
        if handle.get("pci_bus_id") is None:
            raise FakeNVMLError(NVML_ERRORS["NOT_SUPPORTED"])
        return SimpleNamespace(busId=self._str(handle["pci_bus_id"]))

    def nvmlDeviceGetMigMode(self, handle: dict[str, Any]) -> tuple[int, int]:
        self._call("nvmlDeviceGetMigMode", handle)
        if "mig_mode" not in handle:
            raise FakeNVMLError(NVML_ERRORS["NOT_SUPPORTED"])
        return int(handle["mig_mode"]), int(handle["mig_mode"])

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: dict[str, Any]) -> int:
        self._call("nvmlDeviceGetMaxMigDeviceCount", handle)
        return int(handle.get("max_mig_devices", 7))

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: dict[str, Any], index: int) -> dict[str, Any]:
        self._call("nvmlDeviceGetMigDeviceHandleByIndex", handle)
        for mig in handle.get("mig_devices") or ():
            if int(mig.get("slot", -1)) == index:
                return mig
        raise FakeNVMLError(NVML_ERRORS["NOT_FOUND"])


def replay(directory: str | os.PathLike[str], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Hardware:
    """``detect()`` on a recorded machine, with its NVML answers."""
    directory = Path(directory)
    nvml_file = directory / "nvml.json"
    nvml = FakeNVML.from_json(nvml_file) if nvml_file.exists() else FakeNVML.failing()
    return detect(root=directory, nvml=nvml, timeout_s=timeout_s)


class _RecordingSystem(LiveSystem):
    """The live system, remembering every path the probes touched."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, str] = {}
        self.dirs: set[str] = set()

    def read(self, rel: str) -> str | None:
        text = super().read(rel)
        if text is not None:
            self.files[rel] = text
        return text

    def exists(self, rel: str) -> bool:
        found = super().exists(rel)
        if found:
            if self.path(rel).is_dir():
                self.dirs.add(rel)
            else:
                self.read(rel)
        return found

    def listdir(self, rel: str) -> list[str]:
        names = super().listdir(rel)
        if names or self.path(rel).is_dir():
            self.dirs.add(rel)
        return names


def record(directory: str | os.PathLike[str], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Hardware:
    """Write the live machine as a recorded machine into ``directory``; return what was detected there.

    Symlinks (``/sys/class/drm/card0/device``) become plain directories; the
    PCI address survives in ``uevent``. NVML is recorded only as far as
    ``Hardware`` keeps it: GPUs found, or no library.
    """
    directory = Path(directory)
    system = _RecordingSystem()
    nvml_future = bounded.start(lambda: nvidia.query(None), "nvml")
    _detect(system, FakeNVML.failing(), timeout_s)

    for rel in system.dirs:
        (directory / rel).mkdir(parents=True, exist_ok=True)
    for rel, text in system.files.items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    affinity = system.affinity()
    status = directory / "proc/self/status"
    status.parent.mkdir(parents=True, exist_ok=True)
    status.write_text(f"Cpus_allowed_list:\t{_cpu_list(affinity)}\n" if affinity else "")
    meta = {"machine": system.machine(), "os": system.os_name()}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    gpus: tuple[NvidiaGPU, ...]
    try:
        gpus = nvml_future.result(timeout=max(timeout_s, nvidia.TIMEOUT_S))
    except Exception:
        gpus = ()
    nvml_data: dict[str, Any] = {"error": "LIBRARY_NOT_FOUND"}
    if gpus:
        nvml_data = {
            "driver_version": gpus[0].driver_version,
            "cuda_driver_version": _cuda_int(gpus[0].cuda_driver_version),
            "devices": [nvml_device_dict(g) for g in gpus],
        }
    (directory / "nvml.json").write_text(json.dumps(nvml_data, indent=2) + "\n")
    return replay(directory, timeout_s=timeout_s)


def nvml_device_dict(gpu: NvidiaGPU) -> dict[str, Any]:
    """One GPU in the form FakeNVML.from_dict reads."""
    out: dict[str, Any] = {
        "name": gpu.name,
        "uuid": gpu.uuid,
        "memory_total_bytes": gpu.memory_total_mb << 20,
        "compute_capability": list(gpu.compute_capability),
    }
    if gpu.pci_bus_id:
        out["pci_bus_id"] = gpu.pci_bus_id
    if gpu.mig_enabled is not None:
        out["mig_mode"] = int(gpu.mig_enabled)
        out["mig_devices"] = [
            {"slot": m.index, "uuid": m.uuid, "name": m.name, "memory_total_bytes": m.memory_total_mb << 20}
            for m in gpu.mig_instances
        ]
    return out


def _cpu_list(cpus: frozenset[int]) -> str:
    ranges, ordered = [], sorted(cpus)
    start = prev = ordered[0]
    for cpu in ordered[1:] + [None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        ranges.append(f"{start}-{prev}" if prev != start else f"{start}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(ranges)


def _cuda_int(version: str | None) -> int | None:
    if not version:
        return None
    major, _, minor = version.partition(".")
    return int(major) * 1000 + int(minor or 0) * 10
