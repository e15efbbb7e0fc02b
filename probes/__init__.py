"""Hardware facts for choosing an inference runtime, and nothing else.

    import probes
    hw = probes.detect()          # cached per process; never raises
    probes.detected()             # that cached answer, or None before the first detect()
    hw.cpu.usable_cores, hw.cpu.has("avx512_vnni"), hw.nvidia_gpus, hw.accelerators
    hw.fingerprint                # changes only when something that picks a runtime changes
    hw.notes                      # one ProbeNote per probe: what it found, or why not

The contract:

* The probes know no inference runtime: neither importing ``probes`` nor
  ``detect()`` imports one. The driver binding NVML (``pynvml``) is imported
  inside ``detect()`` only. Which devices a runtime can drive is its backend's
  to say (``autoinfer.backends``).
* Every probe is bounded in time and soft-failing: a missing library, driver,
  file or permission becomes a :class:`ProbeNote`, never an exception.
* ``detect(root=...)`` replays a machine recorded as a file tree, so tests can
  run on any host (see :mod:`probes.system` and :mod:`probes.testing`).
* Nothing is printed; diagnostics go to the ``"probes"`` logger.
"""

import logging

from .detect import DEFAULT_TIMEOUT_S, detect, detected
from .records import CPU, SCHEMA_VERSION, Accelerator, CpuCluster, Hardware, MigInstance, NvidiaGPU, ProbeNote

logging.getLogger("probes").addHandler(logging.NullHandler())

__all__ = [
    "detect",
    "detected",
    "DEFAULT_TIMEOUT_S",
    "SCHEMA_VERSION",
    "Hardware",
    "CPU",
    "CpuCluster",
    "MigInstance",
    "NvidiaGPU",
    "Accelerator",
    "ProbeNote",
]
