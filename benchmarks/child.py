"""One peer in a fresh process: load time, peak resident memory, energy.

    python benchmarks/child.py '<json job>'

Prints one JSON line. Memory is the process's VmHWM (peak resident set) from
/proc/self/status: after the peer's imports ("base") and after loading the
model and running it ("peak"); their difference is what the model costs in
this runtime. Energy is read from RAPL around a second of inferences when the
counters are readable.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _status_mb(key: str) -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    job = json.loads(sys.argv[1])
    os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")
    import machine
    import numpy as np
    import peers

    peer = job["peer"]
    t0 = time.perf_counter()
    peers.preimport(peer)
    for other in job.get("also_import", ()):  # the runtime autoinfer will load
        peers.preimport(other)
    import_s = time.perf_counter() - t0
    with np.load(job["feeds"], allow_pickle=False) as z:
        feeds = {k: z[k] for k in z.files}
    ctx = peers.Context(
        input_shapes={k: tuple(v) for k, v in job["input_shapes"].items()},
        autoinfer_cache=Path(job["autoinfer_cache"]) if job.get("autoinfer_cache") else None,
        ncnn_artifacts=Path(job["ncnn_artifacts"]) if job.get("ncnn_artifacts") else None,
        threads=int(job.get("threads", 1)),
    )
    base = _status_mb("VmRSS")
    try:
        loaded, load_s = peers.load(peer, Path(job["model"]), ctx)
    except peers.PeerUnsupported as exc:
        print(json.dumps({"ok": False, "reason": str(exc)}))
        return 0
    t0 = time.perf_counter()
    loaded.run(feeds)
    first_s = time.perf_counter() - t0
    for _ in range(int(job.get("runs", 3))):
        loaded.run(feeds)
    result = {
        "ok": True,
        "import_s": import_s,
        "load_s": load_s,
        "first_s": first_s,
        "base_mb": base,
        "peak_mb": _status_mb("VmHWM"),
        "rss_mb": _status_mb("VmRSS"),
    }
    if job.get("energy") and machine.read_energy_uj() is not None:
        n, e0, t0 = 0, machine.read_energy_uj(), time.perf_counter()
        while time.perf_counter() - t0 < 1.0 or n < 3:
            loaded.run(feeds)
            n += 1
        e1 = machine.read_energy_uj()
        if e0 is not None and e1 is not None and e1 >= e0:
            result["energy_j_per_inference"] = (e1 - e0) / 1e6 / n
    loaded.close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
