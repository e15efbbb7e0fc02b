"""Measurement: screening, the side-by-side race, its statistics, the sample feeds and
the comparison of outputs. The measuring subprocesses are :mod:`autoinfer.workers`.

    screening   one crash-isolated subprocess per backend: load, first run, outputs
                compared with the reference's, and a quick time. Failures, wrong answers
                and candidates clearly slower than the best quick time drop out.
    race        the finalists, always with the reference, loaded together in one
                measuring subprocess: warm-up, then interleaved rounds in rotating order
                with equal work per round and a pause between candidates (for spinning
                thread pools). Each round gives a ratio candidate / reference; a
                challenger replaces the reference only when the upper bound of the
                confidence interval of the median ratio is below ``WIN_THRESHOLD``.

Like pyperf and criterion.rs: calibrate, warm up, interleave, and keep the
incumbent unless the difference is significant.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import backends as registry
from .backends.base import Candidate
from .compare import compare, tolerance
from .decision import Decision, Measurement, RaceStat, Ranked
from .errors import AutoinferError, ConfigError, NoCandidateError
from .loader import context_to_job
from .workers import Worker, default_memory_limit_mb

if TYPE_CHECKING:  # pragma: no cover
    from .model import ModelFacts

log = logging.getLogger("autoinfer.measure")

WIN_THRESHOLD = 0.97  # a challenger must be faster than this ratio, with confidence
CONFIDENCE = 0.95
MIN_ROUNDS = 6  # the fewest rounds with a 95% interval for the median
SLOWER_CUT = 1.5  # screening drops what is slower than this times the best
MAX_FINALISTS = 4  # challengers in the race, besides the reference
PAUSE_S = 0.05  # between candidates in a round: spinning pools go quiet
SLOT_S = 0.025  # work per candidate per round, calibrated from the quick times
RACE_MAX_S = 60.0  # the longest a race goes on, whatever the budget

Feed = Mapping[str, np.ndarray]


class Cancelled(AutoinferError):
    """The selection was cancelled (the session closed, or the interpreter exits)."""


class SyntheticInputsRejected(NoCandidateError):
    """The reference failed on synthetic inputs: select again on the user's real inputs."""


# --------------------------------------------------------------------------
# sample feeds
_PASS_THROUGH = {"Cast", "Squeeze", "Unsqueeze", "Reshape", "Identity", "Flatten"}
_COMPARE = {"Equal": 0, "Greater": 1, "Less": -1, "GreaterOrEqual": 0, "LessOrEqual": 0}


def feed_hints(path: str | os.PathLike[str]) -> dict[str, tuple[str, Any]]:
    """What the graph tells about the values of its inputs, for synthetic feeds:
    ("range", n) for an integer input that indexes a Gather over an axis of n;
    ("value", v) for a scalar compared with a constant on the way to an ``If``."""
    try:
        import onnx
        from onnx import numpy_helper

        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - hints are a help, never a requirement
        log.debug("no feed hints for %s: %s", path, exc)
        return {}
    g = proto.graph
    inputs = {i.name for i in g.input}
    shapes = {t.name: tuple(t.dims) for t in g.initializer}
    consts: dict[str, np.ndarray] = {}
    for t in g.initializer:
        if int(np.prod(t.dims, dtype=np.int64)) <= 16:
            with contextlib.suppress(Exception):
                consts[t.name] = numpy_helper.to_array(t)
    nodes: list[Any] = []
    stack = [g]
    while stack:
        graph = stack.pop()
        for n in graph.node:
            nodes.append(n)
            for a in n.attribute:
                if a.g is not None and a.g.node:
                    stack.append(a.g)
                stack.extend(x for x in a.graphs)
    producer = {o: n for n in nodes for o in n.output}
    for n in nodes:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value" and a.t is not None:
                    with contextlib.suppress(Exception):
                        consts[n.output[0]] = numpy_helper.to_array(a.t)

    def source(name: str) -> str | None:
        for _ in range(8):
            if name in inputs:
                return name
            n = producer.get(name)
            if n is None or n.op_type not in _PASS_THROUGH or not n.input:
                return None
            name = n.input[0]
        return None

    hints: dict[str, tuple[str, Any]] = {}
    for n in nodes:
        if n.op_type == "Gather" and len(n.input) == 2 and n.input[0] in shapes:
            src = source(n.input[1])
            axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
            dims = shapes[n.input[0]]
            if src and dims and -len(dims) <= axis < len(dims):
                hints.setdefault(src, ("range", int(dims[axis])))
        if n.op_type in _COMPARE and len(n.input) == 2:
            for x, c in ((0, 1), (1, 0)):
                src = source(n.input[x])
                if src and n.input[c] in consts and consts[n.input[c]].size == 1:
                    v = consts[n.input[c]].reshape(()).item()
                    step = _COMPARE[n.op_type] * (1 if x == 0 else -1)
                    if isinstance(v, (int, np.integer)):
                        v = int(v) + step
                    else:
                        v = float(v) + step
                    if _feeds_if(n, producer, nodes):
                        hints.setdefault(src, ("value", v))
    return hints


