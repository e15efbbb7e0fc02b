"""The contract every runtime backend fulfils.

A backend wraps one inference runtime (ONNX Runtime, OpenVINO, ncnn,
TensorRT). It imports its runtime lazily, inside its methods, so importing
autoinfer never imports a runtime. The policy talks to backends only through
this interface and the data they declare (:class:`Capabilities`,
:class:`Candidate`, :class:`Estimate`); it never branches on a backend's name.

What a backend promises:

- ``availability(hw)`` never raises: it says whether the runtime is installed,
  its version, which devices it can *really* use here, and how to fix it if not.
- ``candidates(model, hw, objective)`` lists the (device, precision, settings)
  combinations worth trying for this model here, and an :class:`Unsupported`
  with the reason for each combination it knows it cannot run.
- ``variants(candidate, ...)`` lists tuned settings of a candidate worth
  measuring, most promising first.
- ``estimate(candidate, ...)`` gives a relative cost without running anything
  (1.0 = ONNX Runtime on CPU at its defaults), with its reasons in words.
- ``expected_load_s(candidate, model, ctx, reference_load_s)`` says roughly how long
  ``load`` will take (a conversion not yet cached counts), for the time budget.
- ``load(candidate, model, ctx)`` returns a :class:`Runner` or raises
  :class:`~autoinfer.errors.UnsupportedModel` (cannot run this model, with the
  reason), :class:`~autoinfer.errors.BackendUnavailable` or
  :class:`~autoinfer.errors.BackendError`; never a runtime's own exception.
- ``Runner.run(feeds)`` returns the outputs in the model's declared order, with
  the declared dtypes and shapes; it may be called from several threads at once.

What a backend declares, so that nothing outside ``backends/`` names its runtime:
``capabilities``; ``thread_env_vars`` (its thread-count variables, for the
doctor); ``domains`` (custom operator domains it implements, for the model
check); ``child_env()`` (variables every process autoinfer starts must carry,
such as telemetry opt-outs); ``claim_app_options()`` (the arguments of its runtime's own
session class read as :class:`Hints`, for ``autoinfer.patch()``). The registry merges them
(:func:`autoinfer.backends.child_environment`, ``thread_env_vars()``,
``known_domains()``, ``claim_app_options()``).

What backends share lives below them, and is what they use: a runtime is imported through
:func:`autoinfer._lazy.import_optional`, a converter or check runs through
:func:`autoinfer._proc.run_bounded`, the thread count is :func:`autoinfer._hw.threads_for`.
Feeds are checked once, by the Session: ``Runner.run`` trusts its feeds (names, dtypes,
ranks, fixed dimensions) and checks only what its runtime adds (a shape an engine was not
built for, integers a runtime narrows to int32).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

# Re-exported: their homes are the low layers (cache and config read them there).
from .._util import stable_json  # noqa: F401
from ..objectives import OBJECTIVES  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover
    from probes import Hardware

    from ..model import ModelFacts

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Candidate:
    """One way to run a model: a backend, a device, a precision and settings.

    ``settings`` is a sorted tuple of (name, JSON scalar) pairs so that a
    candidate is hashable and has one canonical ``key``.
    """

    backend: str
    device: str = "cpu"
    precision: str = "fp32"
    settings: tuple[tuple[str, Scalar], ...] = ()

    @classmethod
    def make(
        cls, backend: str, device: str = "cpu", precision: str = "fp32", **settings: Scalar
    ) -> Candidate:
        return cls(backend, device, precision, tuple(sorted(settings.items())))

    @property
    def settings_dict(self) -> dict[str, Scalar]:
        """``settings`` as a new dict (name -> value)."""
        return dict(self.settings)

    def get(self, name: str, default: Scalar = None) -> Scalar:
        return self.settings_dict.get(name, default)

    def with_settings(self, **changes: Scalar) -> Candidate:
        merged = {**self.settings_dict, **changes}
        return Candidate(self.backend, self.device, self.precision, tuple(sorted(merged.items())))

    @property
    def base(self) -> Candidate:
        """The same backend, device and precision at default settings."""
        return Candidate(self.backend, self.device, self.precision)

    @property
    def key(self) -> str:
        s = ",".join(f"{k}={v}" for k, v in self.settings)
        return f"{self.backend}:{self.device}:{self.precision}" + (f"[{s}]" if s else "")

    def __str__(self) -> str:
        return self.key

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
            "settings": dict(self.settings),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Candidate:
        settings = d.get("settings") or {}
        if not isinstance(settings, dict) or not all(
            isinstance(v, (str, int, float, bool, type(None))) for v in settings.values()
        ):
            raise ValueError(f"candidate settings must be a mapping of JSON scalars: {settings!r}")
        return cls(
            str(d["backend"]),
            str(d["device"]),
            str(d["precision"]),
            tuple(sorted((str(k), v) for k, v in settings.items())),
        )


@dataclass(frozen=True)
class Unsupported:
    """A combination a backend knows it cannot run for this model, and why."""

    backend: str
    device: str
    precision: str
    reason: str

    @property
    def key(self) -> str:
        return f"{self.backend}:{self.device}:{self.precision}"


@dataclass(frozen=True)
class Availability:
    """Whether a runtime is usable here; never an exception."""

    backend: str
    installed: bool
    usable: bool
    version: str | None = None
    devices: tuple[str, ...] = ()
    reason: str = ""
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "installed": self.installed,
            "usable": self.usable,
            "version": self.version,
            "devices": list(self.devices),
            "reason": self.reason,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class Problem:
    """Something `autoinfer doctor` should tell a person, with the fix."""

    severity: str  # "error" | "warning" | "info"
    message: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, as data the policy reads.

    reference:       its CPU fp32 candidate is the accuracy reference.
    dynamic_shapes:  runs inputs with dynamic dimensions without rebuilding per shape.
    needs_conversion: loads through a converted artifact (slow first load).
    opaque_io:       takes and returns non-tensor values (sequences, optionals, maps).
    """

    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    dynamic_shapes: bool
    needs_conversion: bool = False
    reference: bool = False
    opaque_io: bool = False


