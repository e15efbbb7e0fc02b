"""The Session facade: ONNX Runtime's ``InferenceSession`` surface over the chosen runtime.

    sess = autoinfer.Session("model.onnx")
    outputs = sess.run(None, {"input": x})   # works at once, on the safe choice
    sess.wait_for_choice()                   # optional: the background selection's result

On a cold cache the session opens on the safe choice (the reference runtime at its
defaults) and selects in the background, on real inputs: ``sample_inputs`` or the
feeds of the first ``run()``. The winner is loaded off the caller's thread and
swapped in between calls. Existing ONNX Runtime code keeps its meaning: given
``providers`` or ``sess_options``, autoinfer runs ONNX Runtime with exactly those.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import backends as registry
from .backends.base import Candidate, Runner, call_direct
from .backends.onnxruntime_api import OrtSurface
from .config import open_cache
from .decision import Decision, Ranked
from .errors import AutoinferError, BackendError, ConfigError, InputError, ModelError, NoCandidateError
from .introspection import Introspection, ModelMetadata, NodeArg
from .loader import Loader, detect_beside
from .measure import SyntheticInputsRejected
from .model import ModelFacts, load_facts_cached
from .policy import (
    Options,
    Selector,
    as_feed_list,
    cached_decision,
    decide,
    resolve_input_shapes,
    shape_bucket,
)
from .switching import Active, Choice, Selecting, note_call
from .validate import FeedValidator
from .verdicts import resumable

__all__ = ["Session", "Choice", "NodeArg", "ModelMetadata", "SELECTION_MODES"]

log = logging.getLogger("autoinfer.session")

SELECTION_MODES = ("background", "blocking", "off")


def _check_arguments(kwargs: Mapping[str, Any], selection: str, on_choice: Any) -> None:
    if kwargs:
        raise ConfigError(f"Session() got unexpected keyword argument(s) {sorted(kwargs)}")
    if selection not in SELECTION_MODES:
        raise ConfigError(f"selection: expected one of {', '.join(SELECTION_MODES)}, received {selection!r}")
    if on_choice is not None and not callable(on_choice):
        raise ConfigError(f"on_choice: expected a callable, received {type(on_choice).__name__}")


def _claimed(
    sess_options: Any, providers: Sequence[Any] | None, provider_options: Any
) -> tuple[str | None, dict[str, Any]]:
    """The backend that claims a runtime's own session arguments, and those arguments.

    They pin the session to that backend, run with exactly those (autoinfer.patch()
    reads them as hints instead). (None, {}) when none were given.
    """
    if sess_options is None and providers is None:
        return None, {}
    claim = registry.claim_app_options(sess_options, providers, provider_options)
    if claim is None:  # no installed runtime reads them: say so rather than drop them quietly
        log.warning("autoinfer: no runtime here claims sess_options/providers; choosing without them")
        return None, {}
    app_options = {
        "sess_options": sess_options,
        "providers": list(providers or []) or None,
        "provider_options": provider_options,
    }
    return claim.backend, app_options


class Session(Selecting, Introspection, OrtSurface):
    """Runs an ONNX model on the fastest correct runtime of this machine.

    Arguments beyond ONNX Runtime's:
      selection:    "background" (default): open at once on the safe choice (the reference
                    runtime at its defaults), select in the background on real inputs and
                    switch between calls when a challenger wins; "blocking": select before
                    returning (synthetic inputs unless ``sample_inputs``); "off": rank only.
      sample_inputs: a feed dict, or a list of them, to measure on. Without them the
                    background selection measures on the feeds of the first ``run()``.
      on_choice:    called once, from the selecting thread, with the :class:`Choice` when
                    the selection ends (at once from the constructor without one).
      threads:      the CPU threads the runtimes may use (default: the CPU quota found).
      objective:    "latency" (default), "throughput", "load_time" or "memory".
      benchmark:    "auto" (measure unless the choice is forced), True, or False (rank only).
      backends / exclude: restrict the runtimes considered (registry names).
      input_shapes: concrete shapes for dynamic inputs; without them a model with
                    dynamic inputs selects per shape bucket of the feeds it is given.
      cache_dir:    where decisions and artifacts live (default: the user cache dir,
                    or AUTOINFER_CACHE_DIR).
      budget_s:     time budget of a measured selection.
      precision:    "fp32" (default): keep the model's fp32 arithmetic, so results match ONNX
                    Runtime's; "auto": also try fp16/bf16 where the hardware runs them
                    natively, each checked at its own, looser tolerance.
      rtol / atol:  accuracy tolerance against the reference (default: by precision).
      fallback:     move to the next candidate when the winner fails (default True).
    """

    def __init__(
        self,
        path_or_bytes: str | os.PathLike[str] | bytes,
        sess_options: Any = None,
        providers: Sequence[Any] | None = None,
        provider_options: Sequence[dict[Any, Any]] | None = None,
        *,
        objective: str = "latency",
        benchmark: bool | str = "auto",
        backends: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        budget_s: float | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        precision: str = "fp32",
        fallback: bool = True,
        progress: Any = None,
        selection: str = "background",
        sample_inputs: Any = None,
        on_choice: Any = None,
        threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        _check_arguments(kwargs, selection, on_choice)
        self._lock = threading.RLock()
        self._closed = False
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._release_model: Any = None  # lets go of a held model copy (bytes)
        hardware = detect_beside()  # probed while the model is read
        self._settings, self._cache = open_cache(cache_dir, budget_s)
        self._path = self._model_path(path_or_bytes)
        self._facts = self._read_facts(path_or_bytes)
        self._hw = hardware()
        pinned_to, app_options = _claimed(sess_options, providers, provider_options)
        self._pinned = pinned_to is not None
        if pinned_to is not None:
            backends, exclude, benchmark = [pinned_to], None, False
        if selection == "off":
            benchmark = False  # rank only
        self._opts = Options(
            objective=objective,
            benchmark=benchmark,
            backends=backends,
            exclude=exclude,
            input_shapes=input_shapes,
            rtol=rtol,
            atol=atol,
            budget_s=budget_s,
            precision=precision,
            app_options=app_options,
            threads=threads,
        ).normalised()
        registry.resolve(backends, exclude)  # validate names now, not at first run
        # feeds of sequences, optionals or maps cannot be measured on: the reference runs them
        off = self._pinned or benchmark is False or self._facts.opaque_io
        self._mode = "off" if off else selection
        self._sample = as_feed_list(sample_inputs)
        self._fallback = fallback
        self._threads = self._opts.threads
        self._progress = progress
        self._loader = Loader(
            self._facts,
            self._hw,
            self._cache,
            objective=self._opts.objective,
            threads=self._opts.threads,
            app_options=app_options,
        )
        self._init_running()
        self._init_selecting(on_choice)
        try:
            self._open(input_shapes)
        except BaseException:
            self.close()
            raise

    def _init_running(self) -> None:
        self._validate = FeedValidator(self._facts.inputs)
        self._out_index = {o.name: i for i, o in enumerate(self._facts.outputs)}
        self._by_bucket: dict[str, Active] = {}
        self._active: Active | None = None
        self._default: Active | None = None  # the safe choice, for every shape bucket
        # one shape, or opaque inputs (one runner for all): no buckets
        self._static = not self._facts.has_dynamic_inputs or self._facts.opaque_io

    def _read_facts(self, src: Any) -> ModelFacts:
        try:
            return load_facts_cached(self._path, self._cache)
        except ModelError as exc:
            if isinstance(src, (str, os.PathLike)):
                raise
            # bytes: the file is autoinfer's own copy; name what the caller gave, and
            # keep nothing of a model that is not one
            msg = str(exc).replace(str(self._path), "<bytes>", 1)
            if self._release_model is not None:
                self._release_model()
            with contextlib.suppress(OSError):
                self._path.unlink()
            if self._tmp is not None:
                self._tmp.cleanup()
            raise ModelError(msg) from None

    def _open(self, input_shapes: Mapping[str, Sequence[int]] | None) -> None:
        if self._facts.opaque_io:
            self._default = self._active = self._open_safe(None)
            self._settle_if_idle()
            return
        if not self._static and not input_shapes:
            if self._mode == "background":
                # the reference runs any shape: it serves every bucket until its selection ends
                with contextlib.suppress(AutoinferError):
                    self._default = self._active = self._open_safe(None)
                buckets: dict[str, list[dict[str, np.ndarray]]] = {}
                for f in self._sample:
                    shapes = {k: tuple(np.shape(v)) for k, v in f.items()}
                    buckets.setdefault(shape_bucket(self._facts, shapes), []).append(f)
                for bucket, feeds in buckets.items():
                    shapes = {k: tuple(np.shape(v)) for k, v in feeds[0].items()}
                    self._submit(bucket, shapes, feeds, "sample_inputs")
            self._settle_if_idle()
            return
        shapes = resolve_input_shapes(self._facts, input_shapes)
        bucket = shape_bucket(self._facts, shapes)
        if self._mode == "background":
            # a model read for the first time is not hashed yet: the selection looks later
            dec = cached_decision(self._selector(shapes)) if self._facts.hashed else None
            if dec is not None:
                act = self._load_decision(dec, shapes)
            else:
                act = self._open_safe(shapes)
                if not self._static and not act.exact:
                    self._default = act  # serves the other shape buckets meanwhile
            if dec is None or resumable(dec):  # (or race on where an earlier start left off)
                if self._sample:
                    self._submit(bucket, shapes, self._sample, "sample_inputs")
                else:
                    self._want_feeds = True  # selects on the first run()'s feeds
        else:
            try:
                act = self._activate(shapes)
            except SyntheticInputsRejected as exc:
                log.info(
                    "autoinfer: %s; opening on the safe choice and selecting on the first run()'s inputs",
                    exc.args[0].splitlines()[0],
                )
                act = self._open_safe(shapes)
                self._want_feeds = True
        self._by_bucket[bucket] = self._active = act
        self._settle_if_idle()

    # -- model -----------------------------------------------------------------
    def _model_path(self, src: Any) -> Path:
        if isinstance(src, (bytes, bytearray, memoryview)):
            blob = bytes(src)
            if not blob:
                raise ModelError("<bytes>: the model is empty")
            held = self._cache.hold_model(blob)
            if held is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="autoinfer-model-")
                p = Path(self._tmp.name) / "model.onnx"
                p.write_bytes(blob)
                return p
            p, fd = held  # held open so that a cache clear() leaves it for our runtimes
            self._release_model = weakref.finalize(self, os.close, fd)
            return p
        if isinstance(src, (str, os.PathLike)):
            return Path(src)
        raise ModelError(f"expected a model path or bytes, received {type(src).__name__}")

    # -- selection and loading ---------------------------------------------------
    def _selector(self, shapes: dict[str, tuple[int, ...]]) -> Selector:
        opts = Options(**{**self._opts.__dict__, "input_shapes": shapes})
        return Selector(self._facts, self._hw, opts, self._cache, self._settings, self._progress)

    def _decide(
        self, shapes: dict[str, tuple[int, ...]], run_feeds: dict[str, np.ndarray] | None = None
    ) -> Decision:
        """Blocking: on the sample inputs of these shapes, else on ``run_feeds`` (the call
        that brought these shapes), else on synthetic inputs."""
        opts = Options(**{**self._opts.__dict__, "input_shapes": shapes})
        if self._pinned:
            return self._selector(shapes).select()
        feeds = [
            f for f in self._sample if all(tuple(np.shape(f[k])) == v for k, v in shapes.items() if k in f)
        ]
        source = "sample_inputs" if feeds else ""
        if not feeds and run_feeds is not None:
            feeds, source = [{k: np.array(v, copy=True) for k, v in run_feeds.items()}], "run"
        return decide(
            self._facts,
            self._hw,
            opts,
            self._cache,
            self._settings,
            self._progress,
            feeds=feeds or None,
            source=source,
        )

    def _load(self, cand: Candidate, shapes: dict[str, tuple[int, ...]] | None) -> Runner:
        return self._loader.load(cand, shapes)

    def _open_safe(self, shapes: dict[str, tuple[int, ...]] | None) -> Active:
        """The safe choice: the reference at its defaults or, where it cannot load the model,
        the first candidate that can, those that load without a conversion first (a
        conversion takes seconds: the session is to start at once), then by estimate."""
        order: list[Candidate] = []
        for b in registry.resolve(self._opts.backends, self._opts.exclude):
            if b.capabilities.reference and b.availability(self._hw).usable:
                order.append(Candidate(b.name, "cpu", "fp32"))
                break
        errors: dict[str, str] = {}
        for i in range(2):
            for cand in order:
                try:
                    runner = self._load(cand, shapes)
                except AutoinferError as exc:
                    errors[cand.key] = str(exc)
                    continue
                dec = Decision(
                    cand,
                    self._opts.objective,
                    False,
                    [Ranked(cand, 1.0, ("the safe choice: it runs while the selection measures",))],
                    bucket=shape_bucket(self._facts, shapes) if shapes else "",
                    provisional=True,
                )
                exact = shapes is not None and not registry.get(cand.backend).capabilities.dynamic_shapes
                return Active(dec, cand, runner, shapes, exact)
            if i or shapes is None:
                break
            tried = set(order)
            ranked = [r.candidate for r in self._selector(shapes).rank()[0] if r.candidate not in tried]
            order = sorted(ranked, key=lambda c: registry.get(c.backend).capabilities.needs_conversion)
        raise NoCandidateError(f"no candidate could load {self._facts.path.name}", errors)

    def _load_decision(
        self, decision: Decision, shapes: dict[str, tuple[int, ...]], failed: set[Candidate] | None = None
    ) -> Active:
        order = [decision.winner, *decision.fallbacks()]
        errors: dict[str, str] = {}
        for cand in order:
            if failed and cand in failed:
                continue
            try:
                runner = self._load(cand, shapes)
            except AutoinferError as exc:
                errors[cand.key] = str(exc)
                if not self._fallback:
                    raise
                log.warning("autoinfer: %s failed to load (%s); trying the next candidate", cand.key, exc)
                continue
            exact = not registry.get(cand.backend).capabilities.dynamic_shapes
            act = Active(decision, cand, runner, shapes, exact)
            if failed:
                act.failed |= failed
            return act
        raise NoCandidateError(f"no candidate could load {self._facts.path.name}", errors)

    def _activate(
        self,
        shapes: dict[str, tuple[int, ...]],
        failed: set[Candidate] | None = None,
        run_feeds: dict[str, np.ndarray] | None = None,
    ) -> Active:
        act = self._load_decision(self._decide(shapes, run_feeds), shapes, failed)
        self._by_bucket[shape_bucket(self._facts, shapes)] = act
        return act

    # -- running -----------------------------------------------------------------
    def _active_for(self, feeds: dict[str, np.ndarray]) -> Active:
        shapes = {k: v.shape for k, v in feeds.items()}
        act = self._active
        if act is not None and act.shapes == shapes and act is not self._default and not act.retired:
            return act  # the same shapes as the last call: no bucket to compute
        bucket = self._bucket_of(shapes)
        act = self._by_bucket.get(bucket)
        if act is not None and (not act.exact or act.shapes == shapes):
            self._active = act
            return act
        with self._lock:
            act = self._by_bucket.get(bucket)
            if act is not None and (not act.exact or act.shapes == shapes):
                self._active = act
                return act
            if self._default is not None:  # background: the safe choice runs meanwhile
                self._submit(
                    bucket, dict(shapes), [{k: np.array(v, copy=True) for k, v in feeds.items()}], "run"
                )
                self._active = self._default
                return self._default
            act = self._activate(dict(shapes), run_feeds=feeds)
            self._active = act
        self._settle_if_idle()
        return act

    def run(
        self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any], run_options: Any = None
    ) -> list[np.ndarray]:
        """Outputs named by ``output_names`` (all when None), like ONNX Runtime's ``run``."""
        act = self._active
        direct = act.direct if act is not None else None
        if (  # not while it waits for the feeds to select on, nor once closed
            direct is not None
            and run_options is None
            and not (self._want_feeds or self._closed)
            and (self._static or self._direct_shapes_ok(input_feed))
        ):
            try:  # the runtime checks the feed itself; on any complaint the checked path
                # says what is wrong, or falls back
                outs = call_direct(direct, output_names or act.names, input_feed)  # type: ignore[union-attr]
                if outs is not None:
                    return outs
            except Exception:  # noqa: BLE001
                pass
        if self._closed:
            raise AutoinferError("the session is closed")
        note_call()
        feeds = self._validate(input_feed)
        while True:
            act = self._active if self._static else self._active_for(feeds)
            calls = act.calls  # type: ignore[union-attr]
            calls.append(None)
            if not act.retired:  # type: ignore[union-attr]
                break
            calls.pop()  # replaced meanwhile: take the new one
        try:
            outs = act.runner.run(feeds)  # type: ignore[union-attr]
        except BackendError as exc:
            if not self._fallback or act.decision.provisional:  # type: ignore[union-attr]
                raise
            outs = self._run_fallback(act, feeds, exc)  # type: ignore[arg-type]
        finally:
            calls.pop()
        if self._want_feeds:  # after the call: the selection's processes do not slow this one
            self._take_feeds(feeds)
        elif not self._static and act.direct is not None:  # type: ignore[union-attr]
            self._remember_direct(input_feed, act)  # type: ignore[arg-type]
        if output_names:
            try:
                return [outs[self._out_index[n]] for n in output_names]
            except KeyError as exc:
                raise InputError(
                    f"unknown output name {exc.args[0]!r}; the model's outputs are {list(self._out_index)}"
                ) from None
        return outs

    def _run_fallback(
        self, act: Active, feeds: dict[str, np.ndarray], exc: BaseException
    ) -> list[np.ndarray]:
        """Move to the next candidate that runs these feeds; one warning per failed one."""
        first = act.candidate
        reasons: dict[str, str] = {}
        while True:
            with self._lock:
                log.warning(
                    "autoinfer: %s failed during run (%s); moving to the next candidate",
                    act.candidate.key,
                    exc,
                )
                reasons[act.candidate.key] = str(exc)
                shapes = act.shapes or {k: tuple(v.shape) for k, v in feeds.items()}
                try:
                    new = self._load_decision(act.decision, shapes, act.failed | {act.candidate})
                except NoCandidateError as none:  # say why the ones that ran failed
                    raise NoCandidateError(
                        f"{first.key} failed during run and no other candidate could "
                        f"run {self._facts.path.name}",
                        {**reasons, **none.reasons},
                    ) from None
                bucket = shape_bucket(self._facts, shapes)
                if self._by_bucket.get(bucket) is act:
                    self._by_bucket[bucket] = new
                if self._active is act:
                    self._active = new
                if act is not self._default:  # closed once the calls on it are done
                    threading.Thread(target=self._retire, args=(act,), daemon=True).start()
            new.calls.append(None)
            try:  # outside the lock, as every run is
                return new.runner.run(feeds)
            except BackendError as again:
                act, exc = new, again
            finally:
                new.calls.pop()

    def _current_runner(self) -> Runner | None:  # the OrtSurface protocol
        act = self._active
        return act.runner if act else None

    # -- autoinfer's own ---------------------------------------------------------
    @property
    def choice(self) -> Choice | None:
        """What runs now, and what was measured (None only before a dynamic model's first
        run when the safe choice cannot serve every shape)."""
        act = self._active
        return Choice.of(act.decision, act.candidate) if act else None

    @property
    def decision(self) -> Decision | None:
        act = self._active
        return act.decision if act else None

    @property
    def facts(self) -> ModelFacts:
        return self._facts

    @property
    def selecting(self) -> bool:
        """Whether a background selection is queued, running or waiting for feeds."""
        return not self._settled.is_set()

    def explain(self) -> str:
        act = self._active
        if act is None:
            return (
                "no choice yet: the model has dynamic inputs and no input_shapes; "
                "autoinfer selects on the first run()"
            )
        text = act.decision.explain()
        if act.candidate != act.decision.winner:
            text += f"\nrunning on {act.candidate.key}: the winner failed here"
        if self.selecting:
            text += "\na selection is under way in the background" + (
                " (waiting for the first run()'s inputs)" if self._want_feeds else ""
            )
        elif resumable(act.decision):
            text += "\nthe race was left undecided: it goes on at the next start, in the background"
        return text

    def close(self) -> None:
        """Cancel a selection under way (its measuring processes are killed, nothing is
        written), then free every runtime. Bounded: never waits more than a few seconds."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop_selection()
        with self._lock:
            acts = [*self._by_bucket.values(), self._default, self._active]
            for act in {id(a): a for a in acts if a is not None}.values():
                act.close()  # a runner shared by several is closed more than once: harmless
            self._loader.cleanup()
            if self._tmp is not None:
                self._tmp.cleanup()
            if self._release_model is not None:
                self._release_model()
        self._settled.set()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        c = self._active.candidate.key if self._active else "not selected yet"
        return f"<autoinfer.Session {self._facts.path.name} on {c}>"
