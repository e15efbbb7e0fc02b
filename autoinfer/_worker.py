"""The measuring subprocess: ``python -m autoinfer._worker``.

It reads one JSON job per line on stdin and answers one JSON line per job on
its private result channel (the original stdout; anything a runtime prints
goes to stderr instead). A job loads one candidate, runs it on the sample
feeds, writes its outputs to an ``.npz`` file and reports load time, first
inference time, latency statistics, throughput and memory. A candidate that
crashes or hangs this process costs that candidate only: the parent notices,
kills the process and starts a fresh one for the next job.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable


def _rss_mb() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_runs(run: Callable[[], Any], slice_s: float, min_reps: int = 5,
              max_reps: int = 2000) -> dict[str, float]:
    """Latency statistics of ``run``: median, p90, MAD; stops early once stable."""
    times: list[float] = []
    start = time.perf_counter()
    last_median = None
    while len(times) < max_reps:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
        n = len(times)
        if n >= min_reps and time.perf_counter() - start >= slice_s:
            break
        if n >= 30 and n % 10 == 0:
            med = statistics.median(times)
            if last_median is not None and abs(med - last_median) / med < 0.005:
                mad = statistics.median(abs(t - med) for t in times)
                if mad / med < 0.03:
                    break
            last_median = med
    times.sort()
    med = statistics.median(times)
    return {
        "median_s": med,
        "p90_s": times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))],
        "min_s": times[0],
        "mad_s": statistics.median(abs(t - med) for t in times),
        "reps": float(len(times)),
    }


def measure_throughput(run: Callable[[], Any], threads: int, slice_s: float) -> float:
    """Completed requests per second with ``threads`` callers at once."""
    done = [0] * threads
    stop = time.perf_counter() + slice_s
    errors: list[BaseException] = []

    def loop(i: int) -> None:
        try:
            while time.perf_counter() < stop:
                run()
                done[i] += 1
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            errors.append(exc)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return sum(done) / (time.perf_counter() - t0)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from . import backends
    from .backends.base import Candidate, LoadContext
    from .errors import AutoinferError, UnsupportedModel
    from .model import ModelFacts

    for p in job.get("sys_path", []):
        if p not in sys.path:
            sys.path.append(p)
    target = job.get("backend_target")
    if target and job["candidate"]["backend"] not in backends.names():
        backends.register(job["candidate"]["backend"], target)
    cand = Candidate.from_dict(job["candidate"])
    facts = ModelFacts.from_dict(job["facts"])
    with np.load(job["feeds"], allow_pickle=False) as z:
        feeds = {k: z[k] for k in z.files}
    ctx = LoadContext(
        artifact_dir=Path(job["artifact_dir"]),
        threads=int(job.get("threads", 1)),
        input_shapes={k: tuple(v) for k, v in (job.get("input_shapes") or {}).items()} or None,
        objective=job.get("objective", "latency"),
        timeout_s=float(job.get("timeout_s", 300)),
        extra=dict(job.get("extra") or {}),
    )
    result: dict[str, Any] = {"ok": False, "candidate": cand.key}
    rss0 = _rss_mb()
    try:
        backend = backends.get(cand.backend)
        t0 = time.perf_counter()
        runner = backend.load(cand, facts, ctx)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        outputs = runner.run(feeds)
        first_s = time.perf_counter() - t0
    except UnsupportedModel as exc:
        return {**result, "kind": "unsupported", "reason": exc.reason}
    except AutoinferError as exc:
        return {**result, "kind": "error", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a backend broke its contract; report, don't die
        return {**result, "kind": "error",
                "reason": f"{type(exc).__name__}: {exc}".strip()[:2000],
                "traceback": traceback.format_exc()[-4000:]}
    try:
        np.savez(job["outputs"], **{f"o{i}": np.asarray(o) for i, o in enumerate(outputs)})
        stats: dict[str, float] = {}
        slice_s = float(job.get("slice_s", 1.0))
        if job.get("time", True):
            warm = max(1, int(job.get("warmup", 2)))
            for _ in range(warm):
                runner.run(feeds)
            stats = time_runs(lambda: runner.run(feeds), slice_s,
                              min_reps=int(job.get("min_reps", 5)))
            if job.get("objective") == "throughput":
                stats["throughput"] = measure_throughput(lambda: runner.run(feeds),
                                                         max(1, ctx.threads), slice_s)
            else:
                stats["throughput"] = 1.0 / stats["median_s"]
        runner.close()
    except AutoinferError as exc:
        return {**result, "kind": "error", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001
        return {**result, "kind": "error", "reason": f"{type(exc).__name__}: {exc}"[:2000]}
    return {**result, "ok": True, "load_s": load_s, "first_s": first_s, **stats,
            "rss_load_mb": max(0.0, _rss_mb() - rss0), "peak_mb": _peak_mb(),
            "n_outputs": len(outputs)}


def main() -> int:
    # Results go to a private copy of stdout; fd 1 is pointed at stderr so that a
    # runtime printing to stdout cannot corrupt the protocol.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            job = json.loads(line)
            res = run_job(job)
        except Exception as exc:  # noqa: BLE001 - malformed job: answer, don't die
            res = {"ok": False, "kind": "error", "reason": f"worker: {type(exc).__name__}: {exc}"}
        out.write(json.dumps(res, default=float) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