def _feeds_if(node: Any, producer: Mapping[str, Any], nodes: Sequence[Any]) -> bool:
    """Whether ``node``'s output reaches an ``If`` condition (through Not/And/Or/Cast...)."""
    conds = {n.input[0] for n in nodes if n.op_type == "If" and n.input}
    todo, seen = [node.output[0]], set()
    users: dict[str, list[Any]] = {}
    for n in nodes:
        for i in n.input:
            users.setdefault(i, []).append(n)
    while todo:
        name = todo.pop()
        if name in conds:
            return True
        if name in seen:
            continue
        seen.add(name)
        for u in users.get(name, []):
            if u.op_type in ("Not", "And", "Or", "Xor", "Cast", "Squeeze", "Reshape", "Identity"):
                todo.extend(u.output)
    return False


def sample_feeds(
    model: ModelFacts,
    shapes: Mapping[str, Sequence[int]],
    seed: int = 0,
    hints: Mapping[str, tuple[str, Any]] | None = None,
) -> dict[str, np.ndarray]:
    """Deterministic synthetic inputs that respect what the graph tells (``feed_hints``):
    floats in [0, 1), integers in {0, 1} or within a Gather's axis, booleans, and a
    scalar tested by an ``If`` at a value its branches accept."""
    rng = np.random.default_rng(seed)
    hints = hints if hints is not None else feed_hints(model.path)
    feeds = {}
    for spec in model.inputs:
        shape = tuple(shapes[spec.name])
        dt = np.dtype(spec.dtype) if spec.dtype not in ("str", "bfloat16") else None
        if dt is None:
            raise ConfigError(
                f"input {spec.name!r} has dtype {spec.dtype}, which autoinfer "
                "cannot generate sample inputs for; pass sample_inputs="
            )
        kind, what = hints.get(spec.name, ("", None))
        if kind == "value" and dt.kind in "iuf":
            feeds[spec.name] = np.full(shape, what, dtype=dt)
        elif dt.kind == "f":
            feeds[spec.name] = rng.random(shape, dtype=np.float32).astype(dt)
        elif dt.kind in "iu":
            high = max(1, int(what)) if kind == "range" else 2
            feeds[spec.name] = rng.integers(0, high, size=shape).astype(dt)
        elif dt.kind == "b":
            feeds[spec.name] = rng.random(shape) < 0.5
        else:
            raise ConfigError(f"input {spec.name!r}: unsupported dtype {spec.dtype}")
    return feeds


def _metric(r: Ranked, objective: str) -> float:
    """A measured entry's figure for ``objective`` (lower is better)."""
    assert r.measurement is not None, r.candidate.key
    return r.measurement.metric(objective)


def save_feeds(path: Path, feeds: Sequence[Feed]) -> None:
    arrays: dict[str, Any] = {f"f{i}_{k}": np.asarray(v) for i, f in enumerate(feeds) for k, v in f.items()}
    np.savez(path, **arrays)


