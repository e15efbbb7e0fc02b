"""Fuzzing ``Session`` with mutated model bytes and mutated feeds.

The only outcomes allowed are a result or an ``autoinfer.AutoinferError``: no other
exception, no crash of the process that runs autoinfer, no hang. Every example
runs in a sandbox process (one per fuzzer, restarted after a crash), so a crash
or a hang fails the example that caused it, with the example, instead of killing
the test run.

Budget: a few dozen examples per fuzzer in ``make test``; set ``AUTOINFER_LONG=1``
(``make test-long``) for 5000 each. ``test_fuzz_budget`` checks that each fuzzer is
configured for its budget and, when it ran in the same pytest run, that it ran that
many examples.

The feed fuzzer runs every backend usable here (``conftest.usable_backends()``).
"""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

LONG = os.environ.get("AUTOINFER_LONG", "") not in ("", "0")
EXAMPLE_TIMEOUT_S = 30.0  # one example; past it the sandbox is killed and the example fails


def _budget(short: int) -> int:
    return 5000 if LONG else short


# Examples each fuzzer ran in this process (after hypothesis.assume), for test_fuzz_budget.
RAN: Counter[str] = Counter()


def fuzz_model_bytes() -> bytes:
    """A small valid model touching the operators with the most shape logic:
    Conv, MaxPool, Reshape, Slice, Gather, Softmax, Cast, Concat; two inputs."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.zeros(4, np.float32), "b"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "shape"),
        numpy_helper.from_array(np.array([0, 2, 1], np.int64), "idx"),
        numpy_helper.from_array(np.array([0], np.int64), "st"),
        numpy_helper.from_array(np.array([8], np.int64), "en"),
        numpy_helper.from_array(np.array([1], np.int64), "ax"),
    ]
    nodes = [
        helper.make_node(
            "Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2], kernel_shape=[3, 3]
        ),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p", "shape"], ["f"]),
        helper.make_node("Slice", ["f", "st", "en", "ax"], ["s"]),
        helper.make_node("Gather", ["s", "idx"], ["gt"], axis=1),
        helper.make_node("Softmax", ["gt"], ["y"], axis=-1),
        helper.make_node("Cast", ["ids"], ["idsf"], to=T.FLOAT),
        helper.make_node("Concat", ["y", "idsf"], ["z"], axis=1),
    ]
    g = helper.make_graph(
        nodes,
        "fuzz",
        [
            helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8]),
            helper.make_tensor_value_info("ids", T.INT64, [1, 2]),
        ],
        [helper.make_tensor_value_info("z", T.FLOAT, [1, 5])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="fuzz")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m.SerializeToString()


def feed_model_bytes() -> bytes:
    """x: float32 [N, 3, 4, 4], ids: float32 [1, 2] -> y = relu(x * w), s = sum(ids)."""
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.array([-1.0, 0.5, 2.0], np.float32).reshape(1, 3, 1, 1), "w")
    g = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "w"], ["t"]),
            helper.make_node("Relu", ["t"], ["y"]),
            helper.make_node("ReduceSum", ["ids"], ["s"], keepdims=1),
        ],
        "feeds",
        [
            helper.make_tensor_value_info("x", T.FLOAT, ["N", 3, 4, 4]),
            helper.make_tensor_value_info("ids", T.FLOAT, [1, 2]),
        ],
        [
            helper.make_tensor_value_info("y", T.FLOAT, ["N", 3, 4, 4]),
            helper.make_tensor_value_info("s", T.FLOAT, [1, 1]),
        ],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


# -- the sandbox ---------------------------------------------------------------------------
class Sandbox:
    """A child process that runs one example per request and answers one JSON line.

    A crash or a hang of the child is reported as the example's outcome; the next
    request starts a fresh child.
    """

    def __init__(self, mode: str, workdir: Path, backend_names: tuple[str, ...] = ()) -> None:
        self.mode = mode
        self.backend_names = backend_names
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = workdir / f"sandbox-{mode}.log"

    def _start(self) -> subprocess.Popen[bytes]:
        err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "sandbox", self.mode, str(self.workdir), *self.backend_names],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
        err.close()
        ready = self._read(120.0)
        assert ready == {"ready": True}, f"the sandbox did not start: {ready} {self._tail()}"
        return self.proc

    def _tail(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def _read(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout_s
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                return {"outcome": "hang", "detail": f"no answer within {timeout_s:.0f} s"}
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    code = self.proc.wait()
                    self.proc = None
                    return {"outcome": "crash", "detail": f"exit status {code}", "stderr": self._tail()}
                buf += chunk
        return json.loads(buf)

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as exc:
            self.kill()
            return {"outcome": "crash", "detail": str(exc), "stderr": self._tail()}
        return self._read(EXAMPLE_TIMEOUT_S)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(timeout=10)
            except Exception:  # noqa: BLE001
                pass
        self.kill()


def _check(answer: dict[str, Any], example: Any) -> None:
    assert answer.get("outcome") in ("result", "autoinfer"), (
        f"outcome {answer.get('outcome')}: {answer.get('detail')}\n"
        f"{answer.get('stderr', '')[-2000:]}\nexample: {example!r}"
    )


# -- what the sandbox runs ------------------------------------------------------------------
_ORT_TO_NUMPY = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
}


def _classify(fn: Any) -> dict[str, Any]:
    import traceback

    import autoinfer

    try:
        return {"outcome": "result", "value": fn()}
    except autoinfer.AutoinferError as exc:
        return {"outcome": "autoinfer", "detail": f"{type(exc).__name__}: {str(exc)[:300]}"}
    except Exception as exc:  # noqa: BLE001 - the finding
        return {
            "outcome": "other",
            "detail": f"{type(exc).__name__}: {exc}"[:1000],
            "stderr": traceback.format_exc()[-3000:],
        }


def _sandbox_model(req: dict[str, Any], workdir: Path) -> dict[str, Any]:
    import autoinfer

    blob = base64.b64decode(req["blob"])

    def go() -> str:
        s = autoinfer.Session(blob, cache_dir=workdir / "cache", benchmark=False, backends=["onnxruntime"])
        feed = {}
        for i in s.get_inputs():
            if i.type not in _ORT_TO_NUMPY:
                return "loaded (inputs of a type the fuzzer does not feed)"
            shape = [d if isinstance(d, int) and 0 <= d <= 16 else 1 for d in (i.shape or [])]
            feed[i.name] = np.ones(shape, _ORT_TO_NUMPY[i.type])
        outs = s.run(None, feed)
        return f"ran: {len(outs)} output(s)"

    res = _classify(go)
    res.pop("value", None)
    return res


def build_value(spec: dict[str, Any]) -> Any:
    """A feed value from a JSON spec: what the feed fuzzer draws."""
    kind = spec["kind"]
    if kind == "none":
        return None
    if kind == "str":
        return spec["text"]
    if kind == "scalar":
        return spec["number"]
    rng = np.random.default_rng(spec.get("seed", 0))
    shape = tuple(spec["shape"])
    dtype = np.dtype(spec["dtype"])
    fill = spec.get("fill", "random")
    if fill == "random":
        x = (rng.standard_normal(shape) * 10).astype(dtype)
    elif fill == "zeros":
        x = np.zeros(shape, dtype)
    elif fill == "specials" and dtype.kind == "f":
        x = rng.choice(np.array([np.nan, np.inf, -np.inf, -0.0, 1e30, -1e-30], dtype), shape)
    else:
        info = np.iinfo(dtype) if dtype.kind in "iu" else None
        x = np.full(shape, info.max if info else (True if dtype.kind == "b" else 1e30), dtype)
    x = np.array(x, dtype, copy=True, ndmin=0)  # an array even for shape ()
    layout = spec.get("layout", "c")
    if layout == "fortran":
        x = np.asfortranarray(x)
    elif layout == "transposed" and x.ndim >= 2:
        x = np.ascontiguousarray(x.T).T
    elif layout == "strided" and x.ndim >= 1:
        x = np.repeat(x, 2, axis=-1)[..., ::2]
    elif layout == "reversed" and x.ndim >= 1:
        x = x[..., ::-1]
    elif layout == "readonly":
        x.flags.writeable = False
    elif layout == "bigendian":
        x = x.astype(x.dtype.newbyteorder(">"))
    if kind == "list":
        return x.tolist()
    return x


def _sandbox_feed(req: dict[str, Any], sessions: dict[str, Any], ref: Any) -> dict[str, Any]:
    try:
        feed = {name: build_value(spec) for name, spec in req["feed"]}
    except Exception as exc:  # noqa: BLE001 - the fuzzer's own limits, not a finding
        return {"outcome": "harness", "detail": f"{type(exc).__name__}: {exc}"}
    s = sessions[req["backend"]]
    res = _classify(lambda: s.run(None, feed))
    if res["outcome"] == "result":
        got = res.pop("value")
        try:
            want = ref.run(None, dict(feed))
        except Exception:  # noqa: BLE001 - ONNX Runtime refuses what autoinfer converts
            want = None
        if want is not None:
            from autoinfer import backends

            tol = 0 if backends.get(req["backend"]).capabilities.reference else 1e-5
            if len(got) != len(want):
                return {
                    "outcome": "mismatch",
                    "detail": f"{len(got)} outputs, ONNX Runtime gives {len(want)}",
                }
            for g, w in zip(got, want, strict=True):
                if (
                    g.shape != w.shape
                    or g.dtype != w.dtype
                    or not np.allclose(g, w, rtol=tol, atol=tol, equal_nan=True)
                ):
                    return {
                        "outcome": "mismatch",
                        "detail": f"differs from ONNX Runtime: {g.dtype}{g.shape} vs {w.dtype}{w.shape}",
                    }
    res.pop("value", None)
    return res


def sandbox_main(mode: str, workdir: str, backend_names: list[str]) -> int:
    import logging

    logging.disable(logging.CRITICAL)
    out = os.fdopen(os.dup(1), "w", buffering=1)  # answers; runtimes' prints go to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    wd = Path(workdir)
    sessions: dict[str, Any] = {}
    ref = None
    if mode == "feed":
        import onnxruntime as ort

        import autoinfer

        path = wd / "feeds.onnx"
        path.write_bytes(feed_model_bytes())
        for backend in backend_names:
            sessions[backend] = autoinfer.Session(
                path, cache_dir=wd / "cache", benchmark=False, backends=[backend]
            )
        ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        res = _sandbox_model(req, wd) if mode == "model" else _sandbox_feed(req, sessions, ref)
        out.write(json.dumps(res, default=str) + "\n")
    return 0


# -- the fuzzers ---------------------------------------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
from conftest import usable_backends  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _settings(short: int) -> Any:
    return settings(
        max_examples=_budget(short),
        deadline=timedelta(seconds=60),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        print_blob=True,
    )


@pytest.fixture(scope="module")
def model_sandbox(tmp_path_factory: Any) -> Any:
    box = Sandbox("model", tmp_path_factory.mktemp("fuzz-model"))
    yield box
    box.close()


@pytest.fixture(scope="module")
def feed_sandbox(tmp_path_factory: Any) -> Any:
    box = Sandbox("feed", tmp_path_factory.mktemp("fuzz-feed"), tuple(FEED_BACKENDS))
    yield box
    box.close()


BASE = fuzz_model_bytes()

_byte_edit = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(BASE) - 1), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, len(BASE) - 1), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, len(BASE)), st.integers(0, 255)),
    st.tuples(st.just("set"), st.integers(0, len(BASE) - 1), st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF])),
)


def apply_byte_edits(blob: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    b = bytearray(blob)
    for kind, pos, val in edits:
        pos = min(pos, max(0, len(b) - 1))
        if kind == "flip" and b:
            b[pos] ^= 1 << val
        elif kind == "truncate":
            del b[pos:]
        elif kind == "insert":
            b[pos:pos] = bytes([val])
        elif kind == "set" and b:
            b[pos] = val
    return bytes(b)


@_settings(80)
@given(edits=st.lists(_byte_edit, min_size=1, max_size=4))
def test_mutated_model_bytes(model_sandbox: Sandbox, edits: list[tuple[str, int, int]]) -> None:
    RAN["test_mutated_model_bytes"] += 1
    blob = apply_byte_edits(BASE, edits)
    answer = model_sandbox.run({"blob": base64.b64encode(blob).decode()})
    hypothesis.event(f"outcome: {answer.get('outcome')}")  # --hypothesis-show-statistics
    _check(answer, edits)


_INTS = [0, 1, -1, 2, 3, 7, 2**31 - 1, -(2**31), 2**62, -(2**63), 2**63 - 1, 1000000]
_structural_edit = st.one_of(
    st.tuples(st.just("attribute"), st.integers(0, 100), st.integers(0, 100), st.sampled_from(_INTS)),
    st.tuples(st.just("initializer"), st.integers(0, 100), st.integers(0, 100), st.sampled_from(_INTS)),
    st.tuples(
        st.just("dim"), st.integers(0, 100), st.integers(0, 100), st.sampled_from([0, 1, 2, 5, 64, 2**31 - 1])
    ),
    st.tuples(
        st.just("elem_type"),
        st.integers(0, 100),
        st.just(0),
        st.sampled_from([0, 1, 2, 6, 7, 8, 9, 10, 11, 16, 40]),
    ),
    st.tuples(st.just("drop_input"), st.integers(0, 100), st.just(0), st.just(0)),
    st.tuples(
        st.just("add_input"),
        st.integers(0, 100),
        st.just(0),
        st.sampled_from(["x", "w", "ids", "c", "", "nope"]),
    ),
    st.tuples(
        st.just("op_type"),
        st.integers(0, 100),
        st.just(0),
        st.sampled_from(["Relu", "Conv", "Reshape", "Identity", "Loop", "If"]),
    ),
)


def apply_structural_edits(blob: bytes, edits: list[tuple[str, int, int, Any]]) -> bytes:
    """Edits that keep the bytes a well-formed ModelProto, so they reach shape inference
    and the runtime: the way a broken exporter, not a broken disk, damages a model."""
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.ParseFromString(blob)
    g = m.graph
    for kind, i, j, val in edits:
        node = g.node[i % len(g.node)]
        if kind == "attribute" and node.attribute:
            a = node.attribute[j % len(node.attribute)]
            if a.ints:
                a.ints[j % len(a.ints)] = val
            elif a.type == onnx.AttributeProto.INT:
                a.i = val
        elif kind == "initializer":
            t = g.initializer[i % len(g.initializer)]
            arr = numpy_helper.to_array(t).copy()
            if arr.size and arr.dtype == np.int64:
                arr.flat[j % arr.size] = val
            elif arr.size:
                arr.flat[j % arr.size] = np.float32(val) if abs(val) < 2**100 else np.nan
            t.CopyFrom(numpy_helper.from_array(arr, t.name))
        elif kind == "dim":
            vi = (list(g.input) + list(g.output))[i % (len(g.input) + len(g.output))]
            dims = vi.type.tensor_type.shape.dim
            if dims:
                dims[j % len(dims)].dim_value = val
        elif kind == "elem_type":
            vi = (list(g.input) + list(g.output))[i % (len(g.input) + len(g.output))]
            vi.type.tensor_type.elem_type = val
        elif kind == "drop_input" and len(node.input) > 1:
            del node.input[-1]
        elif kind == "add_input":
            node.input.append(val)
        elif kind == "op_type":
            node.op_type = val
    return m.SerializeToString()


@_settings(60)
@given(edits=st.lists(_structural_edit, min_size=1, max_size=3))
def test_structurally_mutated_models(model_sandbox: Sandbox, edits: list[tuple[str, int, int, Any]]) -> None:
    RAN["test_structurally_mutated_models"] += 1
    blob = apply_structural_edits(BASE, edits)
    answer = model_sandbox.run({"blob": base64.b64encode(blob).decode()})
    hypothesis.event(f"outcome: {answer.get('outcome')}")  # --hypothesis-show-statistics
    _check(answer, edits)


_DTYPES = ["float32", "float64", "float16", "int64", "int32", "uint8", "bool"]
_array_spec = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["array", "array", "array", "list"]),
        "dtype": st.sampled_from(_DTYPES),
        "shape": st.one_of(
            st.lists(st.integers(0, 5), min_size=0, max_size=5),
            st.sampled_from([[1, 3, 4, 4], [2, 3, 4, 4], [1, 2], [0, 3, 4, 4]]),
        ),
        "fill": st.sampled_from(["random", "zeros", "specials", "max"]),
        "layout": st.sampled_from(
            ["c", "fortran", "transposed", "strided", "reversed", "readonly", "bigendian"]
        ),
        "seed": st.integers(0, 2**16),
    }
)
_value_spec = st.one_of(
    _array_spec,
    st.fixed_dictionaries(
        {
            "kind": st.just("scalar"),
            "number": st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.booleans()),
        }
    ),
    st.fixed_dictionaries({"kind": st.just("none")}),
    st.fixed_dictionaries({"kind": st.just("str"), "text": st.text(max_size=8)}),
)
_name = st.one_of(st.sampled_from(["x", "ids"]), st.text(max_size=6))


# Not in the sandbox, which is this file run as a script and is told its backends.
FEED_BACKENDS = usable_backends() if __name__ != "__main__" else []


@_settings(100)
@given(
    backend=st.sampled_from(FEED_BACKENDS),
    feed=st.one_of(
        # mostly the right names with odd values, sometimes odd names
        st.tuples(st.tuples(st.just("x"), _value_spec), st.tuples(st.just("ids"), _value_spec)).map(list),
        st.lists(st.tuples(_name, _value_spec), max_size=3, unique_by=lambda kv: kv[0]),
    ),
)
def test_mutated_feeds(feed_sandbox: Sandbox, backend: str, feed: list[Any]) -> None:
    answer = feed_sandbox.run({"backend": backend, "feed": feed})
    hypothesis.assume(answer.get("outcome") != "harness")
    RAN["test_mutated_feeds"] += 1
    hypothesis.event(f"outcome: {answer.get('outcome')}")  # --hypothesis-show-statistics
    _check(answer, (backend, feed))


FUZZERS = {test_mutated_model_bytes: 80, test_structurally_mutated_models: 60, test_mutated_feeds: 100}


def test_fuzz_budget() -> None:
    """Each fuzzer is set to its budget (5000 with AUTOINFER_LONG=1) and, when it ran in
    this pytest run (it comes first in the file), hypothesis ran that many examples."""
    for fuzzer, short in FUZZERS.items():
        name = fuzzer.__name__
        configured = fuzzer._hypothesis_internal_use_settings.max_examples
        assert configured == _budget(short), (name, configured)
        if RAN[name]:
            assert RAN[name] >= configured, f"{name} ran {RAN[name]} of {configured} examples"
    if not LONG:
        print(
            "short fuzzing budget (80, 60 and 100 examples); set AUTOINFER_LONG=1 "
            "(make test-long) for 5000 examples per fuzzer"
        )


def test_the_sandbox_reports_a_crash_as_a_crash(tmp_path: Path) -> None:
    """The harness itself: a child that dies is a 'crash' outcome, not a pass."""
    box = Sandbox("model", tmp_path)
    try:
        box._start()
        assert box.proc is not None
        box.proc.kill()
        box.proc.wait()
        answer = box._read(5.0)
        assert answer["outcome"] == "crash"
        with pytest.raises(AssertionError, match="outcome crash"):
            _check(answer, "example")
    finally:
        box.kill()


if __name__ == "__main__" and len(sys.argv) >= 4 and sys.argv[1] == "sandbox":
    sys.exit(sandbox_main(sys.argv[2], sys.argv[3], sys.argv[4:]))
