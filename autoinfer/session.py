"""The Session facade: ONNX Runtime's ``InferenceSession`` surface over the chosen runtime.

    sess = autoinfer.Session("model.onnx")
    outputs = sess.run(None, {"input": x})

Existing ONNX Runtime code keeps its meaning: given ``providers`` or
``sess_options``, autoinfer runs ONNX Runtime with exactly those.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from . import backends as registry
from .backends.base import Candidate, LoadContext, Runner
from .cache import Cache
from .config import Settings
from .errors import (AutoinferError, BackendError, ConfigError, InputError, ModelError,
                     NoCandidateError)
from .model import ModelFacts, TensorSpec, load_facts_cached
from .policy import Decision, Options, decide, resolve_input_shapes, shape_bucket
from .surface import OrtSurface

log = logging.getLogger("autoinfer.session")

# ONNX Runtime's keyword arguments that pin the choice to ONNX Runtime itself.
_ORT_BACKEND = "onnxruntime"


@dataclass(frozen=True)
class NodeArg:
    """Like ``onnxruntime.NodeArg``: name, shape (ints, symbolic names or None) and type."""

    name: str
    shape: list[Any] | None
    type: str


@dataclass(frozen=True)
class ModelMetadata:
    """Like ``onnxruntime.ModelMetadata``."""

    producer_name: str
    graph_name: str
    domain: str
    description: str
    graph_description: str
    version: int
    custom_metadata_map: dict[str, str]


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

    @classmethod
    def of(cls, decision: Decision, candidate: Candidate) -> "Choice":
        entry = next((r for r in decision.ranking if r.candidate == candidate), None)
        m = entry.measurement if entry else None
        return cls(candidate.backend, candidate.device, candidate.precision,
                   dict(candidate.settings), bool(m) and decision.measured, decision.from_cache,
                   m.median_s * 1e3 if m else None, m.p90_s * 1e3 if m else None,
                   m.throughput if m else None, m.load_s if m else None,
                   m.max_abs_err if m else None, candidate)


class _Active:
    """A loaded runner with the decision it came from."""

    __slots__ = ("decision", "candidate", "runner", "shapes", "exact", "failed")

    def __init__(self, decision: Decision, candidate: Candidate, runner: Runner,
                 shapes: dict[str, tuple[int, ...]], exact: bool) -> None:
        self.decision = decision
        self.candidate = candidate
        self.runner = runner
        self.shapes = shapes
        self.exact = exact  # the runner accepts only these input shapes
        self.failed: set[Candidate] = set()


class Session(OrtSurface):
    """Runs an ONNX model on the fastest correct runtime of this machine.

    Arguments beyond ONNX Runtime's:
      objective:    "latency" (default), "throughput", "load_time" or "memory".
      benchmark:    "auto" (measure unless the choice is forced), True, or False (rank only).
      backends / exclude: restrict the runtimes considered (registry names).
      input_shapes: concrete shapes for dynamic inputs; without them a model with
                    dynamic inputs selects on its first ``run()``.
      cache_dir:    where decisions and artifacts live (default: the user cache dir,
                    or AUTOINFER_CACHE_DIR).
      budget_s:     time budget of a measured selection.
      precision:    "fp32" (default): keep the model's fp32 arithmetic, so results match ONNX
                    Runtime's; "auto": also try fp16/bf16 where the hardware runs them
                    natively, each checked at its own, looser tolerance.
      rtol / atol:  accuracy tolerance against the reference (default: by precision).
      fallback:     move to the next candidate when the winner fails (default True).
      threads:      CPU threads the runtime may use (default: the CPU quota found).

    The rest of InferenceSession's surface comes from :class:`~autoinfer.surface.OrtSurface`.
    """

    def __init__(self, path_or_bytes: str | os.PathLike[str] | bytes,
                 sess_options: Any = None, providers: Sequence[Any] | None = None,
                 provider_options: Sequence[dict[Any, Any]] | None = None, *,
                 objective: str = "latency", benchmark: bool | str = "auto",
                 backends: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
                 input_shapes: Mapping[str, Sequence[int]] | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, budget_s: float | None = None,
                 rtol: float | None = None, atol: float | None = None,
                 precision: str = "fp32", fallback: bool = True, progress: Any = None,
                 threads: int | None = None, **kwargs: Any) -> None:
        if kwargs:
            raise ConfigError(f"Session() got unexpected keyword argument(s) {sorted(kwargs)}")
        import probes

        self._lock = threading.RLock()
        self._closed = False
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._release_model: Any = None  # lets go of a held model copy (bytes)
        self._settings = Settings.resolve(cache_dir=cache_dir, budget_s=budget_s)
        self._cache = Cache(self._settings.cache_dir, enabled=self._settings.cache_enabled,
                            max_bytes=self._settings.cache_max_bytes)
        self._path = self._model_path(path_or_bytes)
        try:
            self._facts: ModelFacts = load_facts_cached(self._path, self._cache)
        except ModelError as exc:
            if isinstance(path_or_bytes, (str, os.PathLike)):
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
        self._hw = probes.detect()
        extra: dict[str, Any] = {}
        self._ort_pinned = sess_options is not None or providers is not None
        if self._ort_pinned:
            backends, exclude, benchmark = [_ORT_BACKEND], None, False
            extra = {"sess_options": sess_options, "providers": list(providers or []) or None,
                     "provider_options": provider_options}
        self._opts = Options(objective=objective, benchmark=benchmark, backends=backends,
                             exclude=exclude, input_shapes=input_shapes, rtol=rtol, atol=atol,
                             budget_s=budget_s, precision=precision, extra=extra).normalised()
        registry.select(backends, exclude)  # validate names now, not at first run
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ConfigError(f"threads: expected a positive integer, received {threads!r}")
        self._fallback = fallback
        self._threads = threads
        self._progress = progress
        self._prepare_validation()
        self._by_bucket: dict[str, _Active] = {}
        self._active: _Active | None = None
        if not self._facts.has_dynamic_inputs or input_shapes:
            shapes = resolve_input_shapes(self._facts, input_shapes)
            self._active = self._activate(shapes)

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
    def _decide(self, shapes: dict[str, tuple[int, ...]]) -> Decision:
        opts = Options(**{**self._opts.__dict__, "input_shapes": shapes})
        if self._ort_pinned:
            from .policy import Selector

            return Selector(self._facts, self._hw, opts, self._cache, self._settings).select()
        return decide(self._facts, self._hw, opts, self._cache, self._settings, self._progress)

    def _load(self, cand: Candidate, shapes: dict[str, tuple[int, ...]]) -> Runner:
        from .policy import artifact_key

        key = artifact_key(cand, shapes)
        adir = self._cache.artifact_dir(cand.backend, self._facts.sha256, key)
        try:
            return self._load_in(cand, shapes, adir or self._private_dir(key))
        except AutoinferError:
            if adir is None or adir.exists():
                raise
        # Another process cleared the cache under this load: load again where no clear
        # reaches, in this session's own temporary directory.
        log.info("autoinfer: the artifact directory of %s vanished during its load (a cache "
                 "clear); loading it again in a private directory", cand.key)
        return self._load_in(cand, shapes, self._private_dir(key))

    def _private_dir(self, key: Any) -> Path:
        from .cache import digest

        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="autoinfer-")
        d = Path(self._tmp.name) / "artifacts" / digest(key, 16)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _load_in(self, cand: Candidate, shapes: dict[str, tuple[int, ...]],
                 adir: Path) -> Runner:
        from .policy import threads_for

        ctx = LoadContext(artifact_dir=adir, threads=self._threads or threads_for(self._hw),
                          input_shapes=shapes,
                          objective=self._opts.objective, hardware=self._hw,
                          extra=dict(self._opts.extra))
        return registry.get(cand.backend).load(cand, self._facts, ctx)

    def _activate(self, shapes: dict[str, tuple[int, ...]],
                  failed: set[Candidate] | None = None) -> _Active:
        decision = self._decide(shapes)
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
                log.warning("autoinfer: %s failed to load (%s); trying the next candidate",
                            cand.key, exc)
                continue
            exact = not registry.get(cand.backend).capabilities.dynamic_shapes
            act = _Active(decision, cand, runner, shapes, exact)
            if failed:
                act.failed |= failed
            self._by_bucket[shape_bucket(self._facts, shapes)] = act
            return act
        raise NoCandidateError(f"no candidate could load {self._facts.path.name}", errors)

    # -- validation --------------------------------------------------------------
    def _prepare_validation(self) -> None:
        self._inputs = self._facts.inputs
        self._input_names = frozenset(i.name for i in self._inputs)
        checks = []
        for spec in self._inputs:
            try:
                dt = np.dtype(spec.dtype) if spec.dtype != "str" else np.dtype(object)
            except TypeError:
                dt = None
            fixed = tuple((i, d) for i, d in enumerate(spec.shape or ()) if isinstance(d, int))
            rank = len(spec.shape) if spec.shape is not None else -1
            checks.append((spec.name, dt, rank, fixed))
        self._checks = tuple(checks)
        self._out_index = {o.name: i for i, o in enumerate(self._facts.outputs)}

    def _validate(self, feed: Any) -> dict[str, np.ndarray]:
        if not isinstance(feed, Mapping):
            raise InputError(f"input_feed must be a dict of input name -> array, "
                             f"received {type(feed).__name__}")
        if feed.keys() != self._input_names:
            missing = sorted(self._input_names - set(feed))
            unknown = sorted(set(feed) - self._input_names)
            msg = (f"Model requires {len(self._input_names)} input(s) "
                   f"{sorted(self._input_names)}. Input Feed contains {len(feed)}")
            if missing:
                msg += f"; missing {missing}"
            if unknown:
                msg += f"; unknown {unknown}"
            raise InputError(msg)
        out = {}
        for name, dt, rank, fixed in self._checks:
            x = feed[name]
            if type(x) is not np.ndarray:
                x = self._convert(name, x, dt)
            if dt is not None and x.dtype != dt:
                raise InputError(f"input {name!r}: expected dtype {dt} ({self._spec(name).ort_type})"
                                 f", received {x.dtype}")
            if rank >= 0:
                if x.ndim != rank:
                    raise InputError(f"input {name!r}: expected rank {rank} (shape "
                                     f"{self._spec(name).shape}), received shape {x.shape}")
                shape = x.shape
                for i, d in fixed:
                    if shape[i] != d:
                        raise InputError(f"input {name!r}: dimension {i} must be {d} (shape "
                                         f"{list(self._spec(name).shape or ())}), received "
                                         f"shape {list(shape)}")
            if not x.flags.c_contiguous:
                x = np.ascontiguousarray(x)
            out[name] = x
        return out

    def _spec(self, name: str) -> TensorSpec:
        return next(i for i in self._inputs if i.name == name)

    @staticmethod
    def _convert(name: str, x: Any, dt: np.dtype[Any] | None) -> np.ndarray:
        if isinstance(x, np.ndarray):  # a subclass (np.matrix, memmap): view as a plain array
            return np.asarray(x)
        if isinstance(x, (list, tuple, int, float, bool, np.generic)):
            try:
                return np.asarray(x, dtype=dt)
            except (TypeError, ValueError, OverflowError) as exc:
                raise InputError(f"input {name!r}: cannot convert {type(x).__name__} to "
                                 f"{dt}: {exc}") from None
        if hasattr(x, "__array__"):
            return np.asarray(x)
        raise InputError(f"input {name!r}: expected a numpy array, received {type(x).__name__}")

    # -- running -----------------------------------------------------------------
    def _active_for(self, feeds: dict[str, np.ndarray]) -> _Active:
        act = self._active
        if act is not None and not self._facts.has_dynamic_inputs:
            return act
        shapes = {k: tuple(v.shape) for k, v in feeds.items()}
        if act is not None and (not act.exact or act.shapes == shapes) and \
                shape_bucket(self._facts, shapes) == shape_bucket(self._facts, act.shapes):
            return act
        with self._lock:
            bucket = shape_bucket(self._facts, shapes)
            act = self._by_bucket.get(bucket)
            if act is None or (act.exact and act.shapes != shapes):
                act = self._activate(shapes)
            self._active = act
            return act

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any],
            run_options: Any = None) -> list[np.ndarray]:
        """Outputs named by ``output_names`` (all when None), like ONNX Runtime's ``run``."""
        if self._closed:
            raise AutoinferError("the session is closed")
        feeds = self._validate(input_feed)
        act = self._active_for(feeds)
        try:
            outs = act.runner.run(feeds)
        except BackendError as exc:
            if not self._fallback:
                raise
            outs = self._run_fallback(act, feeds, exc)
        if output_names:
            try:
                return [outs[self._out_index[n]] for n in output_names]
            except KeyError as exc:
                raise InputError(f"unknown output name {exc.args[0]!r}; the model's outputs are "
                                 f"{list(self._out_index)}") from None
        return outs

    def _run_fallback(self, act: _Active, feeds: dict[str, np.ndarray],
                      exc: BaseException) -> list[np.ndarray]:
        """Move to the next candidate that runs these feeds; one warning per failed one."""
        first = act.candidate
        reasons: dict[str, str] = {}
        while True:
            with self._lock:
                log.warning("autoinfer: %s failed during run (%s); moving to the next candidate",
                            act.candidate.key, exc)
                reasons[act.candidate.key] = str(exc)
                try:
                    new = self._activate(act.shapes, act.failed | {act.candidate})
                except NoCandidateError as none:  # say why the ones that ran failed
                    raise NoCandidateError(
                        f"{first.key} failed during run and no other candidate could "
                        f"run {self._facts.path.name}", {**reasons, **none.reasons}) from None
                if self._active is act:
                    self._active = new
                try:
                    act.runner.close()
                except Exception:  # noqa: BLE001 - the failed runner may be broken
                    pass
            try:  # outside the lock, as every run is
                return new.runner.run(feeds)
            except BackendError as again:
                act, exc = new, again

    # -- ONNX Runtime's introspection --------------------------------------------
    def get_inputs(self) -> list[NodeArg]:
        # an unknown rank reads [] as in ONNX Runtime
        return [NodeArg(i.name, list(i.shape or ()), i.ort_type) for i in self._facts.inputs]

    def get_outputs(self) -> list[NodeArg]:
        return [NodeArg(o.name, list(o.shape or ()), o.ort_type) for o in self._facts.outputs]

    def get_modelmeta(self) -> ModelMetadata:
        f = self._facts
        return ModelMetadata(producer_name=f.producer_name,
                             graph_name=f.graph_name, domain=f.domain, description=f.description,
                             graph_description=f.graph_description, version=f.model_version,
                             custom_metadata_map=dict(f.metadata))

    def _current_runner(self) -> Runner | None:  # the OrtSurface protocol
        act = self._active
        return act.runner if act else None

    # -- autoinfer's own ---------------------------------------------------------
    @property
    def choice(self) -> Choice | None:
        """The runtime in use and its measured numbers (None before a dynamic model's first run)."""
        act = self._active
        return Choice.of(act.decision, act.candidate) if act else None

    @property
    def decision(self) -> Decision | None:
        act = self._active
        return act.decision if act else None

    @property
    def facts(self) -> ModelFacts:
        return self._facts

    def explain(self) -> str:
        act = self._active
        if act is None:
            return ("no choice yet: the model has dynamic inputs and no input_shapes; "
                    "autoinfer selects on the first run()")
        text = act.decision.explain()
        if act.candidate != act.decision.winner:
            text += f"\nrunning on {act.candidate.key}: the winner failed here"
        return text

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for act in {id(a): a for a in self._by_bucket.values()}.values():
                try:
                    act.runner.close()
                except Exception:  # noqa: BLE001
                    pass
            if self._tmp is not None:
                self._tmp.cleanup()
            if self._release_model is not None:
                self._release_model()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        c = self._active.candidate.key if self._active else "not selected yet"
        return f"<autoinfer.Session {self._facts.path.name} on {c}>"
