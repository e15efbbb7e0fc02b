"""Ranking: candidates from the registry, their estimates, and the decision.

    model facts + hardware -> candidates (from every usable backend)
      -> ranking by estimate -> measurement (autoinfer.measure: screening, race)
      -> decision (autoinfer.decision), cached

The policy iterates the registry and reads what backends declare; it never
names a runtime. The reference is the CPU fp32 default candidate of the
backend whose capabilities say ``reference=True``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import backends as registry
from ._util import KeyedLocks
from .backends.base import Backend, Candidate, Unsupported
from .cache import Cache, digest
from .compare import TOLERANCES, compare
from .config import Settings, check_objective, open_cache
from .decision import DECISION_FORMAT, Decision, Measurement, RaceStat, Ranked
from .errors import ConfigError, NoCandidateError
from .loader import Loader, artifact_key, check_threads, threads_for
from .measure import Measurer, feed_hints, sample_feeds
from .verdicts import resumable

if TYPE_CHECKING:  # pragma: no cover
    from probes import Hardware

    from .model import ModelFacts

log = logging.getLogger("autoinfer.policy")

__all__ = [
    "DECISION_FORMAT",
    "Decision",
    "Measurement",
    "RaceStat",
    "Ranked",
    "Options",
    "Selector",
    "decide",
    "select",
    "TOLERANCES",
    "compare",
    "sample_feeds",
    "artifact_key",
    "threads_for",
    "resolve_input_shapes",
    "shape_bucket",
]

# precision="fp32" (the default) keeps the model's own arithmetic, so results match ONNX
# Runtime's within fp32 tolerance; "auto" also tries the reduced precisions the hardware
# runs natively (fp16, bf16), each checked against the reference at its own tolerance.
PRECISIONS = ("fp32", "auto")

Feed = Mapping[str, np.ndarray]


@dataclass
class Options:
    objective: str = "latency"
    benchmark: bool | str = "auto"
    backends: Sequence[str] | None = None
    exclude: Sequence[str] | None = None
    input_shapes: Mapping[str, Sequence[int]] | None = None
    rtol: float | None = None
    atol: float | None = None
    budget_s: float | None = None
    candidate_timeout_s: float = 300.0
    memory_limit_mb: float | None = None
    app_options: dict[str, Any] = field(default_factory=dict)
    tune: bool = True
    precision: str = "fp32"
    threads: int | None = None  # the application's explicit thread count

    def normalised(self) -> Options:
        check_objective(self.objective)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: expected one of {list(PRECISIONS)}, received {self.precision!r}")
        if self.benchmark not in (True, False, "auto"):
            raise ConfigError(f"benchmark: expected True, False or 'auto', received {self.benchmark!r}")
        check_threads(self.threads)
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or v < 0):
                raise ConfigError(f"{name}: expected a non-negative number, received {v!r}")
        return self


def resolve_input_shapes(
    model: ModelFacts, given: Mapping[str, Sequence[int]] | None
) -> dict[str, tuple[int, ...]]:
    """Concrete shapes of all inputs; dynamic dims without a given value raise ConfigError."""
    from .backends.base import resolve_shapes

    if given:
        unknown = set(given) - {i.name for i in model.inputs}
        if unknown:
            raise ConfigError(
                f"input_shapes names unknown input(s) {sorted(unknown)}; "
                f"the model's inputs are {[i.name for i in model.inputs]}"
            )
        for spec in model.inputs:
            if spec.name in given and spec.shape is not None:
                g = tuple(given[spec.name])
                if len(g) != len(spec.shape) or any(
                    isinstance(d, int) and d != x for d, x in zip(spec.shape, g, strict=True)
                ):
                    raise ConfigError(
                        f"input_shapes[{spec.name!r}] = {list(g)} does not fit the "
                        f"declared shape {list(spec.shape)}"
                    )
    try:
        return resolve_shapes(model, given)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def shape_bucket(model: ModelFacts, shapes: Mapping[str, Sequence[int]]) -> str:
    """Dynamic dimensions rounded up to a power of two; '' for static models."""
    parts = []
    for spec in model.inputs:
        if not spec.is_dynamic:
            continue
        dims = []
        for i, d in enumerate(shapes[spec.name]):
            declared = spec.shape[i] if spec.shape is not None and i < len(spec.shape) else None
            dims.append(str(d) if isinstance(declared, int) else str(1 << max(0, int(d) - 1).bit_length()))
        parts.append(f"{spec.name}={'x'.join(dims)}")
    return ";".join(parts)


class Selector:
    """Runs one selection: candidates, ranking, measurement, decision."""

    def __init__(
        self,
        model: ModelFacts,
        hw: Hardware,
        opts: Options,
        cache: Cache,
        settings: Settings,
        progress: Any = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.model = model
        self.hw = hw
        self.opts = opts.normalised()
        self.cache = cache
        self.settings = settings
        self.backends = registry.resolve(opts.backends, opts.exclude)
        self.progress = progress or (lambda msg: None)
        self.cancel = cancel
        self.shapes = resolve_input_shapes(model, opts.input_shapes)
        self.bucket = shape_bucket(model, self.shapes)
        self.loader = Loader(
            model,
            hw,
            cache,
            objective=self.opts.objective,
            threads=self.opts.threads,
            timeout_s=self.opts.candidate_timeout_s,
            app_options=self.opts.app_options,
        )
        self.threads = self.loader.threads

    # -- keys ----------------------------------------------------------------
    def versions(self) -> dict[str, str]:
        v: dict[str, str] = {}
        for b in self.backends:
            v.update(b.versions())
        from . import __version__

        v["autoinfer"] = __version__
        return v

    def key(self) -> str:
        return digest(
            {
                "model": self.model.sha256,
                "hw": self.hw.fingerprint,
                "versions": self.versions(),
                "objective": self.opts.objective,
                "bucket": self.bucket,
                "backends": sorted(b.name for b in self.backends),
                "app_options": {k: repr(v) for k, v in sorted(self.opts.app_options.items())},
                "tol": [self.opts.rtol, self.opts.atol],
                "precision": self.opts.precision,
                "threads": self.opts.threads,
            },
            32,
        )

    # -- ranking -------------------------------------------------------------
    def rank(self) -> tuple[list[Ranked], list[dict[str, str]]]:
        ranked: list[Ranked] = []
        unsupported: list[dict[str, str]] = []
        for b in self.backends:
            av = b.availability(self.hw)
            if not av.usable:
                unsupported.append({"key": b.name, "reason": av.reason or "not usable here", "fix": av.fix})
                continue
            if self.model.opaque_io and not b.capabilities.opaque_io:
                why = "the model takes or returns sequences, optionals or maps, which it does not"
                unsupported.append({"key": b.name, "reason": why})
                continue
            try:
                cands = b.candidates(self.model, self.hw, self.opts.objective)
            except Exception as exc:  # noqa: BLE001 - one backend never sinks the selection
                unsupported.append({"key": b.name, "reason": f"candidates() failed: {exc}"})
                continue
            for c in cands:
                if isinstance(c, Unsupported):
                    unsupported.append({"key": c.key, "reason": c.reason})
                    continue
                if c.precision != "fp32" and self.opts.precision == "fp32":
                    unsupported.append(
                        {
                            "key": c.key,
                            "reason": (
                                f"computes in {c.precision}, and precision='fp32' keeps the model's "
                                f"fp32 arithmetic"
                            ),
                            "fix": "precision='auto' to consider it",
                        }
                    )
                    continue
                try:
                    est = b.estimate(c, self.model, self.hw, self.opts.objective)
                    ranked.append(Ranked(c, float(est.cost), tuple(est.reasons)))
                except Exception as exc:  # noqa: BLE001
                    ranked.append(Ranked(c, 10.0, (f"no estimate: {exc}",)))
        ranked.sort(key=lambda r: r.cost)
        return ranked, unsupported

    def reference(self) -> Candidate | None:
        """The reference: of the backends chosen first, else of all registered."""
        for b in [*self.backends, *self.backends_all()]:
            if b.capabilities.reference and b.availability(self.hw).usable:
                return Candidate(b.name, "cpu", "fp32")
        return None

    def backends_all(self) -> list[Backend]:
        """Every registered backend (the reference may be excluded from the choice)."""
        out = []
        for n in registry.names():
            with contextlib.suppress(Exception):
                out.append(registry.get(n))
        return out

    # -- measuring -----------------------------------------------------------
    def _feeds_for(self, feeds: Sequence[Feed] | None, source: str) -> tuple[list[Feed], str]:
        """The feeds to measure on: those of this selection's shapes, else synthetic ones."""
        if feeds:  # a selection is per shape: only the feeds of its shapes
            feeds = [
                f
                for f in feeds
                if all(tuple(np.shape(f[k])) == tuple(v) for k, v in self.shapes.items() if k in f)
            ]
        if not feeds:
            return [sample_feeds(self.model, self.shapes, hints=feed_hints(self.model.path))], "synthetic"
        return list(feeds), source

    def select(self, feeds: Sequence[Feed] | None = None, source: str = "") -> Decision:
        """Rank, then (unless rank only) screen and race on ``feeds`` (synthetic feeds
        that respect the graph when None)."""
        t_start = time.monotonic()
        ranked, unsupported = self.rank()
        if not ranked:
            raise NoCandidateError(
                f"no runtime can run {self.model.path.name} here",
                {
                    u["key"]: u["reason"] + (f" (fix: {u['fix']})" if u.get("fix") else "")
                    for u in unsupported
                },
            )
        bench = self.opts.benchmark
        if bench is False or (bench == "auto" and len(ranked) == 1 and not self.opts.tune):
            return Decision(
                ranked[0].candidate,
                self.opts.objective,
                False,
                ranked,
                unsupported,
                self.bucket,
                time.monotonic() - t_start,
            )
        with self._measurer(feeds, source, t_start) as m:
            return m.run(ranked, unsupported)

    def resume(self, dec: Decision, feeds: Sequence[Feed] | None = None, source: str = "") -> Decision:
        """``dec`` with its undecided race run on (:func:`~autoinfer.verdicts.resumable`),
        on ``feeds`` (synthetic ones when None)."""
        with self._measurer(feeds, source or dec.inputs, time.monotonic()) as m:
            return m.resume(dec)

    @contextlib.contextmanager
    def _measurer(self, feeds: Sequence[Feed] | None, source: str, t_start: float) -> Iterator[Measurer]:
        """A Measurer on ``feeds`` (:meth:`_feeds_for`) in a work directory of its own; the
        loader's private files go when it is done."""
        feeds, source = self._feeds_for(feeds, source)
        with tempfile.TemporaryDirectory(prefix="autoinfer-select-") as tmp:
            try:
                yield Measurer(self, feeds, source, Path(tmp), t_start)
            finally:
                self.loader.cleanup()