@dataclass(frozen=True)
class Estimate:
    """Relative cost of a candidate before measuring: lower is better.

    1.0 is ONNX Runtime on CPU at default settings for the same objective.
    """

    cost: float
    reasons: tuple[str, ...] = ()


@dataclass
class Hints:
    """A runtime's own session arguments, read by its backend as hints for autoinfer's
    choice (:meth:`Backend.claim_app_options`).

    backend:        the backend that claimed the arguments.
    session_kwargs: keyword arguments for ``autoinfer.Session``.
    devices:        device kinds the application asked for ("cpu", "cuda:0", "gpu"...),
                    in its order of preference; empty: no preference.
    pinned:         the session stays on ``backend`` with the application's arguments
                    (``session_kwargs`` are then those arguments).
    stay_kwargs:    the ``Session`` keyword arguments that keep a session on ``backend``
                    with the application's arguments: the way out when autoinfer's choice
                    finds no runtime it can check.
    notes:          one line per argument that was read, and what it became.
    """

    backend: str = ""
    session_kwargs: dict[str, Any] = field(default_factory=dict)
    devices: tuple[str, ...] = ()
    pinned: bool = False
    stay_kwargs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class LoadContext:
    """What ``load()`` needs besides the candidate and the model.

    artifact_dir: a directory private to this (backend, model, candidate) where
        converted models, engines and compile caches go. Never the user's
        model directory.
    threads:     the CPU threads a runtime may use (the CPU quota the probes found).
    threads_asked: the application named ``threads`` itself (not the probes' quota).
    input_shapes: concrete shapes for inputs with dynamic dimensions, for
        backends that must fix them at load time (None: use declared shapes).
    objective:   one of OBJECTIVES.
    timeout_s:   bound for conversions and builds in subprocesses.
    app_options: the arguments of a runtime's own session API that the application
        passed, handed through to the backend that claimed them (for example ONNX
        Runtime's ``sess_options`` and ``providers``, see :meth:`Backend.claim_app_options`).
    """

    artifact_dir: Path
    threads: int = 1
    input_shapes: dict[str, tuple[int, ...]] | None = None
    objective: str = "latency"
    timeout_s: float = 300.0
    hardware: Hardware | None = None
    app_options: dict[str, Any] = field(default_factory=dict)
    threads_asked: bool = False


