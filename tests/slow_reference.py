"""A reference backend that is ONNX Runtime plus 3 ms per call, for the background
selection's tests: with it as the reference, the real ONNX Runtime wins the race with
certainty, so a switch is certain. The measuring subprocess imports this module
through the parent's sys.path."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from autoinfer.backends.base import (
    Availability,
    Backend,
    Candidate,
    Capabilities,
    Estimate,
    LoadContext,
    Runner,
)

DELAY_S = 0.003


class _SlowRunner(Runner):
    def __init__(self, cand: Candidate, path: str) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.candidate = cand
        self.input_names = tuple(i.name for i in self.sess.get_inputs())
        self.output_names = tuple(o.name for o in self.sess.get_outputs())
        self.closed = False

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if self.closed:
            raise RuntimeError("run() on a closed runner")
        time.sleep(DELAY_S)
        return self.sess.run(None, dict(feeds))

    def close(self) -> None:
        self.closed = True


class SlowReference(Backend):
    name = "slow_reference"
    package = "onnxruntime"
    extra = None
    capabilities = Capabilities(devices=("cpu",), precisions=("fp32",), dynamic_shapes=True, reference=True)
    runners: list[_SlowRunner] = []

    def availability(self, hw: Any) -> Availability:
        return Availability(self.name, True, True, "0", ("cpu",))

    def versions(self) -> dict[str, str]:
        return {self.name: "0"}

    def candidates(self, model: Any, hw: Any, objective: str) -> list[Any]:
        return [Candidate(self.name, "cpu", "fp32")]

    def estimate(self, candidate: Candidate, model: Any, hw: Any, objective: str) -> Estimate:
        return Estimate(1.0, ("ONNX Runtime with a 3 ms delay",))

    def load(self, candidate: Candidate, model: Any, ctx: LoadContext) -> Runner:
        r = _SlowRunner(candidate, str(model.path))
        self.runners.append(r)
        return r
