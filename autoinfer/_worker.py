"""The measuring subprocess: ``python -m autoinfer._worker``.

It reads one JSON job per line on stdin and answers one JSON line per job on
its private result channel (the original stdout; anything a runtime prints
goes to stderr instead). A screening job loads one candidate, runs it on the
sample feeds, writes its outputs to an ``.npz`` file and reports load time,
first inference time, latency statistics, throughput and memory; asked to
(``keep``), it leaves the runner loaded for a race in this same process. A race job
loads the finalists together (taking a kept runner instead of loading it again) and
times them in interleaved rounds until the selection's deadline (see
``autoinfer.measure``). Every load goes through ``autoinfer.loader``. A candidate that
crashes or hangs this process costs that candidate only: the parent notices,
kills the process and starts a fresh one for the next job.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any


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


def time_runs(
    run: Callable[[], Any], slice_s: float, min_reps: int = 5, max_reps: int = 2000
) -> dict[str, float]:
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


def _setup(job: dict[str, Any]) -> None:
    from . import backends

    for p in job.get("sys_path", []):
        if p not in sys.path:
            sys.path.append(p)
    for e in job.get("entries") or [job]:
        target = e.get("backend_target")
        if target and e["candidate"]["backend"] not in backends.names():
            backends.register(e["candidate"]["backend"], target)


def _error(result: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    from .errors import AutoinferError, UnsupportedModel

    if isinstance(exc, UnsupportedModel):
        return {**result, "kind": "unsupported", "reason": exc.reason}
    if isinstance(exc, AutoinferError):
        return {**result, "kind": "error", "reason": str(exc)}
    return {
        **result,
        "kind": "error",
        "reason": f"{type(exc).__name__}: {exc}".strip()[:2000],
        "traceback": traceback.format_exc()[-4000:],
    }


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Screening: load one candidate, run every feed, save the outputs, time it."""
    if job.get("type") == "race":
        return run_race(job)
    import numpy as np

    from .backends.base import Candidate, session_call
    from .feeds import load_feeds
    from .loader import context_from_job, load
    from .model import ModelFacts

    _setup(job)
    cand = Candidate.from_dict(job["candidate"])
    facts = ModelFacts.from_dict(job["facts"])
    feeds = load_feeds(job["feeds"])
    ctx = context_from_job(job["ctx"])
    result: dict[str, Any] = {"ok": False, "candidate": cand.key}
    rss0 = _rss_mb()
    try:
        t0 = time.perf_counter()
        runner = load(cand, facts, ctx)
        load_s = time.perf_counter() - t0
        t0 = t_loaded = time.perf_counter()
        outputs = [runner.run(feeds[0])]
        first_s = time.perf_counter() - t0
        outputs += [runner.run(f) for f in feeds[1:]]
    except Exception as exc:  # noqa: BLE001 - a backend broke its contract; report, don't die
        return _error(result, exc)
    try:
        arrays: dict[str, Any] = {
            f"f{i}_o{j}": np.asarray(o) for i, outs in enumerate(outputs) for j, o in enumerate(outs)
        }
        np.savez(job["outputs"], **arrays)
        stats: dict[str, float] = {}
        slice_s = float(job.get("slice_s", 1.0))
        if job.get("time", True):
            cycle, run = [0], session_call(runner)  # timed as the session will call it

            def call() -> Any:
                cycle[0] += 1
                return run(feeds[cycle[0] % len(feeds)])

            for _ in range(max(1, int(job.get("warmup", 2)))):
                call()
            stats = time_runs(call, slice_s, min_reps=int(job.get("min_reps", 5)))
            if ctx.objective == "throughput":
                stats["throughput"] = measure_throughput(call, max(1, ctx.threads), slice_s)
            else:
                stats["throughput"] = 1.0 / stats["median_s"]
            if ctx.objective == "latency":  # only a latency selection races
                # how long its threads go on spinning: the race waits that long after it
                stats["quiet_s"] = wait_quiet(float(job.get("pause_s", 0.1)))
        if job.get("keep"):  # for the race, in this same process: loaded once
            _keep(cand.key, runner)
        else:
            runner.close()
    except Exception as exc:  # noqa: BLE001
        return _error(result, exc)
    return {
        **result,
        "ok": True,
        "load_s": load_s,
        "runs_s": time.perf_counter() - t_loaded,  # everything after the load
        "first_s": first_s,
        **stats,
        "rss_load_mb": max(0.0, _rss_mb() - rss0),
        "peak_mb": _peak_mb(),
        "n_outputs": len(outputs[0]),
        "n_feeds": len(feeds),
    }