class Runner(ABC):
    """A loaded model. ``run`` may be called from several threads at once."""

    candidate: Candidate
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    # The runtime's own call, ``direct_run(output_names, feed, None)`` with every output name
    # spelled out, for a runtime that checks its feed itself: the session calls it first and
    # takes the checked path (its own validation, then ``run``) only when it raises. None:
    # no such call.
    direct_run: Callable[[list[str], Mapping[str, Any], None], list[np.ndarray]] | None = None
    # The call an application makes on the runtime without autoinfer, ``plain_run(feed)``,
    # for the reference's runtime (ONNX Runtime's ``InferenceSession.run``): the race times it
    # beside the session's own call, so the decision tells the gain over plain use as well
    # as over the reference (a small model's call path is a fifth of its time). None: none.
    plain_run: Callable[[Mapping[str, Any]], Any] | None = None

    @abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in the model's declared order, declared dtypes and shapes.

        ``feeds`` holds every input, by name, as a C-contiguous array of its declared dtype
        and rank with its fixed dimensions (the Session checked it); ``run`` does not check
        it again."""

    def close(self) -> None:  # noqa: B027 - optional: a runner with nothing to free keeps it
        """Free the runtime's resources; further ``run`` calls are errors."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def call_direct(
    direct: Callable[..., list[np.ndarray]], names: Sequence[str], feed: Mapping[str, Any]
) -> list[np.ndarray] | None:
    """The session's fast path: ``feed`` straight to a runner's ``direct_run``; None where a
    value is not a NumPy array in native byte order (a runtime's own check misreads foreign
    byte order), which the session's checked path then takes."""
    for v in feed.values():
        if type(v) is not np.ndarray or not v.dtype.isnative:
            return None
    return direct(names, feed, None)


def session_call(runner: Runner) -> Callable[[Mapping[str, Any]], Any]:
    """``runner`` called as a session calls it: through :func:`call_direct` where it has a
    direct call, else ``run``. The race times this, the call the session will make."""
    direct = getattr(runner, "direct_run", None)
    if direct is None:
        return runner.run
    names, run = list(runner.output_names), runner.run

    def call(feed: Mapping[str, Any]) -> Any:
        out = call_direct(direct, names, feed)
        return run(feed) if out is None else out

    return call


