"""Concurrency: threads sharing one Session, processes sharing one cold cache, and a
cache cleared by another process while sessions open."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import autoinfer
from autoinfer.backends.onnxruntime import import_ort
from autoinfer.cache import Cache

ort = import_ort()  # ONNX Runtime itself, with its telemetry off

BACKENDS = ["onnxruntime", "openvino", "ncnn"]
SHAPE = (1, 3, 16, 16)


def _cnn(batch: Any = 1) -> onnx.ModelProto:
    """Conv 3->8 3x3, Relu, Conv 8->4 3x3 stride 2, Sigmoid: enough work to overlap."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w1"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b1"),
        numpy_helper.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32) * 0.3, "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Sigmoid", ["c2"], ["output"]),
    ]
    g = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 4, 8, 8])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: Any) -> Path:
    p = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    onnx.save(_cnn(), str(p))
    return p


@pytest.fixture(scope="module")
def dynamic_cnn(tmp_path_factory: Any) -> Path:
    p = tmp_path_factory.mktemp("cnn") / "dynamic_cnn.onnx"
    onnx.save(_cnn("N"), str(p))
    return p


def _feeds(n: int, batch: int = 1, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"input": rng.standard_normal((batch, 3, 16, 16), dtype=np.float32)} for _ in range(n)]


def _hammer(
    session: Any, feeds: list[dict[str, np.ndarray]], rounds: int = 4
) -> tuple[dict[int, list[np.ndarray]], list[BaseException]]:
    """8 threads, each running its own feed ``rounds`` times, all released at once."""
    results: dict[int, list[np.ndarray]] = {i: [] for i in range(len(feeds))}
    errors: list[BaseException] = []
    start = threading.Barrier(len(feeds))

    def work(i: int) -> None:
        try:
            start.wait()
            for _ in range(rounds):
                results[i].append(session.run(None, feeds[i])[0])
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(feeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung in run()"
    return results, errors


def _assert_close(got: np.ndarray, want: np.ndarray, exact: bool) -> None:
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS + ["winner"])
def test_eight_threads_match_serial_calls(cnn: Path, tmp_path: Path, backend: str) -> None:
    if backend == "winner":
        s = autoinfer.Session(cnn, cache_dir=tmp_path / "cache", budget_s=2, selection="blocking")
        assert s.choice is not None and s.choice.measured
    else:
        s = autoinfer.Session(cnn, cache_dir=tmp_path / "cache", benchmark=False, backends=[backend])
        assert s.choice is not None and s.choice.backend == backend
    feeds = _feeds(8)
    serial = [s.run(None, f)[0] for f in feeds]
    ref = ort.InferenceSession(str(cnn), providers=["CPUExecutionProvider"])
    for f, y in zip(feeds, serial, strict=True):
        np.testing.assert_allclose(y, ref.run(None, f)[0], rtol=1e-4, atol=1e-5)
    results, errors = _hammer(s, feeds)
    assert not errors, errors
    for i, outs in results.items():
        assert len(outs) == 4
        for y in outs:
            # the same runtime on the same input: ONNX Runtime's CPU kernels are
            # deterministic; the others may split work differently under load
            _assert_close(y, serial[i], exact=s.choice.backend == "onnxruntime")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_threads_with_different_batch_sizes_select_once_per_bucket(
    dynamic_cnn: Path, tmp_path: Path, backend: str
) -> None:
    """A dynamic model selects on first run(); 8 threads arriving at once with 8 batch
    sizes (4 buckets) must each get their own correct outputs."""
    s = autoinfer.Session(dynamic_cnn, cache_dir=tmp_path / "cache", benchmark=False, backends=[backend])
    assert s.choice is None
    feeds = [_feeds(1, batch=b, seed=b)[0] for b in range(1, 9)]
    results, errors = _hammer(s, feeds, rounds=2)
    assert not errors, errors
    ref = ort.InferenceSession(str(dynamic_cnn), providers=["CPUExecutionProvider"])
    for i, outs in results.items():
        want = ref.run(None, feeds[i])[0]
        for y in outs:
            assert y.shape == want.shape
            np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
    assert len(s._by_bucket) == 4  # batch 1, 2, 3-4, 5-8


