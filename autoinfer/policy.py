"""Ranking and measured choice.

    model facts + hardware -> candidates (from every usable backend)
      -> ranking by estimate -> measurement in subprocesses (with accuracy check
      against the reference) -> tuning of the promising ones -> decision

The policy iterates the registry and reads what backends declare; it never
names a runtime. The reference is the CPU fp32 default candidate of the
backend whose capabilities say ``reference=True``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import select as _select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from . import backends as registry
from .backends.base import Backend, Candidate, LoadContext, Unsupported
from .cache import Cache, digest
from .config import Settings, check_objective
from .errors import ConfigError, NoCandidateError

if TYPE_CHECKING:  # pragma: no cover
    from probes import Hardware

    from .model import ModelFacts

log = logging.getLogger("autoinfer.policy")

DECISION_FORMAT = 1
TOLERANCES = {"fp32": (1e-3, 1e-4), "fp16": (2e-2, 2e-2), "bf16": (4e-2, 4e-2),
              "int8": (1e-1, 1e-1)}
# precision="fp32" (the default) keeps the model's own arithmetic, so results match ONNX
# Runtime's within fp32 tolerance; "auto" also tries the reduced precisions the hardware
# runs natively (fp16, bf16), each checked against the reference at its own tolerance.
PRECISIONS = ("fp32", "auto")


# --------------------------------------------------------------------------
# records
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
    def from_dict(cls, d: Mapping[str, Any]) -> "Measurement":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


@dataclass
class Ranked:
    """One candidate in the ranking, with what is known about it."""

    candidate: Candidate
    cost: float
    reasons: tuple[str, ...]
    status: str = "ranked"  # ranked | measured | rejected | failed | unsupported | skipped
    reason: str = ""
    measurement: Measurement | None = None
    rounds: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate.to_dict(), "cost": self.cost,
                "reasons": list(self.reasons), "status": self.status, "reason": self.reason,
                "measurement": self.measurement.to_dict() if self.measurement else None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Ranked":
        m = d.get("measurement")
        return cls(Candidate.from_dict(d["candidate"]), float(d["cost"]), tuple(d["reasons"]),
                   str(d["status"]), str(d["reason"]),
                   Measurement.from_dict(m) if m else None)


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

    @property
    def winner_entry(self) -> Ranked | None:
        return next((r for r in self.ranking if r.candidate == self.winner), None)

    def fallbacks(self) -> list[Candidate]:
        """Candidates to try, in order, if the winner fails: the accurate measured
        ones by the objective, then the unmeasured by estimate."""
        good = [r for r in self.ranking if r.status == "measured" and r.candidate != self.winner]
        good.sort(key=lambda r: r.measurement.metric(self.objective) if r.measurement else 0)
        rest = [r for r in self.ranking if r.status in ("ranked", "skipped")
                and r.candidate != self.winner]
        rest.sort(key=lambda r: r.cost)
        seen: set[Candidate] = set()
        out = []
        for r in good + rest:
            if r.candidate not in seen:
                seen.add(r.candidate)
                out.append(r.candidate)
        return out

    def explain(self) -> str:
        lines = [f"objective: {self.objective}; "
                 + ("measured" if self.measured else "ranked only (not measured)")
                 + (" (from the decision cache)" if self.from_cache else
                    f" in {self.elapsed_s:.1f} s")]
        w = self.winner_entry
        lines.append(f"winner: {self.winner.key}")
        if w and w.measurement:
            m = w.measurement
            lines.append(f"  median {m.median_s * 1e3:.3f} ms, p90 {m.p90_s * 1e3:.3f} ms, "
                         f"{m.throughput:.1f}/s, load {m.load_s:.2f} s, "
                         f"max error vs reference {m.max_abs_err:.2e}")
            ref = self._reference_entry()
            if ref is not None and ref.measurement and ref.candidate != self.winner:
                ratio = (ref.measurement.metric(self.objective) / m.metric(self.objective))
                lines.append(f"  {ratio:.2f}x better than {ref.candidate.key} on {self.objective}")
        if w:
            for r in w.reasons:
                lines.append(f"  - {r}")
        lines.append("ranking:")
        order = sorted(self.ranking, key=lambda r: (
            0 if r.status == "measured" else 1,
            r.measurement.metric(self.objective) if r.measurement and r.status == "measured"
            else r.cost))
        for i, r in enumerate(order, 1):
            if r.measurement and r.status == "measured":
                m = r.measurement
                what = (f"{m.median_s * 1e3:8.3f} ms median, p90 {m.p90_s * 1e3:.3f} ms, "
                        f"load {m.load_s:.2f} s, err {m.max_abs_err:.1e}")
            else:
                what = f"estimated cost {r.cost:.2f}"
            tail = f" [{r.status}: {r.reason}]" if r.reason else ""
            mark = "*" if r.candidate == self.winner else " "
            lines.append(f" {mark}{i:2d}. {r.candidate.key:<48} {what}{tail}")
        for u in self.unsupported:
            lines.append(f"  -  {u['key']}: unsupported, because {u['reason']}")
        return "\n".join(lines)

    def _reference_entry(self) -> Ranked | None:
        for r in self.ranking:
            if r.candidate.settings == () and r.status == "measured":
                try:
                    if registry.get(r.candidate.backend).capabilities.reference and \
                            r.candidate.device == "cpu" and r.candidate.precision == "fp32":
                        return r
                except ConfigError:
                    continue
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"format": DECISION_FORMAT, "winner": self.winner.to_dict(),
                "objective": self.objective, "measured": self.measured,
                "ranking": [r.to_dict() for r in self.ranking], "unsupported": self.unsupported,
                "bucket": self.bucket, "elapsed_s": self.elapsed_s, "created": self.created}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], key: str = "") -> "Decision":
        if d.get("format") != DECISION_FORMAT:
            raise ValueError(f"decision format {d.get('format')!r}")
        dec = cls(Candidate.from_dict(d["winner"]), check_objective(d["objective"]),
                  bool(d["measured"]), [Ranked.from_dict(r) for r in d["ranking"]],
                  [dict(u) for u in d.get("unsupported", [])], str(d.get("bucket", "")),
                  float(d.get("elapsed_s", 0.0)), key, True, float(d.get("created", 0.0)))
        if dec.winner_entry is None:
            raise ValueError("the winner is not in the ranking")
        return dec


# --------------------------------------------------------------------------
# sample inputs and the accuracy check
def sample_feeds(model: "ModelFacts", shapes: Mapping[str, Sequence[int]],
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic sample inputs: floats in [0, 1), integers in {0, 1}, booleans."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in model.inputs:
        shape = tuple(shapes[spec.name])
        dt = np.dtype(spec.dtype) if spec.dtype not in ("str", "bfloat16") else None
        if dt is None:
            raise ConfigError(f"input {spec.name!r} has dtype {spec.dtype}, which autoinfer "
                              "cannot generate sample inputs for")
        if dt.kind == "f":
            feeds[spec.name] = rng.random(shape, dtype=np.float32).astype(dt)
        elif dt.kind in "iu":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(dt)
        elif dt.kind == "b":
            feeds[spec.name] = rng.random(shape) < 0.5
        else:
            raise ConfigError(f"input {spec.name!r}: unsupported dtype {spec.dtype}")
    return feeds


def compare(outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray], rtol: float,
            atol: float) -> tuple[bool, float, float, str]:
    """(ok, max abs error, max relative error, why not). atol scales with the
    reference's magnitude so that large-valued outputs are judged fairly."""
    if len(outputs) != len(reference):
        return False, math.inf, math.inf, f"{len(outputs)} outputs, reference has {len(reference)}"
    max_abs = max_rel = 0.0
    for i, (o, r) in enumerate(zip(outputs, reference)):
        o = np.asarray(o)
        r = np.asarray(r)
        if o.shape != r.shape:
            return False, math.inf, math.inf, f"output {i} has shape {o.shape}, expected {r.shape}"
        if o.dtype != r.dtype:
            return False, math.inf, math.inf, f"output {i} has dtype {o.dtype}, expected {r.dtype}"
        if r.dtype.kind not in "fc":
            if not np.array_equal(o, r):
                n = int(np.sum(o != r))
                return False, math.inf, math.inf, f"output {i}: {n} of {r.size} values differ"
            continue
        of = o.astype(np.float64)
        rf = r.astype(np.float64)
        if not np.array_equal(np.isnan(of), np.isnan(rf)):
            return False, math.inf, math.inf, f"output {i}: NaN where the reference has none"
        fin = np.isfinite(rf)
        if not np.array_equal(of[~fin & ~np.isnan(rf)], rf[~fin & ~np.isnan(rf)]):
            return False, math.inf, math.inf, f"output {i}: infinities differ"
        if not np.all(np.isfinite(of[fin])):
            return False, math.inf, math.inf, f"output {i}: non-finite values"
        if not fin.any():
            continue
        diff = np.abs(of[fin] - rf[fin])
        scale = max(1.0, float(np.max(np.abs(rf[fin]))))
        a = float(diff.max())
        rel = float(np.max(diff / (np.abs(rf[fin]) + atol * scale)))
        max_abs, max_rel = max(max_abs, a), max(max_rel, rel)
        bad = diff > atol * scale + rtol * np.abs(rf[fin])
        if bad.any():
            return (False, max_abs, max_rel,
                    f"output {i}: {int(bad.sum())} of {diff.size} values outside tolerance "
                    f"(max abs error {a:.3g}, rtol {rtol:g}, atol {atol * scale:.3g})")
    return True, max_abs, max_rel, ""