class Backend(ABC):
    """One inference runtime behind autoinfer's interface."""

    name: ClassVar[str]  # registry name = the runtime's package name
    package: ClassVar[str]  # the pip distribution that provides it
    # autoinfer's pip extra that installs it (None: a core dependency); the doctor's fix.
    pip_extra: ClassVar[str | None] = None
    capabilities: ClassVar[Capabilities]
    # Environment variables the runtime reads as its CPU thread count (the doctor
    # warns when one asks for more threads than the process may use).
    thread_env_vars: ClassVar[tuple[str, ...]] = ()
    # Custom operator domains the runtime implements beyond ONNX's own.
    domains: ClassVar[tuple[str, ...]] = ()

    def child_env(self) -> dict[str, str]:
        """Environment variables every process autoinfer starts must carry for this runtime.

        For telemetry opt-outs and the like: the measuring worker, converters and
        self-check children get the merge of every backend's (see
        :func:`autoinfer.backends.child_environment`). Never imports the runtime.
        """
        return {}

    def claim_app_options(
        self,
        sess_options: Any = None,
        providers: Sequence[Any] | None = None,
        provider_options: Sequence[Mapping[Any, Any]] | None = None,
        **kwargs: Any,
    ) -> Hints | None:
        """The arguments of this runtime's own session class, read as hints, or None (the
        default) when they are not this runtime's.

        ``autoinfer.patch()`` stands in for an application's session class and asks the
        registry (:func:`autoinfer.backends.claim_app_options`) what its arguments mean.
        Never imports the runtime.
        """
        return None

    def keeps_artifacts(self, candidate: Candidate) -> bool:
        """Does loading ``candidate`` write or reuse files in ``LoadContext.artifact_dir``
        (a compiled engine, a conversion, a compile cache)? The default says yes. A runtime
        that answers no for a candidate may be given a private directory, so that a cold
        start loads it before the model's files are hashed (the cache is keyed by that hash)."""
        return True

    @abstractmethod
    def availability(self, hw: Hardware) -> Availability:
        """Installed? Which devices really work here? Never raises."""

    def versions(self) -> dict[str, str]:
        """Versions of the packages a decision made with this backend depends on."""
        from importlib import metadata

        try:
            return {self.package: metadata.version(self.package)}
        except metadata.PackageNotFoundError:
            return {}

    @abstractmethod
    def candidates(self, model: ModelFacts, hw: Hardware, objective: str) -> list[Candidate | Unsupported]:
        """Combinations worth trying for this model here, or why not."""

    def variants(
        self, candidate: Candidate, model: ModelFacts, hw: Hardware, objective: str
    ) -> list[Candidate]:
        """Tuned settings of ``candidate`` worth measuring, most promising first."""
        return []

    @abstractmethod
    def estimate(self, candidate: Candidate, model: ModelFacts, hw: Hardware, objective: str) -> Estimate:
        """Relative cost without running anything (1.0 = ONNX Runtime CPU defaults)."""

    @abstractmethod
    def load(self, candidate: Candidate, model: ModelFacts, ctx: LoadContext) -> Runner:
        """Load ``model`` as ``candidate`` and return a runner."""

    def expected_load_s(
        self, candidate: Candidate, model: ModelFacts, ctx: LoadContext, reference_load_s: float
    ) -> float:
        """Seconds ``load(candidate, model, ctx)`` is expected to take, given that the
        reference loaded the same model in ``reference_load_s``: the selection's time budget
        skips what cannot fit. A conversion, compilation or engine build that is not yet in
        ``ctx.artifact_dir`` counts. A rough figure is enough; never raises, never imports
        the runtime. The default: as long as the reference."""
        return reference_load_s

    def diagnose(self, hw: Hardware) -> list[Problem]:
        """Problems a person can fix, for `autoinfer doctor`."""
        av = self.availability(hw)
        if not av.installed:
            return [Problem("info", f"{self.name} is not installed", av.fix)]
        if not av.usable:
            return [Problem("error", f"{self.name} {av.version or ''} cannot run here: {av.reason}", av.fix)]
        return []


def resolve_shapes(
    model: ModelFacts, input_shapes: Mapping[str, Sequence[int]] | None
) -> dict[str, tuple[int, ...]]:
    """Concrete shape of every input: declared where fixed, from ``input_shapes`` otherwise.

    Raises UnsupportedModel-free ValueError when a dynamic dimension has no value;
    backends turn it into UnsupportedModel with their own name.
    """
    out: dict[str, tuple[int, ...]] = {}
    given = dict(input_shapes or {})
    for spec in model.inputs:
        if spec.name in given:
            out[spec.name] = tuple(int(d) for d in given[spec.name])
        elif spec.shape is not None and not spec.is_dynamic:
            out[spec.name] = tuple(int(d) for d in spec.shape)  # type: ignore[arg-type]
        else:
            raise ValueError(
                f"input {spec.name!r} has dynamic shape {spec.shape} and no concrete shape was given"
            )
    return out