# Runners a screening job kept loaded for the race in this process, by candidate key.
_KEPT: dict[str, Any] = {}


def _keep(key: str, runner: Any) -> None:
    old = _KEPT.pop(key, None)
    if old is not None:
        old.close()
    _KEPT[key] = runner


def _race_runner(entry: dict[str, Any], facts: Any) -> tuple[Any, bool]:
    """The runner of one race entry: the one a screening job kept loaded here when the
    entry asks for it (and it is still here), else a fresh load; and whether it was kept."""
    from .backends.base import Candidate
    from .loader import context_from_job, load

    cand = Candidate.from_dict(entry["candidate"])
    kept = _KEPT.pop(cand.key, None) if entry.get("kept") else None
    if kept is not None:
        return kept, True
    return load(cand, facts, context_from_job(entry["ctx"])), False


def _race_deadline(job: dict[str, Any]) -> float:
    """When the rounds stop (``time.monotonic()``): the selection's own deadline, ``end_by``,
    read on the clock every process of this machine shares; else ``budget_s`` from now."""
    if job.get("end_by") is not None:
        return float(job["end_by"])
    return time.monotonic() + float(job["budget_s"])


def wait_quiet(max_s: float, poll_s: float = 0.005) -> float:
    """Sleep until this process's other threads go quiet (a runtime's pool spins for a
    while after a run: ONNX Runtime's for ~50 ms, taking a core from whoever runs next),
    at most ``max_s``; at least one poll. Quiet: under a fifth of a core busy over a poll.
    Returns the time slept."""
    t0 = time.monotonic()
    while True:
        c0 = time.process_time()
        time.sleep(poll_s)
        if time.process_time() - c0 < 0.2 * poll_s or time.monotonic() - t0 >= max_s:
            return time.monotonic() - t0


def _slot(call: Callable[[Any], Any], feeds: list[Any], rnd: int, reps: int) -> float:
    """One entrant's share of a round: ``reps`` runs, each timed; their median (a run
    that a burst of the machine's other load slowed drops out, as it would not from a mean)."""
    ts = [0.0] * reps
    clock = time.perf_counter
    for k in range(reps):
        t0 = clock()
        call(feeds[(rnd + k) % len(feeds)])
        ts[k] = clock() - t0
    return statistics.median(ts)


def _paired_slot(
    call: Callable[[Any], Any], plain: Callable[[Any], Any], feeds: list[Any], rnd: int, reps: int
) -> tuple[float, float]:
    """The reference's share of a round with its runtime's plain call beside it: ``reps``
    of each, alternating on the same feed, each timed; the two medians."""
    ts, ps = [0.0] * reps, [0.0] * reps
    clock = time.perf_counter
    for k in range(reps):
        feed = feeds[(rnd + k) % len(feeds)]
        first, second = (call, plain) if k % 2 else (plain, call)
        t0 = clock()
        first(feed)
        t1 = clock()
        second(feed)
        t2 = clock()
        ts[k], ps[k] = (t1 - t0, t2 - t1) if k % 2 else (t2 - t1, t1 - t0)
    return statistics.median(ts), statistics.median(ps)


def _settled(
    times: list[list[float]],
    failed: dict[int, str],
    out: set[int],
    threshold: float,
    spread: float,
    insist: frozenset[int] = frozenset(),
) -> bool:
    """Whether the race can stop: no challenger undecided and, where one wins, its ratio
    (what the session is told to expect) known to within ``spread`` (its interval's high /
    low). Challengers found not faster join ``out``: they run no more rounds; but those in
    ``insist`` (screening found them much faster) count as undecided, and race on."""
    from .verdicts import verdict

    undecided, best = False, None
    for i in range(1, len(times)):
        if i in failed or i in out:
            continue
        v = verdict([t / b for t, b in zip(times[i], times[0], strict=False)], threshold)
        if v.verdict == "not faster" and i in insist:
            undecided = True
            continue
        if v.verdict == "not faster":
            out.add(i)
        undecided = undecided or v.verdict == "undecided"
        if v.verdict == "faster" and (best is None or v.ratio < best.ratio):
            best = v
    return not undecided and (best is None or best.high <= spread * best.low)


