"""autoinfer's own exception types.

Every error a user can meet derives from :class:`AutoinferError`, so one
``except autoinfer.AutoinferError`` catches them all; the runtimes' own
exceptions are translated into these at the backend boundary.
"""

from __future__ import annotations


class AutoinferError(Exception):
    """Base class of every exception autoinfer raises."""


class ConfigError(AutoinferError, ValueError):
    """An argument or environment setting has a value autoinfer cannot use."""


class ModelError(AutoinferError, ValueError):
    """The model file is missing, unreadable, or not a model autoinfer can run."""


class InputError(AutoinferError, ValueError):
    """A feed given to ``run()`` does not match what the model expects."""


class BackendUnavailable(AutoinferError):
    """A runtime is not installed or cannot be used on this machine.

    ``fix`` says how to make it usable (for example which extra to install).
    """

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message + (f" (fix: {fix})" if fix else ""))
        self.fix = fix


class UnsupportedModel(AutoinferError):
    """A runtime cannot run this model here; ``reason`` says why."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"{backend}: unsupported, because {reason}")
        self.backend = backend
        self.reason = reason


class BackendError(AutoinferError, RuntimeError):
    """A runtime failed while loading or running the model."""

    def __init__(self, backend: str, message: str) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend


class NoCandidateError(AutoinferError):
    """No runtime on this machine could run the model correctly.

    ``reasons`` maps each candidate tried to why it was rejected.
    """

    def __init__(self, message: str, reasons: dict[str, str] | None = None) -> None:
        self.reasons = dict(reasons or {})
        lines = [message] + [f"  - {k}: {v}" for k, v in self.reasons.items()]
        super().__init__("\n".join(lines))


class CacheError(AutoinferError):
    """The cache directory cannot be used (permissions, full disk, damage)."""


class UnsupportedOnRuntime(AutoinferError, NotImplementedError):
    """An ``onnxruntime.InferenceSession`` method that only one runtime has, called while
    the session runs on another.

    ``method`` is the name called, ``runtime`` where the session runs now, ``backend``
    the backend whose runtime has the method (the way out names it).
    """

    def __init__(self, method: str, runtime: str, backend: str) -> None:
        super().__init__(
            f"{method}() needs {backend}, and this session runs on {runtime}. To keep a "
            f"session on {backend}, create it with backends=[{backend!r}]"
        )
        self.method = method
        self.runtime = runtime
        self.backend = backend