# -- processes ---------------------------------------------------------------------------
_OPENER = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    from autoinfer.backends.onnxruntime import import_ort  # telemetry-free, as autoinfer
    from autoinfer.backends.openvino import import_openvino
    import_ort(); import_openvino()  # imported before the start line, so all start together
    import autoinfer, autoinfer.session, autoinfer.policy, probes
    probes.detect()
    model, cache, go = sys.argv[1:4]
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.002)
    s = autoinfer.Session(model, cache_dir=cache, budget_s=2, selection="blocking",
                          backends=["onnxruntime", "openvino"])
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16), dtype=np.float32)
    y = s.run(None, {"input": x})[0]
    print(json.dumps({"from_cache": s.choice.from_cache, "measured": s.choice.measured,
                      "winner": s.choice.candidate.key, "y": y.ravel().tolist()}), flush=True)
""")


def _all_json_intact(cache: Path) -> None:
    c = Cache(cache)
    for f in cache.rglob("*.json"):
        if "artifacts" in f.parts:
            continue  # the runtimes' own manifests
        json.loads(f.read_text())
        assert c.read_json(f) is not None, f"{f} does not pass autoinfer's own check"
    left = [str(p) for p in cache.rglob(".tmp-*")]
    assert not left, f"half-written files left behind: {left}"


def test_four_processes_on_a_cold_cache_measure_once(cnn: Path, tmp_path: Path) -> None:
    cache, go = tmp_path / "cache", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER, str(cnn), str(cache), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for p in procs:  # every process has imported everything: start them together
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        go.touch()
        answers = []
        for p in procs:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, err[-3000:]
            answers.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    fresh = [a for a in answers if not a["from_cache"]]
    assert len(fresh) == 1, f"{len(fresh)} processes selected; the others must wait and reuse"
    assert all(a["measured"] for a in answers)
    assert len({a["winner"] for a in answers}) == 1
    for a in answers[1:]:
        np.testing.assert_array_equal(np.array(a["y"]), np.array(answers[0]["y"]))
    decisions = list((cache / "decisions").iterdir())
    assert len(decisions) == 1, decisions
    _all_json_intact(cache)


_CLEARER = textwrap.dedent("""
    import sys, time
    from autoinfer.cache import Cache
    from autoinfer.errors import CacheError
    cache, stop = Cache(__import__("pathlib").Path(sys.argv[1])), sys.argv[2]
    n = 0
    print("ready", flush=True)
    while not __import__("os").path.exists(stop):
        try:
            cache.clear()
            n += 1
        except CacheError:
            pass
        time.sleep(0.001)
    print(n, flush=True)
""")


@pytest.mark.parametrize("source", ["path", "bytes"])
def test_sessions_open_and_run_while_another_process_clears_the_cache(
    cnn: Path, tmp_path: Path, source: str
) -> None:
    cache, stop = tmp_path / "cache", tmp_path / "stop"
    ref = ort.InferenceSession(str(cnn), providers=["CPUExecutionProvider"])
    feeds = _feeds(2, seed=5)
    clearer = subprocess.Popen(
        [sys.executable, "-c", _CLEARER, str(cache), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert clearer.stdout is not None and clearer.stdout.readline().strip() == "ready"
        src: Any = cnn if source == "path" else cnn.read_bytes()
        deadline = time.monotonic() + 6
        opened = 0
        while time.monotonic() < deadline or opened < 4:
            for backend in BACKENDS:
                s = autoinfer.Session(src, cache_dir=cache, benchmark=False, backends=[backend])
                for f in feeds:
                    np.testing.assert_allclose(s.run(None, f)[0], ref.run(None, f)[0], rtol=1e-4, atol=1e-5)
                s.close()
                opened += 1
        # and one measured selection
        s = autoinfer.Session(src, cache_dir=cache, budget_s=2, backends=["onnxruntime", "openvino"])
        np.testing.assert_allclose(s.run(None, feeds[0])[0], ref.run(None, feeds[0])[0], rtol=1e-4, atol=1e-5)
        choice = s.wait_for_choice(timeout=120)  # the selection runs in the background
        assert choice is not None and choice.measured, s.explain()
        np.testing.assert_allclose(s.run(None, feeds[1])[0], ref.run(None, feeds[1])[0], rtol=1e-4, atol=1e-5)
        s.close()
    finally:
        stop.touch()
        out, err = clearer.communicate(timeout=30)
    assert clearer.returncode == 0, err
    assert int(out.strip().splitlines()[-1]) > 10, "the cache was hardly cleared"
    if cache.exists():
        assert not list(cache.rglob(".tmp-*"))
