"""Measurement: screening, the side-by-side race and its statistics, within the
selection's time budget (:mod:`autoinfer.budget`). The measuring subprocesses are
:mod:`autoinfer.workers`; the sample feeds are :mod:`autoinfer.feeds` (re-exported here).

    screening   one crash-isolated subprocess per backend: load, first run, outputs
                compared with the reference's, and a quick time. Failures, wrong answers
                and candidates clearly slower than the best quick time drop out.
    race        the finalists, always with the reference, loaded together in one
                measuring subprocess: warm-up, then interleaved rounds in rotating order
                with equal work per round (the median of its timed runs) and a wait
                before each candidate until the process is quiet (spinning thread pools).
                Each round gives a ratio candidate / reference; a challenger replaces
                the reference only when the upper bound of the confidence interval of
                the median ratio is below ``WIN_THRESHOLD``; one whose lower bound is
                above it runs no more rounds.
                The reference's runner, kept loaded from its screening, races in its
                own worker; the rounds go on until the selection's deadline.

Like pyperf and criterion.rs: calibrate, warm up, interleave, and keep the
incumbent unless the difference is significant.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import backends as registry
from .backends.base import Candidate
from .budget import TimeBudget
from .compare import compare, tolerance
from .decision import Decision, Measurement, RaceStat, Ranked
from .errors import AutoinferError, NoCandidateError
from .feeds import feed_hints, load_feeds, sample_feeds, save_feeds
from .loader import context_to_job
from .verdicts import (
    MIN_ROUNDS,
    WIN_SPREAD,
    WIN_THRESHOLD,
    median_interval,
    race_order,
    resumable,
    rivals,
    verdict,
)
from .workers import Worker, default_memory_limit_mb

log = logging.getLogger("autoinfer.measure")

SLOWER_CUT = 1.5  # screening drops what is slower than this times the best
MAX_FINALISTS = 4  # challengers in the race, besides the reference
PAUSE_S = 0.08  # the longest wait for quiet before a candidate (ORT's pool spins ~50-60 ms)
# work per candidate per round, calibrated from the quick times: the median of several runs
# (here, the per-round ratio of two equal sessions spread 2-3x less over 50-100 ms slots
# of timed runs than over 25 ms slots of two)
SLOT_S = 0.06
# The race times the reference's plain call beside it (decision.RaceStat.plain) where a run
# takes at most this long; beyond, the call's own few microseconds are under 1% of a run.
PLAIN_MAX_S = 0.0005
RACE_MAX_S = 60.0  # the longest a race goes on, whatever the budget
RESERVE_ROUNDS = 2 * MIN_ROUNDS  # the race always has time for this many rounds
# a challenger whose quick time was under this ratio of the reference's races to the end
# even where the first rounds find it not faster
INSIST_BELOW = 0.8

Feed = Mapping[str, np.ndarray]

__all__ = [
    "Cancelled",
    "Measurer",
    "SyntheticInputsRejected",
    "compare",
    "feed_hints",
    "load_feeds",
    "median_interval",
    "race_order",
    "resumable",
    "sample_feeds",
    "save_feeds",
    "verdict",
]


class Cancelled(AutoinferError):
    """The selection was cancelled (the session closed, or the interpreter exits)."""


class SyntheticInputsRejected(NoCandidateError):
    """The reference failed on synthetic inputs: select again on the user's real inputs."""


def _reps(slowest_s: float) -> int:
    """Runs per candidate per round: ``SLOT_S`` of work for the slowest entrant."""
    return int(min(200, max(1, round(SLOT_S / max(slowest_s, 1e-6)))))


def _quiet_s(r: Ranked) -> float:
    """The race's wait after ``r``'s runs: as measured in its screening, else the longest."""
    q = r.measurement.quiet_s if r.measurement is not None else None
    return PAUSE_S if q is None else min(PAUSE_S, max(0.0, float(q)))


def _metric(r: Ranked, objective: str) -> float:
    """A measured entry's figure for ``objective`` (lower is better)."""
    assert r.measurement is not None, r.candidate.key
    return r.measurement.metric(objective)


