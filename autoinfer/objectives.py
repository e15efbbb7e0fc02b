"""What a selection optimises for; imports nothing of autoinfer, so every layer may read it.

latency:    the time of one ``run`` (the default).
throughput: runs per second with several calls in flight.
load_time:  the time from ``Session(...)`` to the first result.
memory:     the peak memory of the loaded model.
"""

from __future__ import annotations

OBJECTIVES: tuple[str, ...] = ("latency", "throughput", "load_time", "memory")
