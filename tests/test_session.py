"""autoinfer.Session side by side with onnxruntime.InferenceSession on the same models."""

from __future__ import annotations

import gc
import logging
import queue
import threading
import weakref
from pathlib import Path

import misbehaving
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import zoo
from onnx import TensorProto, helper

import autoinfer
from autoinfer import backends as registry
from autoinfer.errors import AutoinferError, ConfigError, InputError
from autoinfer.policy import shape_bucket
from autoinfer.verdicts import resumable


def _two_io_model(path: Path) -> Path:
    """Two inputs (float, int64), two outputs, metadata: the API surface in one model."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    z = helper.make_tensor_value_info("z", TensorProto.INT64, [2, 3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 3], [0.5, -1, 2, 3, 0.25, -4])
    g = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "w"], ["t"]),
            helper.make_node("Relu", ["t"], ["y"]),
            helper.make_node("Add", ["k", "k"], ["z"]),
        ],
        "two_io",
        [x, k],
        [y, z],
        [w],
    )
    m = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="tests",
        doc_string="doc",
        model_version=7,
    )
    helper.set_model_props(m, {"author": "autoinfer"})
    onnx.save(m, path)
    return path


@pytest.fixture()
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_session_matches_inference_session_surface(tmp_path, cache_dir):
    p = _two_io_model(tmp_path / "m.onnx")
    ref = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    s = autoinfer.Session(p, cache_dir=cache_dir, budget_s=3)
    assert s.choice.provisional and not s.choice.measured  # the safe choice, at once
    assert s.get_providers() == ["CPUExecutionProvider"]
    for a, b in zip(s.get_inputs(), ref.get_inputs(), strict=True):
        assert (a.name, a.shape, a.type) == (b.name, b.shape, b.type)
    for a, b in zip(s.get_outputs(), ref.get_outputs(), strict=True):
        assert (a.name, a.shape, a.type) == (b.name, b.shape, b.type)
    ma, mb = s.get_modelmeta(), ref.get_modelmeta()
    for f in ("producer_name", "graph_name", "domain", "description", "version", "custom_metadata_map"):
        assert getattr(ma, f) == getattr(mb, f), f
    feed = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "k": np.ones((2, 3), np.int64)}
    for names in (None, ["z"], ["z", "y"]):
        got, want = s.run(names, feed), ref.run(names, feed)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-6)
    choice = s.wait_for_choice(timeout=120)
    assert choice is not None and choice.backend in registry.names()
    assert choice.measured and not choice.provisional and s.choice == choice
    assert s.choice.backend in s.explain() and "first run()" in s.explain()
    for names in (None, ["z", "y"]):  # and the same answers on what runs after the choice
        for g, w in zip(s.run(names, feed), ref.run(names, feed), strict=True):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_session_from_bytes_and_second_session_is_cache_hit(tmp_path, cache_dir):
    p = zoo.save("tiny", tmp_path / "tiny.onnx")
    s1 = autoinfer.Session(p.read_bytes(), cache_dir=cache_dir, budget_s=3, selection="blocking")
    assert not s1.choice.from_cache and s1.choice.measured
    s2 = autoinfer.Session(p.read_bytes(), cache_dir=cache_dir, budget_s=3)
    assert s2.choice.from_cache and s2.choice.candidate == s1.choice.candidate
    # decided: nothing to measure (only a race left undecided goes on, in the background)
    assert s2.selecting == resumable(s2.decision)
    if not s2.selecting:
        assert s2.wait_for_choice(timeout=0) == s2.choice
    x = {"input": np.random.default_rng(0).random((1, 16), dtype=np.float32)}
    np.testing.assert_allclose(s1.run(None, x)[0], s2.run(None, x)[0], rtol=1e-5)


def test_bad_feeds_raise_autoinfer_errors_like_onnxruntime(tmp_path, cache_dir):
    p = _two_io_model(tmp_path / "m.onnx")
    s = autoinfer.Session(p, cache_dir=cache_dir, benchmark=False, backends=["onnxruntime"])
    good = {"x": np.zeros((2, 3), np.float32), "k": np.zeros((2, 3), np.int64)}
    with pytest.raises(InputError, match=r"Model requires 2 input\(s\).*Input Feed contains 1"):
        s.run(None, {"x": good["x"]})
    with pytest.raises(InputError, match="unknown \\['q'\\]"):
        s.run(None, {**good, "q": good["x"]})
    with pytest.raises(InputError, match="expected dtype float32.*received float64"):
        s.run(None, {**good, "x": good["x"].astype(np.float64)})
    with pytest.raises(InputError, match="expected rank 2"):
        s.run(None, {**good, "x": np.zeros((2, 3, 1), np.float32)})
    with pytest.raises(InputError, match="dimension 1 must be 3"):
        s.run(None, {**good, "x": np.zeros((2, 4), np.float32)})
    with pytest.raises(InputError, match="unknown output name 'nope'"):
        s.run(["nope"], good)
    with pytest.raises(InputError, match="dict"):
        s.run(None, [good["x"]])
    # handled like ONNX Runtime: lists convert, non-contiguous and read-only arrays work
    xs = np.zeros((3, 2), np.float32).T
    ro = np.zeros((2, 3), np.int64)
    ro.flags.writeable = False
    out = s.run(None, {"x": [[1.0, 2, 3], [4, 5, 6]], "k": ro})
    assert out[0].shape == (2, 3)
    out = s.run(None, {"x": xs, "k": ro})
    assert out[0].shape == (2, 3)
    # NaN and Inf flow through as in ONNX Runtime
    nan = np.full((2, 3), np.nan, np.float32)
    assert np.isnan(s.run(["y"], {"x": nan, "k": ro})[0]).all()
    assert isinstance(InputError("x"), AutoinferError)


def test_dynamic_model_selects_on_first_run_per_bucket_when_blocking(tmp_path, cache_dir):
    p = zoo.save("dynamic_batch", tmp_path / "d.onnx")
    s = autoinfer.Session(p, cache_dir=cache_dir, budget_s=3, selection="blocking")
    assert s.choice is None and "first run" in s.explain()
    ref = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for batch in (1, 2, 3):
        x = {"input": rng.random((batch, 3, 32, 32), dtype=np.float32)}
        np.testing.assert_allclose(s.run(None, x)[0], ref.run(None, x)[0], rtol=1e-3, atol=1e-4)
        assert s.choice is not None
    assert len(s._by_bucket) == 3  # buckets 1, 2 and 4
    assert s.choice.measured and not s.selecting
    assert s.decision.inputs == "run"  # measured on the feeds of the call that brought the shape


def test_dynamic_model_runs_at_once_and_selects_per_bucket_in_the_background(tmp_path, cache_dir):
    p = zoo.save("dynamic_batch", tmp_path / "d.onnx")
    s = autoinfer.Session(p, cache_dir=cache_dir, budget_s=2)
    # the reference runs any shape: providers and a choice from construction
    assert s.choice.provisional and s.get_providers() == ["CPUExecutionProvider"]
    ref = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    xs = [{"input": rng.random((b, 3, 32, 32), dtype=np.float32)} for b in (1, 2, 3)]
    for x in xs:
        np.testing.assert_allclose(s.run(None, x)[0], ref.run(None, x)[0], rtol=1e-3, atol=1e-4)
    assert s.wait_for_choice(timeout=180) is not None
    assert set(s._by_bucket) == {"input=1x3x32x32", "input=2x3x32x32", "input=4x3x32x32"}
    for x in xs:
        np.testing.assert_allclose(s.run(None, x)[0], ref.run(None, x)[0], rtol=1e-3, atol=1e-4)
        assert s.choice.measured and s.decision.bucket == shape_bucket(s.facts, {"input": x["input"].shape})
    s.close()


def test_providers_argument_pins_onnxruntime(tmp_path, cache_dir):
    p = zoo.save("tiny", tmp_path / "tiny.onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = autoinfer.Session(p, so, providers=["CPUExecutionProvider"], cache_dir=cache_dir)
    assert s.choice.backend == "onnxruntime" and not s.choice.measured
    assert s.get_providers() == ["CPUExecutionProvider"]


def test_unknown_keyword_and_backend_are_config_errors(tmp_path, cache_dir):
    p = zoo.save("tiny", tmp_path / "tiny.onnx")
    with pytest.raises(ConfigError, match="unexpected keyword"):
        autoinfer.Session(p, cache_dir=cache_dir, objectiv="latency")
    with pytest.raises(ConfigError, match="unknown backend"):
        autoinfer.Session(p, cache_dir=cache_dir, backends=["tensorflow"])


def test_eight_threads_match_serial_results(tmp_path, cache_dir):
    p = zoo.save("mobilenetv2", tmp_path / "mnv2.onnx")
    # blocking: the runtime stays the same between the serial and the threaded calls
    s = autoinfer.Session(p, cache_dir=cache_dir, budget_s=6, selection="blocking")
    rng = np.random.default_rng(2)
    feeds = [{"input": rng.random((1, 3, 224, 224), dtype=np.float32)} for _ in range(8)]
    serial = [s.run(None, f)[0] for f in feeds]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        for _ in range(3):
            results[i] = s.run(None, feeds[i])[0]

    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i in range(8):
        np.testing.assert_array_equal(results[i], serial[i])


@pytest.fixture()
def flaky():
    for cls in (misbehaving.FailsInProcess, misbehaving.FailsToLoad):
        registry.register(cls.name, f"misbehaving:{cls.__name__}")
    yield
    for cls in (misbehaving.FailsInProcess, misbehaving.FailsToLoad):
        registry.unregister(cls.name)


def test_winner_failing_at_run_falls_back_with_one_warning(tmp_path, cache_dir, flaky, caplog):
    p = zoo.save("tiny", tmp_path / "tiny.onnx")
    s = autoinfer.Session(
        p, cache_dir=cache_dir, backends=["fails_in_process", "onnxruntime"], benchmark=False
    )
    assert s.choice.backend == "fails_in_process"
    x = {"input": np.ones((1, 16), np.float32)}
    ref = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, x)[0]
    with caplog.at_level(logging.WARNING, logger="autoinfer"):
        outs = [s.run(None, x)[0] for _ in range(5)]
    for o in outs:
        np.testing.assert_allclose(o, ref, rtol=1e-6)
    assert s.choice.backend == "onnxruntime"
    warnings = [r for r in caplog.records if "failed during run" in r.getMessage()]
    assert len(warnings) == 1


def test_winner_failing_to_load_falls_back(tmp_path, cache_dir, flaky, caplog):
    p = zoo.save("tiny", tmp_path / "tiny.onnx")
    with caplog.at_level(logging.WARNING, logger="autoinfer"):
        s = autoinfer.Session(
            p, cache_dir=cache_dir, backends=["fails_to_load", "onnxruntime"], benchmark=False
        )
    assert s.choice.backend == "onnxruntime"
    assert any("failed to load" in r.getMessage() for r in caplog.records)
    with pytest.raises(autoinfer.NoCandidateError, match="out of device memory"):
        autoinfer.Session(p, cache_dir=cache_dir, backends=["fails_to_load"], benchmark=False)


def _sequence_and_optional(tmp_path: Path) -> Path:
    """SequenceAt(s, i), and whether the optional input o was given."""
    s = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    i = helper.make_tensor_value_info("i", TensorProto.INT64, [])
    o = helper.make_value_info(
        "o", helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2]))
    )
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    has = helper.make_tensor_value_info("has", TensorProto.BOOL, [])
    g = helper.make_graph(
        [
            helper.make_node("SequenceAt", ["s", "i"], ["y"]),
            helper.make_node("OptionalHasElement", ["o"], ["has"]),
        ],
        "g",
        [s, i, o],
        [y, has],
    )
    path = tmp_path / "seq.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_sequence_and_optional_inputs_run_as_onnx_runtime_runs_them(tmp_path: Path) -> None:
    """A list of arrays for a sequence input; an optional input given, None, or left out.
    No other runtime takes them, so the session stays on the reference and says why."""
    path = _sequence_and_optional(tmp_path)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sess = autoinfer.Session(path, cache_dir=tmp_path / "c")
    seq = [np.ones((2, 3), np.float32), np.arange(4, dtype=np.float32)]
    feeds = [
        {"s": seq, "i": np.array(1, np.int64), "o": np.ones(2, np.float32)},
        {"s": seq, "i": np.array(0, np.int64), "o": None},
        {"s": seq, "i": np.array(-1, np.int64)},
    ]
    for feed in feeds:
        got, want = sess.run(None, feed), ref.run(None, feed)
        assert len(got) == len(want) == 2
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
    assert sess.choice is not None and sess.choice.candidate.backend == "onnxruntime"
    assert sess.wait_for_choice(timeout=5) is not None  # nothing to select on
    with pytest.raises(InputError, match="'s'.*None"):
        sess.run(None, {"s": None, "i": np.array(0, np.int64)})
    with pytest.raises(InputError, match="missing \\['i'\\]"):
        sess.run(None, {"s": seq})
    from autoinfer.policy import Options, Selector

    opts = Options(input_shapes={"s": [2], "i": [], "o": [2]})  # a sequence has no shape: any will do
    ranked, unsupported = Selector(sess.facts, sess._hw, opts, sess._cache, sess._settings).rank()
    assert {r.candidate.backend for r in ranked} == {"onnxruntime"}
    others = [u for u in unsupported if u["key"] in registry.names() and u["key"] != "onnxruntime"]
    assert all(
        "sequences, optionals or maps" in u["reason"] for u in others if "not installed" not in u["reason"]
    )


def _count_checks(sess: autoinfer.Session) -> list[int]:
    """A list that grows by one at each of ``sess``'s checked-path feed validations."""
    checked: list[int] = []
    validate = sess._validate

    def counting(feed):  # noqa: ANN001, ANN202
        checked.append(1)
        return validate(feed)

    sess._validate = counting
    return checked


