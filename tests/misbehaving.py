"""Backends that misbehave on purpose, for the selector's and the session's tests.

They compute with ONNX Runtime (so they are real runtimes underneath) and then
break the contract in one way each: wrong outputs, a crash of the process, a
hang, a memory leak, or failures at run() time. Each claims to be the fastest
(estimate 0.1) so the selector must measure and reject it, not trust it.
``Sound`` and ``SlowToLoad`` behave, for the time budget's tests. They are registered
by name in the tests; the measuring subprocess imports this module through the
parent's sys.path.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from autoinfer import backends as registry
from autoinfer.backends.base import (
    Availability,
    Backend,
    Candidate,
    Capabilities,
    Estimate,
    LoadContext,
    Runner,
)
from autoinfer.errors import BackendError


class _OrtRunner(Runner):
    def __init__(self, cand: Candidate, path: str, on_run: Any = None) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.candidate = cand
        self.input_names = tuple(i.name for i in self.sess.get_inputs())
        self.output_names = tuple(o.name for o in self.sess.get_outputs())
        self.on_run = on_run
        self.calls = 0
        self._lock = threading.Lock()

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            self.calls += 1
            n = self.calls
        outs = self.sess.run(None, dict(feeds))
        return self.on_run(outs, n) if self.on_run else outs


class _Misbehaving(Backend):
    package = "onnxruntime"
    extra = None
    capabilities = Capabilities(devices=("cpu",), precisions=("fp32",), dynamic_shapes=True)
    name = "misbehaving"

    def availability(self, hw: Any) -> Availability:
        return Availability(self.name, True, True, "0", ("cpu",))

    def versions(self) -> dict[str, str]:
        return {self.name: "0"}

    def candidates(self, model: Any, hw: Any, objective: str) -> list[Any]:
        return [Candidate(self.name, "cpu", "fp32")]

    def estimate(self, candidate: Candidate, model: Any, hw: Any, objective: str) -> Estimate:
        return Estimate(0.1, ("claims to be the fastest",))

    def load(self, candidate: Candidate, model: Any, ctx: LoadContext) -> Runner:
        return _OrtRunner(candidate, str(model.path), self.on_run)

    on_run = None


class WrongOutputs(_Misbehaving):
    name = "wrong_outputs"

    @staticmethod
    def on_run(outs: list[np.ndarray], n: int) -> list[np.ndarray]:
        return [o + np.asarray(0.5, dtype=o.dtype) if o.dtype.kind == "f" else o for o in outs]


class Crashes(_Misbehaving):
    name = "crashes"

    def load(self, candidate: Candidate, model: Any, ctx: LoadContext) -> Runner:
        ctypes.string_at(0)  # a segmentation fault, as a broken native runtime would give
        raise AssertionError("unreachable")


class Hangs(_Misbehaving):
    name = "hangs"

    def load(self, candidate: Candidate, model: Any, ctx: LoadContext) -> Runner:
        time.sleep(3600)
        raise AssertionError("unreachable")


class Leaks(_Misbehaving):
    name = "leaks"

    def load(self, candidate: Candidate, model: Any, ctx: LoadContext) -> Runner:
        hoard = []
        while True:  # grows until the selector kills it
            hoard.append(np.ones(32 * 2**20, dtype=np.uint8))
            time.sleep(0.01)


def measuring() -> bool:
    """True inside autoinfer's measuring subprocess."""
    main = sys.modules.get("__main__")
    return getattr(getattr(main, "__spec__", None), "name", "") == "autoinfer._worker"


class FailsInProcess(_Misbehaving):
    """Measures fine (in the measuring subprocess) but fails at run() inside the
    application, as a driver error or an out-of-memory would."""

    name = "fails_in_process"

    @staticmethod
    def on_run(outs: list[np.ndarray], n: int) -> list[np.ndarray]:
        if not measuring() and n > 2:
            raise BackendError("fails_in_process", "device lost (injected)")
        return outs


class FailsToLoad(_Misbehaving):
    name = "fails_to_load"

    def load(self, candidate: Candidate, model: Any, ctx: LoadContext) -> Runner:
        if not measuring():
            raise BackendError("fails_to_load", "out of device memory (injected)")
        return super().load(candidate, model, ctx)


ALL = (WrongOutputs, Crashes, Hangs, Leaks, FailsInProcess, FailsToLoad)


class Sound(_Misbehaving):
    """Behaves: ONNX Runtime's outputs, a quick load. A challenger the budget can afford."""

    name = "sound"


class SlowToLoad(_Misbehaving):
    """Correct, but its load takes ``LOAD_S`` (as a conversion would), and it says so."""

    name = "slow_to_load"
    LOAD_S = 4.0

    def estimate(self, candidate: Candidate, model: Any, hw: Any, objective: str) -> Estimate:
        return Estimate(0.2, ("claims to be fast, after a slow load",))

    def expected_load_s(
        self, candidate: Candidate, model: Any, ctx: LoadContext, reference_load_s: float
    ) -> float:
        return self.LOAD_S

    def load(self, candidate: Candidate, model: Any, ctx: LoadContext) -> Runner:
        time.sleep(self.LOAD_S)
        return super().load(candidate, model, ctx)


BUDGET = (Sound, SlowToLoad)


@contextlib.contextmanager
def registered(classes: tuple[type[Backend], ...]) -> Iterator[None]:
    """These fake backends in the registry (under their names) for the ``with`` block."""
    for cls in classes:
        registry.register(cls.name, f"misbehaving:{cls.__name__}")
    try:
        yield
    finally:
        for cls in classes:
            registry.unregister(cls.name)
