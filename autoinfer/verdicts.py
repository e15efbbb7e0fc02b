"""The race's statistics: the verdict on a challenger's per-round ratios to the reference
(the median and its distribution-free interval), the order of a round, and when a race left
undecided goes on at a later start. Pure functions of the recorded rounds; the race itself
is :mod:`autoinfer.measure` (the parent's side) and :mod:`autoinfer._worker` (the rounds)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .decision import Decision, RaceStat, Ranked

WIN_THRESHOLD = 0.97  # a challenger must be faster than this ratio, with confidence
CONFIDENCE = 0.95
MIN_ROUNDS = 6  # the fewest rounds with a 95% interval for the median
# a winning challenger races on until its interval's high / low is this narrow (or the
# deadline): its median ratio is what the session reports as the expected gain, and here a
# race stopped at the first clear verdict read 0.466 [0.235, 0.559] after six rounds (0.55
# side by side afterwards), one stopped at 1.2 read 0.786 [0.742, 0.893] (0.915 afterwards)
WIN_SPREAD = 1.1
# an undecided race resumes on later starts until it has run this many rounds in all
# (bert_base here: undecided after 13 rounds in one start, decided after 6 to 18 in others)
RESUME_ROUNDS = 60
# and beyond, up to this many, while its interval, narrowing as 1/sqrt(rounds), projects a
# verdict within them: on a noisy 2-core machine bert_base's OpenVINO read 0.913 [0.871,
# 0.978] after 61 rounds (a run's time there varies by +-20% from one run to the next), which
# projects a verdict after ~80
RESUME_MAX_ROUNDS = 150


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


def _undecided(r: Ranked) -> bool:
    """A challenger the race left undecided though its median ratio already says faster
    (a near-tie is not worth more rounds), with the rounds to go on from."""
    s = r.race
    return s is not None and s.verdict == "undecided" and s.ratio < WIN_THRESHOLD and bool(s.times)


def projected_rounds(stat: RaceStat, threshold: float = WIN_THRESHOLD) -> float:
    """The rounds in all after which an undecided challenger whose median ratio is below
    ``threshold`` would be proven faster, were its median to stay and its interval to narrow
    as 1/sqrt(rounds) (as an order-statistic interval does): the rounds so far times the
    square of (how far its interval's high lies above the median) / (how far the threshold
    does). Infinite where the median is not below the threshold or there is no interval."""
    med, hi = stat.ratio, stat.high
    if not (0.0 < med < threshold) or not math.isfinite(hi) or hi <= 0.0:
        return math.inf
    if hi < threshold:
        return float(stat.rounds)
    return stat.rounds * (math.log(hi / med) / math.log(threshold / med)) ** 2


def resumable(dec: Decision) -> bool:
    """Whether a later start races ``dec``'s finalists on: a latency decision that kept the
    reference because a challenger that looks faster was not proven so within the budget,
    until ``RESUME_ROUNDS`` rounds in all, and beyond, until ``RESUME_MAX_ROUNDS``, while a
    challenger's interval projects a verdict within those (:func:`projected_rounds`). (A
    challenger's gain that the first start's budget could not prove, on a large model, is
    proven over a few starts; a near-tie is not worth them.)"""
    base = dec.winner_entry
    if not (
        dec.measured
        and dec.objective == "latency"
        and base is not None
        and base.race is not None
        and base.race.verdict == "reference"
        and len(base.race.times) < RESUME_MAX_ROUNDS
    ):
        return False
    rest = rivals(dec)
    if len(base.race.times) < RESUME_ROUNDS:
        return bool(rest)
    return any(projected_rounds(r.race) <= RESUME_MAX_ROUNDS for r in rest)  # type: ignore[arg-type]


def rivals(dec: Decision) -> list[Ranked]:
    """The challengers a resumed race of ``dec`` runs: the undecided ones that ran every
    round of the reference's."""
    base = dec.winner_entry
    n = len(base.race.times) if base is not None and base.race is not None else -1
    return [r for r in dec.ranking if _undecided(r) and len(r.race.times) == n]  # type: ignore[union-attr]


def race_order(n: int, round_index: int) -> list[int]:
    """The order of ``n`` candidates in a round: rotated each round, reversed every other."""
    order = [(i + round_index) % n for i in range(n)]
    return order[::-1] if round_index % 2 else order
