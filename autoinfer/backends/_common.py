"""Small helpers shared by backends: hardware look-ups, package facts.

Feeds are checked once, by the Session; runners trust theirs.

Nothing here imports a runtime.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

from .._hw import threads_for

# -- hardware -----------------------------------------------------------------


def cpu_has(hw: Any, flag: str) -> bool:
    """Whether the probed CPU has ``flag``; False when the hardware facts are missing."""
    cpu = getattr(hw, "cpu", None)
    has = getattr(cpu, "has", None)
    try:
        return bool(has(flag)) if callable(has) else flag in (getattr(cpu, "flags", ()) or ())
    except Exception:  # a damaged probe result never breaks a backend
        return False


# The thread count has one home, autoinfer._hw.threads_for; the old name stays for callers.
usable_cores = threads_for


# -- packages -------------------------------------------------------------------


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


@functools.lru_cache(maxsize=1)
def _dist_index() -> tuple[tuple[str, str, str], ...]:
    """(canonical name, version, dist-info path) of every installed distribution.

    A listing of the ``*.dist-info`` directories on ``sys.path``, made once per
    process: ``importlib.metadata`` would parse every distribution's metadata
    and file list (a third of a second here), and this runs on every Session start.
    """
    out = []
    seen = set()
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for n in names:
            if not n.endswith(".dist-info"):
                continue
            name, _, version = n[: -len(".dist-info")].rpartition("-")
            key = _canonical(name)
            if name and key not in seen:  # the first on sys.path wins, as for imports
                seen.add(key)
                out.append((key, version, os.path.join(entry or ".", n)))
    return tuple(out)


def _provides(dist_info: str, module: str) -> bool:
    try:
        with open(os.path.join(dist_info, "top_level.txt"), encoding="utf-8") as f:
            return module in f.read().split()
    except OSError:
        pass
    try:
        with open(os.path.join(dist_info, "RECORD"), encoding="utf-8") as f:
            return any(line.startswith(f"{module}/") for line in f)
    except OSError:
        return False


@functools.cache
def distributions_of(module: str) -> list[str]:
    """Installed pip distributions that provide top-level ``module``, sorted.

    ``onnxruntime`` and ``onnxruntime-gpu`` both provide module ``onnxruntime``;
    having both installed means one silently overwrote the other's files.
    Only distributions whose name mentions the module are inspected.
    """
    key = _canonical(module)
    return sorted(name for name, _v, path in _dist_index() if key in name and _provides(path, module))


def dist_version(dist: str) -> str | None:
    key = _canonical(dist)
    for name, version, _path in _dist_index():
        if name == key:
            return version
    return None
