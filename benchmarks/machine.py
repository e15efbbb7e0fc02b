"""Facts about the benchmarking machine: a slug for file names, the CPU's fp32
peak, whether energy counters are exposed, and how busy the machine is."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

# fp32 flops per cycle per core by the widest FMA the CPU has: FMA units x lanes x 2.
# AVX-512 parts may have one or two 512-bit FMA units; one is assumed (the lower peak).
_FLOPS_PER_CYCLE = (
    ("avx512f", 32, "AVX-512 FMA, 1 unit assumed x 16 fp32 lanes x 2 flops"),
    ("fma", 32, "AVX2 FMA: 2 FMA units x 8 fp32 lanes x 2 flops"),
    ("avx", 16, "AVX without FMA: 1 add + 1 mul unit x 8 fp32 lanes"),
)
RAPL = Path("/sys/class/powercap")


def hardware() -> Any:
    import probes

    return probes.detect()


def slug(hw: Any) -> str:
    """``amd-epyc-2c``: vendor and model words, then the usable cores."""
    cpu = hw.cpu
    name = cpu.model_name.lower()
    name = re.sub(r"\(r\)|\(tm\)|\bcpu\b|\bprocessor\b|@.*$|\d+-core", " ", name)
    words = re.findall(r"[a-z0-9]+", name)
    vendor = cpu.vendor.lower()
    if words and words[0] in (vendor, "genuine", "authentic"):
        words = words[1:]
    if vendor in ("intel", "amd") or not words:
        words = [vendor, *words]
    base = "-".join(words[:4]) or "unknown"
    return f"{base}-{cpu.usable_cores}c"


def _cpuinfo_mhz() -> list[float]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return []
    return [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)]


def cpu_peak(hw: Any) -> dict[str, Any]:
    """The fp32 peak of the usable cores, with the assumptions it rests on."""
    cpu = hw.cpu
    per_cycle, how = 8, "SSE: 4 fp32 lanes x 2 (add + mul)"
    for flag, n, text in _FLOPS_PER_CYCLE:
        if cpu.has(flag):
            per_cycle, how = n, text
            break
    mhz_list = _cpuinfo_mhz()
    if cpu.max_freq_mhz:
        mhz, source = float(cpu.max_freq_mhz), "cpufreq cpuinfo_max_freq (probes)"
    elif mhz_list:
        mhz, source = (
            max(mhz_list),
            (
                "/proc/cpuinfo 'cpu MHz' (the clock the hypervisor "
                "reports; boost clocks, if any, are not visible)"
            ),
        )
    else:
        mhz, source = 2000.0, "unknown clock; 2 GHz assumed"
    cores = int(cpu.usable_cores)
    gflops = cores * mhz / 1e3 * per_cycle
    return {
        "gflops": gflops,
        "cores": cores,
        "mhz": mhz,
        "flops_per_cycle": per_cycle,
        "assumption": f"{cores} usable cores x {mhz:.0f} MHz ({source}) x {per_cycle} "
        f"fp32 flop/cycle ({how})",
    }


def energy_counters() -> str:
    """Where package energy can be read, or why not."""
    if not RAPL.is_dir():
        return f"not exposed ({RAPL} is absent: a virtual machine or a kernel without RAPL)"
    zones = sorted(p for p in RAPL.glob("intel-rapl:*") if (p / "energy_uj").exists())
    readable = [z for z in zones if os.access(z / "energy_uj", os.R_OK)]
    if not zones:
        return f"not exposed (no RAPL zone under {RAPL})"
    if not readable:
        return "not exposed (RAPL zones exist but energy_uj is not readable by this user)"
    return "exposed: " + ", ".join(z.name for z in readable)


def read_energy_uj() -> int | None:
    """Sum of the package zones' energy counters in µJ, or None when not readable."""
    total, found = 0, False
    for z in sorted(RAPL.glob("intel-rapl:*")) if RAPL.is_dir() else ():
        if z.name.count(":") != 1:
            continue  # sub-zones are part of their package
        try:
            total += int((z / "energy_uj").read_text().strip())
            found = True
        except (OSError, ValueError):
            continue
    return total if found else None


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def describe(hw: Any) -> dict[str, Any]:
    from importlib import metadata

    import numpy

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    cpu = hw.cpu
    return {
        "slug": slug(hw),
        "cpu": cpu.model_name,
        "vendor": cpu.vendor,
        "arch": cpu.arch,
        "usable_cores": cpu.usable_cores,
        "logical_cores": cpu.logical_cores,
        "flags": list(cpu.flags),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "fingerprint": hw.fingerprint,
        "memory_gb": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
        "versions": {d: version(d) for d in ("onnxruntime", "openvino", "ncnn", "pnnx", "onnx", "autoinfer")},
    }
