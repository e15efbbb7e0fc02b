"""The CPU quota a cgroup puts on this process (containers, systemd slices, Kubernetes).

cgroup v2: ``cpu.max`` ("max 100000" or "200000 100000") in the process's
cgroup, found from the ``0::/path`` line of ``/proc/self/cgroup``.
cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` under the ``cpu``
controller's mount (``cpu,cpuacct`` or ``cpu``).

A limit set on any ancestor also binds, so the effective quota is the smallest
one found from the process's cgroup up to the mount root. When the path does
not exist under the mount -- a container that sees its own cgroup mounted at
``/sys/fs/cgroup`` while ``/proc/self/cgroup`` still names the host's path --
only the levels that exist are read, which ends at the mount root.
"""

from __future__ import annotations

from .records import ProbeNote
from .system import SystemView

PROBE = "cgroup"

_V1_MOUNTS = ("sys/fs/cgroup/cpu,cpuacct", "sys/fs/cgroup/cpu", "sys/fs/cgroup/cpuacct,cpu")


def cpu_quota(system: SystemView) -> tuple[float | None, ProbeNote]:
    """The effective quota in cores (None: unlimited or no cgroup), and a note saying how it was found."""
    paths = _cgroup_paths(system.read("proc/self/cgroup") or "")

    if system.exists("sys/fs/cgroup/cgroup.controllers"):
        path = paths.get("", "/")
        quota, where = _smallest(system, "sys/fs/cgroup", path, _read_v2)
        return quota, _note("v2", path, quota, where)

    for mount in _V1_MOUNTS:
        if system.exists(mount + "/cpu.cfs_quota_us"):
            path = paths.get("cpu", "/")
            quota, where = _smallest(system, mount, path, _read_v1)
            return quota, _note("v1", path, quota, where)

    return None, ProbeNote(PROBE, "absent", "no cgroup CPU controller under /sys/fs/cgroup; no quota applied")


def _cgroup_paths(text: str) -> dict[str, str]:
    """Controller -> cgroup path from /proc/self/cgroup; the v2 entry is under ""."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def _smallest(system: SystemView, mount: str, path: str, read_level) -> tuple[float | None, str | None]:
    """Smallest quota from ``mount/path`` up to ``mount``, and the directory that set it."""
    parts = [p for p in path.split("/") if p and p not in (".", "..")]
    best: float | None = None
    where: str | None = None
    for depth in range(len(parts), -1, -1):
        directory = "/".join([mount, *parts[:depth]])
        quota = read_level(system, directory)
        if quota is not None and (best is None or quota < best):
            best, where = quota, "/" + "/".join(parts[:depth])
    return best, where


def _read_v2(system: SystemView, directory: str) -> float | None:
    text = system.read(directory + "/cpu.max")
    if text is None:
        return None
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    period = float(fields[1]) if len(fields) > 1 else 100000.0
    quota = float(fields[0])
    return quota / period if quota > 0 and period > 0 else None


def _read_v1(system: SystemView, directory: str) -> float | None:
    quota_text = system.read(directory + "/cpu.cfs_quota_us")
    period_text = system.read(directory + "/cpu.cfs_period_us")
    if quota_text is None or period_text is None:
        return None
    quota, period = float(quota_text.strip()), float(period_text.strip())
    return quota / period if quota > 0 and period > 0 else None


def _note(version: str, path: str, quota: float | None, where: str | None) -> ProbeNote:
    if quota is None:
        return ProbeNote(PROBE, "ok", f"cgroup {version} {path}: no CPU quota")
    return ProbeNote(PROBE, "ok", f"cgroup {version} {path}: CPU quota {quota:g} cores (set at {where})")