def test_a_static_models_calls_go_straight_to_onnx_runtime_and_keep_autoinfers_errors(tmp_path: Path):
    """A static model's plain arrays skip autoinfer's own check and ONNX Runtime's Python
    wrapper; output names pick and order the outputs as ONNX Runtime's ``run`` does, and a
    bad call (unknown output, missing input, wrong dtype or byte order) still gets
    autoinfer's error."""
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Mul", ["a", "b"], ["p"])],
        "two_outputs",
        [helper.make_tensor_value_info("a", f32, [2, 3]), helper.make_tensor_value_info("b", f32, [2, 3])],
        [helper.make_tensor_value_info("s", f32, [2, 3]), helper.make_tensor_value_info("p", f32, [2, 3])],
    )
    p = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), p)
    ref = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    sess = autoinfer.Session(p, cache_dir=tmp_path / "c", backends=["onnxruntime"], selection="off")
    checked = _count_checks(sess)
    rng = np.random.default_rng(0)
    feed = {"a": rng.random((2, 3), dtype=np.float32), "b": rng.random((2, 3), dtype=np.float32)}
    for names in (None, [], ["p"], ["p", "s"], ("s",)):
        got, want = sess.run(names, feed), ref.run(names, feed)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
    assert checked == [], "plain arrays for a static model took the checked path"
    with pytest.raises(InputError, match="unknown output name 'nope'"):
        sess.run(["nope"], feed)
    with pytest.raises(InputError, match="missing"):
        sess.run(None, {"a": feed["a"]})
    with pytest.raises(InputError):
        sess.run(None, {"a": feed["a"], "b": feed["b"].astype(np.float64)})
    # a foreign byte order, which the runtime would misread
    swapped = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in feed.items()}
    with pytest.raises(InputError, match="received >f4"):
        sess.run(["s"], swapped)
    assert len(checked) == 4
    sess.close()


