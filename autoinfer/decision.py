"""The records of a selection: what was measured, the race, and the decision.

A :class:`Decision` is what the cache stores (JSON, versioned by
``DECISION_FORMAT``): the winner, every candidate with its status and
numbers, and for the finalists of the race their per-round ratio to the
reference with its confidence interval.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import backends as registry
from .backends.base import Candidate
from .config import check_objective
from .errors import ConfigError

# 2: finalists race side by side; records carry the race's ratio and interval
# 3: a ranked entry says why its status under "status_reason" (was "reason")
DECISION_FORMAT = 3


@dataclass
class Measurement:
    load_s: float
    first_s: float
    median_s: float
    p90_s: float
    mad_s: float
    reps: int
    throughput: float
    rss_load_mb: float
    peak_mb: float
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    quiet_s: float | None = None  # after a run, until its process went quiet (spinning pools)

    def metric(self, objective: str) -> float:
        """Lower is better."""
        if objective == "throughput":
            return 1.0 / max(self.throughput, 1e-12)
        if objective == "load_time":
            return self.load_s + self.first_s
        if objective == "memory":
            return self.rss_load_mb + self.median_s * 1e-3  # latency breaks ties
        return self.median_s

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Measurement:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class RaceStat:
    """A finalist's result in the side-by-side race against the reference.

    ratio:   median over rounds of (its time / the reference's time) in that round.
    low/high: the confidence interval of that median.
    verdict: "reference" | "faster" (high below the threshold) | "not faster" | "undecided".
    times:   its time per round, from which a race left undecided resumes.
    plain:   the reference's only, where its runtime has a plain call (``Runner.plain_run``)
             and a run is short enough for the call to matter: per round, the session's call
             over that plain call (ONNX Runtime's ``InferenceSession.run``).
    """

    ratio: float
    low: float
    high: float
    rounds: int
    verdict: str
    median_s: float = 0.0
    # its seconds per run in each round (paired by position with the reference's): a race
    # left undecided goes on from them on a later start (verdicts.resumable)
    times: list[float] = field(default_factory=list)
    plain: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RaceStat:
        return cls(
            float(d["ratio"]),
            float(d["low"]),
            float(d["high"]),
            int(d["rounds"]),
            str(d["verdict"]),
            float(d.get("median_s", 0.0)),
            [float(t) for t in d.get("times") or ()],
            [float(t) for t in d.get("plain") or ()],
        )


@dataclass
class Ranked:
    """One candidate in the ranking, with what is known about it."""

    candidate: Candidate
    cost: float
    reasons: tuple[str, ...]
    status: str = "ranked"  # ranked | measured | rejected | failed | unsupported | skipped
    status_reason: str = ""  # why its status (``reasons`` explain the estimate)
    measurement: Measurement | None = None
    race: RaceStat | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate.to_dict(),
            "cost": self.cost,
            "reasons": list(self.reasons),
            "status": self.status,
            "status_reason": self.status_reason,
            "measurement": self.measurement.to_dict() if self.measurement else None,
            "race": self.race.to_dict() if self.race else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Ranked:
        m, r = d.get("measurement"), d.get("race")
        return cls(
            Candidate.from_dict(d["candidate"]),
            float(d["cost"]),
            tuple(d["reasons"]),
            str(d["status"]),
            str(d["status_reason"]),
            Measurement.from_dict(m) if m else None,
            RaceStat.from_dict(r) if r else None,
        )


@dataclass
class Decision:
    """The choice for one model, machine, runtime versions, objective and shape bucket."""

    winner: Candidate
    objective: str
    measured: bool
    ranking: list[Ranked]
    unsupported: list[dict[str, str]] = field(default_factory=list)
    bucket: str = ""
    elapsed_s: float = 0.0
    key: str = ""
    from_cache: bool = False
    created: float = field(default_factory=time.time)
    inputs: str = ""  # where the measuring feeds came from: sample_inputs | run | synthetic
    provisional: bool = False  # the safe choice, running while the selection measures

    @property
    def winner_entry(self) -> Ranked | None:
        return next((r for r in self.ranking if r.candidate == self.winner), None)

    def fallbacks(self) -> list[Candidate]:
        """Candidates to try, in order, if the winner fails: the accurate measured
        ones by the objective, then the unmeasured by estimate."""
        good = [r for r in self.ranking if r.status == "measured" and r.candidate != self.winner]
        good.sort(
            key=lambda r: (
                r.race.ratio if r.race else 9.0,
                r.measurement.metric(self.objective) if r.measurement else 0,
            )
        )
        rest = [r for r in self.ranking if r.status in ("ranked", "skipped") and r.candidate != self.winner]
        rest.sort(key=lambda r: r.cost)
        seen: set[Candidate] = set()
        out = []
        for r in good + rest:
            if r.candidate not in seen:
                seen.add(r.candidate)
                out.append(r.candidate)
        return out

    def explain(self) -> str:
        if self.provisional:
            head = "the safe choice, running while the selection measures in the background"
        else:
            head = ("measured" if self.measured else "ranked only (not measured)") + (
                " (from the decision cache)" if self.from_cache else f" in {self.elapsed_s:.1f} s"
            )
            if self.inputs:
                head += f" on {_INPUTS.get(self.inputs, self.inputs)}"
        lines = [f"objective: {self.objective}; {head}", f"winner: {self.winner.key}"]
        w = self.winner_entry
        if w and w.measurement:
            m = w.measurement
            err = "n/a" if m.max_abs_err is None else f"{m.max_abs_err:.2e}"
            lines.append(
                f"  quick time {m.median_s * 1e3:.3f} ms, load {m.load_s:.2f} s, max error vs reference {err}"
            )
        racers = [r for r in self.ranking if r.race is not None]
        if racers:
            lines.append("race (per-round time / the reference's; median and 95% interval):")
            for r in sorted(racers, key=lambda r: r.race.ratio):  # type: ignore[union-attr]
                s = r.race
                assert s is not None
                mark = "*" if r.candidate == self.winner else " "
                lines.append(
                    f" {mark} {r.candidate.key:<48} {s.ratio:.3f} "
                    f"[{s.low:.3f}, {s.high:.3f}] over {s.rounds} rounds: {s.verdict}"
                )
            plain = self.vs_plain()
            if plain is not None:
                lines.append(
                    f"   the reference as the session calls it / its runtime's plain call: "
                    f"{plain.ratio:.3f} [{plain.low:.3f}, {plain.high:.3f}] over {plain.rounds} rounds"
                )
        if w:
            for reason in w.reasons:
                lines.append(f"  - {reason}")
        lines.append("ranking:")
        order = sorted(
            self.ranking,
            key=lambda r: (
                0 if r.status == "measured" else 1,
                r.race.ratio if r.race else 9.0,
                r.measurement.metric(self.objective) if r.measurement and r.status == "measured" else r.cost,
            ),
        )
        for i, r in enumerate(order, 1):
            if r.measurement and r.status == "measured":
                m = r.measurement
                err = "n/a" if m.max_abs_err is None else f"{m.max_abs_err:.1e}"
                what = f"{m.median_s * 1e3:8.3f} ms quick, load {m.load_s:.2f} s, err {err}"
            else:
                what = f"estimated cost {r.cost:.2f}"
            tail = f" [{r.status}: {r.status_reason}]" if r.status_reason else ""
            mark = "*" if r.candidate == self.winner else " "
            lines.append(f" {mark}{i:2d}. {r.candidate.key:<48} {what}{tail}")
        for u in self.unsupported:
            lines.append(f"  -  {u['key']}: unsupported, because {u['reason']}")
        return "\n".join(lines)

    def vs_plain(self) -> RaceStat | None:
        """The race's reference as the session calls it against its runtime's plain call
        (median over rounds and interval; verdict "plain call"), where the race timed it."""
        ref = self.reference_entry()
        if ref is None or ref.race is None or not ref.race.plain:
            return None
        from .verdicts import median_interval  # verdicts reads these records

        med, lo, hi = median_interval(ref.race.plain)
        return RaceStat(med, lo, hi, len(ref.race.plain), "plain call")

    def reference_entry(self) -> Ranked | None:
        for r in self.ranking:
            if r.candidate.settings == () and r.candidate.device == "cpu" and r.candidate.precision == "fp32":
                try:
                    if registry.get(r.candidate.backend).capabilities.reference:
                        return r
                except ConfigError:
                    continue
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": DECISION_FORMAT,
            "winner": self.winner.to_dict(),
            "objective": self.objective,
            "measured": self.measured,
            "ranking": [r.to_dict() for r in self.ranking],
            "unsupported": self.unsupported,
            "bucket": self.bucket,
            "elapsed_s": self.elapsed_s,
            "created": self.created,
            "inputs": self.inputs,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], key: str = "") -> Decision:
        if d.get("format") != DECISION_FORMAT:
            raise ValueError(f"decision format {d.get('format')!r}, expected {DECISION_FORMAT}")
        dec = cls(
            Candidate.from_dict(d["winner"]),
            check_objective(d["objective"]),
            bool(d["measured"]),
            [Ranked.from_dict(r) for r in d["ranking"]],
            [dict(u) for u in d.get("unsupported", [])],
            str(d.get("bucket", "")),
            float(d.get("elapsed_s", 0.0)),
            key,
            True,
            float(d.get("created", 0.0)),
            str(d.get("inputs", "")),
        )
        if dec.winner_entry is None:
            raise ValueError("the winner is not in the ranking")
        return dec


_INPUTS = {
    "sample_inputs": "the sample_inputs given",
    "run": "the feeds of the first run()",
    "synthetic": "synthetic inputs",
}
