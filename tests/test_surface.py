"""Every public name of ``onnxruntime.InferenceSession`` on ``autoinfer.Session``.

On ONNX Runtime each name must give what the live ``InferenceSession`` gives
(same value, or the same exception type). On OpenVINO each name is either
provided (checked per name) or raises ``UnsupportedOnRuntime`` naming the
runtime and the way out. The list of names comes from the installed ONNX
Runtime: a name a future release adds fails ``test_every_public_name_is_covered``
until it is given a behaviour here and in autoinfer/backends/onnxruntime_api.py.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import zoo

import autoinfer
from autoinfer.backends.onnxruntime_api import ORT_ONLY, PENDING
from autoinfer.errors import UnsupportedOnRuntime

PUBLIC = sorted(n for n in dir(ort.InferenceSession) if not n.startswith("_"))
X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)


def no_selection() -> dict[str, Any]:
    """Open without measuring: ``selection="off"`` where the session has it."""
    params = inspect.signature(autoinfer.Session.__init__).parameters
    return {"selection": "off"} if "selection" in params else {"benchmark": False}


def norm(x: Any) -> Any:
    """A comparable form of what an InferenceSession method returns."""
    if isinstance(x, (list, tuple)):
        return [norm(i) for i in x]
    if isinstance(x, dict):
        return {k: norm(v) for k, v in x.items()}
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    if isinstance(x, np.ndarray):
        return ("array", x.dtype.str, x.shape, x.tolist())
    if hasattr(x, "numpy") and callable(x.numpy):  # OrtValue
        return norm(x.numpy())
    if all(hasattr(x, a) for a in ("name", "shape", "type")):  # NodeArg
        return ("NodeArg", x.name, list(x.shape) if x.shape is not None else None, x.type)
    if hasattr(x, "custom_metadata_map"):  # ModelMetadata
        return (
            "meta",
            x.producer_name,
            x.graph_name,
            x.domain,
            x.description,
            x.version,
            dict(x.custom_metadata_map),
        )
    if hasattr(x, "intra_op_num_threads"):  # SessionOptions
        return (
            "options",
            x.intra_op_num_threads,
            x.inter_op_num_threads,
            str(x.graph_optimization_level),
            x.enable_profiling,
        )
    return ("object", type(x).__name__)  # pybind objects (memory infos, EP devices, bindings)


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", norm(fn())
    except Exception as exc:  # noqa: BLE001 - the exception type is the result
        return "raise", type(exc).__name__


def _run_async(s: Any) -> Any:
    done = threading.Event()
    got: dict[str, Any] = {}

    def callback(outputs: Any, user_data: Any, err: str) -> None:
        got.update(outputs=outputs, user_data=user_data, err=err)
        done.set()

    s.run_async(None, {"input": X}, callback, "mine")
    assert done.wait(30), "run_async never called its callback"
    return [got["outputs"], got["user_data"], got["err"]]


def _iobinding(s: Any) -> Any:
    b = s.io_binding()
    b.bind_cpu_input("input", X)
    b.bind_output("output")
    s.run_with_iobinding(b)
    return b.copy_outputs_to_cpu()


def _ortvaluevector(s: Any) -> Any:
    # malformed on purpose: both must refuse it the same way
    return s.run_with_ortvaluevector(None, ["input"], [], ["output"], [], [])


# name -> how to call it on a session (an autoinfer Session or an InferenceSession)
CALLS: dict[str, Callable[[Any], Any]] = {
    "create_ortvalue_from_shape_and_type": lambda s: s.create_ortvalue_from_shape_and_type(
        [1, 16], np.float32, "cpu", 0
    ).shape(),
    "disable_fallback": lambda s: s.disable_fallback(),
    "enable_fallback": lambda s: s.enable_fallback(),
    "end_profiling": lambda s: s.end_profiling(),
    "get_input_epdevices": lambda s: s.get_input_epdevices(),
    "get_input_memory_infos": lambda s: s.get_input_memory_infos(),
    "get_output_memory_infos": lambda s: s.get_output_memory_infos(),
    "get_inputs": lambda s: s.get_inputs(),
    "get_outputs": lambda s: s.get_outputs(),
    "get_modelmeta": lambda s: s.get_modelmeta(),
    "get_overridable_initializers": lambda s: s.get_overridable_initializers(),
    "get_profiling_start_time_ns": lambda s: type(s.get_profiling_start_time_ns()).__name__,
    "get_provider_graph_assignment_info": lambda s: s.get_provider_graph_assignment_info(),
    "get_provider_options": lambda s: s.get_provider_options(),
    "get_providers": lambda s: s.get_providers(),
    "get_session_options": lambda s: s.get_session_options(),
    "get_tuning_results": lambda s: s.get_tuning_results(),
    "io_binding": lambda s: s.io_binding(),
    "release_captured_graph": lambda s: s.release_captured_graph(),
    "run": lambda s: s.run(None, {"input": X}),
    "run_async": _run_async,
    "run_with_iobinding": _iobinding,
    "run_with_ort_values": lambda s: s.run_with_ort_values(
        ["output"], {"input": ort.OrtValue.ortvalue_from_numpy(X)}
    ),
    "run_with_ortvaluevector": _ortvaluevector,
    "set_ep_dynamic_options": lambda s: s.set_ep_dynamic_options({"no.such.option": "1"}),
    "set_providers": lambda s: (s.set_providers(["CPUExecutionProvider"]), s.get_providers()),
    "set_tuning_results": lambda s: s.set_tuning_results([]),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zoo.save("tiny", tmp_path_factory.mktemp("surface") / "tiny.onnx")


def test_every_public_name_is_covered() -> None:
    missing = [n for n in PUBLIC if not hasattr(autoinfer.Session, n)]
    assert not missing, f"autoinfer.Session lacks InferenceSession's {missing}"
    untested = [n for n in PUBLIC if n not in CALLS]
    assert not untested, (
        f"this ONNX Runtime ({ort.__version__}) has public names with no "
        f"behaviour decided in autoinfer/backends/onnxruntime_api.py and here: {untested}"
    )


@pytest.mark.parametrize("name", PUBLIC)
def test_on_onnxruntime_each_name_is_the_live_sessions(name: str, model: Path, tmp_path: Path) -> None:
    if name not in CALLS:
        pytest.fail(f"no behaviour decided for InferenceSession.{name}")
    ours = autoinfer.Session(model, backends=["onnxruntime"], cache_dir=tmp_path, **no_selection())
    live = ours._current_runner().session
    assert isinstance(live, ort.InferenceSession)
    # the live session's answer first (some calls change state, e.g. set_providers)
    expected = outcome(lambda: CALLS[name](live))
    got = outcome(lambda: CALLS[name](ours))
    assert got == expected, f"{name}: autoinfer gives {got}, the live InferenceSession {expected}"
    ours.close()


def test_on_onnxruntime_answers_equal_a_plain_inference_session(model: Path, tmp_path: Path) -> None:
    ours = autoinfer.Session(model, backends=["onnxruntime"], cache_dir=tmp_path, **no_selection())
    plain = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for name in (
        "get_inputs",
        "get_outputs",
        "get_modelmeta",
        "get_providers",
        "get_provider_options",
        "get_overridable_initializers",
        "run",
        "run_with_ort_values",
        "end_profiling",
        "get_tuning_results",
    ):
        assert outcome(lambda: CALLS[name](ours)) == outcome(lambda: CALLS[name](plain)), name  # noqa: B023


@pytest.fixture(scope="module")
def on_openvino(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip(
        "openvino", reason='the other-runtime half needs OpenVINO: pip install "autoinfer[openvino]"'
    )
    s = autoinfer.Session(
        model, backends=["openvino"], cache_dir=tmp_path_factory.mktemp("c"), threads=1, **no_selection()
    )
    assert s.choice.backend == "openvino"
    yield s
    s.close()


# What the names provided off ONNX Runtime must answer on OpenVINO.
PROVIDED: dict[str, Callable[[Any], None]] = {
    "get_providers": lambda r: r == ["openvino(CPU)"],
    "get_provider_options": lambda r: list(r) == ["openvino(CPU)"],
    "get_session_options": lambda r: r[1] == 1,
    "get_inputs": lambda r: r == [("NodeArg", "input", [1, 16], "tensor(float)")],
    "get_outputs": lambda r: r[0][1] == "output",
    "get_modelmeta": lambda r: r[0] == "meta",
    "get_overridable_initializers": lambda r: r == [],
    "end_profiling": lambda r: r == "",
    "enable_fallback": lambda r: r is None,
    "disable_fallback": lambda r: r is None,
    "run": lambda r: len(r) == 1 and r[0][2] == (1, 16),
}


@pytest.mark.parametrize("name", PUBLIC)
def test_on_openvino_each_name_is_provided_or_a_clear_error(name: str, on_openvino: Any) -> None:
    if name == "run_async":
        outputs, user_data, err = _run_async(on_openvino)
        assert err == "" and user_data == "mine"
        np.testing.assert_allclose(outputs[0], on_openvino.run(None, {"input": X})[0])
        return
    if name in PROVIDED:
        kind, value = outcome(lambda: CALLS[name](on_openvino))
        assert kind == "ok", f"{name} raised {value} on OpenVINO"
        assert PROVIDED[name](value), f"{name} on OpenVINO answered {value!r}"
        return
    assert name in ORT_ONLY, f"{name}: neither provided off ONNX Runtime nor ONNX Runtime only"
    with pytest.raises(UnsupportedOnRuntime) as ei:
        CALLS[name](on_openvino)
    msg = str(ei.value)
    assert "openvino(CPU)" in msg and "backends=['onnxruntime']" in msg, msg
    first = "io_binding" if name == "run_with_iobinding" else name  # its binding comes first
    assert isinstance(ei.value, NotImplementedError) and ei.value.method == first
    assert ei.value.backend == "onnxruntime" and ei.value.runtime == "openvino(CPU)"


def test_run_async_reports_an_error_as_onnxruntime_does(on_openvino: Any) -> None:
    done = threading.Event()
    got: list[Any] = []
    on_openvino.run_async(None, {"input": X[:, :3]}, lambda o, u, e: (got.extend([o, u, e]), done.set()), 7)
    assert done.wait(30)
    assert got[0] is None and got[1] == 7 and "input" in got[2]


def test_disable_fallback_switches_autoinfers_fallback(on_openvino: Any) -> None:
    on_openvino.disable_fallback()
    assert on_openvino._fallback is False
    on_openvino.enable_fallback()
    assert on_openvino._fallback is True


def test_get_providers_answers_right_after_construction_of_a_dynamic_model(tmp_path: Path) -> None:
    """Applications read ``get_providers()[0]`` before their first run."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    m = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    m.ir_version = 8
    p = tmp_path / "dyn.onnx"
    p.write_bytes(m.SerializeToString())
    s = autoinfer.Session(p, cache_dir=tmp_path / "c", **no_selection())
    providers = s.get_providers()
    assert providers and isinstance(providers[0], str)
    s.run(None, {"x": np.ones((3, 4), np.float32)})
    assert s.get_providers()[0] != PENDING