def test_a_dynamic_model_called_again_with_the_same_shapes_goes_straight_to_its_runtime(tmp_path: Path):
    """After a checked call, a call with the same shapes on the same runner skips autoinfer's
    own check (the runtime checks the feed); new shapes, a swapped runner or a bad feed take
    the checked path again, with autoinfer's errors."""
    p = zoo.save("dynamic_batch", tmp_path / "d.onnx")
    ref = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    sess = autoinfer.Session(p, cache_dir=tmp_path / "c", backends=["onnxruntime"], selection="off")
    checked = _count_checks(sess)
    rng = np.random.default_rng(0)
    x2 = {"input": rng.random((2, 3, 32, 32), dtype=np.float32)}
    x3 = {"input": rng.random((3, 3, 32, 32), dtype=np.float32)}
    for feed, checks in ((x2, 1), (x2, 1), (x2, 1), (x3, 2), (x3, 2), (x2, 3)):
        np.testing.assert_allclose(sess.run(None, feed)[0], ref.run(None, feed)[0], rtol=1e-5, atol=1e-6)
        assert len(checked) == checks, (feed["input"].shape, checked)
    with pytest.raises(InputError):  # the same shape but the wrong dtype: autoinfer's error
        sess.run(None, {"input": x2["input"].astype(np.float64)})
    sess.close()
    with pytest.raises(AutoinferError):
        sess.run(None, x2)


