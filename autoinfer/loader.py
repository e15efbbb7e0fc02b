"""One way to build a LoadContext and an artifact directory, and to load a runner.

The selector, the measuring worker and the session all load through here, so a
candidate measured in the worker is loaded exactly as the session loads it:
same threads, same artifact directory, same hardware facts, same extras.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _hw
from . import backends as registry
from .backends.base import Candidate, LoadContext, Runner
from .cache import Cache, digest
from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from probes import Hardware

    from .model import ModelFacts


def threads_for(hw: Hardware, explicit: int | None = None) -> int:
    """The application's explicit thread count, else the CPU quota the probes found."""
    if explicit is not None:
        return int(explicit)
    return _hw.threads_for(hw)


def detect_beside() -> Callable[[], Any]:
    """Start probing the machine (``probes.detect``: once per process) on a thread of its
    own, so that it overlaps whatever the caller does next; the returned function waits
    for the answer. Once the process has the answer (every Session after the first), it is
    returned as it is, without a thread."""
    import probes

    known = probes.detected()
    if known is not None:
        return lambda: known
    found: list[Any] = []
    thread = threading.Thread(target=lambda: found.append(probes.detect()), daemon=True)
    thread.start()

    def wait() -> Any:
        thread.join()
        return found[0] if found else probes.detect()

    return wait


def check_threads(threads: Any) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads: expected a positive integer or None, received {threads!r}")
    return threads


def artifact_key(cand: Candidate, shapes: Mapping[str, Sequence[int]] | None) -> dict[str, Any]:
    """The key of a candidate's artifact directory: runtime, device, precision and input
    shapes. Variants of one candidate share the directory (``cand.base``); each runtime keys
    its own files inside it by whatever else they depend on."""
    return {"c": cand.base.to_dict(), "shapes": {k: list(v) for k, v in (shapes or {}).items()}}


def artifact_dir(
    cache: Cache | None,
    cand: Candidate,
    model: ModelFacts,
    shapes: Mapping[str, Sequence[int]] | None,
    private: Path,
) -> Path:
    """The cache's directory for this candidate, or one under ``private`` without a cache."""
    key = artifact_key(cand, shapes)
    d = cache.artifact_dir(cand.backend, model.sha256, key) if cache is not None else None
    if d is None:
        d = private_dir(private, key)
    return d


def private_dir(root: Path, key: Any) -> Path:
    d = Path(root) / "artifacts" / digest(key, 16)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def context(
    artifact: Path,
    hw: Hardware | None,
    *,
    threads: int,
    shapes: Mapping[str, Sequence[int]] | None,
    objective: str,
    timeout_s: float = 300.0,
    app_options: Mapping[str, Any] | None = None,
    threads_asked: bool = False,
) -> LoadContext:
    return LoadContext(
        artifact_dir=Path(artifact),
        threads=int(threads),
        threads_asked=bool(threads_asked),
        input_shapes={k: tuple(int(d) for d in v) for k, v in shapes.items()} if shapes else None,
        objective=objective,
        timeout_s=float(timeout_s),
        hardware=hw,
        app_options=dict(app_options or {}),
    )


def context_to_job(ctx: LoadContext) -> dict[str, Any]:
    """A LoadContext as JSON for the measuring worker (extras must be JSON or are dropped)."""
    return {
        "artifact_dir": str(ctx.artifact_dir),
        "threads": ctx.threads,
        "threads_asked": ctx.threads_asked,
        "input_shapes": {k: list(v) for k, v in (ctx.input_shapes or {}).items()},
        "objective": ctx.objective,
        "timeout_s": ctx.timeout_s,
        "hardware": ctx.hardware.to_dict() if ctx.hardware is not None else None,
        "app_options": dict(ctx.app_options),
    }


def context_from_job(d: Mapping[str, Any]) -> LoadContext:
    hw = None
    if d.get("hardware"):
        from probes import Hardware

        hw = Hardware.from_dict(d["hardware"])
    return context(
        Path(d["artifact_dir"]),
        hw,
        threads=int(d.get("threads", 1)),
        threads_asked=bool(d.get("threads_asked", False)),
        shapes=d.get("input_shapes") or None,
        objective=d.get("objective", "latency"),
        timeout_s=float(d.get("timeout_s", 300.0)),
        app_options=d.get("app_options") or {},
    )


def load(cand: Candidate, model: ModelFacts, ctx: LoadContext) -> Runner:
    return registry.get(cand.backend).load(cand, model, ctx)


class Loader:
    """Loads candidates of one model for one session or selection, the same way each time."""

    def __init__(
        self,
        model: ModelFacts,
        hw: Hardware,
        cache: Cache | None,
        *,
        objective: str,
        threads: int | None = None,
        timeout_s: float = 300.0,
        app_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.hw = hw
        self.cache = cache
        self.objective = objective
        self.threads = threads_for(hw, threads)
        self.threads_asked = threads is not None
        self.timeout_s = timeout_s
        self.app_options = dict(app_options or {})
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def private_root(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="autoinfer-")
        return Path(self._tmp.name)

    def context(
        self, cand: Candidate, shapes: Mapping[str, Sequence[int]] | None, *, private: bool = False
    ) -> LoadContext:
        """The context for ``cand``; ``private``: in this loader's own temporary directory,
        where no cache clear reaches."""
        if private or not registry.get(cand.backend).keeps_artifacts(cand):
            # nothing to keep: a private directory (and no wait for the model's hash)
            adir = private_dir(self.private_root(), artifact_key(cand, shapes))
        else:
            adir = artifact_dir(self.cache, cand, self.model, shapes, self.private_root())
        return context(
            adir,
            self.hw,
            threads=self.threads,
            threads_asked=self.threads_asked,
            shapes=shapes,
            objective=self.objective,
            timeout_s=self.timeout_s,
            app_options=self.app_options,
        )

    def load(self, cand: Candidate, shapes: Mapping[str, Sequence[int]] | None) -> Runner:
        """Load ``cand``; if a cache clear removed its directory during the load, load it
        again in the private directory."""
        from .errors import AutoinferError

        ctx = self.context(cand, shapes)
        try:
            return load(cand, self.model, ctx)
        except AutoinferError:
            if ctx.artifact_dir.exists():
                raise
        return load(cand, self.model, self.context(cand, shapes, private=True))

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
