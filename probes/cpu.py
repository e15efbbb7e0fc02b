"""CPU facts from /proc/cpuinfo, sysfs (topology, cpufreq) and the device tree.

Each reader here does one thing and may raise; :func:`probes.detect` runs each
under a guard that turns an exception into a note.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .records import X86_ARCHES, CpuCluster
from .system import SystemView, parse_cpu_list

# Flags that can change which kernel a runtime picks, in Linux's spelling.
X86_FLAGS = frozenset(
    {
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "avx_vnni",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
        "amx_fp16",
    }
)
ARM_FLAGS = frozenset({"asimd", "asimddp", "i8mm", "bf16", "sve", "sve2", "fphp", "asimdhp"})
KNOWN_FLAGS = X86_FLAGS | ARM_FLAGS
# 32-bit ARM kernels spell Advanced SIMD "neon".
_FLAG_SPELLINGS = {"neon": "asimd"}

_X86_VENDORS = {
    "GenuineIntel": "intel",
    "AuthenticAMD": "amd",
    "HygonGenuine": "hygon",
    "CentaurHauls": "centaur",
    "Shanghai": "zhaoxin",
}
# "CPU implementer" codes (Arm ARM, MIDR_EL1.Implementer).
_ARM_IMPLEMENTERS = {
    0x41: "arm",
    0x42: "broadcom",
    0x43: "cavium",
    0x46: "fujitsu",
    0x48: "hisilicon",
    0x4E: "nvidia",
    0x51: "qualcomm",
    0x53: "samsung",
    0x61: "apple",
    0x6D: "microsoft",
    0xC0: "ampere",
}
# Arm Ltd core part numbers (MIDR_EL1.PartNum) of cores people run inference on.
_ARM_PARTS = {
    0xD03: "Cortex-A53",
    0xD04: "Cortex-A35",
    0xD05: "Cortex-A55",
    0xD07: "Cortex-A57",
    0xD08: "Cortex-A72",
    0xD09: "Cortex-A73",
    0xD0A: "Cortex-A75",
    0xD0B: "Cortex-A76",
    0xD0C: "Neoverse-N1",
    0xD0D: "Cortex-A77",
    0xD40: "Neoverse-V1",
    0xD41: "Cortex-A78",
    0xD42: "Cortex-A78AE",
    0xD44: "Cortex-X1",
    0xD46: "Cortex-A510",
    0xD47: "Cortex-A710",
    0xD48: "Cortex-X2",
    0xD49: "Neoverse-N2",
    0xD4A: "Neoverse-E1",
    0xD4B: "Cortex-A78C",
    0xD4D: "Cortex-A715",
    0xD4E: "Cortex-X3",
    0xD4F: "Neoverse-V2",
    0xD80: "Cortex-A520",
    0xD81: "Cortex-A720",
    0xD82: "Cortex-X4",
    0xD84: "Neoverse-V3",
    0xD8E: "Neoverse-N3",
}


@dataclass
class CpuInfo:
    """/proc/cpuinfo split into per-processor records and the lines outside them."""

    processors: list[dict[str, str]] = field(default_factory=list)
    common: dict[str, str] = field(default_factory=dict)

    @property
    def cpu_ids(self) -> list[int]:
        ids = []
        for i, proc in enumerate(self.processors):
            try:
                ids.append(int(proc["processor"]))
            except (KeyError, ValueError):
                ids.append(i)
        return ids

    def first(self, key: str) -> str | None:
        """The value of ``key`` in the first processor that has it, else outside them."""
        for proc in self.processors:
            if key in proc:
                return proc[key]
        return self.common.get(key)


def parse_cpuinfo(text: str) -> CpuInfo:
    info = CpuInfo()
    for block in re.split(r"\n\s*\n", text):
        record: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                record[key.strip()] = value.strip()
        if "processor" in record and record["processor"].isdigit():
            info.processors.append(record)
        else:
            info.common.update(record)
    return info


def normalise_arch(machine: str | None) -> str | None:
    if not machine:
        return None
    m = machine.strip().lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(m, m)


def guess_arch(info: CpuInfo) -> str | None:
    """Architecture from cpuinfo alone, for recordings without probes-meta.json."""
    if info.first("vendor_id") or info.first("flags"):
        return "x86_64"
    arch = info.first("CPU architecture")
    if arch is not None:
        return "aarch64" if arch.strip() in ("8", "AArch64") else "armv7l"
    return None


def vendor(info: CpuInfo) -> str:
    vendor_id = info.first("vendor_id")
    if vendor_id:
        return _X86_VENDORS.get(vendor_id.strip(), vendor_id.strip().lower())
    implementer = _hex(info.first("CPU implementer"))
    if implementer is not None:
        return _ARM_IMPLEMENTERS.get(implementer, f"arm-implementer-{implementer:#x}")
    return "unknown"


def model_name(info: CpuInfo, arch: str) -> str:
    """x86: the "model name" line. ARM: the cores by part ("4x Cortex-A55 + 4x Cortex-A76")."""
    name = info.first("model name")
    if name and arch in X86_ARCHES and name.isprintable():
        return " ".join(name.split())
    cores: Counter[str] = Counter()
    for proc in info.processors:
        part = _hex(proc.get("CPU part"))
        if part is None:
            continue
        implementer = _hex(proc.get("CPU implementer"))
        if implementer == 0x41 and part in _ARM_PARTS:
            cores[_ARM_PARTS[part]] += 1
        else:
            who = _ARM_IMPLEMENTERS.get(implementer, "unknown") if implementer is not None else "unknown"
            cores[f"{who} part {part:#x}"] += 1
    if len(cores) == 1:
        return next(iter(cores))
    if cores:
        return " + ".join(f"{n}x {core}" for core, n in cores.items())
    for key in ("model name", "Processor", "cpu model", "cpu"):
        value = info.first(key)
        if value and value.isprintable():
            return " ".join(value.split())
    return "unknown"


def flags(info: CpuInfo) -> tuple[str, ...]:
    """Known flags present on every listed processor, sorted."""
    common: set[str] | None = None
    for record in info.processors or [info.common]:
        line = record.get("flags") or record.get("Features")
        if line is None:
            continue
        found = {_FLAG_SPELLINGS.get(f, f) for f in line.lower().split()} & KNOWN_FLAGS
        common = found if common is None else common & found
    return tuple(sorted(common or ()))


def physical_cores(system: SystemView, info: CpuInfo, cpu_ids: list[int]) -> tuple[int | None, str]:
    """Distinct cores, and where the answer came from."""
    if info.processors and all("core id" in p for p in info.processors):
        cores = {(p.get("physical id", "0"), p["core id"]) for p in info.processors}
        return len(cores), "cpuinfo core ids"
    siblings = set()
    for cpu in cpu_ids:
        text = system.read(f"sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        if text is None:
            break
        siblings.add(parse_cpu_list(text))
    else:
        if siblings:
            return len(siblings), "sysfs thread siblings"
    return None, "no core ids"


def online_cpus(system: SystemView) -> list[int]:
    text = system.read("sys/devices/system/cpu/online") or system.read("sys/devices/system/cpu/present")
    return sorted(parse_cpu_list(text)) if text else []


# Cores of one kind whose top speeds differ by less than this are one cluster: Intel's
# favoured cores (Turbo Boost Max 3.0) and AMD's preferred cores run a few percent faster
# than their siblings, while big and LITTLE cores differ by 15% or more.
SAME_KIND_TOLERANCE = 0.10


def clusters(system: SystemView, cpu_ids: list[int]) -> tuple[tuple[CpuCluster, ...], int]:
    """CPUs grouped by kind of core, ordered by their first CPU; and how many CPUs had a frequency.

    The kind is the ARM core part ("CPU part" in /proc/cpuinfo) where every CPU
    gives one: cores of one part are one cluster however they are clocked. Else
    Intel's hybrid PMUs (/sys/devices/cpu_core, cpu_atom) separate P from E
    cores, and within a kind CPUs split only where ``cpu_capacity`` (or, without
    it, ``cpuinfo_max_freq``) differs by more than SAME_KIND_TOLERANCE. A
    cluster's frequency is its fastest CPU's.
    """
    freq_of: dict[int, float | None] = {}
    for cpu in cpu_ids:
        text = system.read(f"sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq")
        freq_of[cpu] = int(text.strip()) / 1000.0 if text and text.strip().isdigit() else None
    with_freq = sum(1 for f in freq_of.values() if f is not None)
    kinds = _arm_parts(system, cpu_ids)
    if kinds is not None:
        groups: dict[Any, list[int]] = {}
        for cpu in cpu_ids:
            groups.setdefault(kinds[cpu], []).append(cpu)
        found = [_cluster(cpus, freq_of) for cpus in groups.values()]
    else:
        hybrid = _hybrid_types(system)
        capacity = _capacities(system, cpu_ids)
        score = capacity if capacity is not None else freq_of
        by_type: dict[str, list[int]] = {}
        for cpu in cpu_ids:
            by_type.setdefault(hybrid.get(cpu, ""), []).append(cpu)
        found = [_cluster(cpus, freq_of) for same in by_type.values() for cpus in _split(same, score)]
    return tuple(sorted(found, key=lambda c: c.cpus[0])), with_freq


def _cluster(cpus: list[int], freq_of: dict[int, float | None]) -> CpuCluster:
    freqs = [f for c in cpus if (f := freq_of.get(c)) is not None]
    return CpuCluster(tuple(sorted(cpus)), max(freqs) if freqs else None)


def _split(cpus: list[int], score: Mapping[int, float | None]) -> list[list[int]]:
    """CPUs of one kind, split where their scores differ by more than the tolerance."""
    unknown = [c for c in cpus if score.get(c) is None]
    known = sorted((c for c in cpus if score.get(c) is not None), key=lambda c: -float(score[c] or 0))
    out: list[list[int]] = []
    top = None
    for cpu in known:
        value = float(score[cpu] or 0)
        if top is None or value < top * (1 - SAME_KIND_TOLERANCE):
            out.append([])
            top = value
        out[-1].append(cpu)
    if unknown:
        out.append(unknown)
    return out


def _arm_parts(system: SystemView, cpu_ids: list[int]) -> dict[int, tuple[int | None, int]] | None:
    """CPU -> (implementer, part) from /proc/cpuinfo, when every CPU has a "CPU part"."""
    info = parse_cpuinfo(system.read("proc/cpuinfo") or "")
    parts: dict[int, tuple[int | None, int]] = {}
    for cpu, proc in zip(info.cpu_ids, info.processors, strict=True):
        part = _hex(proc.get("CPU part"))
        if part is not None:
            parts[cpu] = (_hex(proc.get("CPU implementer")), part)
    if not cpu_ids or any(cpu not in parts for cpu in cpu_ids):
        return None
    return parts


def _hybrid_types(system: SystemView) -> dict[int, str]:
    """CPU -> "cpu_core" or "cpu_atom" on Intel hybrid CPUs (their two PMUs); empty elsewhere."""
    out: dict[int, str] = {}
    for pmu in ("cpu_core", "cpu_atom"):
        text = system.read(f"sys/devices/{pmu}/cpus")
        if text and text.strip():
            for cpu in parse_cpu_list(text):
                out[cpu] = pmu
    return out


def _capacities(system: SystemView, cpu_ids: list[int]) -> dict[int, float | None] | None:
    """CPU -> the scheduler's ``cpu_capacity``, when the kernel gives it for every CPU."""
    out: dict[int, float | None] = {}
    for cpu in cpu_ids:
        text = system.read(f"sys/devices/system/cpu/cpu{cpu}/cpu_capacity")
        if not text or not text.strip().isdigit():
            return None
        out[cpu] = float(text.strip())
    return out or None


def soc_model(system: SystemView) -> str | None:
    for rel in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        text = system.read(rel)
        if text is not None:
            value = text.rstrip("\x00\n ").strip()
            if not value:
                return None
            if len(value) > 200 or not value.isprintable():
                raise ValueError(f"/{rel} is not a model name")
            return value
    return None


def usable_cores(affinity_count: int, quota: float | None) -> int:
    """min(len(affinity), ceil(quota)), at least 1."""
    usable = affinity_count
    if quota is not None:
        usable = min(usable, math.ceil(quota - 1e-9))
    return max(1, usable)


def live_cpu_count() -> int | None:
    return os.cpu_count()


def _hex(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip(), 0)
    except ValueError:
        return None