def _warm_entrants(
    entries: list[dict[str, Any]], facts: Any, feeds: list[Any], reps: int
) -> tuple[list[Any], list[int]]:
    """The race's runners, loaded (or kept from screening: their indices) and warmed up:
    caches, allocators, lazy compilation."""
    runners: list[Any] = []
    kept: list[int] = []
    for i, e in enumerate(entries):
        runner, was_kept = _race_runner(e, facts)
        runners.append(runner)
        if was_kept:
            kept.append(i)
    for r in runners:
        t_end = time.perf_counter() + 0.05
        for i in range(max(3, reps)):
            r.run(feeds[i % len(feeds)])
            if time.perf_counter() > t_end and i >= 2:
                break
    return runners, kept


def run_race(job: dict[str, Any]) -> dict[str, Any]:
    """The finalists side by side in this one process: load all, warm up, then
    interleaved rounds in rotating order, the same number of runs per candidate per
    round (their median is the round's time) and a wait for quiet before each candidate;
    a challenger found not faster runs no more rounds (unless ``insist`` names it: screening
    found it much faster, and a burst of load during the first rounds may be what the race
    saw, so it races on); the rounds stop once every
    challenger's verdict is clear (see verdicts.verdict) and the winning one's interval is
    narrower than ``spread`` (high / low), or the budget is spent. Entry 0
    is the reference; a challenger's times pair with the first of the reference's.
    ``prior`` (per entry, its times of an earlier race) counts as rounds already run.
    Each entrant is called as the session will call it (backends.base.session_call); with
    ``plain``, the reference's runtime's own call (``Runner.plain_run``) runs beside the
    reference's in its slot, and ``plain`` in the result is, per round, the reference's
    time over that call's."""
    from .backends.base import session_call
    from .feeds import load_feeds
    from .model import ModelFacts
    from .verdicts import MIN_ROUNDS, race_order

    _setup(job)
    facts = ModelFacts.from_dict(job["facts"])
    feeds = load_feeds(job["feeds"])
    reps, pause = max(1, int(job["reps"])), float(job["pause_s"])
    threshold = float(job.get("threshold", 0.97))
    spread = float(job.get("spread", math.inf))
    try:
        runners, kept = _warm_entrants(job["entries"], facts, feeds, reps)
    except Exception as exc:  # noqa: BLE001
        return _error({"ok": False}, exc)
    n = len(runners)
    calls = [session_call(r) for r in runners]
    plain = runners[0].plain_run if job.get("plain") else None
    plain_ratios: list[float] = []
    # a resumed race goes on from the rounds of an earlier one (the reference's first)
    prior = job.get("prior") or [[] for _ in range(n)]
    times: list[list[float]] = [[float(t) for t in p] for p in prior]
    failed: dict[int, str] = {}
    out: set[int] = set()  # challengers already found not faster: they run no more rounds
    insist = frozenset(int(i) for i in job.get("insist") or ())
    deadline = _race_deadline(job)
    rnd, round_s = 0, 0.0
    # at least MIN_ROUNDS rounds (an interval needs them), then while another round ends
    # before the deadline
    while (rnd < MIN_ROUNDS or time.monotonic() + round_s < deadline) and rnd < int(
        job.get("max_rounds", 400)
    ):
        t_round = time.monotonic()
        slot: dict[int, float] = {}
        for i in race_order(n, rnd):
            if i in failed or i in out:
                continue
            wait_quiet(pause)
            try:
                if i == 0 and plain is not None:
                    slot[0], plain_t = _paired_slot(calls[0], plain, feeds, rnd, reps)
                else:
                    slot[i] = _slot(calls[i], feeds, rnd, reps)
            except Exception as exc:  # noqa: BLE001
                failed[i] = f"{type(exc).__name__}: {exc}"[:500]
        if 0 in failed:
            break
        if all(i in slot for i in range(n) if i not in failed and i not in out):
            for i, t in slot.items():
                times[i].append(t)
            if plain is not None:
                plain_ratios.append(slot[0] / max(plain_t, 1e-12))
        rnd += 1
        round_s = time.monotonic() - t_round
        if len(times[0]) >= MIN_ROUNDS and _settled(times, failed, out, threshold, spread, insist):
            break
    for r in runners:
        try:
            r.close()
        except Exception:  # noqa: BLE001
            pass
    return {"ok": True, "times": times, "rounds": rnd, "failed": failed, "kept": kept, "plain": plain_ratios}


def _die_with_parent() -> None:
    """Linux: this process is killed when the thread that started it ends, so that a
    parent killed outright leaves no measuring process behind."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the parent's exit handler kills it
        pass


def main() -> int:
    # Results go to a private copy of stdout; fd 1 is pointed at stderr so that a
    # runtime printing to stdout cannot corrupt the protocol.
    _die_with_parent()
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
