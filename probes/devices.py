"""Accelerators outside NVML: sysfs GPUs (drm) and NPUs (accel), and Jetson's
integrated GPU (device tree).

sysfs says what hardware is there; which of it a runtime can drive is the
runtime's backend to say (``autoinfer.backends``), never the probes'.
"""

from __future__ import annotations

import dataclasses
import re

from .records import Accelerator, ProbeNote
from .system import SystemView

_PCI_VENDORS = {
    "0x8086": "intel",
    "0x1002": "amd",
    "0x10de": "nvidia",
    "0x1da3": "habana",
}
# Intel integrated graphics always sits at PCI device 2 on the root bus.
_INTEL_IGPU_SLOT = "0000:00:02.0"
_PCI_SLOT = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")

# Jetson SoCs by device-tree "compatible" entry: (name, CUDA compute capability).
_TEGRA_GPUS = {
    "nvidia,tegra234": ("Orin", (8, 7)),
    "nvidia,tegra194": ("Xavier", (7, 2)),
    "nvidia,tegra186": ("TX2", (6, 2)),
    "nvidia,tegra210": ("Tegra X1", (5, 3)),
}

_VENDOR_LABEL = {"intel": "Intel", "amd": "AMD", "nvidia": "NVIDIA", "habana": "Habana"}
_KIND_LABEL = {"igpu": "integrated GPU", "dgpu": "discrete GPU", "gpu": "GPU", "npu": "NPU"}


@dataclasses.dataclass(frozen=True)
class PciFunction:
    """A sysfs class entry whose ``device`` is a PCI function."""

    entry: str  # "card1", "accel0"
    vendor_id: str  # "0x8086"
    device_id: str  # "0x7d55"
    slot: str | None  # "0000:00:02.0"

    @property
    def pci_id(self) -> str:
        return f"{self.vendor_id[2:]}:{self.device_id[2:]}".lower()


def scan_class(system: SystemView, class_dir: str, pattern: str) -> tuple[list[PciFunction], int]:
    """PCI functions behind ``/sys/class/<class_dir>/<entry>`` with names matching ``pattern``.

    Also returns how many matching entries had no PCI vendor (platform devices
    such as simpledrm or a Jetson display engine), which are skipped.
    """
    found: list[PciFunction] = []
    skipped = 0
    for entry in system.listdir(f"sys/class/{class_dir}"):
        if not re.fullmatch(pattern, entry):
            continue  # connectors (card0-eDP-1), render nodes, "version"
        base = f"sys/class/{class_dir}/{entry}/device"
        vendor_id = _hex_id(system.read(f"{base}/vendor"))
        device_id = _hex_id(system.read(f"{base}/device"))
        if vendor_id is None or device_id is None:
            skipped += 1
            continue
        found.append(PciFunction(entry, vendor_id, device_id, _pci_slot(system, base)))
    return found, skipped


def drm_accelerators(system: SystemView) -> tuple[list[Accelerator], ProbeNote]:
    if not system.exists("sys/class/drm"):
        return [], ProbeNote("drm", "absent", "no /sys/class/drm")
    functions, skipped = scan_class(system, "drm", r"card\d+")
    found = []
    for fn in functions:
        vendor = _PCI_VENDORS.get(fn.vendor_id)
        if vendor is None:
            skipped += 1  # a BMC's VGA (ASPEED, Matrox): nothing a runtime can use
            continue
        kind = "gpu"
        if vendor == "intel" and fn.slot is not None:
            kind = "igpu" if fn.slot == _INTEL_IGPU_SLOT else "dgpu"
        found.append(_accelerator(kind, vendor, fn, "drm"))
    return found, _scan_note("drm", found, skipped, "GPU")


def accel_accelerators(system: SystemView) -> tuple[list[Accelerator], ProbeNote]:
    if not system.exists("sys/class/accel"):
        return [], ProbeNote("accel", "absent", "no /sys/class/accel (no NPU driver loaded)")
    functions, skipped = scan_class(system, "accel", r"accel\d+")
    found = []
    for fn in functions:
        vendor = _PCI_VENDORS.get(fn.vendor_id, f"pci-{fn.vendor_id[2:]}")
        found.append(_accelerator("npu", vendor, fn, "accel"))
    return found, _scan_note("accel", found, skipped, "NPU")


def devicetree_accelerators(system: SystemView) -> tuple[list[Accelerator], ProbeNote]:
    """Jetson's integrated GPU, which NVML does not see, from the SoC's compatible string."""
    text = system.read("proc/device-tree/compatible") or system.read(
        "sys/firmware/devicetree/base/compatible"
    )
    if text is None:
        return [], ProbeNote("devicetree", "absent", "no device tree")
    compatible = [c.strip() for c in text.split("\x00") if c.strip() and c.strip().isprintable()][:16]
    for entry in compatible:
        if entry in _TEGRA_GPUS:
            soc, cc = _TEGRA_GPUS[entry]
            gpu = Accelerator(
                kind="igpu",
                vendor="nvidia",
                name=f"NVIDIA {soc} integrated GPU",
                pci_id=None,
                source="devicetree",
                compute_capability=cc,
            )
            return [gpu], ProbeNote(
                "devicetree", "ok", f"{entry}: {gpu.name}, compute capability {cc[0]}.{cc[1]}"
            )
    listed = ", ".join(compatible) or "no readable compatible entry"
    return [], ProbeNote("devicetree", "ok", f"no known SoC GPU in {listed}")


# -- helpers ------------------------------------------------------------------


def _accelerator(kind: str, vendor: str, fn: PciFunction, source: str) -> Accelerator:
    name = f"{_VENDOR_LABEL.get(vendor, vendor)} {_KIND_LABEL[kind]} [{fn.pci_id}]"
    return Accelerator(kind=kind, vendor=vendor, name=name, pci_id=fn.pci_id, source=source)


def _hex_id(text: str | None) -> str | None:
    if text is None:
        return None
    value = text.strip().lower()
    return value if re.fullmatch(r"0x[0-9a-f]{4}", value) else None


def _pci_slot(system: SystemView, device_rel: str) -> str | None:
    """PCI address from the ``device`` symlink's target, else from ``uevent``."""
    target = system.readlink(device_rel)
    if target:
        slot = target.rstrip("/").rsplit("/", 1)[-1]
        if _PCI_SLOT.match(slot):
            return slot.lower()
    for line in (system.read(f"{device_rel}/uevent") or "").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "PCI_SLOT_NAME" and _PCI_SLOT.match(value.strip()):
            return value.strip().lower()
    return None


def _scan_note(probe: str, found: list[Accelerator], skipped: int, what: str) -> ProbeNote:
    extra = ""
    if skipped:
        extra = f" ({skipped} other entr{'y' if skipped == 1 else 'ies'} skipped: not a compute PCI device)"
    if not found:
        return ProbeNote(probe, "absent", f"no device: no {what} with a known PCI vendor{extra}")
    listed = ", ".join(f"{a.kind} {a.pci_id}" for a in found)
    return ProbeNote(probe, "ok", f"{listed}{extra}")