def load_feeds(path: str | os.PathLike[str]) -> list[dict[str, np.ndarray]]:
    out: dict[int, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            idx, name = key[1:].split("_", 1)
            out.setdefault(int(idx), {})[name] = z[key]
    return [out[i] for i in sorted(out)]


# --------------------------------------------------------------------------
# the statistics
def median_interval(xs: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Median and a distribution-free confidence interval for it (order statistics):
    [x_(j), x_(n-j+1)] with the binomial tail below (1 - confidence) / 2 on each side.
    Fewer than ``MIN_ROUNDS`` samples give (median, -inf, inf)."""
    s = sorted(float(x) for x in xs)
    n = len(s)
    if n == 0:
        return math.nan, -math.inf, math.inf
    med = float(np.median(s))
    alpha = (1.0 - confidence) / 2
    j, cum = 0, 0.0
    for k in range(n):  # P(B <= k) for B ~ Binomial(n, 1/2)
        cum += math.comb(n, k) / 2.0**n
        if cum > alpha:
            break
        j = k + 1
    if j < 1:
        return med, -math.inf, math.inf
    return med, s[j - 1], s[n - j]


def verdict(ratios: Sequence[float], threshold: float = WIN_THRESHOLD) -> RaceStat:
    """The race's verdict on one challenger from its per-round ratios to the reference:
    "faster" only when the whole interval lies below ``threshold``; "not faster" when
    it lies above; otherwise "undecided"."""
    med, lo, hi = median_interval(ratios)
    if len(ratios) >= MIN_ROUNDS and hi < threshold:
        v = "faster"
    elif len(ratios) >= MIN_ROUNDS and lo > threshold:
        v = "not faster"
    else:
        v = "undecided"
    return RaceStat(med, lo, hi, len(ratios), v)


def race_order(n: int, round_index: int) -> list[int]:
    """The order of ``n`` candidates in a round: rotated each round, reversed every other."""
    order = [(i + round_index) % n for i in range(n)]
    return order[::-1] if round_index % 2 else order


# --------------------------------------------------------------------------
# screening and the race
class Measurer:
    """Screens the ranked candidates and races the finalists for one selection.

    ``sel`` is the policy's Selector: model, opts, loader, bucket, shapes, progress,
    cancel, reference() and the backend list.
    """

    def __init__(self, sel: Any, feeds: Sequence[Feed], source: str, work: Path, t_start: float) -> None:
        self.sel = sel
        self.opts = sel.opts
        self.model = sel.model
        self.work = work
        self.source = source
        self.t_start = t_start
        self.budget = self.opts.budget_s or sel.settings.budget_s
        self.deadline = t_start + self.budget
        self.feeds_path = work / "feeds.npz"
        save_feeds(self.feeds_path, feeds)
        self.workers: dict[str, Worker] = {}
        self.mem_limit = self.opts.memory_limit_mb or default_memory_limit_mb()
        self.reference: list[list[np.ndarray]] | None = None
        self._n = 0

    def _check_cancel(self) -> None:
        if self.sel.cancel is not None and self.sel.cancel.is_set():
            raise Cancelled("the selection was cancelled")

    def _worker(self, key: str) -> Worker:
        if key not in self.workers:
            self.workers[key] = Worker(self.work, self.mem_limit, self.sel.cancel)
        return self.workers[key]

    def _entry(self, cand: Candidate) -> dict[str, Any]:
        ctx = self.sel.loader.context(cand, self.sel.shapes)
        return {
            "candidate": cand.to_dict(),
            "ctx": context_to_job(ctx),
            "backend_target": registry._REGISTRY.get(cand.backend),
        }

    def screen_one(
        self, cand: Candidate, slice_s: float, time_it: bool = True
    ) -> tuple[dict[str, Any], list[list[np.ndarray]] | None]:
        self._check_cancel()
        self._n += 1
        out = self.work / f"out-{self._n}.npz"
        self.sel.progress(f"screening {cand.key}")
        job = {
            "type": "screen",
            **self._entry(cand),
            "facts": self.model.to_dict(),
            "feeds": str(self.feeds_path),
            "outputs": str(out),
            "slice_s": slice_s,
            "time": time_it,
            "sys_path": [p for p in sys.path if p],
        }
        res = self._worker(cand.backend).submit(job, self.opts.candidate_timeout_s + 4 * slice_s + 10)
        if res.get("kind") == "cancelled":
            raise Cancelled("the selection was cancelled")
        outputs = None
        if res.get("ok"):
            try:
                with np.load(out, allow_pickle=False) as z:
                    outputs = [
                        [z[f"f{i}_o{j}"] for j in range(int(res["n_outputs"]))]
                        for i in range(int(res["n_feeds"]))
                    ]
            except (OSError, KeyError, ValueError) as exc:
                self._check_cancel()  # the work directory goes first at exit
                res = {"ok": False, "kind": "crash", "reason": f"unreadable outputs ({exc})"}
        return res, outputs

    def evaluate(self, r: Ranked, slice_s: float, is_reference: bool) -> None:
        res, outs = self.screen_one(r.candidate, slice_s)
        if not res.get("ok"):
            r.status = "unsupported" if res.get("kind") == "unsupported" else "failed"
            r.status_reason = str(res.get("reason", "unknown failure"))
            log.info("%s: %s (%s)", r.candidate.key, r.status, r.status_reason)
            return
        m = Measurement(
            load_s=res["load_s"],
            first_s=res["first_s"],
            median_s=res["median_s"],
            p90_s=res["p90_s"],
            mad_s=res["mad_s"],
            reps=int(res["reps"]),
            throughput=res["throughput"],
            rss_load_mb=res["rss_load_mb"],
            peak_mb=res["peak_mb"],
        )
        if is_reference and self.reference is None:
            self.reference = outs
        if self.reference is not None and outs is not None:
            rtol, atol = tolerance(r.candidate.precision, self.opts.rtol, self.opts.atol)
            worst_abs = worst_rel = 0.0
            for got, want in zip(outs, self.reference, strict=True):
                ok, max_abs, max_rel, why = compare(got, want, rtol, atol)
                worst_abs, worst_rel = max(worst_abs, max_abs), max(worst_rel, max_rel)
                if not ok:
                    m.max_abs_err, m.max_rel_err = worst_abs, worst_rel
                    r.status, r.status_reason, r.measurement = "rejected", f"wrong outputs: {why}", m
                    log.warning("autoinfer rejected %s: %s", r.candidate.key, why)
                    return
            m.max_abs_err, m.max_rel_err = worst_abs, worst_rel
        r.status, r.status_reason, r.measurement = "measured", "", m

    def close(self) -> None:
        for w in self.workers.values():
            w.kill() if self.sel.cancel is not None and self.sel.cancel.is_set() else w.close()

    # -- the selection -------------------------------------------------------
    def run(self, ranked: list[Ranked], unsupported: list[dict[str, str]]) -> Decision:
        try:
            return self._run(ranked, unsupported)
        finally:
            self.close()

    def _run(self, ranked: list[Ranked], unsupported: list[dict[str, str]]) -> Decision:
        obj = self.opts.objective
        ref_cand = self.sel.reference()
        ref = next((r for r in ranked if r.candidate == ref_cand), None)
        per = max(0.1, min(0.3, 0.05 * self.budget / max(1, len(ranked))))
        if ref_cand is not None:  # the reference first: its outputs judge all others
            if ref is not None:
                self.evaluate(ref, per, True)
                failed = ref.status != "measured"
                why = ref.status_reason
            else:
                res, outs = self.screen_one(ref_cand, 0.0, time_it=False)
                self.reference = outs if res.get("ok") else None
                failed, why = not res.get("ok"), str(res.get("reason", ""))
            if failed and self.source == "synthetic":
                raise SyntheticInputsRejected(
                    f"the reference {ref_cand.key} fails on synthetic inputs for "
                    f"{self.model.path.name}; select on real inputs (sample_inputs=, or --inputs "
                    "FEEDS.npz on the command line)",
                    {ref_cand.key: why},
                )
            if failed:
                log.warning("the reference %s failed: %s", ref_cand.key, why)
        for r in ranked:  # every candidate at its defaults, best estimate first
            if r.status != "ranked":
                continue
            if time.monotonic() > self.deadline and any(x.status == "measured" for x in ranked):
                r.status, r.status_reason = "skipped", "not measured: time budget spent"
                continue
            self.evaluate(r, per, False)
        if not any(r.status == "measured" for r in ranked):
            raise NoCandidateError(
                f"no runtime ran {self.model.path.name} correctly here",
                {
                    **{r.candidate.key: f"{r.status}: {r.status_reason}" for r in ranked},
                    **{u["key"]: u["reason"] for u in unsupported},
                },
            )
        if self.opts.tune:
            self._variants(ranked, per)
        measured = sorted((r for r in ranked if r.status == "measured"), key=lambda r: _metric(r, obj))
        best = _metric(measured[0], obj)
        base = ref if ref is not None and ref.status == "measured" else measured[0]
        finalists = [r for r in measured if r is not base and _metric(r, obj) <= SLOWER_CUT * best]
        finalists = finalists[:MAX_FINALISTS]
        for r in measured:
            if r is not base and r not in finalists:
                r.status_reason = (
                    f"not raced: slower than {SLOWER_CUT:g}x the best quick time"
                    if r.measurement.metric(obj) > SLOWER_CUT * best  # type: ignore[union-attr]
                    else f"not raced: not among the {MAX_FINALISTS} fastest"
                )
        winner = base
        if finalists and obj == "latency":
            winner = self._race(base, finalists)
        elif finalists:  # other objectives: screening's metric, with the same margin
            cand = finalists[0]
            if cand.measurement.metric(obj) < WIN_THRESHOLD * base.measurement.metric(obj):  # type: ignore[union-attr]
                winner = cand
        if self.reference is None:
            winner.reasons = winner.reasons + ("no reference outputs were available: accuracy not checked",)
        for r in ranked:
            if r.status == "ranked":
                r.status, r.status_reason = "skipped", "not measured"
        return Decision(
            winner.candidate,
            obj,
            True,
            ranked,
            unsupported,
            self.sel.bucket,
            time.monotonic() - self.t_start,
            inputs=self.source,
        )

    def _variants(self, ranked: list[Ranked], per: float) -> None:
        """Tuned settings of the promising backends, screened the same way."""
        obj = self.opts.objective
        measured = sorted((r for r in ranked if r.status == "measured"), key=lambda r: _metric(r, obj))
        best = _metric(measured[0], obj)
        promising = [r for r in measured[:2] if r.measurement.metric(obj) <= SLOWER_CUT * best]  # type: ignore[union-attr]
        known = {r.candidate for r in ranked}
        for r in promising:
            try:
                variants = registry.get(r.candidate.backend).variants(
                    r.candidate, self.model, self.sel.hw, obj
                )
            except Exception as exc:  # noqa: BLE001 - one backend never sinks the selection
                log.info("variants() of %s failed: %s", r.candidate.key, exc)
                variants = []
            for v in variants:
                if v in known:
                    continue
                known.add(v)
                nr = Ranked(v, r.cost, r.reasons + (f"tuned variant of {r.candidate.key}",))
                ranked.append(nr)
                if time.monotonic() > self.deadline:
                    nr.status, nr.status_reason = "skipped", "not measured: time budget spent"
                    continue
                self.evaluate(nr, per, False)

    def _race(self, base: Ranked, finalists: list[Ranked]) -> Ranked:
        """Race ``finalists`` against ``base`` side by side; the winner (``base`` unless
        a challenger is faster with confidence)."""
        entrants = [base, *finalists]
        slowest = max(_metric(r, "latency") for r in entrants)
        reps = int(min(200, max(1, round(SLOT_S / max(slowest, 1e-6)))))
        left = self.deadline - time.monotonic()
        round_s = sum(PAUSE_S + reps * _metric(r, "latency") for r in entrants)
        budget = min(RACE_MAX_S, max(left, min(3.0, 0.3 * self.budget), 2 * MIN_ROUNDS * round_s))
        self.sel.progress(f"racing {len(entrants)} finalists")
        job = {
            "type": "race",
            "facts": self.model.to_dict(),
            "feeds": str(self.feeds_path),
            "entries": [self._entry(r.candidate) for r in entrants],
            "reps": reps,
            "pause_s": PAUSE_S,
            "budget_s": budget,
            "threshold": WIN_THRESHOLD,
            "sys_path": [p for p in sys.path if p],
        }
        res = self._worker("race").submit(
            job, self.opts.candidate_timeout_s + budget + 4 * MIN_ROUNDS * round_s + 30
        )
        if res.get("kind") == "cancelled":
            raise Cancelled("the selection was cancelled")
        if not res.get("ok"):
            log.warning("autoinfer: the race failed (%s); keeping %s", res.get("reason"), base.candidate.key)
            base.reasons = base.reasons + (f"the race failed: {res.get('reason')}",)
            return base
        times = res["times"]  # per entrant, per round: seconds per run
        base_t = times[0]
        base.race = RaceStat(
            1.0, 1.0, 1.0, len(base_t), "reference", float(np.median(base_t)) if base_t else 0.0
        )
        best: Ranked | None = None
        for r, ts in zip(finalists, times[1:], strict=True):
            ratios = [t / b for t, b in zip(ts, base_t, strict=True) if b > 0]
            stat = verdict(ratios)
            stat.median_s = float(np.median(ts)) if ts else 0.0
            r.race = stat
            if stat.verdict == "faster" and (best is None or stat.ratio < best.race.ratio):  # type: ignore[union-attr]
                best = r
        for i, why in (res.get("failed") or {}).items():
            r = entrants[int(i)]
            r.status, r.status_reason = "failed", f"failed in the race: {why}"
            if r is best:
                best = None
            if r is base:
                return base
        return best or base
