"""Bad and unusual feeds, side by side with ``onnxruntime.InferenceSession`` on the same
model, on every backend usable here, each explicitly.

Each feed is either handled with ONNX Runtime's result or rejected with
``autoinfer.InputError`` saying what was expected and what was given. The check
is the Session's own: the message is the same whichever runtime runs the model,
and a spy runtime shows that a rejected feed never reaches a runtime while an
accepted one arrives as a C-contiguous array of the declared dtype.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import usable_backends
from onnx import TensorProto, helper, numpy_helper

import autoinfer
from autoinfer import backends as registry
from autoinfer.backends.base import Availability, Backend, Candidate, Capabilities, Estimate, Runner
from autoinfer.errors import AutoinferError, InputError, NoCandidateError

# The model with int64 outputs runs on the backends that accept it; one that refuses it
# (ncnn: its graphs produce float32 tensors only) is skipped with its own reason.
ALL_BACKENDS = INT_BACKENDS = usable_backends()

# Known limits, each with its reason: the backends that refuse a feed of batch 0 (with an
# AutoinferError saying "empty") instead of returning empty outputs.
NO_EMPTY_TENSORS = {"ncnn": "ncnn has no empty tensors"}
# Backends that compute int64 in 32 bits inside the graph and wrap (a wrong result).
WRAPS_INT64_INSIDE_THE_GRAPH = {
    "openvino": "the OpenVINO backend checks that int64 inputs fit in int32, but not the "
    "computation: k + k with k = 2**30 wraps to -2**31 (a wrong result)"
}


def _is_onnxruntime_itself(backend: str) -> bool:
    """The reference backend is ONNX Runtime, the runtime these tests compare with: its
    numbers must be identical, not merely close."""
    return registry.get(backend).capabilities.reference


_rng = np.random.default_rng(0)
A = _rng.standard_normal((1, 3, 4, 5), dtype=np.float32)
B = _rng.standard_normal((1, 3, 4, 5), dtype=np.float32)
W = np.array([-2.0, 0.5, 3.0], np.float32).reshape(1, 3, 1, 1)


# -- models ---------------------------------------------------------------------------------
def _image_model() -> onnx.ModelProto:
    """a, b: float32 [1, 3, 4, 5] -> y = a * w + b"""
    shape = [1, 3, 4, 5]
    g = helper.make_graph(
        [helper.make_node("Mul", ["a", "w"], ["t"]), helper.make_node("Add", ["t", "b"], ["y"])],
        "image",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, shape),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(W, "w")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _dynamic_model() -> onnx.ModelProto:
    """x: float32 [N, 3, 4, 5] -> y = x * w"""
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"])],
        "dynamic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 5])],
        [numpy_helper.from_array(W, "w")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _int_model() -> onnx.ModelProto:
    """x: float32 [2, 3], k: int64 [2, 3] -> y = relu(x * w) float32, z = k + k int64"""
    g = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "w"], ["t"]),
            helper.make_node("Relu", ["t"], ["y"]),
            helper.make_node("Add", ["k", "k"], ["z"]),
        ],
        "ints",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("k", TensorProto.INT64, [2, 3]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("z", TensorProto.INT64, [2, 3]),
        ],
        [numpy_helper.from_array(np.array([[0.5, -1, 2], [3, 0.25, -4]], np.float32), "w")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


_MODELS = {"image": _image_model, "dynamic": _dynamic_model, "ints": _int_model}


@pytest.fixture(scope="module")
def paths(tmp_path_factory: Any) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("feed-models")
    out = {}
    for name, build in _MODELS.items():
        m = build()
        m.ir_version = 8
        out[name] = d / f"{name}.onnx"
        onnx.save(m, str(out[name]))
    return out


@pytest.fixture(scope="module")
def session(paths: dict[str, Path], tmp_path_factory: Any) -> Callable[[str, str], Any]:
    """session(model, backend): one autoinfer.Session per pair, made on first use."""
    cache = tmp_path_factory.mktemp("feed-cache")
    made: dict[tuple[str, str], Any] = {}

    def get(model: str, backend: str) -> Any:
        if (model, backend) not in made:
            try:
                made[(model, backend)] = autoinfer.Session(
                    paths[model], cache_dir=cache, benchmark=False, backends=[backend]
                )
            except NoCandidateError as exc:
                pytest.skip(f"{backend} does not run the {model!r} model: {exc}")
        return made[(model, backend)]

    return get


@pytest.fixture(scope="module")
def reference(paths: dict[str, Path]) -> Callable[[str], Any]:
    made: dict[str, Any] = {}

    def get(model: str) -> Any:
        if model not in made:
            made[model] = ort.InferenceSession(str(paths[model]), providers=["CPUExecutionProvider"])
        return made[model]

    return get


def _outcome(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    try:
        return fn(), None
    except Exception as exc:  # noqa: BLE001 - compared by the test
        return None, exc


def _assert_same(got: list[np.ndarray], want: list[np.ndarray], backend: str) -> None:
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, g.shape, w.dtype, w.shape)
        if _is_onnxruntime_itself(backend):
            np.testing.assert_array_equal(g, w)  # same runtime, same numbers
        else:
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)  # NaN where ORT has NaN


# -- feeds ----------------------------------------------------------------------------------
def _readonly(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x.flags.writeable = False
    return x


def _transposed_view(x: np.ndarray) -> np.ndarray:
    v = np.ascontiguousarray(x.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)
    assert not v.flags.c_contiguous and np.array_equal(v, x)
    return v


def _strided(x: np.ndarray) -> np.ndarray:
    big = np.zeros(x.shape[:2] + (x.shape[2] * 2, x.shape[3] * 3), x.dtype)
    big[:, :, ::2, ::3] = x
    v = big[:, :, ::2, ::3]
    assert not v.flags.c_contiguous and np.array_equal(v, x)
    return v


def _reversed(x: np.ndarray) -> np.ndarray:
    v = x[:, ::-1, ::-1, ::-1].copy()[:, ::-1, ::-1, ::-1]
    assert v.strides[1] < 0 and np.array_equal(v, x)
    return v


def _specials() -> np.ndarray:
    x = A.copy()
    x.flat[:8] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 3.0e38, -3.0e38, 1.0e-30]
    return x


# Handled like ONNX Runtime: the same outputs.
IMAGE_SAME: dict[str, Mapping[str, Any]] = {
    "C-contiguous arrays": {"a": A, "b": B},
    "Fortran-ordered array": {"a": np.asfortranarray(A), "b": B},
    "transposed view": {"a": _transposed_view(A), "b": B},
    "strided slice": {"a": _strided(A), "b": _strided(B)},
    "negative strides": {"a": _reversed(A), "b": B},
    "read-only arrays": {"a": _readonly(A), "b": _readonly(B)},
    "nested lists of floats": {"a": A.tolist(), "b": B},
    "nested lists of ints for a float input": {"a": np.rint(A * 4).astype(int).tolist(), "b": B},
    "NaN, Inf, -0.0 and extremes pass through": {"a": _specials(), "b": B},
}

# Rejected: InputError matching the pattern. ONNX Runtime fails on all of them too, except
# the big-endian array, which it reads as if it were little-endian (wrong numbers).
IMAGE_REJECT: dict[str, tuple[Any, str]] = {
    "missing input": (
        {"a": A},
        r"Model requires 2 input\(s\) \['a', 'b'\]\. Input Feed "
        r"contains 1; missing \['b'\]",
    ),
    "unknown input": ({"a": A, "b": B, "c": A}, r"Input Feed contains 3; unknown \['c'\]"),
    "misspelt input": ({"a": A, "B": B}, r"missing \['b'\]; unknown \['B'\]"),
    "empty feed": ({}, r"Input Feed contains 0; missing \['a', 'b'\]"),
    "float64 array": (
        {"a": A.astype(np.float64), "b": B},
        r"input 'a': expected dtype float32 \(tensor\(float\)\), received float64",
    ),
    "float16 array": ({"a": A.astype(np.float16), "b": B}, r"expected dtype float32.*float16"),
    "int64 array": ({"a": A.astype(np.int64), "b": B}, r"expected dtype float32.*int64"),
    "bool array": ({"a": A > 0, "b": B}, r"expected dtype float32.*received bool"),
    "object array": ({"a": A.astype(object), "b": B}, r"expected dtype float32.*received object"),
    "big-endian float32": ({"a": A.astype(">f4"), "b": B}, r"expected dtype float32.*>f4"),
    "rank 3": (
        {"a": A[0], "b": B},
        r"input 'a': expected rank 4 \(shape \(1, 3, 4, 5\)\), "
        r"received shape \(3, 4, 5\)",
    ),
    "rank 5": ({"a": A[None], "b": B}, r"expected rank 4.*received shape \(1, 1, 3, 4, 5\)"),
    "fixed dimension mismatch": (
        {"a": np.zeros((1, 3, 4, 6), np.float32), "b": B},
        r"input 'a': dimension 3 must be 5 \(shape \[1, 3, 4, 5\]\), "
        r"received shape \[1, 3, 4, 6\]",
    ),
    "batch 2 for a fixed batch of 1": ({"a": np.concatenate([A, A]), "b": B}, r"dimension 0 must be 1"),
    "Python float": ({"a": 1.0, "b": B}, r"expected rank 4.*received shape \(\)"),
    "NumPy scalar": ({"a": np.float32(1.0), "b": B}, r"expected rank 4.*received shape \(\)"),
    "None": ({"a": None, "b": B}, r"input 'a': expected a numpy array, received NoneType"),
    "string": ({"a": "1.0", "b": B}, r"expected a numpy array, received str"),
    "bytes": ({"a": A.tobytes(), "b": B}, r"expected a numpy array, received bytes"),
    "ragged list": ({"a": [[1.0, 2.0], [3.0]], "b": B}, r"input 'a': cannot convert list"),
    "list of strings": ({"a": [["x"]], "b": B}, r"input 'a': cannot convert list"),
    "feed is a list": (
        [A, B],
        r"input_feed must be a dict of input name -> array, "
        r"received list",
    ),
}

# Converted by autoinfer where ONNX Runtime refuses the Python type: the result is
# ONNX Runtime's for the equivalent array.
IMAGE_LENIENT: dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]] = {
    "tuples instead of lists": (
        {"a": (tuple(tuple(tuple(r) for r in c) for c in A[0].tolist()),), "b": B},
        {"a": A, "b": B},
    ),
}


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("case", sorted(IMAGE_SAME))
def test_handled_like_onnxruntime(session, reference, backend: str, case: str) -> None:
    feed = IMAGE_SAME[case]
    want, ref_exc = _outcome(lambda: reference("image").run(None, dict(feed)))
    assert ref_exc is None, f"ONNX Runtime refuses {case}: {ref_exc}"
    got = session("image", backend).run(None, feed)
    _assert_same(got, want, backend)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("case", sorted(IMAGE_REJECT))
def test_rejected_with_input_error(session, reference, backend: str, case: str) -> None:
    feed, pattern = IMAGE_REJECT[case]
    with pytest.raises(InputError) as ei:
        session("image", backend).run(None, feed)
    assert re.search(pattern, str(ei.value)), str(ei.value)
    assert isinstance(ei.value, AutoinferError) and isinstance(ei.value, ValueError)
    # side by side: what ONNX Runtime does with the same feed
    got, ref_exc = _outcome(lambda: reference("image").run(None, feed))
    if case == "big-endian float32":
        correct = reference("image").run(None, {"a": A, "b": B})[0]
        assert ref_exc is None and not np.allclose(got[0], correct), (
            "ONNX Runtime was expected to misread big-endian data silently"
        )
    else:
        assert ref_exc is not None, f"ONNX Runtime accepts {case}; autoinfer should too"
    # the session still works after a rejected feed
    _assert_same(
        session("image", backend).run(None, {"a": A, "b": B}),
        reference("image").run(None, {"a": A, "b": B}),
        backend,
    )


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("case", sorted(IMAGE_LENIENT))
def test_converted_where_onnxruntime_refuses_the_python_type(
    session, reference, backend: str, case: str
) -> None:
    feed, equivalent = IMAGE_LENIENT[case]
    _, ref_exc = _outcome(lambda: reference("image").run(None, dict(feed)))
    assert ref_exc is not None  # ONNX Runtime: "Input must be a list of dictionaries or ..."
    _assert_same(
        session("image", backend).run(None, feed), reference("image").run(None, dict(equivalent)), backend
    )


@pytest.mark.parametrize("case", sorted(IMAGE_REJECT))
def test_the_message_does_not_depend_on_the_runtime(session, case: str) -> None:
    feed, _ = IMAGE_REJECT[case]
    messages = set()
    for backend in ALL_BACKENDS:
        with pytest.raises(InputError) as ei:
            session("image", backend).run(None, feed)
        messages.add(str(ei.value))
    assert len(messages) == 1, messages


# -- dtype conversions and integers: ONNX Runtime and OpenVINO (int64 outputs) -------------
X2 = np.array([[1.5, -2.0, 3.0], [0.25, 8.0, -1.0]], np.float32)
K2 = np.array([[1, -2, 3], [4, 5, 2**20]], np.int64)


def _matrix(x: np.ndarray) -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.matrix(x)


INT_SAME: dict[str, Mapping[str, Any]] = {
    "arrays": {"x": X2, "k": K2},
    "list of ints for an int64 input": {"x": X2, "k": K2.tolist()},
    "list of floats for an int64 input (truncated like ONNX Runtime)": {
        "x": X2,
        "k": [[1.9, -2.5, 3.0], [4.0, 5.0, 6.0]],
    },
    "list of ints for a float input": {"x": [[1, 2, 3], [4, 5, 6]], "k": K2},
    "np.matrix": {"x": _matrix(X2), "k": _matrix(K2)},
    "transposed int64 view": {"x": X2, "k": np.ascontiguousarray(K2.T).T},
    "read-only int64": {"x": X2, "k": _readonly(K2)},
}
INT_REJECT: dict[str, tuple[Mapping[str, Any], str]] = {
    "int32 for int64": (
        {"x": X2, "k": K2.astype(np.int32)},
        r"input 'k': expected dtype int64 \(tensor\(int64\)\), received int32",
    ),
    "uint64 for int64": ({"x": X2, "k": K2.astype(np.uint64)}, r"expected dtype int64.*uint64"),
    "float32 array for int64": (
        {"x": X2, "k": K2.astype(np.float32)},
        r"expected dtype int64.*received float32",
    ),
    "int beyond int64 in a list": (
        {"x": X2, "k": [[2**70, 1, 1], [1, 1, 1]]},
        r"input 'k': cannot convert list to int64",
    ),
    "wrong shape list": (
        {"x": X2, "k": [1, 2, 3]},
        r"input 'k': expected rank 2 \(shape \(2, 3\)\), received shape \(3,\)",
    ),
}


@pytest.mark.parametrize("backend", INT_BACKENDS)
@pytest.mark.parametrize("case", sorted(INT_SAME))
def test_int_model_handled_like_onnxruntime(session, reference, backend: str, case: str) -> None:
    feed = INT_SAME[case]
    want, ref_exc = _outcome(lambda: reference("ints").run(None, dict(feed)))
    assert ref_exc is None, f"ONNX Runtime refuses {case}: {ref_exc}"
    _assert_same(session("ints", backend).run(None, feed), want, backend)


@pytest.mark.parametrize("backend", INT_BACKENDS)
@pytest.mark.parametrize("case", sorted(INT_REJECT))
def test_int_model_rejected_with_input_error(session, reference, backend: str, case: str) -> None:
    feed, pattern = INT_REJECT[case]
    with pytest.raises(InputError, match=pattern):
        session("ints", backend).run(None, feed)
    _, ref_exc = _outcome(lambda: reference("ints").run(None, dict(feed)))
    assert ref_exc is not None, f"ONNX Runtime accepts {case}; autoinfer should too"


@pytest.mark.parametrize("backend", INT_BACKENDS)
def test_int64_beyond_int32(session, reference, backend: str) -> None:
    """A backend that computes int64 in 32 bits (OpenVINO) refuses such values with the
    reason, naming its candidate, instead of returning wrong numbers; the reference
    computes them."""
    feed = {"x": X2, "k": np.array([[1, 2, 3], [4, 5, 2**40]], np.int64)}
    s = session("ints", backend)
    got, exc = _outcome(lambda: s.run(None, feed))
    if exc is None:
        _assert_same(got, reference("ints").run(None, feed), backend)
    else:
        assert not _is_onnxruntime_itself(backend), exc
        assert isinstance(exc, AutoinferError), exc
        assert "int32 range" in str(exc) and f"{backend}:" in str(exc), str(exc)


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param(
            b,
            marks=[pytest.mark.xfail(strict=True, reason=WRAPS_INT64_INSIDE_THE_GRAPH[b])]
            if b in WRAPS_INT64_INSIDE_THE_GRAPH
            else [],
        )
        for b in INT_BACKENDS
    ],
)
def test_int64_overflowing_int32_inside_the_graph(session, reference, backend: str) -> None:
    feed = {"x": X2, "k": np.array([[1, 2, 3], [4, 5, 2**30]], np.int64)}
    got, exc = _outcome(lambda: session("ints", backend).run(None, feed))
    if exc is not None:  # refusing with a reason would be right too
        assert isinstance(exc, AutoinferError), exc
        return
    _assert_same(got, reference("ints").run(None, feed), backend)


@pytest.mark.parametrize("backend", INT_BACKENDS)
def test_output_names_like_onnxruntime(session, reference, backend: str) -> None:
    s, ref = session("ints", backend), reference("ints")
    feed = {"x": X2, "k": K2}
    for names in (None, [], ["z"], ["z", "y"], ["y", "y"]):
        _assert_same(s.run(names, feed), ref.run(names, feed), backend)
    with pytest.raises(
        InputError,
        match=r"unknown output name 'nope'; the model's outputs are "
        r"\['y', 'z'\]",
    ):
        s.run(["nope"], feed)
    assert _outcome(lambda: ref.run(["nope"], feed))[1] is not None


# -- dynamic dimensions --------------------------------------------------------------------
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_dynamic_batch_like_onnxruntime(session, reference, backend: str) -> None:
    s, ref = session("dynamic", backend), reference("dynamic")
    for n in (2, 1, 3):
        x = _rng.standard_normal((n, 3, 4, 5), dtype=np.float32)
        _assert_same(s.run(None, {"x": x}), ref.run(None, {"x": x}), backend)
        _assert_same(s.run(None, {"x": _strided(x)}), ref.run(None, {"x": x}), backend)
    with pytest.raises(
        InputError,
        match=r"input 'x': dimension 1 must be 3 \(shape "
        r"\['N', 3, 4, 5\]\), received shape \[2, 4, 4, 5\]",
    ):
        s.run(None, {"x": np.zeros((2, 4, 4, 5), np.float32)})
    with pytest.raises(InputError, match=r"expected rank 4"):
        s.run(None, {"x": np.zeros((3, 4, 5), np.float32)})
    with pytest.raises(InputError, match=r"expected dtype float32"):
        s.run(None, {"x": np.zeros((2, 3, 4, 5), np.float64)})


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_empty_batch(session, reference, backend: str) -> None:
    """A batch of 0 is a valid feed: ONNX Runtime returns empty outputs, and so must every
    backend but those in NO_EMPTY_TENSORS, whose session says so (an AutoinferError
    naming the reason, not a crash) and keeps working for the next feed."""
    s, ref = session("dynamic", backend), reference("dynamic")
    x0 = np.zeros((0, 3, 4, 5), np.float32)
    got, exc = _outcome(lambda: s.run(None, {"x": x0}))
    if backend in NO_EMPTY_TENSORS:
        assert isinstance(exc, AutoinferError) and "empty" in str(exc), exc
    else:
        assert exc is None, exc
        _assert_same(got, ref.run(None, {"x": x0}), backend)
    x = _rng.standard_normal((1, 3, 4, 5), dtype=np.float32)
    _assert_same(s.run(None, {"x": x}), ref.run(None, {"x": x}), backend)


# -- the validation is the Session's ----------------------------------------------------------
class _SpyRunner(Runner):
    def __init__(self, cand: Candidate, calls: list[dict[str, np.ndarray]]) -> None:
        self.candidate = cand
        self.input_names = ("a", "b")
        self.output_names = ("y",)
        self.calls = calls

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        self.calls.append(dict(feeds))
        with np.errstate(all="ignore"):
            return [feeds["a"] * W + feeds["b"]]


class _SpyBackend(Backend):
    """Computes the image model in NumPy and records every feed it is given."""

    name = "spy"
    package = "numpy"
    pip_extra = None
    capabilities = Capabilities(devices=("cpu",), precisions=("fp32",), dynamic_shapes=True)

    def __init__(self) -> None:
        self.calls: list[dict[str, np.ndarray]] = []

    def availability(self, hw: Any) -> Availability:
        return Availability(self.name, True, True, "0", ("cpu",))

    def candidates(self, model: Any, hw: Any, objective: str) -> list[Any]:
        return [Candidate(self.name)]

    def estimate(self, candidate: Candidate, model: Any, hw: Any, objective: str) -> Estimate:
        return Estimate(1.0)

    def load(self, candidate: Candidate, model: Any, ctx: Any) -> Runner:
        return _SpyRunner(candidate, self.calls)


@pytest.fixture()
def spy(paths: dict[str, Path], tmp_path: Path) -> Any:
    backend = _SpyBackend()
    registry.register("spy", backend)
    try:
        s = autoinfer.Session(paths["image"], cache_dir=tmp_path / "cache", benchmark=False, backends=["spy"])
        yield s, backend.calls
    finally:
        registry.unregister("spy")


def test_rejected_feeds_never_reach_a_runtime(spy) -> None:
    s, calls = spy
    for case, (feed, _) in IMAGE_REJECT.items():
        with pytest.raises(InputError):
            s.run(None, feed)
        assert not calls, f"{case} reached the runtime"


def test_runtimes_receive_contiguous_native_arrays_of_the_declared_dtype(spy, reference) -> None:
    s, calls = spy
    for case, feed in {**IMAGE_SAME, **{k: v[0] for k, v in IMAGE_LENIENT.items()}}.items():
        calls.clear()
        got = s.run(None, feed)
        assert len(calls) == 1, case
        for name, arr in calls[0].items():
            assert type(arr) is np.ndarray, (case, name, type(arr))
            assert arr.dtype == np.float32 and arr.dtype.isnative, (case, name, arr.dtype)
            assert arr.flags.c_contiguous, (case, name)
            assert arr.shape == (1, 3, 4, 5), (case, name, arr.shape)
        if case in IMAGE_SAME:
            np.testing.assert_array_equal(got[0], reference("image").run(None, dict(feed))[0])
