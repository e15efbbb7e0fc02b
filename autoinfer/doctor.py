"""What this machine can run, and how to fix what it cannot (the data of `autoinfer doctor`).

This module builds the report; the CLI prints it.
"""

from __future__ import annotations

import os
from typing import Any

from . import backends as registry
from ._lazy import install_fix
from .config import open_cache

# Thread-count variables of the threading libraries runtimes build on; each backend adds
# its runtime's own (``Backend.thread_env_vars``). Above the CPU quota they oversubscribe.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_vars() -> tuple[str, ...]:
    """The generic thread-count variables, then the registered runtimes' own."""
    return tuple(dict.fromkeys((*THREAD_VARS, *registry.thread_env_vars())))


def _env_problems(hw: Any) -> list[dict[str, str]]:
    out = []
    quota = hw.cpu.usable_cores
    for var in thread_vars():
        raw = os.environ.get(var)
        if not raw:
            continue
        try:
            n = int(raw)
        except ValueError:
            out.append(
                {"severity": "warning", "message": f"{var}={raw!r} is not a number", "fix": f"unset {var}"}
            )
            continue
        if n > quota:
            out.append(
                {
                    "severity": "warning",
                    "message": f"{var}={n} is above the {quota} CPU core(s) this process may "
                    "use: threads will compete and run slower",
                    "fix": f"export {var}={quota} (or unset it; autoinfer sizes threads itself)",
                }
            )
    return out


def _declared(b: registry.Backend) -> dict[str, Any]:
    """What a backend declares: the pip extra that installs it and what it can drive."""
    caps = b.capabilities
    return {
        "install": install_fix(b.package, b.pip_extra),
        "pip_extra": b.pip_extra,
        "supports": {"devices": list(caps.devices), "precisions": list(caps.precisions)},
    }


def report(hw: Any = None, cache_dir: Any = None) -> dict[str, Any]:
    """The whole report as JSON-ready data; ``ok`` is True when a runtime works."""
    import probes

    if hw is None:
        hw = probes.detect()
    runtimes = []
    problems: list[dict[str, str]] = []
    for name in registry.names():
        try:
            b = registry.get(name)
            av = b.availability(hw)
            diag = [p.to_dict() for p in b.diagnose(hw)]
        except Exception as exc:  # noqa: BLE001 - the doctor reports, never crashes
            runtimes.append(
                {
                    "backend": name,
                    "installed": False,
                    "usable": False,
                    "version": None,
                    "devices": [],
                    "reason": f"check failed: {exc}",
                    "fix": "",
                    "problems": [],
                }
            )
            continue
        runtimes.append({**av.to_dict(), **_declared(b), "problems": diag})
        problems.extend({**p, "backend": name} for p in diag)
    problems.extend(_env_problems(hw))
    settings, cache = open_cache(cache_dir)
    root = settings.cache_dir
    writable = (
        os.access(root, os.W_OK)
        if root.exists()
        else os.access(next((p for p in root.parents if p.exists()), root), os.W_OK)
    )
    if not writable:
        problems.append(
            {
                "severity": "warning",
                "message": f"the cache directory {root} is not writable: every start will select again",
                "fix": "set AUTOINFER_CACHE_DIR to a writable directory",
            }
        )
    return {
        "ok": any(r["usable"] for r in runtimes),
        "hardware": hw.to_dict(),
        "hardware_summary": hw.summary,
        "fingerprint": hw.fingerprint,
        "runtimes": runtimes,
        "problems": problems,
        "cache": {
            "path": str(root),
            "size_bytes": cache.size(),
            "writable": writable,
            "enabled": settings.cache_enabled,
            "max_bytes": settings.cache_max_bytes,
        },
    }
