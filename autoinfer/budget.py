"""The selection's time budget: what each step is expected to cost, and whether it fits.

One budget (``Settings.budget_s``) holds a whole measured selection, from the first
screening to the race's last round. The reference is measured first, always. Every other
candidate, most promising first, is screened only when its expected cost and the race that
must follow it still fit in what is left; otherwise it is skipped, with the reason in the
decision. The race gets what is left. The most promising challenger is measured and raced
even when that overruns the budget (a model whose loads alone take longer than the budget):
a selection that measured the reference alone could not choose. Such an overrun is logged
and noted in the decision.

The expected costs come from what this selection has measured so far: a measuring
process's start (spawn and imports), the reference's load and its runs, and each backend's
:meth:`~autoinfer.backends.base.Backend.expected_load_s` (a conversion not yet cached counts).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger("autoinfer.budget")

START_S = 0.5  # a fresh measuring process's start, until one has been measured
LOAD_S = 0.5  # a load, until the reference's has been measured
RUN_S = 0.3  # a screening's runs (first runs, outputs, the quick time), until measured
MEDIAN_S = 0.01  # one inference, until the reference's has been measured
QUIET_S = 0.05  # after a run, until its threads stop spinning, until measured
SLACK_S = 0.25  # an overrun smaller than this is not worth a note
RUN_MARGIN = 1.25  # a challenger's runs may take this much longer than the reference's


class TimeBudget:
    """The clock of one selection: ``deadline`` is ``t_start + budget_s`` (``time.monotonic``)."""

    def __init__(self, budget_s: float, t_start: float) -> None:
        self.budget_s = float(budget_s)
        self.deadline = t_start + self.budget_s
        self.start_s = START_S
        self.ref_load_s: float | None = None
        self.ref_run_s: float | None = None
        self.ref_median_s: float | None = None
        self.ref_quiet_s: float | None = None
        self.forced: list[str] = []  # what went ahead although it did not fit

    def left(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def load_s(self) -> float:
        """The reference's load (the yardstick of every expected load)."""
        return self.ref_load_s if self.ref_load_s is not None else LOAD_S

    @property
    def median_s(self) -> float:
        return self.ref_median_s if self.ref_median_s is not None else MEDIAN_S

    @property
    def quiet_s(self) -> float:
        """After one of the reference's runs, until its threads stopped spinning."""
        return self.ref_quiet_s if self.ref_quiet_s is not None else QUIET_S

    def observe(self, res: Mapping[str, Any], wall_s: float, fresh: bool, reference: bool) -> None:
        """Learn from one screening job's answer ``res`` that took ``wall_s`` here, in a
        process started for it when ``fresh``: its start is everything but the load and the
        runs (spawn, imports, reading the feeds)."""
        load_s, runs_s = res.get("load_s"), res.get("runs_s")
        if not (res.get("ok") and isinstance(load_s, (int, float)) and isinstance(runs_s, (int, float))):
            return
        if fresh:
            self.start_s = max(0.0, wall_s - load_s - runs_s)
        if reference:
            self.ref_load_s, self.ref_run_s = float(load_s), float(runs_s)
            if isinstance(res.get("median_s"), (int, float)):
                self.ref_median_s = float(res["median_s"])
            if isinstance(res.get("quiet_s"), (int, float)):
                self.ref_quiet_s = float(res["quiet_s"])

    def screen_cost(self, expected_load_s: float, fresh: bool) -> float:
        """A screening: the process's start when ``fresh``, the load, then its runs."""
        runs = RUN_MARGIN * (self.ref_run_s if self.ref_run_s is not None else RUN_S)
        return (self.start_s if fresh else 0.0) + expected_load_s + runs

    def race_cost(
        self,
        loads_s: Sequence[float],
        medians_s: Sequence[float],
        reps: int,
        *,
        quiet_s: Sequence[float],
        rounds: int,
        fresh: bool,
    ) -> float:
        """The shortest race: the process's start when ``fresh``, the loads, the warm-up,
        and ``rounds`` rounds of ``reps`` runs of each entrant; after each, the wait until
        its threads are quiet (``quiet_s``, one per entrant)."""
        warm_up = sum(max(0.05, 3 * m) for m in medians_s)
        round_s = sum(q + reps * m for q, m in zip(quiet_s, medians_s, strict=True))
        return (self.start_s if fresh else 0.0) + sum(loads_s) + warm_up + rounds * round_s

    def overrun(self, what: str, cost_s: float) -> None:
        """``what``, expected to take ``cost_s``, goes ahead although it does not fit."""
        left = max(0.0, self.left())
        self.forced.append(f"{what} was expected to take {cost_s:.1f} s with {left:.1f} s left")
        log.debug("autoinfer: beyond the time budget: %s", self.forced[-1])

    def account(self, elapsed_s: float) -> list[str]:
        """Notes for the decision on a selection that took ``elapsed_s``: none within the
        budget (give or take ``SLACK_S``); else one line, also logged, that says why."""
        if elapsed_s <= self.budget_s + SLACK_S:
            return []
        why = (
            "the reference and one challenger are always measured and raced, and here they "
            "needed longer (" + "; ".join(self.forced) + ")"
            if self.forced
            else "measuring took longer than expected"
        )
        note = f"the selection took {elapsed_s:.1f} s, over its time budget of {self.budget_s:g} s: {why}"
        log.info("autoinfer: %s", note)
        return [note]

    def skip_reason(self, cost_s: float, reserve_s: float) -> str:
        left = max(0.0, self.left())
        return (
            f"not measured: time budget spent (expected {cost_s:.1f} s, and {reserve_s:.1f} s "
            f"for the race; {left:.1f} s of {self.budget_s:g} s left)"
        )
