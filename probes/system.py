"""Where the probes read a machine from: the live system, or a recorded file tree.

Every probe reads files through a :class:`SystemView` using paths relative to
``/`` (``"proc/cpuinfo"``, ``"sys/class/drm"``). The live view also answers the
three questions that have no file behind them -- the CPU architecture, the
operating system and the process's CPU affinity -- from syscalls; a recorded
view answers them from the tree only:

* architecture and OS from ``<root>/probes-meta.json``
  (``{"machine": "aarch64", "os": "Linux"}``),
* affinity from ``Cpus_allowed_list`` in ``<root>/proc/self/status``.

So a recorded machine replays the same way on any host, and no live fact leaks
into it.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

# sysfs and procfs files are small; anything bigger is not what we expect.
_MAX_READ_BYTES = 4 << 20

META_FILE = "probes-meta.json"


class SystemView:
    """Read-only access to a machine's files, relative to ``root``.

    ``read`` returns ``None`` for a file that does not exist, and raises
    ``PermissionError`` / ``OSError`` for anything else: the probe that asked
    decides what that means and records it.
    """

    live: bool = False

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def read(self, rel: str) -> str | None:
        try:
            with open(self.path(rel), "rb") as f:
                data = f.read(_MAX_READ_BYTES)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        return data.decode("utf-8", errors="replace")

    def exists(self, rel: str) -> bool:
        try:
            return self.path(rel).exists()
        except OSError:
            return False

    def listdir(self, rel: str) -> list[str]:
        """Sorted entry names; empty when the directory does not exist."""
        try:
            return sorted(os.listdir(self.path(rel)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def readlink(self, rel: str) -> str | None:
        try:
            return os.readlink(self.path(rel))
        except OSError:
            return None

    # -- facts without a file on a live system ------------------------------

    def machine(self) -> str | None:
        """``platform.machine()`` of the machine, or None when unknown."""
        raise NotImplementedError

    def os_name(self) -> str | None:
        """``platform.system()`` of the machine, or None when unknown."""
        raise NotImplementedError

    def affinity(self) -> frozenset[int] | None:
        """CPUs this process may run on, or None when unknown."""
        raise NotImplementedError


class LiveSystem(SystemView):
    """The machine this process runs on."""

    live = True

    def __init__(self) -> None:
        super().__init__("/")

    def machine(self) -> str | None:
        return platform.machine() or None

    def os_name(self) -> str | None:
        return platform.system() or None

    def affinity(self) -> frozenset[int] | None:
        getaffinity = getattr(os, "sched_getaffinity", None)
        if getaffinity is not None:
            try:
                return frozenset(getaffinity(0))
            except OSError:
                pass
        return _affinity_from_status(self)


class RecordedSystem(SystemView):
    """A machine recorded as a file tree (see the module docstring)."""

    def _meta(self) -> dict:
        text = self.read(META_FILE)
        if text is None:
            return {}
        try:
            meta = json.loads(text)
        except ValueError:
            return {}
        return meta if isinstance(meta, dict) else {}

    def machine(self) -> str | None:
        value = self._meta().get("machine")
        return value if isinstance(value, str) and value else None

    def os_name(self) -> str | None:
        value = self._meta().get("os")
        return value if isinstance(value, str) and value else None

    def affinity(self) -> frozenset[int] | None:
        return _affinity_from_status(self)


def open_system(root: str | os.PathLike[str] | None) -> SystemView:
    """The live system for ``None`` or a path that resolves to ``/``, else a recording."""
    if root is None or os.path.realpath(os.fspath(root)) == os.path.realpath("/"):
        return LiveSystem()
    return RecordedSystem(root)


def _affinity_from_status(system: SystemView) -> frozenset[int] | None:
    text = system.read("proc/self/status")
    if text is None:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Cpus_allowed_list":
            cpus = parse_cpu_list(value)
            return cpus or None
    return None


def parse_cpu_list(text: str) -> frozenset[int]:
    """Parse the kernel's CPU list format (``"0-3,8,10-11"``); garbage gives an empty set."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            if sep:
                first, last = int(lo), int(hi)
                if last < first or last - first > 1 << 16:
                    return frozenset()
                cpus.update(range(first, last + 1))
            else:
                cpus.add(int(lo))
        except ValueError:
            return frozenset()
    return frozenset(cpus)
