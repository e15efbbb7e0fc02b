"""Interleaved timing: every contender runs in every round, in a rotating order,
so that a machine whose speed drifts (other jobs, clocks, caches) moves all of
them alike and their ratios hold."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

PAUSE_S = 0.075  # ONNX Runtime's pool threads spin for a while after a run; let them stop


def quantile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return math.nan
    pos = q * (len(s) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(xs: Sequence[float]) -> dict[str, float]:
    if not xs:
        return {"n": 0}
    med = statistics.median(xs)
    return {
        "n": len(xs),
        "median": med,
        "p10": quantile(xs, 0.1),
        "p90": quantile(xs, 0.9),
        "min": min(xs),
        "mean": statistics.fmean(xs),
        "mad": statistics.median(abs(x - med) for x in xs),
    }


def rotation(names: Sequence[str], r: int) -> list[str]:
    k = r % len(names)
    order = list(names[k:]) + list(names[:k])
    return order if r % 2 == 0 else order[::-1]


def interleaved(
    calls: Mapping[str, Callable[[], Any]],
    rounds: int,
    reps: Mapping[str, int],
    pause_s: float = PAUSE_S,
    warm: int = 1,
) -> dict[str, dict[str, Any]]:
    """Per contender: every timed call (seconds) and each round's median.

    A round gives each contender, after a pause and ``warm`` untimed calls,
    ``reps[name]`` timed back-to-back calls.
    """
    names = list(calls)
    out: dict[str, dict[str, Any]] = {n: {"samples": [], "round_medians": []} for n in names}
    for r in range(rounds):
        for name in rotation(names, r):
            fn = calls[name]
            time.sleep(pause_s)
            for _ in range(warm):
                fn()
            ts = []
            for _ in range(max(1, reps[name])):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            out[name]["samples"].extend(ts)
            out[name]["round_medians"].append(statistics.median(ts))
    return out


def per_call_blocks(
    calls: Mapping[str, Callable[[], Any]], rounds: int, block: int
) -> dict[str, list[float]]:
    """Per contender: the median time of one call in each round's block of ``block`` calls.

    For per-call overheads of microseconds: no pauses (the contenders share one
    runtime), each call timed alone (a preempted call is an outlier the median
    drops; the clock's own cost is the same for every contender and cancels in a
    difference), and each round's blocks are paired, so differences can be taken
    round by round.
    """
    names = list(calls)
    out: dict[str, list[float]] = {n: [0.0] * rounds for n in names}
    clock = time.perf_counter
    for r in range(rounds):
        for name in rotation(names, r):
            fn = calls[name]
            fn()
            ts = [0.0] * block
            for i in range(block):
                t0 = clock()
                fn()
                ts[i] = clock() - t0
            out[name][r] = statistics.median(ts)
    return out


def paired(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Round-by-round differences a - b: median and interquartile range."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    return {"median": statistics.median(d), "p25": quantile(d, 0.25), "p75": quantile(d, 0.75), "n": len(d)}


def ratio_spread(num: Sequence[float], den: Sequence[float]) -> dict[str, float]:
    """Round-by-round ratios num/den: median, p25, p75 (the noise of a ratio)."""
    if not num or not den:  # a peer without per-round numbers (an older results file)
        return {"n": 0}
    # rounds are interleaved: the same count for every peer, or the pairing is wrong
    r = [x / y for x, y in zip(num, den, strict=True) if y > 0]
    if not r:
        return {"n": 0}
    return {
        "median": statistics.median(r),
        "p25": quantile(r, 0.25),
        "p75": quantile(r, 0.75),
        "min": min(r),
        "max": max(r),
        "n": len(r),
    }


def geomean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else math.nan


# -- accuracy --------------------------------------------------------------------------------


def check(
    outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray], rtol: float = 1e-3, atol: float = 1e-4
) -> tuple[bool, float, str]:
    """(close enough, max abs error, why not): |o - r| <= atol * max(1, max|r|) + rtol * |r|."""
    if len(outputs) != len(reference):
        return False, math.inf, f"{len(outputs)} outputs, expected {len(reference)}"
    worst = 0.0
    for i, (o, r) in enumerate(zip(outputs, reference, strict=True)):
        o, r = np.asarray(o), np.asarray(r)
        if o.shape != r.shape:
            return False, math.inf, f"output {i}: shape {o.shape}, expected {r.shape}"
        if r.dtype.kind not in "fc":
            if not np.array_equal(o, r):
                return False, math.inf, f"output {i}: values differ"
            continue
        of, rf = o.astype(np.float64), r.astype(np.float64)
        if not np.all(np.isfinite(of) == np.isfinite(rf)):
            return False, math.inf, f"output {i}: non-finite values differ"
        fin = np.isfinite(rf)
        if not fin.any():
            continue
        diff = np.abs(of[fin] - rf[fin])
        scale = max(1.0, float(np.abs(rf[fin]).max()))
        err = float(diff.max())
        worst = max(worst, err)
        bad = diff > atol * scale + rtol * np.abs(rf[fin])
        if bad.any():
            return (
                False,
                worst,
                (f"output {i}: {int(bad.sum())} of {diff.size} values off (max abs error {err:.3g})"),
            )
    return True, worst, ""
