"""Bad model files: every one is an ``autoinfer.ModelError`` that names the file and
says what is wrong, through ``Session(path)`` and ``Session(bytes)`` alike, and
nothing of it is left in the cache. Each is a file ONNX Runtime refuses as well;
odd models that ONNX Runtime opens are in test_model_corpus.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import zoo
from _backends import reference_backend
from onnx import TensorProto, helper, numpy_helper

import autoinfer
from autoinfer.errors import AutoinferError, ModelError

_X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
_Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])


def _save(model: onnx.ModelProto, path: Path, **kw) -> Path:
    model.ir_version = 8
    onnx.save_model(model, str(path), **kw)
    return path


def _one_node(
    path: Path, node: onnx.NodeProto, inputs=(_X,), outputs=(_Y,), opsets=(("", 17),), inits=()
) -> Path:
    g = helper.make_graph([node], "g", list(inputs), list(outputs), list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    return _save(m, path)


# name -> (builder(dir) -> path, regex the message must match besides the file's name)
def _missing(d: Path) -> Path:
    return d / "does-not-exist.onnx"


def _directory(d: Path) -> Path:
    (d / "a-directory.onnx").mkdir()
    return d / "a-directory.onnx"


def _empty(d: Path) -> Path:
    (d / "empty.onnx").write_bytes(b"")
    return d / "empty.onnx"


def _truncated(d: Path) -> Path:
    blob = zoo.save("tiny", d / "full.onnx").read_bytes()
    (d / "truncated.onnx").write_bytes(blob[: len(blob) // 2])
    return d / "truncated.onnx"


def _random_bytes(d: Path) -> Path:
    (d / "random.onnx").write_bytes(np.random.default_rng(7).bytes(4096))
    return d / "random.onnx"


def _tensor_proto(d: Path) -> Path:
    t = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "t")
    (d / "tensor.onnx").write_bytes(t.SerializeToString())
    return d / "tensor.onnx"


def _graph_proto(d: Path) -> Path:
    g = onnx.load(str(zoo.save("tiny", d / "full.onnx"))).graph
    (d / "graph.onnx").write_bytes(g.SerializeToString())
    return d / "graph.onnx"


def _unknown_operator(d: Path) -> Path:
    return _one_node(d / "unknown-op.onnx", helper.make_node("Frobnicate", ["x"], ["y"]))


def _unknown_domain(d: Path) -> Path:
    return _one_node(
        d / "unknown-domain.onnx",
        helper.make_node("Relu", ["x"], ["y"], domain="com.example.private"),
        opsets=(("", 17), ("com.example.private", 1)),
    )


def _missing_external_data(d: Path) -> Path:
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [_X], [_Y], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    p = _save(
        m,
        d / "external.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="external.onnx.data",
        size_threshold=0,
    )
    assert (d / "external.onnx.data").is_file()
    (d / "external.onnx.data").unlink()
    return p


def _non_utf8_name(d: Path) -> Path:
    """Protobuf parses a name that is not UTF-8 into ``bytes`` instead of failing."""
    p = _one_node(
        d / "name.onnx",
        helper.make_node("Relu", ["inputQ"], ["y"]),
        inputs=(helper.make_tensor_value_info("inputQ", TensorProto.FLOAT, [1, 4]),),
    )
    (d / "non-utf8.onnx").write_bytes(p.read_bytes().replace(b"inputQ", b"input\xff"))
    return d / "non-utf8.onnx"


def _kernel_larger_than_input(d: Path) -> Path:
    """A MaxPool kernel wider than its input gives a negative inferred dimension, and
    Slice's shape inference then fails an assertion (std::clamp with hi < lo) that
    aborts the process: ONNX's shape inference and ONNX Runtime's session alike."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [
        numpy_helper.from_array(np.array([v], np.int64), n)
        for n, v in (("starts", 0), ("ends", 4), ("axes", 3))
    ]
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 1000000]),
        helper.make_node("Slice", ["p", "starts", "ends", "axes"], ["y"]),
    ]
    g = helper.make_graph(nodes, "g", [x], [y], inits)
    return _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), d / "kernel.onnx")