def _insisting(base: Ranked, finalists: list[Ranked]) -> list[int]:
    """The race's entrants (the reference is 0) that race to the end even where the first
    rounds find them not faster: those whose quick time was under ``INSIST_BELOW`` of the
    reference's."""
    limit = INSIST_BELOW * _metric(base, "latency")
    return [i for i, r in enumerate(finalists, 1) if _metric(r, "latency") < limit]


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
        self.budget = TimeBudget(self.opts.budget_s or sel.settings.budget_s, t_start)
        self.feeds_path = work / "feeds.npz"
        save_feeds(self.feeds_path, feeds)
        self.workers: dict[str, Worker] = {}
        self.mem_limit = self.opts.memory_limit_mb or default_memory_limit_mb()
        self.reference: list[list[np.ndarray]] | None = None
        self.kept: Candidate | None = None  # loaded in its worker for the race
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

    def _fresh(self, key: str) -> bool:
        """Whether a job for worker ``key`` starts a measuring process first."""
        w = self.workers.get(key)
        return w is None or w.proc is None or w.proc.poll() is not None

    def screen_one(
        self, cand: Candidate, slice_s: float, time_it: bool = True, reference: bool = False
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
            # the reference stays loaded in its worker, where the race runs (latency only)
            "keep": reference and time_it and self.opts.objective == "latency",
            "pause_s": PAUSE_S,
            "sys_path": [p for p in sys.path if p],
        }
        fresh, t0 = self._fresh(cand.backend), time.monotonic()
        res = self._worker(cand.backend).submit(job, self.opts.candidate_timeout_s + 4 * slice_s + 10)
        self.budget.observe(res, time.monotonic() - t0, fresh, reference and time_it)
        if job["keep"] and res.get("ok"):
            self.kept = cand
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
        res, outs = self.screen_one(r.candidate, slice_s, reference=is_reference)
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
            quiet_s=res.get("quiet_s"),
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
        cancelled = self.sel.cancel is not None and self.sel.cancel.is_set()
        for w in self.workers.values():  # every worker ends at once, not one after another
            w.kill() if cancelled else w.release()
        for w in self.workers.values():
            w.close()

    # -- the selection -------------------------------------------------------
    def run(self, ranked: list[Ranked], unsupported: list[dict[str, str]]) -> Decision:
        try:
            return self._run(ranked, unsupported)
        finally:
            self.close()

    def resume(self, dec: Decision) -> Decision:
        """``dec`` with its undecided race (:func:`resumable`) run on: the reference and the
        undecided challengers, loaded afresh, race more rounds after those already run."""
        try:
            return self._resume(dec)
        finally:
            self.close()

    def _resume(self, dec: Decision) -> Decision:
        base = dec.winner_entry
        assert base is not None and base.race is not None, "not resumable"
        undecided = rivals(dec)
        before = base.race.rounds
        winner = self._race(base, undecided, resumed=True)
        if base.race.rounds == before:  # no round ran (the race failed): not again
            for r in undecided:
                if r.race is not None:
                    r.race.times = []
        elapsed = time.monotonic() - self.t_start
        note = f"the race resumed on a later start: {before} rounds, then {base.race.rounds} in all"
        log.info("autoinfer: %s; %s wins", note, winner.candidate.key)
        winner.reasons = tuple(r for r in winner.reasons if not r.startswith("the race resumed")) + (note,)
        return Decision(
            winner.candidate,
            dec.objective,
            True,
            dec.ranking,
            dec.unsupported,
            dec.bucket,
            dec.elapsed_s + elapsed,
            inputs=dec.inputs,
        )

    def _run(self, ranked: list[Ranked], unsupported: list[dict[str, str]]) -> Decision:
        obj = self.opts.objective
        per = max(0.1, min(0.3, 0.05 * self.budget.budget_s / max(1, len(ranked))))
        ref = self._screen_reference(ranked, per)
        for r in ranked:  # every candidate at its defaults, best estimate first
            if r.status == "ranked" and self._admit(r, self._must_measure(ranked, ref)):
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
            winner = self._race(base, self._fit_race(base, finalists))
        elif finalists:  # other objectives: screening's metric, with the same margin
            cand = finalists[0]
            if cand.measurement.metric(obj) < WIN_THRESHOLD * base.measurement.metric(obj):  # type: ignore[union-attr]
                winner = cand
        if self.reference is None:
            winner.reasons = winner.reasons + ("no reference outputs were available: accuracy not checked",)
        for r in ranked:
            if r.status == "ranked":
                r.status, r.status_reason = "skipped", "not measured"
        elapsed = time.monotonic() - self.t_start
        winner.reasons = winner.reasons + tuple(self.budget.account(elapsed))
        return Decision(
            winner.candidate, obj, True, ranked, unsupported, self.sel.bucket, elapsed, inputs=self.source
        )

    def _screen_reference(self, ranked: list[Ranked], per: float) -> Ranked | None:
        """The reference first: its outputs judge all others. Its entry in ``ranked`` (None
        when it is not among the candidates: then only its outputs are taken)."""
        ref_cand = self.sel.reference()
        ref = next((r for r in ranked if r.candidate == ref_cand), None)
        if ref_cand is None:
            return ref
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
        return ref

    @staticmethod
    def _must_measure(ranked: list[Ranked], ref: Ranked | None) -> bool:
        """Whether the next candidate is measured whatever the budget: the first one
        besides the reference (a selection must have a challenger), and any while nothing
        has been measured (it must have a winner)."""
        tried = any(r is not ref and r.status != "ranked" for r in ranked)
        return not tried or not any(r.status == "measured" for r in ranked)

    def _expected_load_s(self, cand: Candidate) -> float:
        ctx = self.sel.loader.context(cand, self.sel.shapes)
        try:
            got = registry.get(cand.backend).expected_load_s(cand, self.model, ctx, self.budget.load_s)
            return max(0.0, float(got))
        except Exception as exc:  # noqa: BLE001 - a backend's guess never sinks the selection
            log.debug("expected_load_s() of %s failed: %s", cand.key, exc)
            return self.budget.load_s

    def _admit(self, r: Ranked, must: bool) -> bool:
        """Whether to screen ``r``: when it and a race after it fit in what is left, or
        ``must``; otherwise it is marked skipped, with the reason."""
        cand = r.candidate
        cost = self.budget.screen_cost(self._expected_load_s(cand), self._fresh(cand.backend))
        reserve = self._race_reserve()
        log.debug(
            "%s: expected %.2f s, the race %.2f s, %.2f s left", cand.key, cost, reserve, self.budget.left()
        )
        if cost + reserve <= self.budget.left():
            return True
        if must:
            self.budget.overrun(f"screening {cand.key} and a race after it", cost + reserve)
            return True
        r.status, r.status_reason = "skipped", self.budget.skip_reason(cost, reserve)
        log.info("autoinfer skipped %s: %s", cand.key, r.status_reason)
        return False

    def _race_reserve(self) -> float:
        """The time screening leaves for the race: the reference and one challenger
        (loaded as fast as the reference) over ``RESERVE_ROUNDS`` rounds."""
        if self.opts.objective != "latency":
            return 0.0
        m, q = self.budget.median_s, self.budget.quiet_s
        reuse = self.kept is not None and not self._fresh(self.kept.backend)
        return self.budget.race_cost(
            [0.0 if reuse else self.budget.load_s, self.budget.load_s],
            [m, m],
            _reps(m),
            quiet_s=[q, q],
            rounds=RESERVE_ROUNDS,
            fresh=not reuse and self._fresh("race"),
        )

    def _reuses(self, base: Ranked) -> bool:
        """Whether ``base`` is the runner kept loaded in its (still running) worker."""
        return self.kept == base.candidate and not self._fresh(base.candidate.backend)

    def _race_cost(self, base: Ranked, finalists: list[Ranked]) -> float:
        """A race of ``RESERVE_ROUNDS`` rounds, with its start, loads and warm-up."""
        entrants = [base, *finalists]
        medians = [_metric(r, "latency") for r in entrants]
        loads = [
            min(r.measurement.load_s, self._expected_load_s(r.candidate))  # type: ignore[union-attr]
            for r in entrants
        ]
        reuse = self._reuses(base)
        if reuse:
            loads[0] = 0.0
        fresh = self._fresh(base.candidate.backend if reuse else "race")
        quiet = [_quiet_s(r) for r in entrants]
        return self.budget.race_cost(
            loads, medians, _reps(max(medians)), quiet_s=quiet, rounds=RESERVE_ROUNDS, fresh=fresh
        )

    def _fit_race(self, base: Ranked, finalists: list[Ranked]) -> list[Ranked]:
        """The finalists (best first) a race of ``RESERVE_ROUNDS`` rounds fits in what is
        left; at least one, with the overrun noted when even that does not fit."""
        n = len(finalists)
        while n > 1 and self._race_cost(base, finalists[:n]) > self.budget.left():
            n -= 1
        for r in finalists[n:]:
            r.status_reason = f"not raced: the time budget left room for a race of {n}"
            log.info("autoinfer: %s %s", r.candidate.key, r.status_reason)
        cost = self._race_cost(base, finalists[:n])
        log.debug("a race of %d finalists: expected %.2f s, %.2f s left", n, cost, self.budget.left())
        if cost > self.budget.left():
            self.budget.overrun(f"the race of {finalists[0].candidate.key}", cost)
        return finalists[:n]

    def _variants(self, ranked: list[Ranked], per: float) -> None:
        """Tuned settings of the promising backends, screened the same way."""
        obj = self.opts.objective
        measured = sorted((r for r in ranked if r.status == "measured"), key=lambda r: _metric(r, obj))
        best = _metric(measured[0], obj)
        promising = [r for r in measured[:2] if r.measurement.metric(obj) <= SLOWER_CUT * best]  # type: ignore[union-attr]
        known = {r.candidate for r in ranked}
        queues: list[list[tuple[Candidate, Ranked]]] = []
        for r in promising:
            try:
                variants = registry.get(r.candidate.backend).variants(
                    r.candidate, self.model, self.sel.hw, obj
                )
            except Exception as exc:  # noqa: BLE001 - one backend never sinks the selection
                log.info("variants() of %s failed: %s", r.candidate.key, exc)
                variants = []
            queues.append([(v, r) for v in variants])
        # in turns, each backend's next variant: each promising backend's first variant is
        # screened before any backend's second, so that the budget does not go to one alone
        turns = [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]
        for v, r in turns:
            if v in known:
                continue
            known.add(v)
            nr = Ranked(v, r.cost, r.reasons + (f"tuned variant of {r.candidate.key}",))
            ranked.append(nr)
            if self._admit(nr, False):
                self.evaluate(nr, per, False)

    def _race(self, base: Ranked, finalists: list[Ranked], resumed: bool = False) -> Ranked:
        """Race ``finalists`` against ``base`` side by side, in ``base``'s worker when its
        runner was kept loaded there, until the deadline but no shorter than the time screening
        reserved for it (the rounds stop early once every verdict is clear and a winner's ratio is
        known to within ``WIN_SPREAD``);
        the winner (``base`` unless a challenger is faster with confidence). ``resumed``:
        the rounds go on from those of the entrants' earlier race (their ``race.times``)."""
        entrants = [base, *finalists]
        slowest = max(_metric(r, "latency") for r in entrants)
        reps = _reps(slowest)
        round_s = sum(_quiet_s(r) + reps * _metric(r, "latency") for r in entrants)
        reuse = self._reuses(base)
        entries = [self._entry(r.candidate) for r in entrants]
        entries[0]["kept"] = reuse
        now = time.monotonic()
        # until the deadline, and never shorter than screening reserved for it
        end_by = min(max(self.budget.deadline, now + self._race_cost(base, finalists)), now + RACE_MAX_S)
        self.sel.progress(f"racing {len(entrants)} finalists")
        job = {
            "type": "race",
            "facts": self.model.to_dict(),
            "feeds": str(self.feeds_path),
            "entries": entries,
            "reps": reps,
            "pause_s": PAUSE_S,
            "budget_s": max(0.0, end_by - now),
            "end_by": end_by,
            "threshold": WIN_THRESHOLD,
            "spread": WIN_SPREAD,
            # a challenger screening found much faster is not dropped at a first "not
            # faster" verdict (mobilenetv2 here: 7.3 ms quick against 15.8, then 1.19x the
            # reference over 9 rounds of a burst, where it is ~0.91x): it races to the end
            "insist": _insisting(base, finalists),
            # the plain call beside the reference where a run is short enough for the call
            # itself to matter
            "plain": _metric(base, "latency") <= PLAIN_MAX_S,
            "sys_path": [p for p in sys.path if p],
        }
        if resumed:
            job["prior"] = [r.race.times if r.race else [] for r in entrants]
        timeout = self.opts.candidate_timeout_s + max(0.0, end_by - now) + 4 * MIN_ROUNDS * round_s + 30
        res = self._worker(base.candidate.backend if reuse else "race").submit(job, timeout)
        if res.get("kind") == "cancelled":
            raise Cancelled("the selection was cancelled")
        if not res.get("ok"):
            log.warning("autoinfer: the race failed (%s); keeping %s", res.get("reason"), base.candidate.key)
            base.reasons = base.reasons + (f"the race failed: {res.get('reason')}",)
            return base
        times = res["times"]  # per entrant, per round: seconds per run
        base_t = times[0]
        plain = (base.race.plain if resumed and base.race else []) + list(res.get("plain") or [])
        median_s = float(np.median(base_t)) if base_t else 0.0
        base.race = RaceStat(1.0, 1.0, 1.0, len(base_t), "reference", median_s, base_t, plain)
        best: Ranked | None = None
        for r, ts in zip(finalists, times[1:], strict=True):
            # a challenger found not faster stopped early: its rounds are the first ones
            ratios = [t / b for t, b in zip(ts, base_t[: len(ts)], strict=True) if b > 0]
            stat = verdict(ratios)
            stat.median_s = float(np.median(ts)) if ts else 0.0
            stat.times = list(ts)
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
