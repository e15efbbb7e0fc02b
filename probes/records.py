"""The hardware facts, as frozen, JSON-serialisable dataclasses.

``Hardware.to_dict()`` / ``Hardware.from_dict()`` round-trip exactly;
``Hardware.fingerprint`` hashes only what can change which runtime wins.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

# Bump when the meaning of a field, or of the fingerprint, changes.
SCHEMA_VERSION = 1

Status = Literal["ok", "absent", "error", "timeout", "permission"]
STATUSES: tuple[str, ...] = ("ok", "absent", "error", "timeout", "permission")

X86_ARCHES = frozenset({"x86_64", "i386", "i486", "i586", "i686", "x86"})

# Spellings people use for a flag, mapped to the Linux name the probes record.
_FLAG_ALIASES = {
    "neon": "asimd",
    "dotprod": "asimddp",
    "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16",
    "avxvnni": "avx_vnni",
}


@dataclass(frozen=True)
class ProbeNote:
    """What one probe found, or why it found nothing."""

    probe: str
    status: Status
    detail: str


@dataclass(frozen=True)
class CpuCluster:
    """CPUs sharing one maximum frequency (a big.LITTLE cluster, or all CPUs)."""

    cpus: tuple[int, ...]
    max_freq_mhz: float | None


@dataclass(frozen=True)
class CPU:
    vendor: str  # "intel", "amd", "arm", "qualcomm", ... or "unknown"
    model_name: str
    arch: str  # "x86_64", "aarch64", ... or "unknown"
    physical_cores: int
    logical_cores: int
    quota_cores: float | None  # cgroup CPU quota in cores; None when unlimited
    usable_cores: int  # min(len(affinity), ceil(quota)); what a thread pool should use
    flags: tuple[str, ...]  # sorted subset of probes.cpu.KNOWN_FLAGS
    max_freq_mhz: float | None
    clusters: tuple[CpuCluster, ...]
    soc_model: str | None  # device-tree model, e.g. "Raspberry Pi 5 Model B Rev 1.0"

    def has(self, flag: str) -> bool:
        """Whether the CPU has ``flag`` (Linux spelling; "neon" and "dotprod" accepted)."""
        flag = flag.lower()
        return _FLAG_ALIASES.get(flag, flag) in self.flags

    @property
    def is_x86(self) -> bool:
        return self.arch in X86_ARCHES

    @property
    def is_arm(self) -> bool:
        return self.arch.startswith(("aarch64", "arm"))

    @property
    def has_big_little(self) -> bool:
        """True when cores differ in maximum frequency (ARM big.LITTLE, Intel P/E cores)."""
        return len(self.clusters) > 1


@dataclass(frozen=True)
class MigInstance:
    """One MIG device of a GPU in MIG mode, as NVML reports it.

    CUDA lists it as a device of its own with this ``uuid`` ("MIG-..."), and a
    process sees only the memory of its instance.
    """

    index: int  # NVML's MIG device index on its parent GPU
    uuid: str | None
    name: str
    memory_total_mb: int


@dataclass(frozen=True)
class NvidiaGPU:
    """A GPU as NVML reports it. ``memory_total_mb`` is in MiB.

    ``pci_bus_id``: NVML's ``busId`` ("00000000:3B:00.0"), the key that maps it to
    CUDA's ordinal. ``mig_enabled``: the current MIG mode (None when NVML cannot
    say, as on GPUs without MIG). With MIG on, CUDA sees only ``mig_instances``,
    each with its own memory.
    """

    index: int
    name: str
    uuid: str | None
    memory_total_mb: int
    compute_capability: tuple[int, int]
    driver_version: str
    cuda_driver_version: str | None  # "12.4": the newest CUDA the driver supports
    pci_bus_id: str | None = None
    mig_enabled: bool | None = None
    mig_instances: tuple[MigInstance, ...] = ()

    @property
    def supports_fp16(self) -> bool:
        return self.compute_capability >= (5, 3)

    @property
    def supports_int8(self) -> bool:
        return self.compute_capability >= (6, 1)

    @property
    def has_tensor_cores(self) -> bool:
        return self.compute_capability >= (7, 0)


@dataclass(frozen=True)
class Accelerator:
    """A non-CPU device found outside NVML.

    kind:   "igpu" | "dgpu" | "npu" | "gpu" (a GPU whose placement is unknown)
    source: "drm" | "accel" (sysfs classes), "devicetree" (Jetson)
    An NVIDIA card appears here (source "drm") only when NVML did not list it:
    ``Hardware.nvidia_gpus`` is the authority for CUDA devices.
    compute_capability: CUDA compute capability of an NVIDIA integrated GPU (Jetson).
    """

    kind: str
    vendor: str
    name: str
    pci_id: str | None  # "8086:7d55"
    source: str
    compute_capability: tuple[int, int] | None = None


@dataclass(frozen=True)
class Hardware:
    cpu: CPU
    nvidia_gpus: tuple[NvidiaGPU, ...]
    accelerators: tuple[Accelerator, ...]
    os: str
    notes: tuple[ProbeNote, ...] = ()

    # -- queries ------------------------------------------------------------

    def accelerators_of(self, kind: str | None = None, vendor: str | None = None) -> tuple[Accelerator, ...]:
        """Accelerators matching ``kind`` and ``vendor`` (None matches any)."""
        return tuple(
            a
            for a in self.accelerators
            if (kind is None or a.kind == kind) and (vendor is None or a.vendor == vendor)
        )

    def note(self, probe: str) -> ProbeNote | None:
        """The note a probe left ("cpuinfo", "cgroup", "nvml", "drm", ...)."""
        return next((n for n in self.notes if n.probe == probe), None)

    # -- identity -----------------------------------------------------------

    def fingerprint_material(self) -> dict[str, Any]:
        """Everything that can change which runtime wins, and nothing else.

        Left out: notes; GPU UUIDs (two machines with the same parts share a
        fingerprint); accelerator display names when a PCI id identifies the
        device.
        """
        cpu = self.cpu
        return {
            "schema": SCHEMA_VERSION,
            "os": self.os,
            "cpu": {
                "vendor": cpu.vendor,
                "model_name": cpu.model_name,
                "arch": cpu.arch,
                "physical_cores": cpu.physical_cores,
                "logical_cores": cpu.logical_cores,
                "quota_cores": None if cpu.quota_cores is None else round(cpu.quota_cores, 3),
                "usable_cores": cpu.usable_cores,
                "flags": list(cpu.flags),
                "clusters": [[list(c.cpus), c.max_freq_mhz] for c in cpu.clusters],
                "soc_model": cpu.soc_model,
            },
            "nvidia_gpus": [
                [
                    g.name,
                    g.memory_total_mb,
                    list(g.compute_capability),
                    g.driver_version,
                    g.cuda_driver_version,
                ]
                + ([[m.name, m.memory_total_mb] for m in g.mig_instances] if g.mig_enabled else [])
                for g in self.nvidia_gpus
            ],
            "accelerators": sorted(
                [
                    a.kind,
                    a.vendor,
                    a.pci_id or a.name,
                    None if a.compute_capability is None else list(a.compute_capability),
                ]
                for a in self.accelerators
            ),
        }

    @property
    def fingerprint(self) -> str:
        """16 hex digits of sha256 over :meth:`fingerprint_material`."""
        canonical = json.dumps(self.fingerprint_material(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def summary(self) -> str:
        cpu = self.cpu
        shown = [f for f in cpu.flags if f not in ("sse4_2", "avx")]
        cpu_part = f"{cpu.model_name} ({cpu.arch}, {cpu.usable_cores} of {cpu.logical_cores} cores usable"
        if cpu.has_big_little:
            cpu_part += ", " + " + ".join(
                f"{len(c.cpus)}x{c.max_freq_mhz:g}MHz" if c.max_freq_mhz else f"{len(c.cpus)}x?MHz"
                for c in cpu.clusters
            )
        cpu_part += (", " + " ".join(shown) if shown else "") + ")"
        if cpu.soc_model:
            cpu_part = f"{cpu.soc_model}: {cpu_part}"
        if self.nvidia_gpus:
            gpus = ", ".join(
                f"{g.name} (cc {g.compute_capability[0]}.{g.compute_capability[1]}, "
                f"{g.memory_total_mb} MiB, driver {g.driver_version}"
                + (f", MIG: {len(g.mig_instances)} instance(s)" if g.mig_enabled else "")
                + ")"
                for g in self.nvidia_gpus
            )
        else:
            gpus = "no NVIDIA GPU"
        if self.accelerators:
            accels = ", ".join(a.name for a in self.accelerators)
        else:
            accels = "no other accelerator"
        return f"{cpu_part}, {gpus}, {accels}"

    def __str__(self) -> str:
        return self.summary

    # -- serialisation ------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["schema"] = SCHEMA_VERSION
        return _lists(data)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hardware:
        """Inverse of :meth:`to_dict`. Raises ValueError on a malformed or foreign dict."""
        if not isinstance(data, dict):
            raise ValueError(f"Expected a dict from Hardware.to_dict(). Received {type(data).__name__}.")
        schema = data.get("schema", SCHEMA_VERSION)
        if schema != SCHEMA_VERSION:
            raise ValueError(f"Expected Hardware schema {SCHEMA_VERSION}. Received schema {schema!r}.")
        try:
            c = data["cpu"]
            cpu = CPU(
                vendor=c["vendor"],
                model_name=c["model_name"],
                arch=c["arch"],
                physical_cores=c["physical_cores"],
                logical_cores=c["logical_cores"],
                quota_cores=c["quota_cores"],
                usable_cores=c["usable_cores"],
                flags=tuple(c["flags"]),
                max_freq_mhz=c["max_freq_mhz"],
                clusters=tuple(CpuCluster(tuple(k["cpus"]), k["max_freq_mhz"]) for k in c["clusters"]),
                soc_model=c["soc_model"],
            )
            gpus = tuple(
                NvidiaGPU(
                    index=g["index"],
                    name=g["name"],
                    uuid=g["uuid"],
                    memory_total_mb=g["memory_total_mb"],
                    compute_capability=tuple(g["compute_capability"]),
                    driver_version=g["driver_version"],
                    cuda_driver_version=g["cuda_driver_version"],
                    pci_bus_id=g.get("pci_bus_id"),
                    mig_enabled=g.get("mig_enabled"),
                    mig_instances=tuple(
                        MigInstance(m["index"], m["uuid"], m["name"], m["memory_total_mb"])
                        for m in g.get("mig_instances") or ()
                    ),
                )
                for g in data["nvidia_gpus"]
            )
            accels = tuple(
                Accelerator(
                    kind=a["kind"],
                    vendor=a["vendor"],
                    name=a["name"],
                    pci_id=a["pci_id"],
                    source=a["source"],
                    compute_capability=None
                    if a.get("compute_capability") is None
                    else tuple(a["compute_capability"]),
                )
                for a in data["accelerators"]
            )
            notes = tuple(ProbeNote(n["probe"], n["status"], n["detail"]) for n in data.get("notes", ()))
            return cls(cpu=cpu, nvidia_gpus=gpus, accelerators=accels, os=data["os"], notes=notes)
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"Expected a dict from Hardware.to_dict(). Received one without {exc}."
            ) from None


def _lists(value: Any) -> Any:
    """Tuples to lists, recursively, so ``to_dict()`` equals its own JSON round trip."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value
