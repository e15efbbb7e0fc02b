"""Shared fixtures: this machine's hardware, and the backends usable on it.

The pytest header lists every registered backend and why it is or is not
usable here, so a test that is not generated for a backend says why.
"""

from __future__ import annotations

import functools
import os
from types import SimpleNamespace
from typing import Any

import pytest


@functools.lru_cache(maxsize=1)
def hardware() -> Any:
    """``probes.detect()``; a minimal stand-in with the same names if probes cannot run."""
    try:
        import probes

        return probes.detect()
    except Exception as exc:  # probes missing or broken: the backends still need facts
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        cpu = SimpleNamespace(
            vendor="unknown",
            flags=(),
            usable_cores=n or 1,
            logical_cores=n or 1,
            physical_cores=n or 1,
            has=lambda flag: False,
        )
        return SimpleNamespace(
            cpu=cpu,
            nvidia_gpus=(),
            accelerators=(),
            fingerprint="stand-in",
            summary=f"stand-in hardware ({exc})",
        )


@functools.lru_cache(maxsize=1)
def backend_report() -> dict[str, tuple[bool, str]]:
    """name -> (usable here, version and devices or the reason it is not)."""
    from autoinfer import backends

    out: dict[str, tuple[bool, str]] = {}
    for name in backends.names():
        try:
            av = backends.get(name).availability(hardware())
        except Exception as exc:  # a backend module that has not landed, or is broken
            out[name] = (False, f"cannot load the backend module: {type(exc).__name__}: {exc}")
            continue
        if av.usable:
            out[name] = (True, f"{av.version} on {', '.join(av.devices)}")
        else:
            out[name] = (False, f"{av.reason}" + (f" (fix: {av.fix})" if av.fix else ""))
    return out


def usable_backends() -> list[str]:
    """Registered backends usable on this machine, in registry order."""
    return [name for name, (ok, _) in backend_report().items() if ok]


def pytest_report_header(config: Any) -> list[str]:
    lines = []
    for name, (ok, detail) in backend_report().items():
        lines.append(f"  {name}: {'usable, ' if ok else 'not usable, no tests generated for it: '}{detail}")
    return ["autoinfer backends on " + str(getattr(hardware(), "summary", "this machine")) + ":", *lines]


@pytest.fixture(scope="session")
def hw() -> Any:
    return hardware()


def fp32_candidates(
    backend: Any, facts: Any, hw: Any, objective: str = "latency"
) -> tuple[list[Any], list[str]]:
    """A backend's first fp32 candidate per device, and the reasons of its fp32 Unsupported."""
    from autoinfer.backends import Unsupported

    found: dict[str, Any] = {}
    reasons = []
    for c in backend.candidates(facts, hw, objective):
        if isinstance(c, Unsupported):
            if c.precision == "fp32":
                reasons.append(f"{c.device}: {c.reason}")
        elif c.precision == "fp32" and c.device not in found:
            found[c.device] = c
    return list(found.values()), reasons


# -- small models every backend test can use ------------------------------------


def small_conv_model(path: Any, activation: str = "Relu", seed: int = 11) -> Any:
    """Conv 3->4 3x3 (padded) then ``activation`` on "input" [1, 3, 8, 8] -> "output"
    [1, 4, 8, 8]: a model every runtime here runs, saved at ``path`` (returned)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3, "w")
    g = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node(activation, ["c"], ["output"]),
        ],
        "conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def multi_io_model() -> Any:
    """Two inputs and three outputs of three dtypes, names deliberately not sorted.

    inputs:  "x" float32 [N, 4], "ids" int64 [N]
    outputs: "sum" float32 [N] = x summed over axis 1 (+ 0.5),
             "next_ids" int64 [N] = ids + 1,
             "positive" bool [N, 4] = x > 0
    """
    from onnx import TensorProto as T
    from onnx import helper

    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["s0"], keepdims=0),
        helper.make_node("Add", ["s0", "half"], ["sum"]),
        helper.make_node("Add", ["ids", "one"], ["next_ids"]),
        helper.make_node("Greater", ["x", "zero"], ["positive"]),
    ]
    inits = [
        helper.make_tensor("axes", T.INT64, [1], [1]),
        helper.make_tensor("half", T.FLOAT, [], [0.5]),
        helper.make_tensor("one", T.INT64, [], [1]),
        helper.make_tensor("zero", T.FLOAT, [], [0.0]),
    ]
    graph = helper.make_graph(
        nodes,
        "multi_io",
        [
            helper.make_tensor_value_info("x", T.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("ids", T.INT64, ["N"]),
        ],
        [
            helper.make_tensor_value_info("sum", T.FLOAT, ["N"]),
            helper.make_tensor_value_info("next_ids", T.INT64, ["N"]),
            helper.make_tensor_value_info("positive", T.BOOL, ["N", 4]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="session")
def model_paths(tmp_path_factory: Any) -> dict[str, Any]:
    """ONNX files: "multi_io" (above), and zoo models "tiny", "dynamic_batch", "mobilenetv2"."""
    import onnx
    import zoo

    d = tmp_path_factory.mktemp("models")
    paths = {"multi_io": d / "multi_io.onnx"}
    onnx.save(multi_io_model(), str(paths["multi_io"]))
    for name in ("tiny", "dynamic_batch", "mobilenetv2"):
        paths[name] = zoo.save(name, d / f"{name}.onnx")
    return paths