BAD_MODELS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing path": (_missing, r"no such file"),
    "directory": (_directory, r"is a directory"),
    "empty file": (_empty, r"empty"),
    "truncated model": (_truncated, r"not a readable ONNX model"),
    "random bytes": (_random_bytes, r"not a readable ONNX model"),
    "TensorProto": (_tensor_proto, r"not a readable ONNX model|not an ONNX model"),
    "GraphProto": (_graph_proto, r"not an ONNX model \(no graph or opset import\)"),
    "unknown operator": (_unknown_operator, r"unknown operator 'Frobnicate'"),
    "unknown domain": (_unknown_domain, r"unknown domain 'com\.example\.private'"),
    "missing external data": (
        _missing_external_data,
        r"external-data file 'external\.onnx\.data' is missing",
    ),
    "name not UTF-8": (_non_utf8_name, r"not valid UTF-8"),
}
# A file read as bytes: the directory and the missing path have none.
_NO_BYTES = {"missing path", "directory"}


def assert_cache_holds_nothing(cache: Path) -> None:
    """No decision, facts, artifact or model copy, and no temporary file, anywhere."""
    for sub in ("decisions", "facts", "artifacts", "models"):
        d = cache / sub
        left = sorted(p.name for p in d.rglob("*")) if d.exists() else []
        assert not left, f"{sub}/ holds {left} after a bad model"
    if cache.exists():
        assert not [p for p in cache.rglob(".tmp-*")]