_select_locks = KeyedLocks()  # one selection per key at a time in this process


def cached_decision(sel: Selector) -> Decision | None:
    """The cached decision of ``sel``'s key, or None (absent, unreadable, an older format,
    or rank-only where a measured one is wanted)."""
    key = sel.key()
    rec = sel.cache.get_decision(key)
    if rec is None:
        return None
    try:
        dec = Decision.from_dict(rec["decision"], key)
    except (KeyError, TypeError, ValueError) as exc:
        log.info("autoinfer decision %s cannot be used (%s); selecting again", key, exc)
        return None
    if sel.opts.benchmark in (True, "auto") and not dec.measured:
        return None
    return dec


def decide(
    model: ModelFacts,
    hw: Hardware,
    opts: Options,
    cache: Cache,
    settings: Settings,
    progress: Any = None,
    *,
    feeds: Sequence[Feed] | None = None,
    source: str = "",
    cancel: threading.Event | None = None,
    before_measuring: Callable[[], None] | None = None,
    resume: bool = False,
) -> Decision:
    """The cached decision for this model here, or a new selection (stored); ``resume``:
    a cached decision whose race was left undecided races on first (stored again).

    ``feeds``: real inputs to measure on (``source`` says where they came from);
    synthetic feeds when None. ``cancel`` set: the selection stops, raising
    :class:`~autoinfer.measure.Cancelled`, and nothing is stored. ``before_measuring``:
    called once no cached decision was found, before the selection starts."""
    sel = Selector(model, hw, opts, cache, settings, progress, cancel)
    key = sel.key()

    def cached() -> Decision | None:
        return cached_decision(sel)

    def final(d: Decision | None) -> bool:
        return d is not None and not (resume and resumable(d))

    dec = cached()
    if final(dec):
        return dec  # type: ignore[return-value]
    if before_measuring is not None:
        before_measuring()
    with _select_locks.lock(key), cache.lock(key):
        # another thread or process may have selected (or resumed) meanwhile
        found = cached()
        if found is not None and (final(found) or dec is None or found.created != dec.created):
            return found
        dec = sel.resume(found, feeds, source) if found is not None else sel.select(feeds, source)
        if cancel is not None and cancel.is_set():
            from .measure import Cancelled

            raise Cancelled("the selection was cancelled")
        dec.key = key
        cache.put_decision(
            key,
            {
                "decision": dec.to_dict(),
                "model": {"sha256": model.sha256, "path": str(model.path)},
                "hardware": hw.fingerprint,
                "versions": sel.versions(),
            },
        )
        cache.prune()
        return dec


