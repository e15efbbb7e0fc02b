"""Reading a model fast: the skeleton (the graph without the weights' data), the
shape-inference child that outlives one model, and the digest left for later.

A cold ``Session()`` is to cost little more than ONNX Runtime's own load, so reading a
model must not read its weights, fork the caller or hash the file; these tests hold
those properties, and that what is read is what a whole read gives.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
import zoo
from onnx import TensorProto, helper, numpy_helper

import autoinfer
from autoinfer import shape_check, skeleton
from autoinfer.errors import ModelError
from autoinfer.model import load_facts, load_facts_cached


def _big_everywhere(path: Path) -> Path:
    """Large tensors in every place a tensor may sit: an initializer, a Constant node, and
    an initializer of an If branch; small ones (a Reshape's shape) that inference reads."""
    rng = np.random.default_rng(0)
    big = rng.random((64, 512), dtype=np.float32)  # 128 KiB
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)

    def branch(name: str, scale: float) -> onnx.GraphProto:
        w = numpy_helper.from_array(big * scale, f"{name}_w")
        out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)
        return helper.make_graph(
            [helper.make_node("MatMul", ["m", f"{name}_w"], [f"{name}_out"])], name, [], [out], [w]
        )

    nodes = [
        helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(big.T.copy(), "k")),
        helper.make_node("MatMul", ["x", "w"], ["h"]),  # [2, 512]
        helper.make_node("MatMul", ["h", "k"], ["m0"]),  # [2, 64]
        helper.make_node("Reshape", ["m0", "shape"], ["m"]),
        helper.make_node("If", ["c"], ["y"], then_branch=branch("a", 1.0), else_branch=branch("b", 2.0)),
    ]
    inits = [numpy_helper.from_array(big, "w"), numpy_helper.from_array(np.array([2, 64], np.int64), "shape")]
    g = helper.make_graph(nodes, "g", [x, c], [y], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_the_skeleton_drops_large_data_everywhere_and_keeps_the_rest(tmp_path: Path) -> None:
    path = _big_everywhere(tmp_path / "m.onnx")
    whole = onnx.load(str(path))
    light = onnx.load_model_from_string(skeleton.read_skeleton(path))
    assert path.stat().st_size > 4 * 128 * 1024 and len(light.SerializeToString()) < 8 * 1024
    # names, dims, types and the small constant stay; only the large data is gone
    for a, b in zip(light.graph.initializer, whole.graph.initializer, strict=True):
        assert (a.name, list(a.dims), a.data_type) == (b.name, list(b.dims), b.data_type)
    assert numpy_helper.to_array(light.graph.initializer[1]).tolist() == [2, 64]
    assert not light.graph.initializer[0].raw_data
    assert not light.graph.node[0].attribute[0].t.raw_data
    assert not light.graph.node[4].attribute[0].g.initializer[0].raw_data
    assert [n.op_type for n in light.graph.node] == [n.op_type for n in whole.graph.node]
    facts = load_facts(path)
    assert facts.params == 2 * 64 * 512 + 2  # the graph's own initializers and constants
    assert facts.flops == shape_check.flops_of(shape_check.infer_here(whole)) > 0


@pytest.mark.parametrize("name", ["mobilenetv2", "lstm", "dynamic_batch"])
def test_the_skeleton_parses_as_the_whole_model_without_weights(name: str, tmp_path: Path) -> None:
    path = zoo.save(name, tmp_path / "m.onnx")
    light = onnx.load_model_from_string(skeleton.read_skeleton(path))
    assert light == shape_check.without_weights(onnx.load(str(path)))


@pytest.mark.parametrize(
    "blob",
    [b"\xff" * 64, b"\x3a\xff\xff\xff\xff\x0f", b"\x08"],  # bad tags, a length past the end, a cut varint
)
def test_a_file_that_is_not_protobuf_has_no_skeleton_and_gets_the_parse_error(blob: bytes, tmp_path: Path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(blob)
    assert skeleton.read_skeleton(path) is None
    with pytest.raises(ModelError, match="not a readable ONNX model|not an ONNX model"):
        load_facts(path)


def test_a_truncated_model_is_refused_as_before(tmp_path: Path) -> None:
    path = _big_everywhere(tmp_path / "m.onnx")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert skeleton.read_skeleton(path) is None
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        load_facts(path)


def test_a_cold_session_does_not_hash_the_model_and_the_selection_does(tmp_path: Path) -> None:
    """The digest keys the decision cache; a cold start loads the safe choice without it,
    and the background selection computes it (and the facts record keeps it)."""
    path = zoo.save("tiny", tmp_path / "m.onnx")
    cache = tmp_path / "c"
    s = autoinfer.Session(path, cache_dir=cache, budget_s=2)
    try:
        assert not s._facts.hashed
        s.run(None, {"input": np.ones((1, 16), np.float32)})
        assert s.wait_for_choice(timeout=120) is not None
        assert s._facts.hashed
    finally:
        s.close()
    from autoinfer.cache import Cache

    again = load_facts_cached(path, Cache(cache))
    assert again.hashed and again.sha256 == s._facts.sha256
    import hashlib

    assert again.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_model_moved_elsewhere_runs_its_cached_winner_after_the_first_call(tmp_path: Path) -> None:
    """Same bytes under a new path: not hashed at start, so the session opens on the safe
    choice; the selection finds the decision by the digest and takes it from the cache."""
    a = zoo.save("tiny", tmp_path / "a.onnx")
    cache = tmp_path / "c"
    feed = {"input": np.ones((1, 16), np.float32)}
    with autoinfer.Session(a, cache_dir=cache, budget_s=2) as s:
        s.run(None, feed)
        first = s.wait_for_choice(timeout=120)
    b = tmp_path / "b.onnx"
    b.write_bytes(a.read_bytes())
    with autoinfer.Session(b, cache_dir=cache, budget_s=2) as s:
        s.run(None, feed)
        choice = s.wait_for_choice(timeout=120)
        assert choice is not None and choice.from_cache
        assert choice.candidate == first.candidate


def test_reading_a_model_never_forks_the_caller(tmp_path: Path) -> None:
    """A fork marks every page of a large caller copy-on-write, and the runtime's load that
    follows then pays a page fault per page it writes; reading must spawn, not fork."""
    path = zoo.save("mobilenetv2", tmp_path / "m.onnx")
    code = textwrap.dedent(f"""
        import os, autoinfer
        def no_fork(*a, **k):
            raise AssertionError("forked")
        os.fork = no_fork
        s = autoinfer.Session({str(path)!r}, cache_dir={str(tmp_path / "c")!r}, selection="off",
                              backends=["onnxruntime"])
        print("facts", s._facts.flops > 0)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "facts True" in proc.stdout


def test_a_sessions_first_start_and_its_selection_never_import_onnx(tmp_path: Path) -> None:
    """``import onnx`` is ~60 ms that plain ONNX Runtime never pays: the facts are read with
    ONNX's message classes alone (autoinfer.onnx_proto), the selection's in the workers."""
    path = zoo.save("mobilenetv2", tmp_path / "m.onnx")
    code = textwrap.dedent(f"""
        import sys, numpy as np, autoinfer
        s = autoinfer.Session({str(path)!r}, cache_dir={str(tmp_path / "c")!r}, budget_s=4)
        print("after Session", "onnx" in sys.modules, s._facts.flops > 0)
        s.run(None, {{s.get_inputs()[0].name: np.zeros((1, 3, 224, 224), np.float32)}})
        print("chose", s.wait_for_choice(120) is not None, "onnx" in sys.modules)
        s.close()
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "after Session False True" in proc.stdout
    assert "chose True False" in proc.stdout


@pytest.mark.parametrize("protobuf", ["upb", "python"])
def test_onnx_imported_after_the_light_messages_shares_their_classes(protobuf: str) -> None:
    """The standalone message module registers ONNX's descriptors first; ``import onnx``
    then finds them identical: one ModelProto class, in either protobuf implementation."""
    code = textwrap.dedent("""
        import sys
        from autoinfer.onnx_proto import messages, parse_model
        light = messages()
        assert "onnx" not in sys.modules
        import onnx
        from onnx import helper
        m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])]))
        parsed = parse_model(m.SerializeToString())
        onnx.checker.check_model(parsed)
        print(light.ModelProto is onnx.ModelProto, type(parsed) is onnx.ModelProto, parsed == m)
    """)
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": protobuf}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "True", "True"]


def test_bytes_the_light_parse_leaves_unread_are_an_error() -> None:
    from google.protobuf.message import DecodeError

    from autoinfer.onnx_proto import parse_model

    good = helper.make_model(helper.make_graph([], "g", [], [])).SerializeToString()
    assert parse_model(good).graph.name == "g"
    with pytest.raises(DecodeError):
        parse_model(good + b"\xff")


def test_the_shape_child_serves_model_after_model_and_recovers_from_a_crash(tmp_path: Path) -> None:
    from test_reliability_models import _kernel_larger_than_input

    good = zoo.save("tiny", tmp_path / "good.onnx")
    bad = _kernel_larger_than_input(tmp_path)
    load_facts(good)
    first = shape_check._child
    assert first is not None and first.alive()
    load_facts(good)
    assert shape_check._child is first  # kept for the next model
    with pytest.raises(ModelError, match="shape inference crashed"):
        load_facts(bad)
    assert not first.alive()
    assert load_facts(good).inputs[0].name == "input"  # a new child
    assert shape_check._child is not first and shape_check._child.alive()


def test_models_read_from_several_threads_at_once_each_get_their_own_answer(tmp_path: Path) -> None:
    paths = [zoo.save(n, tmp_path / f"{n}.onnx") for n in ("tiny", "lstm", "mobilenetv2", "dynamic_batch")]
    expected = {p: load_facts(p) for p in paths}
    got: dict[Path, object] = {}
    errors: list[BaseException] = []

    def read(p: Path) -> None:
        try:
            got[p] = load_facts(p)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(p,)) for p in paths * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for p in paths:
        assert (got[p].flops, got[p].inputs, got[p].outputs) == (  # type: ignore[attr-defined]
            expected[p].flops,
            expected[p].inputs,
            expected[p].outputs,
        )


def test_an_operator_name_that_is_not_utf8_is_the_models_error(tmp_path: Path) -> None:
    """The operator names go to the shape child as text: a corrupt one is refused first, with
    the model's error (a fuzzed model once reached the child's request as bytes)."""
    path = zoo.save("tiny", tmp_path / "m.onnx")
    blob = path.read_bytes()
    assert b"MatMul" in blob
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(blob.replace(b"MatMul", b"Mat\xffu\xfe", 1))
    with pytest.raises(ModelError, match="not valid UTF-8"):
        load_facts(bad)
    # its graph had gone to the child before the check: the request's writer, left waiting
    # for the queries, ends with that child
    for t in threading.enumerate():
        if t.name == "autoinfer-shape-request":
            t.join(10)
            assert not t.is_alive()
    assert load_facts(path).flops > 0  # the shape child still serves the next model


def test_the_shape_child_wants_the_queries_before_it_answers() -> None:
    inference = shape_check.start()
    try:
        inference.send(skeleton.read_skeleton(zoo.save("tiny", Path(tempfile.mkdtemp()) / "m.onnx")) or b"")
        with pytest.raises(RuntimeError, match="ask"):
            inference.result(5)
    finally:
        inference.cancel()
    assert shape_check._child is not None and not shape_check._child.lock.locked()  # released


def test_the_utf8_check_by_parse_finds_what_the_walk_finds() -> None:
    """The check parses the model again with a type that verifies UTF-8, and walks the fields
    only to name the bad one: a corrupt string anywhere (a name, a dimension's name, a doc
    string, metadata, a subgraph's node) is found, and a clean model passes, as with the
    walk alone."""
    from autoinfer.model_checks import _verifying_model_class, non_utf8_field

    assert _verifying_model_class() is not None, "this protobuf cannot build the verifying type"
    branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["b_out"], name="branchnodeZ")],
        "branch",
        [],
        [helper.make_tensor_value_info("b_out", TensorProto.FLOAT, ["dimZ", 4])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"], name="reluZ", doc_string="docZ"),
            helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch),
        ],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["dimZ", 4]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"keyZ": "valueZ"})
    blob = model.SerializeToString()
    assert non_utf8_field(onnx.ModelProto.FromString(blob), blob) is None
    for marker in (b"reluZ", b"docZ", b"dimZ", b"branchnodeZ", b"keyZ", b"valueZ"):
        assert marker in blob, marker
        bad = blob.replace(marker, marker[:-1] + b"\xff")
        parsed = onnx.ModelProto.FromString(bad)
        walked = non_utf8_field(parsed)
        assert walked is not None, marker
        assert non_utf8_field(parsed, bad) == walked, marker


def test_a_node_of_an_unknown_domain_is_refused_beside_known_operators(tmp_path: Path) -> None:
    """Every operator of ONNX's domains is known here, so the check has only the other
    domains to look at: the unknown one is still the model's error."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    nodes = [
        helper.make_node("Relu", ["x"], ["h"]),
        helper.make_node("Private", ["h"], ["y"], domain="com.example.private"),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example.private", 1)],
    )
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match=r"unknown domain 'com\.example\.private'"):
        load_facts(path)
