"""The background selection and the swap between calls, for :class:`~autoinfer.session.Session`.

The session runs on an :class:`Active` (a loaded runner and the decision it came
from). A selection runs on one daemon thread per session; its winner is loaded on
that thread and swapped in between calls: ``run()`` takes no lock, it marks itself
on the runner it uses (``Active.calls``), and a replaced runner is closed only once
no call uses it. ``close()`` and interpreter exit cancel a selection (its measuring
processes are killed, nothing is written); a forked child starts none.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends.base import Candidate, Runner
from .decision import Decision
from .measure import Cancelled
from .policy import Options, decide, shape_bucket

if TYPE_CHECKING:  # pragma: no cover
    from probes import Hardware

    from .cache import Cache
    from .config import Settings
    from .model import ModelFacts

log = logging.getLogger("autoinfer.session")

_JOIN_S = 5.0  # the longest close() waits for a cancelled selection
_RETIRE_S = 60.0  # the longest a replaced runner waits for its calls in flight
# A selection's measuring processes start once the application's calls have paused this
# long (or after QUIET_MAX_S): an application's first results (an OCR pipeline calls
# three sessions in turn) are not to share the CPU with them.
QUIET_S = 0.25
QUIET_MAX_S = 2.0
_last_call = [0.0]  # time.monotonic() of the latest checked run() of any session here


def note_call() -> None:
    _last_call[0] = time.monotonic()


Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class Choice:
    """What the session runs on, and what was measured."""

    backend: str
    device: str
    precision: str
    settings: dict[str, Any]
    measured: bool
    from_cache: bool
    latency_ms: float | None = None
    p90_ms: float | None = None
    throughput: float | None = None
    load_s: float | None = None
    max_abs_err: float | None = None
    candidate: Candidate = field(default=Candidate("?"), repr=False)
    ratio: float | None = None  # the race: per-round time / the reference's (median)
    interval: tuple[float, float] | None = None  # its confidence interval
    provisional: bool = False  # the safe choice, while the selection measures
    # the expected time / the reference runtime's plain call (ONNX Runtime's
    # InferenceSession.run): ``ratio`` times the race's call-path ratio, where it was timed
    vs_plain: float | None = None

    @classmethod
    def of(cls, decision: Decision, candidate: Candidate) -> Choice:
        entry = next((r for r in decision.ranking if r.candidate == candidate), None)
        m = entry.measurement if entry else None
        race = entry.race if entry else None
        return cls(
            candidate.backend,
            candidate.device,
            candidate.precision,
            dict(candidate.settings),
            bool(m) and decision.measured,
            decision.from_cache,
            m.median_s * 1e3 if m else None,
            m.p90_s * 1e3 if m else None,
            m.throughput if m else None,
            m.load_s if m else None,
            m.max_abs_err if m else None,
            candidate,
            race.ratio if race else None,
            (race.low, race.high) if race else None,
            decision.provisional,
            race.ratio * plain.ratio if race and (plain := decision.vs_plain()) else None,
        )


class Active:
    """A loaded runner with the decision it came from. ``calls`` holds one marker per
    ``run()`` in flight on it (list append/pop are atomic); ``retired`` is set when it
    has been replaced, and it is closed once ``calls`` is empty."""

    __slots__ = (
        "decision",
        "candidate",
        "runner",
        "shapes",
        "exact",
        "failed",
        "calls",
        "retired",
        "direct",
        "names",
    )

    def __init__(
        self,
        decision: Decision,
        candidate: Candidate,
        runner: Runner,
        shapes: dict[str, tuple[int, ...]] | None,
        exact: bool,
    ) -> None:
        self.decision = decision
        self.candidate = candidate
        self.runner = runner
        self.shapes = shapes
        self.exact = exact  # the runner accepts only these input shapes
        self.failed: set[Candidate] = set()
        self.calls: list[None] = []
        self.retired = False
        # the runtime's own checked call (Runner.direct_run), when the session may use it
        self.direct = getattr(runner, "direct_run", None)
        self.names = list(runner.output_names)  # direct's output names when run() names none

    def close(self) -> None:
        """Close the runner and let go of its direct call, which holds the runtime's session
        (and its memory) as long as anything refers to this Active. A run() that read the
        call just before finds None and takes the checked path."""
        self.direct = None
        with contextlib.suppress(Exception):
            self.runner.close()


def _shapes_of(feed: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A feed's names and shapes, in its order: what the direct path of a dynamic model
    compares with the last checked call's."""
    return tuple((k, getattr(v, "shape", None)) for k, v in feed.items())


_SESSIONS: weakref.WeakSet[Selecting] = weakref.WeakSet()