def select(
    model: str | os.PathLike[str],
    *,
    objective: str = "latency",
    benchmark: bool | str = "auto",
    backends: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    budget_s: float | None = None,
    precision: str = "fp32",
    progress: Any = None,
    sample_inputs: Feed | Sequence[Feed] | None = None,
    threads: int | None = None,
) -> Decision:
    """Choose the runtime for ``model`` on this machine (cached); see :class:`Decision`.

    ``sample_inputs``: a feed dict or a list of them to measure on (else synthetic
    inputs that respect the graph). ``threads``: the thread count to run with."""
    import probes

    from .model import load_facts_cached

    settings, cache = open_cache(cache_dir, budget_s)
    facts = load_facts_cached(model, cache)
    opts = Options(
        objective=objective,
        benchmark=benchmark,
        backends=backends,
        exclude=exclude,
        input_shapes=input_shapes,
        budget_s=budget_s,
        precision=precision,
        threads=threads,
    ).normalised()
    feeds = as_feed_list(sample_inputs)
    if feeds and not input_shapes and facts.has_dynamic_inputs:
        opts.input_shapes = {k: tuple(np.shape(v)) for k, v in feeds[0].items()}
    return decide(
        facts,
        probes.detect(),
        opts,
        cache,
        settings,
        progress,
        feeds=feeds or None,
        source="sample_inputs" if feeds else "",
    )


def as_feed_list(sample_inputs: Any) -> list[dict[str, np.ndarray]]:
    """``sample_inputs`` (a feed dict, or a list of them) as a list of feed dicts."""
    if sample_inputs is None:
        return []
    items = [sample_inputs] if isinstance(sample_inputs, Mapping) else list(sample_inputs)
    out = []
    for f in items:
        if not isinstance(f, Mapping):
            raise ConfigError(
                "sample_inputs: expected a dict of input name -> array or a list "
                f"of them, received {type(f).__name__}"
            )
        out.append({str(k): np.array(v, copy=True) for k, v in f.items()})
    return out