# --------------------------------------------------------------------------
# the worker pool
class _Worker:
    """One measuring subprocess, restarted after a crash or a time-out."""

    def __init__(self, workdir: Path, memory_limit_mb: float) -> None:
        self.workdir = workdir
        self.memory_limit_mb = memory_limit_mb
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = b""

    def _start(self) -> subprocess.Popen[bytes]:
        errlog = open(self.workdir / f"worker-{time.monotonic_ns()}.log", "wb")
        env = dict(os.environ)
        env.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")  # never phone home
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "autoinfer._worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=errlog, env=env, start_new_session=True)
        errlog.close()
        self._buf = b""
        return self.proc

    def _rss_mb(self) -> float:
        if self.proc is None:
            return 0.0
        try:
            with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return 0.0

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                self.proc.kill()
                self.proc.wait(timeout=5)
            for s in (self.proc.stdin, self.proc.stdout):
                with contextlib.suppress(Exception):
                    s.close()  # type: ignore[union-attr]
            self.proc = None

    def close(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(timeout=5)
        self.kill()

    def submit(self, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        proc = self.proc if self.proc is not None and self.proc.poll() is None else self._start()
        try:
            proc.stdin.write((json.dumps(job) + "\n").encode())  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        except OSError as exc:
            self.kill()
            return {"ok": False, "kind": "crash", "reason": f"the worker died ({exc})"}
        fd = proc.stdout.fileno()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                return {"ok": False, "kind": "timeout",
                        "reason": f"did not finish within {timeout_s:.0f} s (killed)"}
            ready, _, _ = _select.select([fd], [], [], min(left, 0.2))
            if self.memory_limit_mb and self._rss_mb() > self.memory_limit_mb:
                self.kill()
                return {"ok": False, "kind": "memory",
                        "reason": f"used more than {self.memory_limit_mb:.0f} MB (killed)"}
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    code = proc.wait()
                    self.proc = None
                    how = (f"signal {signal.Signals(-code).name}" if code < 0
                           else f"exit code {code}")
                    return {"ok": False, "kind": "crash",
                            "reason": f"the runtime crashed the measuring process ({how})"}
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            self.kill()
            return {"ok": False, "kind": "crash", "reason": "garbled answer from the worker"}


# --------------------------------------------------------------------------
# selection
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
    extra: dict[str, Any] = field(default_factory=dict)
    tune: bool = True
    precision: str = "fp32"

    def normalised(self) -> "Options":
        check_objective(self.objective)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: expected one of {list(PRECISIONS)}, "
                              f"received {self.precision!r}")
        if self.benchmark not in (True, False, "auto"):
            raise ConfigError(f"benchmark: expected True, False or 'auto', "
                              f"received {self.benchmark!r}")
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or v < 0):
                raise ConfigError(f"{name}: expected a non-negative number, received {v!r}")
        return self


