"""``detect()``: run every probe, each bounded and soft-failing, and assemble a Hardware."""

from __future__ import annotations

import logging
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from . import bounded, cgroup, devices, nvidia
from . import cpu as cpu_probes
from .records import CPU, Accelerator, CpuCluster, Hardware, NvidiaGPU, ProbeNote
from .system import SystemView, open_system

logger = logging.getLogger("probes")

DEFAULT_TIMEOUT_S = 3.0
_MAX_DETAIL = 300

T = TypeVar("T")

_cache_lock = threading.Lock()
_cached: Hardware | None = None


def detect(
    root: str | os.PathLike[str] = "/",
    nvml: Any | None = None,
    refresh: bool = False,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Hardware:
    """Describe the machine. Never raises; every probe leaves a note in ``Hardware.notes``.

    root:  the directory that plays the role of ``/``. Anything but ``/`` is a
           recorded machine (see :mod:`probes.system`): no live syscall is made
           for it, and NVML is consulted only through ``nvml``.
    nvml:  an object with pynvml's API to use instead of ``pynvml``.
    refresh: probe again instead of returning the cached answer.
    timeout_s: how long NVML may take (it runs beside the file reads).

    Which devices an inference runtime can drive is not a hardware fact: each
    backend asks its own runtime (``autoinfer.backends``). The probes import no
    runtime.

    The answer for the defaults (the live machine, real NVML) is computed once
    per process and shared between threads.
    """
    system = open_system(root)
    if not (system.live and nvml is None and timeout_s == DEFAULT_TIMEOUT_S):
        return _detect_safely(system, nvml, timeout_s)
    global _cached
    with _cache_lock:
        if _cached is None or refresh:
            _cached = _detect_safely(system, None, timeout_s)
        return _cached


def detected() -> Hardware | None:
    """The live machine's answer if ``detect()`` has computed it in this process, else None
    (nothing is probed)."""
    return _cached


def _detect_safely(system: SystemView, nvml: Any | None, timeout_s: float) -> Hardware:
    try:
        return _detect(system, nvml, timeout_s)
    except Exception as exc:  # a bug in the assembly itself: still answer
        logger.exception("hardware detection failed")
        cpu = CPU("unknown", "unknown", "unknown", 1, 1, None, 1, (), None, (CpuCluster((0,), None),), None)
        note = ProbeNote("detect", "error", f"{type(exc).__name__}: {exc}")
        return Hardware(cpu=cpu, nvidia_gpus=(), accelerators=(), os="unknown", notes=(note,))


class _Notes:
    """Collects one note per probe and runs probes so that none can raise."""

    def __init__(self) -> None:
        self.items: list[ProbeNote] = []

    def add(self, note: ProbeNote) -> None:
        if len(note.detail) > _MAX_DETAIL:
            note = ProbeNote(note.probe, note.status, note.detail[:_MAX_DETAIL] + "...")
        self.items.append(note)
        level = logging.DEBUG if note.status in ("ok", "absent") else logging.INFO
        logger.log(level, "probe %s: %s: %s", note.probe, note.status, note.detail)

    def has(self, probe: str) -> bool:
        return any(n.probe == probe for n in self.items)

    def guard(self, probe: str, fn: Callable[[], T], fallback: T) -> T:
        """``fn()``, or ``fallback`` and a note saying why it failed."""
        try:
            return fn()
        except PermissionError as exc:
            self.add(ProbeNote(probe, "permission", f"permission denied: {exc}"))
        except Exception as exc:
            self.add(ProbeNote(probe, "error", f"{type(exc).__name__}: {exc}"))
        return fallback

    def run(self, probe: str, fn: Callable[[], tuple[T, ProbeNote]], fallback: T) -> T:
        """For probes that return ``(value, note)``."""

        def call() -> T:
            value, note = fn()
            self.add(note)
            return value

        return self.guard(probe, call, fallback)


def _detect(system: SystemView, nvml: Any | None, timeout_s: float) -> Hardware:
    notes = _Notes()
    started = time.monotonic()

    # The query that can block goes first, in parallel with the file reads. NVML has
    # its own bound: nvmlInit can take seconds without persistence mode, so the live
    # default waits up to nvidia.TIMEOUT_S; an explicit ``timeout_s`` is kept as given.
    linux = sys.platform.startswith("linux")
    no_driver = system.live and nvml is None and linux and not nvidia.driver_present(system)
    nvml_future: Future[tuple[NvidiaGPU, ...]] | None = (
        bounded.start(lambda: nvidia.query(nvml), "nvml")
        if (system.live or nvml is not None) and not no_driver
        else None
    )

    cpu, os_name = _probe_cpu(system, notes)

    accelerators: list[Accelerator] = []
    accelerators += notes.run("drm", lambda: devices.drm_accelerators(system), [])
    accelerators += notes.run("accel", lambda: devices.accel_accelerators(system), [])
    accelerators += notes.run("devicetree", lambda: devices.devicetree_accelerators(system), [])

    gpus: tuple[NvidiaGPU, ...] = ()
    if no_driver:
        notes.add(
            ProbeNote(
                "nvml",
                "absent",
                "no driver: no NVIDIA kernel driver is loaded (no /proc/driver/nvidia, "
                "/dev/nvidiactl or /dev/dxg), so NVML was not asked",
            )
        )
    elif nvml_future is None:
        notes.add(
            ProbeNote("nvml", "absent", "not consulted: recorded machine given without an NVML stand-in")
        )
    else:
        wait_s = (
            max(timeout_s, nvidia.TIMEOUT_S)
            if (system.live and timeout_s == DEFAULT_TIMEOUT_S)
            else timeout_s
        )
        gpus = _wait(notes, "nvml", nvml_future, started, wait_s, nvidia.found_note, nvidia.failure_note, ())
    if gpus:  # the same cards seen through nvidia-drm; NVML describes them better
        accelerators = [a for a in accelerators if not (a.vendor == "nvidia" and a.source == "drm")]

    return Hardware(
        cpu=cpu, nvidia_gpus=gpus, accelerators=tuple(accelerators), os=os_name, notes=tuple(notes.items)
    )


def _wait(
    notes: _Notes,
    probe: str,
    future: Future[T],
    started: float,
    timeout_s: float,
    ok_note: Callable[[T], ProbeNote],
    failure_note: Callable[[BaseException], ProbeNote],
    fallback: T,
) -> T:
    remaining = max(0.0, timeout_s - (time.monotonic() - started))
    try:
        value = future.result(timeout=remaining)
    except FutureTimeout:
        notes.add(
            ProbeNote(
                probe,
                "timeout",
                f"no answer within {timeout_s:g} s, left running in the background; "
                "detect(refresh=True, timeout_s=...) asks again",
            )
        )
        return fallback
    except Exception as exc:
        notes.add(failure_note(exc))
        return fallback
    notes.add(ok_note(value))
    return value


def _probe_platform(system: SystemView, notes: _Notes, info: Any, has_cpuinfo: bool) -> tuple[str, str]:
    """Architecture and OS."""
    machine = notes.guard("platform", system.machine, None)
    os_name = notes.guard("platform", system.os_name, None) or ("Linux" if has_cpuinfo else "unknown")
    arch = cpu_probes.normalise_arch(machine)
    if arch is not None:
        where = "platform.machine()" if system.live else "probes-meta.json"
        notes.add(ProbeNote("platform", "ok", f"{arch} on {os_name} from {where}"))
    else:
        guessed = cpu_probes.guess_arch(info)
        arch = guessed or "unknown"
        how = f"{guessed} guessed from /proc/cpuinfo" if guessed else "none recognisable in /proc/cpuinfo"
        notes.add(ProbeNote("platform", "absent", f"no recorded architecture; {how}"))
    return arch, os_name


def _probe_cpu(system: SystemView, notes: _Notes) -> tuple[CPU, str]:
    text = notes.guard("cpuinfo", lambda: system.read("proc/cpuinfo"), None)
    info = cpu_probes.parse_cpuinfo(text or "")
    arch, os_name = _probe_platform(system, notes, info, text is not None)

    # Which CPUs exist.
    cpu_ids = info.cpu_ids or notes.guard("topology", lambda: cpu_probes.online_cpus(system), [])
    if not cpu_ids and system.live:
        cpu_ids = list(range(cpu_probes.live_cpu_count() or 1))
    if text is None:
        if not notes.has("cpuinfo"):
            found = f"{len(cpu_ids)} CPUs" if cpu_ids else "no CPU list"
            notes.add(ProbeNote("cpuinfo", "absent", f"no /proc/cpuinfo; {found} from other sources"))
    elif not info.processors:
        notes.add(ProbeNote("cpuinfo", "error", "/proc/cpuinfo lists no processor"))
    else:
        notes.add(ProbeNote("cpuinfo", "ok", f"{len(info.processors)} processors"))
    logical = len(cpu_ids) or 1

    no_topology: tuple[int | None, str] = (None, "unreadable")
    physical = notes.guard("topology", lambda: cpu_probes.physical_cores(system, info, cpu_ids), no_topology)
    if physical[0] is None and not notes.has("topology"):
        notes.add(ProbeNote("topology", "absent", f"{physical[1]}; assuming one thread per core"))
    elif physical[0] is not None:
        notes.add(ProbeNote("topology", "ok", f"{physical[0]} cores from {physical[1]}"))
    physical_cores = physical[0] or logical

    all_cpus: tuple[CpuCluster, ...] = (CpuCluster(tuple(cpu_ids) or (0,), None),)
    no_clusters: tuple[tuple[CpuCluster, ...], int] = (all_cpus, 0)
    clusters, with_freq = notes.guard("cpufreq", lambda: cpu_probes.clusters(system, cpu_ids), no_clusters)
    if with_freq:
        notes.add(
            ProbeNote(
                "cpufreq",
                "ok",
                "max MHz "
                + ", ".join(f"{c.max_freq_mhz:g} on {len(c.cpus)} CPUs" for c in clusters if c.max_freq_mhz),
            )
        )
    elif not notes.has("cpufreq"):
        notes.add(
            ProbeNote("cpufreq", "absent", "no cpufreq cpuinfo_max_freq (virtual machine or no driver)")
        )
    clusters = clusters or all_cpus
    freqs = [c.max_freq_mhz for c in clusters if c.max_freq_mhz]

    affinity = notes.guard("affinity", system.affinity, None)
    if affinity and cpu_ids:
        affinity = affinity & frozenset(cpu_ids) or affinity
    if affinity:
        notes.add(ProbeNote("affinity", "ok", f"{len(affinity)} CPUs allowed"))
    elif not notes.has("affinity"):
        notes.add(ProbeNote("affinity", "absent", "affinity unknown; assuming every CPU"))

    quota = notes.run("cgroup", lambda: cgroup.cpu_quota(system), None)

    soc = notes.guard("soc", lambda: cpu_probes.soc_model(system), None)
    if soc:
        notes.add(ProbeNote("soc", "ok", soc))
    elif not notes.has("soc"):
        notes.add(ProbeNote("soc", "absent", "no device-tree model"))

    model_name = cpu_probes.model_name(info, arch)
    if model_name == "unknown" and system.live:
        model_name = platform.processor() or "unknown"

    cpu = CPU(
        vendor=cpu_probes.vendor(info),
        model_name=model_name,
        arch=arch,
        physical_cores=physical_cores,
        logical_cores=logical,
        quota_cores=quota,
        usable_cores=cpu_probes.usable_cores(len(affinity) if affinity else logical, quota),
        flags=cpu_probes.flags(info),
        max_freq_mhz=max(freqs) if freqs else None,
        clusters=clusters,
        soc_model=soc,
    )
    return cpu, os_name