def _native_objects(runner) -> list:
    """The runtime's own objects behind a runner: what holds the model's memory."""
    if hasattr(runner, "compiled"):  # OpenVINO: the compiled model and its idle requests
        reqs = []
        while True:
            try:
                reqs.append(runner._idle.get_nowait())
            except queue.Empty:
                break
        for r in reqs:
            runner._idle.put(r)
        assert reqs, "a run leaves an idle infer request"
        return [runner.compiled, *reqs]
    return [runner.session._sess]  # ONNX Runtime: the binding's session


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_close_frees_the_runtime_at_once(backend, tmp_path, cache_dir):
    """close() lets go of the runtime's objects (the model's memory) while the Session
    object lives on, and a Session dropped unclosed frees them by reference counting,
    without waiting for the garbage collector. The fast path once kept ONNX Runtime's
    session alive after close(), and OpenVINO's idle requests kept its model."""
    p = _two_io_model(tmp_path / "m.onnx")
    feed = {"x": np.ones((2, 3), np.float32), "k": np.ones((2, 3), np.int64)}
    gc.collect()
    gc.disable()
    try:
        for close in (True, False):
            s = autoinfer.Session(str(p), cache_dir=cache_dir, selection="off", backends=[backend])
            s.run(None, feed)
            s.run(["y"], feed)
            refs = [weakref.ref(o) for o in _native_objects(s._active.runner)]
            if close:
                s.close()
                alive = [r() for r in refs if r() is not None]
                assert not alive, f"closed: still alive: {alive}"
                assert s.choice is not None and s.choice.backend == backend  # still says what ran
                with pytest.raises(AutoinferError, match="closed"):
                    s.run(None, feed)
            del s
            alive = [r() for r in refs if r() is not None]
            assert not alive, f"dropped: still alive: {alive}"
    finally:
        gc.enable()