def threads_for(hw: "Hardware") -> int:
    return max(1, int(getattr(hw.cpu, "usable_cores", 1) or 1))


def resolve_input_shapes(model: "ModelFacts",
                         given: Mapping[str, Sequence[int]] | None) -> dict[str, tuple[int, ...]]:
    """Concrete shapes of all inputs; dynamic dims without a given value raise ConfigError."""
    from .backends.base import resolve_shapes

    if given:
        unknown = set(given) - {i.name for i in model.inputs}
        if unknown:
            raise ConfigError(f"input_shapes names unknown input(s) {sorted(unknown)}; "
                              f"the model's inputs are {[i.name for i in model.inputs]}")
        for spec in model.inputs:
            if spec.name in given and spec.shape is not None:
                g = tuple(given[spec.name])
                if len(g) != len(spec.shape) or any(
                        isinstance(d, int) and d != x for d, x in zip(spec.shape, g)):
                    raise ConfigError(f"input_shapes[{spec.name!r}] = {list(g)} does not fit the "
                                      f"declared shape {list(spec.shape)}")
    try:
        return resolve_shapes(model, given)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def artifact_key(cand: Candidate, shapes: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """The key of a candidate's artifact directory: runtime, device, precision and input
    shapes. Variants of one candidate share the directory (``cand.base``); each runtime keys
    its own files inside it by whatever else they depend on."""
    return {"c": cand.base.to_dict(), "shapes": {k: list(v) for k, v in shapes.items()}}


def shape_bucket(model: "ModelFacts", shapes: Mapping[str, Sequence[int]]) -> str:
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

    def __init__(self, model: "ModelFacts", hw: "Hardware", opts: Options, cache: Cache,
                 settings: Settings, progress: Any = None) -> None:
        self.model = model
        self.hw = hw
        self.opts = opts.normalised()
        self.cache = cache
        self.settings = settings
        self.backends = registry.select(opts.backends, opts.exclude)
        self.progress = progress or (lambda msg: None)
        self.threads = threads_for(hw)
        self.shapes = resolve_input_shapes(model, opts.input_shapes)
        self.bucket = shape_bucket(model, self.shapes)

    # -- keys ----------------------------------------------------------------
    def versions(self) -> dict[str, str]:
        v: dict[str, str] = {}
        for b in self.backends:
            v.update(b.versions())
        from . import __version__

        v["autoinfer"] = __version__
        return v

    def key(self) -> str:
        return digest({
            "model": self.model.sha256, "hw": self.hw.fingerprint, "versions": self.versions(),
            "objective": self.opts.objective, "bucket": self.bucket,
            "backends": sorted(b.name for b in self.backends),
            "extra": {k: repr(v) for k, v in sorted(self.opts.extra.items())},
            "tol": [self.opts.rtol, self.opts.atol], "precision": self.opts.precision,
        }, 32)

    def artifact_dir(self, cand: Candidate, workdir: Path) -> Path:
        key = artifact_key(cand, self.shapes)
        d = self.cache.artifact_dir(cand.backend, self.model.sha256, key)
        if d is None:
            d = workdir / "artifacts" / digest(key, 16)
            d.mkdir(parents=True, exist_ok=True)
        return d

    def load_context(self, cand: Candidate, workdir: Path) -> LoadContext:
        return LoadContext(artifact_dir=self.artifact_dir(cand, workdir), threads=self.threads,
                           input_shapes=dict(self.shapes), objective=self.opts.objective,
                           timeout_s=self.opts.candidate_timeout_s, hardware=self.hw,
                           extra=dict(self.opts.extra))

    # -- ranking -------------------------------------------------------------
    def rank(self) -> tuple[list[Ranked], list[dict[str, str]]]:
        ranked: list[Ranked] = []
        unsupported: list[dict[str, str]] = []
        for b in self.backends:
            av = b.availability(self.hw)
            if not av.usable:
                unsupported.append({"key": b.name, "reason": av.reason or "not usable here",
                                    "fix": av.fix})
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
                    unsupported.append({"key": c.key, "reason": (
                        f"computes in {c.precision}, and precision='fp32' keeps the model's "
                        f"fp32 arithmetic"), "fix": "precision='auto' to consider it"})
                    continue
                try:
                    est = b.estimate(c, self.model, self.hw, self.opts.objective)
                    ranked.append(Ranked(c, float(est.cost), tuple(est.reasons)))
                except Exception as exc:  # noqa: BLE001
                    ranked.append(Ranked(c, 10.0, (f"no estimate: {exc}",)))
        ranked.sort(key=lambda r: r.cost)
        return ranked, unsupported

    def reference(self) -> Candidate | None:
        for b in self.backends_all():
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
    def _job(self, cand: Candidate, workdir: Path, feeds_path: Path, out_path: Path,
             slice_s: float, time_it: bool = True) -> dict[str, Any]:
        ctx = self.load_context(cand, workdir)
        return {
            "candidate": cand.to_dict(), "facts": self.model.to_dict(), "feeds": str(feeds_path),
            "outputs": str(out_path), "threads": ctx.threads,
            "input_shapes": {k: list(v) for k, v in self.shapes.items()},
            "objective": self.opts.objective, "artifact_dir": str(ctx.artifact_dir),
            "timeout_s": self.opts.candidate_timeout_s, "slice_s": slice_s, "time": time_it,
            "extra": self.opts.extra, "sys_path": [p for p in sys.path if p],
            "backend_target": registry._REGISTRY.get(cand.backend),
        }

    def select(self) -> Decision:
        t_start = time.monotonic()
        ranked, unsupported = self.rank()
        if not ranked:
            raise NoCandidateError(
                f"no runtime can run {self.model.path.name} here",
                {u["key"]: u["reason"] + (f" (fix: {u['fix']})" if u.get("fix") else "")
                 for u in unsupported})
        bench = self.opts.benchmark
        if bench is False or (bench == "auto" and len(ranked) == 1 and not self.opts.tune):
            return Decision(ranked[0].candidate, self.opts.objective, False, ranked, unsupported,
                            self.bucket, time.monotonic() - t_start)
        with tempfile.TemporaryDirectory(prefix="autoinfer-select-") as tmp:
            dec = self._measure(ranked, unsupported, Path(tmp), t_start)
        return dec

    def _measure(self, ranked: list[Ranked], unsupported: list[dict[str, str]], work: Path,
                 t_start: float) -> Decision:
        budget = self.opts.budget_s or self.settings.budget_s
        deadline = t_start + budget
        feeds = sample_feeds(self.model, self.shapes)
        feeds_path = work / "feeds.npz"
        np.savez(feeds_path, **feeds)
        workers: dict[str, _Worker] = {}
        mem_limit = self.opts.memory_limit_mb or _default_memory_limit_mb()

        def worker(backend: str) -> _Worker:
            if backend not in workers:
                workers[backend] = _Worker(work, mem_limit)
            return workers[backend]

        counter = [0]

        def run(cand: Candidate, slice_s: float, time_it: bool = True
                ) -> tuple[dict[str, Any], list[np.ndarray] | None]:
            counter[0] += 1
            out = work / f"out-{counter[0]}.npz"
            self.progress(f"measuring {cand.key}")
            res = worker(cand.backend).submit(
                self._job(cand, work, feeds_path, out, slice_s, time_it),
                self.opts.candidate_timeout_s + 4 * slice_s + 10)
            outputs = None
            if res.get("ok"):
                with np.load(out, allow_pickle=False) as z:
                    outputs = [z[f"o{i}"] for i in range(int(res["n_outputs"]))]
            return res, outputs

        try:
            # the reference outputs: the reference backend's CPU fp32 default
            ref_cand = self.reference()
            reference: list[np.ndarray] | None = None
            ref_in_ranking = next((r for r in ranked if r.candidate == ref_cand), None)
            per = max(0.15, min(0.6, 0.12 * budget / max(1, len(ranked))))

            def evaluate(r: Ranked, slice_s: float) -> None:
                nonlocal reference
                res, outs = run(r.candidate, slice_s)
                r.rounds += 1
                if not res.get("ok"):
                    r.status = "unsupported" if res.get("kind") == "unsupported" else "failed"
                    r.reason = str(res.get("reason", "unknown failure"))
                    log.info("%s: %s (%s)", r.candidate.key, r.status, r.reason)
                    return
                m = Measurement(
                    load_s=res["load_s"], first_s=res["first_s"], median_s=res["median_s"],
                    p90_s=res["p90_s"], mad_s=res["mad_s"], reps=int(res["reps"]),
                    throughput=res["throughput"], rss_load_mb=res["rss_load_mb"],
                    peak_mb=res["peak_mb"])
                if r.candidate == ref_cand and reference is None:
                    reference = outs
                if reference is not None and outs is not None:
                    rtol, atol = self._tolerance(r.candidate)
                    ok, max_abs, max_rel, why = compare(outs, reference, rtol, atol)
                    m.max_abs_err, m.max_rel_err = max_abs, max_rel
                    if not ok:
                        r.status, r.reason, r.measurement = "rejected", f"wrong outputs: {why}", m
                        log.warning("autoinfer rejected %s: %s", r.candidate.key, why)
                        return
                else:
                    m.max_abs_err = m.max_rel_err = float("nan")
                if r.measurement is not None and r.status == "measured":
                    # a second round: keep the better median (noise only adds time)
                    prev = r.measurement
                    if prev.metric(self.opts.objective) <= m.metric(self.opts.objective):
                        m = prev
                r.status, r.reason, r.measurement = "measured", "", m

            # stage 0: reference first (its outputs judge all others)
            if ref_cand is not None:
                if ref_in_ranking is not None:
                    evaluate(ref_in_ranking, per)
                    if ref_in_ranking.status != "measured":
                        log.warning("the reference %s failed: %s", ref_cand.key,
                                    ref_in_ranking.reason)
                else:
                    res, outs = run(ref_cand, 0.0, time_it=False)
                    reference = outs if res.get("ok") else None
            # stage 1: every candidate at its defaults, best estimate first
            for r in ranked:
                if r.rounds:
                    continue
                if time.monotonic() > deadline and any(x.status == "measured" for x in ranked):
                    r.status, r.reason = "skipped", "not measured: time budget spent"
                    continue
                evaluate(r, per)
            measured = [r for r in ranked if r.status == "measured"]
            if not measured:
                raise NoCandidateError(
                    f"no runtime ran {self.model.path.name} correctly here",
                    {**{r.candidate.key: f"{r.status}: {r.reason}" for r in ranked},
                     **{u["key"]: u["reason"] for u in unsupported}})
            # stage 2: tune the settings of the promising ones, within the budget
            obj = self.opts.objective
            if self.opts.tune:
                measured.sort(key=lambda r: r.measurement.metric(obj))  # type: ignore[union-attr]
                best = measured[0].measurement.metric(obj)  # type: ignore[union-attr]
                promising = [r for r in measured[:2]
                             if r.measurement.metric(obj) <= 1.25 * best]  # type: ignore[union-attr]
                known = {r.candidate for r in ranked}
                for r in promising:
                    b = registry.get(r.candidate.backend)
                    try:
                        variants = b.variants(r.candidate, self.model, self.hw, obj)
                    except Exception as exc:  # noqa: BLE001
                        log.info("variants() of %s failed: %s", r.candidate.key, exc)
                        variants = []
                    for v in variants:
                        if v in known:
                            continue
                        known.add(v)
                        nr = Ranked(v, r.cost, r.reasons + (f"tuned variant of {r.candidate.key}",))
                        ranked.append(nr)
                        if time.monotonic() > deadline:
                            nr.status, nr.reason = "skipped", "not measured: time budget spent"
                            continue
                        evaluate(nr, per)
            # stage 3: a second round for the finalists, in reverse order, so that
            # drift of a shared machine does not decide the winner
            measured = sorted((r for r in ranked if r.status == "measured"),
                              key=lambda r: r.measurement.metric(obj))  # type: ignore[union-attr]
            finalists = measured[:3]
            if ref_in_ranking is not None and ref_in_ranking.status == "measured" \
                    and ref_in_ranking not in finalists:
                finalists.append(ref_in_ranking)
            if len(finalists) > 1 and time.monotonic() < deadline + 0.25 * budget:
                for r in reversed(finalists):
                    evaluate(r, per)
            measured = sorted((r for r in ranked if r.status == "measured"),
                              key=lambda r: r.measurement.metric(obj))  # type: ignore[union-attr]
            if not measured:
                raise NoCandidateError(f"no runtime ran {self.model.path.name} correctly here",
                                       {r.candidate.key: f"{r.status}: {r.reason}" for r in ranked})
            winner = measured[0]
            if reference is None:
                winner.reasons = winner.reasons + (
                    "no reference outputs were available: accuracy not checked",)
            for r in ranked:
                if r.status == "ranked":
                    r.status, r.reason = "skipped", "not measured"
            return Decision(winner.candidate, obj, True, ranked, unsupported, self.bucket,
                            time.monotonic() - t_start)
        finally:
            for w in workers.values():
                w.close()

    def _tolerance(self, cand: Candidate) -> tuple[float, float]:
        """The precision's default tolerance; the caller's rtol/atol, when given, for all."""
        rtol, atol = TOLERANCES.get(cand.precision, TOLERANCES["fp16"])
        rtol = self.opts.rtol if self.opts.rtol is not None else rtol
        atol = self.opts.atol if self.opts.atol is not None else atol
        return rtol, atol


def _default_memory_limit_mb() -> float:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return 0.75 * pages / 2**20
    except (ValueError, OSError):
        return 0.0


_select_locks: dict[str, threading.Lock] = {}
_select_locks_guard = threading.Lock()


def decide(model: "ModelFacts", hw: "Hardware", opts: Options, cache: Cache,
           settings: Settings, progress: Any = None) -> Decision:
    """The cached decision for this model here, or a new selection (stored)."""
    sel = Selector(model, hw, opts, cache, settings, progress)
    key = sel.key()
    need_measured = opts.benchmark is True or (opts.benchmark == "auto")

    def cached() -> Decision | None:
        rec = cache.get_decision(key)
        if rec is None:
            return None
        try:
            dec = Decision.from_dict(rec["decision"], key)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("autoinfer decision %s is unreadable (%s); selecting again", key, exc)
            return None
        if need_measured and not dec.measured:
            return None
        return dec

    dec = cached()
    if dec is not None:
        return dec
    with _select_locks_guard:
        tlock = _select_locks.setdefault(key, threading.Lock())
    with tlock, cache.lock(key):
        dec = cached()  # another thread or process may have finished it meanwhile
        if dec is not None:
            return dec
        dec = sel.select()
        dec.key = key
        cache.put_decision(key, {"decision": dec.to_dict(), "model": {
            "sha256": model.sha256, "path": str(model.path)}, "hardware": hw.fingerprint,
            "versions": sel.versions()})
        cache.prune()
        return dec


def select(model: str | os.PathLike[str], *, objective: str = "latency",
           benchmark: bool | str = "auto", backends: Sequence[str] | None = None,
           exclude: Sequence[str] | None = None,
           input_shapes: Mapping[str, Sequence[int]] | None = None,
           cache_dir: str | os.PathLike[str] | None = None, budget_s: float | None = None,
           precision: str = "fp32", progress: Any = None) -> Decision:
    """Choose the runtime for ``model`` on this machine (cached); see :class:`Decision`."""
    import probes

    from .model import load_facts_cached

    settings = Settings.resolve(cache_dir=cache_dir, budget_s=budget_s)
    cache = Cache(settings.cache_dir, enabled=settings.cache_enabled,
                  max_bytes=settings.cache_max_bytes)
    facts = load_facts_cached(model, cache)
    opts = Options(objective=objective, benchmark=benchmark, backends=backends, exclude=exclude,
                   input_shapes=input_shapes, budget_s=budget_s, precision=precision).normalised()
    return decide(facts, probes.detect(), opts, cache, settings, progress)