def _open(src, cache: Path) -> None:
    autoinfer.Session(src, cache_dir=cache, benchmark=False, backends=[reference_backend()])


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model_path_is_a_model_error(case: str, tmp_path: Path) -> None:
    build, what = BAD_MODELS[case]
    path = build(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(ModelError) as ei:
        _open(path, cache)
    msg = str(ei.value)
    assert str(path) in msg, f"the message does not name the file: {msg}"
    assert re.search(what, msg), f"the message does not say {what!r}: {msg}"
    assert_cache_holds_nothing(cache)
    # the same through a str path
    with pytest.raises(ModelError):
        _open(str(path), cache)
    assert_cache_holds_nothing(cache)


@pytest.mark.parametrize("case", sorted(set(BAD_MODELS) - _NO_BYTES))
def test_bad_model_bytes_is_a_model_error(case: str, tmp_path: Path) -> None:
    build, what = BAD_MODELS[case]
    blob = build(tmp_path).read_bytes()
    cache = tmp_path / "cache"
    with pytest.raises(ModelError) as ei:
        _open(blob, cache)
    msg = str(ei.value)
    # bytes have no file name: the message names them as such, not autoinfer's copy
    assert msg.startswith("<bytes>: "), msg
    assert str(cache) not in msg.split(":")[0]
    assert re.search(what, msg), f"the message does not say {what!r}: {msg}"
    assert_cache_holds_nothing(cache)
    with pytest.raises(ModelError):
        _open(bytearray(blob), cache)
    assert_cache_holds_nothing(cache)


def test_model_error_is_the_one_documented_exception() -> None:
    assert issubclass(ModelError, AutoinferError)
    assert issubclass(ModelError, ValueError)  # like ONNX Runtime's errors on a bad file
    assert autoinfer.ModelError is ModelError
    assert "ModelError" in autoinfer.__all__


def test_a_model_that_aborts_onnx_shape_inference_does_not_abort_the_caller(tmp_path: Path) -> None:
    """A MaxPool kernel larger than its input makes ONNX's shape inference, and
    ONNX Runtime loading the model, abort the process (SIGABRT from a failed
    assertion). autoinfer runs that code in a child process and turns the crash
    into a ModelError. Run in a subprocess so that a regression fails this test
    instead of killing the test run."""
    path = _kernel_larger_than_input(tmp_path)
    code = textwrap.dedent(f"""
        import autoinfer, pathlib
        for src in ({str(path)!r}, pathlib.Path({str(path)!r}).read_bytes()):
            try:
                autoinfer.Session(src, cache_dir={str(tmp_path / "cache")!r}, benchmark=False,
                                  backends=[{reference_backend()!r}])
            except autoinfer.ModelError as exc:
                print("ModelError:", exc)
            else:
                print("no error")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"the caller died ({proc.returncode}): {proc.stderr[-2000:]}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("ModelError", "no error"))]
    assert len(lines) == 2 and all("shape inference crashed" in ln for ln in lines), proc.stdout
    assert str(path) in lines[0] and "<bytes>" in lines[1]
    assert_cache_holds_nothing(tmp_path / "cache")


def test_a_good_model_next_to_bad_ones_still_loads(tmp_path: Path) -> None:
    """The checks reject what is broken, not what is unusual: external data present,
    a function-defined operator in a private domain, a model given as bytes."""
    cache = tmp_path / "cache"
    # external data present
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32) * 2, "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [_X], [_Y], [w])
    p = _save(
        helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
        tmp_path / "ext.onnx",
        save_as_external_data=True,
        location="ext.onnx.data",
        size_threshold=0,
    )
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    s = autoinfer.Session(p, cache_dir=cache, benchmark=False, backends=[reference_backend()])
    np.testing.assert_array_equal(s.run(None, {"x": x})[0], x * 2)
    # an operator of a private domain that the model defines itself
    fn = helper.make_function(
        "com.example.private",
        "Double",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    g = helper.make_graph(
        [helper.make_node("Double", ["x"], ["y"], domain="com.example.private")], "g", [_X], [_Y]
    )
    m = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example.private", 1)],
        functions=[fn],
    )
    p = _save(m, tmp_path / "fn.onnx")
    for src in (p, p.read_bytes()):
        s = autoinfer.Session(src, cache_dir=cache, benchmark=False, backends=[reference_backend()])
        np.testing.assert_array_equal(s.run(None, {"x": x})[0], x * 2)
    assert os.listdir(cache / "models")  # the bytes were kept: this model is good


def test_external_data_is_found_in_attributes_subgraphs_and_functions(tmp_path: Path) -> None:
    """Every tensor that keeps its data in a file is found, wherever it sits (a Constant's
    attribute, a branch's initializer, a function's node), as onnx's own walk finds them; and
    a missing one of those files is the model's error."""
    from onnx.external_data_helper import (
        _get_all_tensors,
        convert_model_to_external_data,
        uses_external_data,
    )

    from autoinfer.model import load_facts

    def const(name: str, v: float) -> onnx.NodeProto:
        return helper.make_node(
            "Constant", [], [name], value=numpy_helper.from_array(np.full((1, 4), v, np.float32))
        )

    branch = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.ones((1, 4), np.float32), "b")],
    )
    other = helper.make_graph(
        [const("e", 3.0)], "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 4])]
    )
    fn = helper.make_function(
        "com.example.private",
        "AddFour",
        ["a"],
        ["o"],
        [const("f", 4.0), helper.make_node("Add", ["a", "f"], ["o"])],
        [helper.make_opsetid("", 17)],
    )
    g = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
            helper.make_node("Greater", ["s", "zero"], ["c"]),
            helper.make_node("If", ["c"], ["r"], then_branch=branch, else_branch=other),
            helper.make_node("AddFour", ["r"], ["y"], domain="com.example.private"),
        ],
        "g",
        [_X],
        [_Y],
        [numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
    )
    m = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example.private", 1)],
        functions=[fn],
    )
    p = tmp_path / "m.onnx"
    convert_model_to_external_data(m, all_tensors_to_one_file=False, size_threshold=0, convert_attribute=True)
    onnx.save_model(m, p)
    loaded = onnx.load(p, load_external_data=False)
    want = sorted(
        (tmp_path / e.value).resolve()
        for t in _get_all_tensors(loaded)
        if uses_external_data(t)
        for e in t.external_data
        if e.key == "location"
    )
    assert len(want) == 4, want  # zero, b, e, f: each in a file of its own
    assert sorted(Path(f) for f in load_facts(p).external_data) == want
    want[-1].unlink()
    with pytest.raises(ModelError, match="is missing"):
        load_facts(p)