def _cancel_all_at_exit() -> None:
    for s in list(_SESSIONS):
        with contextlib.suppress(Exception):
            s._stop_selection(join_s=2.0)


def _forget_selections_in_child() -> None:
    for s in list(_SESSIONS):
        with contextlib.suppress(Exception):
            s._after_fork_in_child()


atexit.register(_cancel_all_at_exit)
os.register_at_fork(after_in_child=_forget_selections_in_child)


class Selecting:
    """The background selection of a Session (a mixin: the session provides the model,
    the options, ``_lock``, ``_by_bucket``, ``_active``, ``_default``, ``_static`` and
    ``_load_decision``)."""

    _lock: Any
    _by_bucket: dict[str, Active]
    _active: Active | None
    _default: Active | None
    _static: bool
    _closed: bool
    _opts: Options
    _facts: ModelFacts
    _hw: Hardware
    _cache: Cache
    _settings: Settings
    _progress: Any

    def _load_decision(
        self, decision: Decision, shapes: dict[str, tuple[int, ...]], failed: set[Candidate] | None = None
    ) -> Active:  # pragma: no cover - provided by the session
        raise NotImplementedError

    @property
    def choice(self) -> Choice | None:  # pragma: no cover - provided by the session
        raise NotImplementedError

    def _init_selecting(self, on_choice: Any) -> None:
        self._jobs: collections.deque[tuple[str, Shapes | None, list[dict[str, np.ndarray]], str]] = (
            collections.deque()
        )
        self._pending: set[str] = set()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._settled = threading.Event()
        self._on_choice = on_choice
        self._notified = False
        self._forked = False
        self._want_feeds = False
        self._buckets: dict[tuple[tuple[int, ...], ...], str] = {}  # feed shapes -> bucket
        self._direct_last: tuple[tuple[Any, ...], Active] | None = None  # see _direct_shapes_ok
        _SESSIONS.add(self)

    def _submit(
        self,
        bucket: str,
        shapes: dict[str, tuple[int, ...]] | None,
        feeds: list[dict[str, np.ndarray]],
        source: str,
    ) -> None:
        with self._lock:
            if self._closed or self._forked or bucket in self._pending:
                return
            self._pending.add(bucket)
            self._settled.clear()
            self._jobs.append((bucket, shapes, feeds, source))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._selection_loop, daemon=True, name="autoinfer-selection"
                )
                self._thread.start()

    def _selection_loop(self) -> None:
        while True:
            with self._lock:
                if not self._jobs or self._cancel.is_set():
                    self._thread = None
                    break
                job = self._jobs.popleft()
            try:
                self._select_one(*job)
            finally:
                with self._lock:
                    self._pending.discard(job[0])
            job = None  # type: ignore[assignment]  # the feeds go with the job
        self._settle_if_idle()

    def _select_one(
        self,
        bucket: str,
        shapes: dict[str, tuple[int, ...]] | None,
        feeds: list[dict[str, np.ndarray]],
        source: str,
    ) -> None:
        if shapes is None:
            shapes = {k: tuple(v.shape) for k, v in feeds[0].items()}
        try:
            opts = Options(**{**self._opts.__dict__, "input_shapes": shapes})
            dec = decide(
                self._facts,
                self._hw,
                opts,
                self._cache,
                self._settings,
                self._progress,
                feeds=feeds,
                source=source,
                cancel=self._cancel,
                before_measuring=self._wait_for_quiet,
                resume=True,  # a race left undecided by an earlier start goes on
            )
            cur = self._by_bucket.get(bucket) or self._default
            if cur is not None and cur.candidate == dec.winner and (not cur.exact or cur.shapes == shapes):
                with self._lock:  # what runs already won: nothing to load
                    if cur is self._default and not self._static:  # shared by the buckets
                        cur = Active(dec, cur.candidate, cur.runner, None, False)
                        if self._active is self._default:
                            self._active = cur
                    cur.decision = dec
                    self._by_bucket[bucket] = cur
                return
            new = self._load_decision(dec, shapes)
        except Cancelled:
            return
        except Exception as exc:  # noqa: BLE001 - nothing escapes the selecting thread
            if self._cancel.is_set():
                return
            log.warning(
                "autoinfer: the background selection of %s failed (%s); staying on the safe choice",
                self._facts.path.name,
                exc,
            )
            with self._lock:
                if bucket not in self._by_bucket and self._default is not None:
                    self._by_bucket[bucket] = self._default
            return
        self._install(bucket, new)

    def _wait_for_quiet(self) -> None:
        """Until no session here has had a checked call for QUIET_S (QUIET_MAX_S at most)."""
        end = time.monotonic() + QUIET_MAX_S
        while not self._cancel.is_set():
            now = time.monotonic()
            wait = min(QUIET_S - (now - _last_call[0]), end - now)
            if wait <= 0:
                return
            self._cancel.wait(wait)

    def _install(self, bucket: str, new: Active) -> None:
        """Swap ``new`` in for ``bucket``; the replaced runner closes once idle."""
        with self._lock:
            if self._closed or self._cancel.is_set():
                with contextlib.suppress(Exception):
                    new.runner.close()
                return
            old = self._by_bucket.get(bucket)
            self._by_bucket[bucket] = new
            if self._static or self._active is old or self._active is self._default:
                self._active = new
        was = old or self._default
        stat = new.decision.winner_entry.race if new.decision.winner_entry else None
        log.info(
            "autoinfer: %s now runs on %s (was %s)%s",
            self._facts.path.name,
            new.candidate.key,
            was.candidate.key if was else "nothing",
            f"; {stat.ratio:.3f}x the reference's time, interval [{stat.low:.3f}, {stat.high:.3f}]"
            if stat
            else "",
        )
        shared = self._default.runner if self._default is not None and not self._static else None
        if old is not None and old.runner is not shared:
            self._retire(old)

    def _retire(self, act: Active) -> None:
        """Close a replaced runner once no call uses it (bounded)."""
        act.retired = True
        deadline = time.monotonic() + _RETIRE_S
        while act.calls and time.monotonic() < deadline:
            time.sleep(0.001)
        if act.calls:
            log.warning(
                "autoinfer: %s still busy after %.0f s; leaving it open", act.candidate.key, _RETIRE_S
            )
            return
        act.close()

    def _settle_if_idle(self) -> None:
        """Mark the choice made once nothing is selecting; tell ``on_choice`` once."""
        with self._lock:
            if self._pending or self._jobs or self._want_feeds:
                return
            self._settled.set()
            choice = self.choice
            notify = not self._notified and self._on_choice is not None and choice is not None
            self._notified = self._notified or choice is not None
        if notify:
            try:
                self._on_choice(choice)
            except Exception:  # noqa: BLE001 - the application's callback
                log.exception("autoinfer: the on_choice callback raised")

    def _bucket_of(self, shapes: dict[str, tuple[int, ...]]) -> str:
        """The shape bucket of a validated feed's shapes (in the model's input order),
        remembered: a dynamic model called with the same shapes again pays a lookup."""
        key = tuple(shapes.values())
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = shape_bucket(self._facts, shapes)
            if len(self._buckets) < 4096:
                self._buckets[key] = bucket
        return bucket

    def _direct_shapes_ok(self, feed: Mapping[str, Any]) -> bool:
        """For a dynamic model (its shapes pick the runner), may ``run()`` hand ``feed``
        straight to the runtime's own checked call? Only with the shapes of the last checked
        call, on its runner. (``run()`` itself checks the rest: not while it waits for the
        feeds to select on, nor once closed; a static model always.)"""
        last = self._direct_last
        return (
            last is not None
            and last[1] is self._active
            and not last[1].retired
            and last[0] == _shapes_of(feed)
        )

    def _remember_direct(self, feed: Mapping[str, Any], act: Active) -> None:
        """A dynamic model's checked call on ``act``: the next call of these shapes may go
        straight to its runtime."""
        if act is self._active:
            self._direct_last = (_shapes_of(feed), act)

    def _take_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """The first run()'s feeds start the background selection (copied)."""
        with self._lock:
            if not self._want_feeds:
                return
            self._want_feeds = False
            act = self._active
            if act is None or self._closed or self._forked:
                return
            shapes = act.shapes or {k: tuple(v.shape) for k, v in feeds.items()}
            self._submit(
                shape_bucket(self._facts, shapes),
                shapes,
                [{k: np.array(v, copy=True) for k, v in feeds.items()}],
                "run",
            )

    def _stop_selection(self, join_s: float = _JOIN_S) -> None:
        """Cancel a running selection, kill its measuring processes, wait (bounded)."""
        self._cancel.set()
        self._want_feeds = False
        with self._lock:
            self._jobs.clear()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(join_s)

    def _after_fork_in_child(self) -> None:
        """A forked child keeps what it has loaded and starts no selection."""
        self._lock = threading.RLock()
        self._forked = True
        self._want_feeds = False
        self._jobs.clear()
        self._pending.clear()
        self._thread = None
        self._cancel = threading.Event()
        self._cancel.set()
        self._settled.set()

    def wait_for_choice(self, timeout: float | None = None) -> Choice | None:
        """Wait until the background selection has ended and its winner runs (at once
        when there is none); the :class:`Choice`, or None on time-out. A selection that
        waits for the first ``run()``'s feeds ends only after that call."""
        if not self._settled.wait(timeout):
            return None
        return self.choice
