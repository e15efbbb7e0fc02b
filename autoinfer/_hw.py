"""Hardware facts as the runtimes use them; imports nothing of autoinfer.

The one place that turns the probes' CPU facts into a thread count, so that the
selector, the measuring worker, the session and every backend size their
thread pools the same way.
"""

from __future__ import annotations

from typing import Any


def threads_for(hw: Any, default: int = 1) -> int:
    """The CPU threads a runtime may use here: the probes' ``usable_cores`` (the CPU quota
    and affinity of this process), or ``default`` when the hardware facts lack it."""
    n = getattr(getattr(hw, "cpu", None), "usable_cores", None)
    return int(n) if isinstance(n, int) and not isinstance(n, bool) and n > 0 else max(1, default)
