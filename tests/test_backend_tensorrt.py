"""The TensorRT backend.

No GPU, TensorRT or cuda-python exists where these tests run: every test named
``test_fake_trt_*`` runs the backend against the fakes in ``tests/fakes``
(TensorRT 8.6/10.x and cuda-python emulated with NumPy, the engine computing
with ONNX Runtime). They check the wiring: availability rules, candidates,
profiles, engine cache, buffer sizes and copies, output order and dtypes,
error translation, threads. docs/tensorrt.md says what they cannot check.
"""

from __future__ import annotations

import gc
import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import fakes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fakes.fake_cuda import cudaError_t
from fakes.fake_tensorrt import BuilderFlag, engine_header
from onnx import TensorProto, helper, numpy_helper

from autoinfer import backends as registry
from autoinfer.backends import tensorrt as trt_backend
from autoinfer.backends.base import Candidate, LoadContext, Unsupported
from autoinfer.errors import BackendError, BackendUnavailable, InputError, UnsupportedModel
from autoinfer.model import load_facts

CU12 = {"tensorrt": "10.3.0", "tensorrt-cu12": "10.3.0", "cuda-python": "12.6.0"}
RNG = np.random.default_rng(0)


# -- models ----------------------------------------------------------------------------------------


def _save(model: onnx.ModelProto, path: Path, opset: int = 17) -> Path:
    model.opset_import[0].version = opset
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32) * 0.3


def small_cnn(path: Path) -> Path:
    """image[1,3,16,16] -> Conv/Relu -> Conv(stride 2) -> GAP -> Gemm -> (logits, features)."""
    inits = [
        numpy_helper.from_array(_w(8, 3, 3, 3), "w1"),
        numpy_helper.from_array(_w(8), "b1"),
        numpy_helper.from_array(_w(16, 8, 3, 3), "w2"),
        numpy_helper.from_array(_w(10, 16), "wf"),
        numpy_helper.from_array(_w(10), "bf"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["features"]),
        helper.make_node("Conv", ["features", "w2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 8, 16, 16]),
        ],
        inits,
    )
    return _save(helper.make_model(graph), path)


def dynamic_batch(path: Path) -> Path:
    """x[N,3,8,8] float, idx[N] int64 -> scores[N,6] float, best[N] int64."""
    table = numpy_helper.from_array(_w(5, 6), "table")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("ReduceMean", ["r"], ["m"], axes=[2, 3], keepdims=0),
        helper.make_node("Gather", ["table", "idx"], ["t"], axis=0),
        helper.make_node("Add", ["m", "t"], ["scores"]),
        helper.make_node("ArgMax", ["scores"], ["best"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "dyn",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, ["N"]),
        ],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 6]),
            helper.make_tensor_value_info("best", TensorProto.INT64, ["N"]),
        ],
        [numpy_helper.from_array(_w(6, 3, 3, 3), "w"), table],
    )
    return _save(helper.make_model(graph), path, opset=13)


def with_op(path: Path, op: str) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node(op, ["r"], ["y"])],
        "op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
    )
    return _save(helper.make_model(graph), path)


def nonzero(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("NonZero", ["x"], ["y"])],
        "nz",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [1, None])],
    )
    return _save(helper.make_model(graph), path)


def qdq(path: Path) -> Path:
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        inits,
    )
    return _save(helper.make_model(graph), path)


def reference(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.fixture()
def backend() -> trt_backend.TensorRTBackend:
    return trt_backend.TensorRTBackend()


def ctx(tmp_path: Path, hw=None, **kw) -> LoadContext:
    return LoadContext(artifact_dir=tmp_path / "artifacts", hardware=hw, **kw)


def dyn_feeds(n: int) -> dict[str, np.ndarray]:
    return {
        "x": RNG.standard_normal((n, 3, 8, 8)).astype(np.float32),
        "idx": RNG.integers(0, 5, size=n).astype(np.int64),
    }


# -- import and registry ---------------------------------------------------------------------------


def test_import_does_not_import_tensorrt_or_cuda() -> None:
    code = (
        "import sys\n"
        "class Trap:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorrt', 'cuda'):\n"
        "            raise AssertionError('imported ' + name)\n"
        "sys.meta_path.insert(0, Trap())\n"
        "import autoinfer\n"
        "from autoinfer import backends\n"
        "b = backends.get('tensorrt')\n"
        "assert type(b).__name__ == 'TensorRTBackend'\n"
        "assert not any(m.split('.')[0] in ('tensorrt', 'cuda') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_registered_under_its_package_name(backend) -> None:
    assert isinstance(registry.get("tensorrt"), trt_backend.TensorRTBackend)
    assert (backend.name, backend.package, backend.pip_extra) == ("tensorrt",) * 3


# -- availability ----------------------------------------------------------------------------------


def test_availability_when_not_installed(backend, monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as if absent, even on a GPU machine
    hw = fakes.machine(fakes.H100)
    av = backend.availability(hw)
    assert (av.installed, av.usable) == (False, False)
    assert 'pip install "autoinfer[tensorrt]"' in av.fix and "NVIDIA" in av.fix
    [problem] = backend.diagnose(hw)
    assert problem.severity == "info" and "autoinfer[tensorrt]" in problem.fix
    [u] = backend.candidates(load_facts(small_cnn(tmp_path / "m.onnx")), hw, "latency")
    assert isinstance(u, Unsupported) and "not installed" in u.reason


def test_fake_trt_availability_no_gpu(backend, monkeypatch) -> None:
    env = fakes.install(monkeypatch, [], dists=CU12)
    av = backend.availability(fakes.machine())
    assert (av.installed, av.usable, av.reason) == (True, False, "no NVIDIA GPU")
    assert av.version == "10.3.0"
    assert backend.diagnose(fakes.machine())[0].severity == "info"
    assert env.builds == 0


def test_fake_trt_availability_h100(backend, monkeypatch) -> None:
    fakes.install(monkeypatch, [fakes.H100], dists=CU12)
    av = backend.availability(fakes.machine(fakes.H100))
    assert (av.installed, av.usable, av.devices, av.version) == (True, True, ("cuda:0",), "10.3.0")
    assert backend.diagnose(fakes.machine(fakes.H100)) == []


@pytest.mark.parametrize("version, usable", [("10.3.0", False), ("8.6.1", True)])
def test_fake_trt_availability_old_gpu(backend, monkeypatch, version, usable) -> None:
    fakes.install(monkeypatch, [fakes.OLD_GPU], trt_version=version)
    av = backend.availability(fakes.machine(fakes.OLD_GPU))
    assert av.usable is usable
    if not usable:
        assert "compute capability 5.0" in av.reason and "7.0" in av.reason
        assert "tensorrt==8.6" in av.fix
    else:
        assert av.devices == ("cuda:1",)


def test_fake_trt_availability_skips_only_the_unsupported_gpu(backend, monkeypatch) -> None:
    fakes.install(monkeypatch, [fakes.H100, fakes.OLD_GPU], dists=CU12)
    hw = fakes.machine(fakes.H100, fakes.OLD_GPU)
    av = backend.availability(hw)
    assert av.usable and av.devices == ("cuda:0",)
    [warning] = backend.diagnose(hw)
    assert warning.severity == "warning" and "cuda:1" in warning.message


def test_fake_trt_availability_driver_too_old(backend, monkeypatch, tmp_path) -> None:
    fakes.install(monkeypatch, [fakes.H100], dists=CU12)
    old_driver = fakes.H100.__class__(
        **{**fakes.H100.__dict__, "driver_version": "470.82.01", "cuda_driver_version": "11.4"}
    )
    hw = fakes.machine(old_driver)
    av = backend.availability(hw)
    assert av.installed and not av.usable
    assert "11.4" in av.reason and "CUDA 12" in av.reason
    assert "525.60.13" in av.fix and "tensorrt-cu11" in av.fix
    [problem] = backend.diagnose(hw)
    assert problem.severity == "error" and problem.fix == av.fix
    out = backend.candidates(load_facts(small_cnn(tmp_path / "m.onnx")), hw, "latency")
    assert out and all(isinstance(u, Unsupported) and "driver" in u.reason for u in out)


def test_fake_trt_availability_without_cuda_python(backend, monkeypatch) -> None:
    fakes.install(monkeypatch, [fakes.H100], with_cuda=False)
    av = backend.availability(fakes.machine(fakes.H100))
    assert av.installed and not av.usable
    assert "cuda-python" in av.reason and "autoinfer[tensorrt]" in av.fix


def test_availability_never_raises(backend, monkeypatch) -> None:
    fakes.install(monkeypatch, [fakes.H100])
    monkeypatch.setattr(trt_backend, "_installed_dists", lambda: 1 / 0)
    av = backend.availability(fakes.machine(fakes.H100))
    assert not av.usable and "ZeroDivisionError" in av.reason


# -- candidates, estimates, variants ---------------------------------------------------------------


def test_fake_trt_candidates_h100(backend, monkeypatch, tmp_path) -> None:
    fakes.install(monkeypatch, [fakes.H100])
    out = backend.candidates(load_facts(small_cnn(tmp_path / "m.onnx")), fakes.machine(fakes.H100), "latency")
    assert [(c.device, c.precision) for c in out if isinstance(c, Candidate)] == [
        ("cuda:0", "fp16"),
        ("cuda:0", "fp32"),
    ]
    [int8] = [c for c in out if isinstance(c, Unsupported)]
    assert int8.precision == "int8" and "calibration" in int8.reason


def test_fake_trt_candidates_old_gpu_has_no_fp16(backend, monkeypatch, tmp_path) -> None:
    fakes.install(monkeypatch, [fakes.OLD_GPU], trt_version="8.6.1")
    out = backend.candidates(
        load_facts(small_cnn(tmp_path / "m.onnx")), fakes.machine(fakes.OLD_GPU), "latency"
    )
    assert [c.precision for c in out if isinstance(c, Candidate)] == ["fp32"]
    reasons = {c.precision: c.reason for c in out if isinstance(c, Unsupported)}
    assert "5.3" in reasons["fp16"] and "calibration" in reasons["int8"]


def test_fake_trt_candidates_per_gpu(backend, monkeypatch, tmp_path) -> None:
    fakes.install(monkeypatch, [fakes.H100, fakes.OLD_GPU])
    out = backend.candidates(
        load_facts(small_cnn(tmp_path / "m.onnx")), fakes.machine(fakes.H100, fakes.OLD_GPU), "throughput"
    )
    assert {c.device for c in out if isinstance(c, Candidate)} == {"cuda:0"}
    old = [c for c in out if c.device == "cuda:1"]
    assert old and all(isinstance(c, Unsupported) and "compute capability 5.0" in c.reason for c in old)


def test_fake_trt_candidates_int8_for_quantized_models(backend, monkeypatch, tmp_path) -> None:
    fakes.install(monkeypatch, [fakes.T4])
    out = backend.candidates(load_facts(qdq(tmp_path / "q.onnx")), fakes.machine(fakes.T4), "latency")
    assert "int8" in [c.precision for c in out if isinstance(c, Candidate)]


def test_estimate_fp16_tensor_cores_and_small_models(backend, tmp_path) -> None:
    hw = fakes.machine(fakes.H100)
    small = load_facts(small_cnn(tmp_path / "m.onnx"))
    big = small.__class__(
        **{**small.__dict__, "flops": 20_000_000_000, "op_histogram": (("Conv", 50), ("Relu", 50))}
    )
    e32 = backend.estimate(Candidate.make("tensorrt", "cuda:0", "fp32"), big, hw, "latency")
    e16 = backend.estimate(Candidate.make("tensorrt", "cuda:0", "fp16"), big, hw, "latency")
    assert e16.cost < e32.cost < 0.2
    assert any("tensor cores" in r for r in e16.reasons)
    tiny = backend.estimate(Candidate.make("tensorrt", "cuda:0", "fp16"), small, hw, "latency")
    assert tiny.cost > e16.cost and any("launches" in r for r in tiny.reasons)
    load = backend.estimate(Candidate.make("tensorrt", "cuda:0", "fp16"), big, hw, "load_time")
    assert load.cost > 10 and any("builds" in r for r in load.reasons)
    mem = backend.estimate(Candidate.make("tensorrt", "cuda:0", "fp16"), small, hw, "memory")
    assert mem.cost > 1
    # fp16 without tensor cores buys little
    pascal = fakes.OLD_GPU.__class__(**{**fakes.OLD_GPU.__dict__, "compute_capability": (6, 1)})
    hw_p = fakes.machine(pascal)
    p16 = backend.estimate(Candidate.make("tensorrt", "cuda:1", "fp16"), big, hw_p, "latency")
    p32 = backend.estimate(Candidate.make("tensorrt", "cuda:1", "fp32"), big, hw_p, "latency")
    assert p16.cost == pytest.approx(p32.cost, rel=0.05)
    assert any("no tensor cores" in r for r in p16.reasons)
    missing = backend.estimate(Candidate.make("tensorrt", "cuda:7", "fp32"), big, hw, "latency")
    assert missing.cost >= 100


def test_variants_are_few_and_valid(backend, tmp_path) -> None:
    facts = load_facts(small_cnn(tmp_path / "m.onnx"))
    hw = fakes.machine(fakes.H100)
    base = Candidate.make("tensorrt", "cuda:0", "fp32")
    lat = backend.variants(base, facts, hw, "latency")
    assert lat == [base.with_settings(opt_level=5), base.with_settings(tf32=True)]
    assert backend.variants(base, facts, hw, "load_time") == [base.with_settings(opt_level=1)]
    assert all(
        len(backend.variants(base, facts, hw, o)) <= 3
        for o in ("latency", "throughput", "load_time", "memory")
    )
    for v in backend.variants(base, facts, hw, "memory"):
        trt_backend._check_settings(v)


# -- loading and running ---------------------------------------------------------------------------


def test_fake_trt_cnn_outputs_match_onnxruntime(backend, monkeypatch, tmp_path) -> None:
    env = fakes.install(monkeypatch, [fakes.H100])
    path = small_cnn(tmp_path / "cnn.onnx")
    facts = load_facts(path)
    hw = fakes.machine(fakes.H100)
    cand = Candidate.make("tensorrt", "cuda:0", "fp32")
    with backend.load(cand, facts, ctx(tmp_path, hw)) as runner:
        assert runner.output_names == ("logits", "features")
        x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
        got = runner.run({"image": x})
        want = reference(path, {"image": x})
        assert [g.shape for g in got] == [(1, 10), (1, 8, 16, 16)]
        assert [g.dtype for g in got] == [np.float32, np.float32]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
        assert runner.run({"image": x})[0].tolist() == got[0].tolist()  # buffers reused cleanly
    assert BuilderFlag.TF32 not in env.last_build["flags"]  # fp32 means fp32
    assert BuilderFlag.FP16 not in env.last_build["flags"]
    assert env.cuda.pageable_copies == 0  # staged through page-locked memory
    assert env.cuda.device_bytes_in_use == 0 and not env.cuda.pinned and not env.cuda.streams


def test_fake_trt_fp16_and_settings_reach_the_builder(backend, monkeypatch, tmp_path) -> None:
    env = fakes.install(monkeypatch, [fakes.H100])
    path = small_cnn(tmp_path / "cnn.onnx")
    cand = Candidate.make("tensorrt", "cuda:0", "fp16", opt_level=5, workspace_mb=64)
    with backend.load(cand, load_facts(path), ctx(tmp_path, fakes.machine(fakes.H100))) as r:
        x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
        got, want = r.run({"image": x}), reference(path, {"image": x})
        assert got[0].dtype == np.float32  # I/O keeps the model's types
        np.testing.assert_allclose(got[0], want[0], rtol=1e-2, atol=1e-2)
    assert BuilderFlag.FP16 in env.last_build["flags"]
    assert env.last_build["opt_level"] == 5
    assert list(env.last_build["pools"].values()) == [64 << 20]
    tf32 = Candidate.make("tensorrt", "cuda:0", "fp32", tf32=True)
    backend.load(tf32, load_facts(path), ctx(tmp_path, fakes.machine(fakes.H100))).close()
    assert BuilderFlag.TF32 in env.last_build["flags"]


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0"])
def test_fake_trt_dynamic_batch_at_two_sizes(backend, monkeypatch, tmp_path, version) -> None:
    env = fakes.install(monkeypatch, [fakes.H100], trt_version=version)
    path = dynamic_batch(tmp_path / "dyn.onnx")
    facts = load_facts(path)
    c = ctx(tmp_path, fakes.machine(fakes.H100), input_shapes={"x": (2, 3, 8, 8), "idx": (2,)})
    runner = backend.load(Candidate.make("tensorrt", "cuda:0", "fp32"), facts, c)
    [profile] = env.last_build["profiles"]
    assert profile["x"] == ((1, 3, 8, 8), (2, 3, 8, 8), (8, 3, 8, 8))
    assert profile["idx"] == ((1,), (2,), (8,))
    header = engine_header(runner.engine_path)
    int_type = 3 if version.startswith("8.") else 8  # 8.x casts int64 I/O to int32
    assert dict((n, d) for n, d, _ in header["inputs"])["idx"] == int_type
    for n in (2, 5, 8, 1):
        feeds = dyn_feeds(n)
        scores, best = runner.run(feeds)
        want_scores, want_best = reference(path, feeds)
        assert scores.shape == (n, 6) and best.shape == (n,)
        assert best.dtype == np.int64 and scores.dtype == np.float32
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(best, want_best)
    with pytest.raises(InputError, match=r"\[1, 3, 8, 8\] to \[8, 3, 8, 8\]"):
        runner.run(dyn_feeds(9))
    runner.run(dyn_feeds(3))  # still usable after a rejected feed
    runner.close()


def test_fake_trt_dynamic_model_needs_input_shapes(backend, monkeypatch, tmp_path) -> None:
    env = fakes.install(monkeypatch, [fakes.H100])
    facts = load_facts(dynamic_batch(tmp_path / "dyn.onnx"))
    with pytest.raises(UnsupportedModel, match="needs input_shapes") as info:
        backend.load(
            Candidate.make("tensorrt", "cuda:0", "fp32"), facts, ctx(tmp_path, fakes.machine(fakes.H100))
        )
    assert info.value.backend == "tensorrt" and env.builds == 0
    with pytest.raises(UnsupportedModel, match="fixed at 3"):
        backend.load(
            Candidate.make("tensorrt", "cuda:0", "fp32"),
            facts,
            ctx(tmp_path, fakes.machine(fakes.H100), input_shapes={"x": (2, 4, 8, 8), "idx": (2,)}),
        )


def test_fake_trt_runner_trusts_its_feeds_and_keeps_the_engines_own_checks(
    backend, monkeypatch, tmp_path
) -> None:
    """The Session checks feeds (names, dtypes, ranks, fixed dimensions); the runner does not
    check them again, and keeps what the engine itself needs: a shape it was not built for
    is an InputError, and the runner stays usable after it."""
    fakes.install(monkeypatch, [fakes.H100])
    path = small_cnn(tmp_path / "cnn.onnx")
    good = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with backend.load(
        Candidate.make("tensorrt", "cuda:0", "fp32"),
        load_facts(path),
        ctx(tmp_path, fakes.machine(fakes.H100)),
    ) as r:
        with pytest.raises(InputError, match=r"the TensorRT engine rejects shape \[2, 3, 16, 16\]"):
            r.run({"image": np.zeros((2, 3, 16, 16), np.float32)})
        for got, want in zip(r.run({"image": good}), reference(path, {"image": good}), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# -- the engine cache ------------------------------------------------------------------------------


def _load(backend, tmp_path, path, **kw):
    return backend.load(
        Candidate.make("tensorrt", "cuda:0", "fp32", **kw),
        load_facts(path),
        ctx(tmp_path, fakes.machine(fakes.H100)),
    )


def test_fake_trt_engine_is_built_once_and_cached(backend, monkeypatch, tmp_path) -> None:
    env = fakes.install(monkeypatch, [fakes.H100])
    path = small_cnn(tmp_path / "cnn.onnx")
    first = _load(backend, tmp_path, path)
    assert first.built and env.builds == 1
    manifest = json.loads(first.engine_path.with_suffix(".json").read_text())
    assert manifest["bytes"] == first.engine_path.stat().st_size
    assert manifest["key"]["candidate"] == "tensorrt:cuda:0:fp32"
    assert manifest["key"]["gpu"] == {"name": fakes.H100.name, "cc": [9, 0]}
    first.close()
    second = _load(backend, tmp_path, path)
    assert not second.built and env.builds == 1 and second.engine_path == first.engine_path
    x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(
        second.run({"image": x})[0], reference(path, {"image": x})[0], rtol=1e-5, atol=1e-5
    )
    second.close()
    other = _load(backend, tmp_path, path, opt_level=5)  # another candidate: another engine
    assert other.built and env.builds == 2 and other.engine_path != first.engine_path
    other.close()
    assert not list((tmp_path / "artifacts").glob("*.tmp"))


def test_fake_trt_corrupted_engine_is_rebuilt(backend, monkeypatch, tmp_path) -> None:
    env = fakes.install(monkeypatch, [fakes.H100])
    path = small_cnn(tmp_path / "cnn.onnx")
    engine = _load(backend, tmp_path, path)
    engine.close()
    data = bytearray(engine.engine_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    engine.engine_path.write_bytes(bytes(data))
    again = _load(backend, tmp_path, path)
    assert again.built and env.builds == 2
    again.close()
    assert not _load(backend, tmp_path, path).built  # the rebuilt engine is cached again


def test_fake_trt_undeserializable_engine_is_rebuilt(backend, monkeypatch, tmp_path) -> None:
    """A file whose hash matches but which TensorRT refuses (e.g. written by another build)."""
    env = fakes.install(monkeypatch, [fakes.H100])
    path = small_cnn(tmp_path / "cnn.onnx")
    engine = _load(backend, tmp_path, path)
    engine.close()
    junk = b"not an engine" * 10
    manifest_path = engine.engine_path.with_suffix(".json")
    manifest = json.loads(manifest_path.read_text())
    manifest.update(sha256=hashlib.sha256(junk).hexdigest(), bytes=len(junk))
    engine.engine_path.write_bytes(junk)
    manifest_path.write_text(json.dumps(manifest))
    again = _load(backend, tmp_path, path)
    assert again.built and env.builds == 2 and env.deserializations == 3
    again.close()


# -- failures --------------------------------------------------------------------------------------


def test_fake_trt_parse_failure_is_unsupported_model(backend, monkeypatch, tmp_path) -> None:
    env = fakes.install(monkeypatch, [fakes.H100], unsupported_ops=frozenset({"Celu"}))
    facts = load_facts(with_op(tmp_path / "celu.onnx", "Celu"))
    with pytest.raises(UnsupportedModel) as info:
        backend.load(
            Candidate.make("tensorrt", "cuda:0", "fp32"), facts, ctx(tmp_path, fakes.machine(fakes.H100))
        )
    assert "UNSUPPORTED_NODE" in info.value.reason and "Celu" in info.value.reason
    assert "node 1" in info.value.reason and env.builds == 0


def test_fake_trt_build_failure_is_backend_error(backend, monkeypatch, tmp_path) -> None:
    fakes.install(
        monkeypatch,
        [fakes.H100],
        fail_build="Error Code 10: Internal Error (Could not find any implementation)",
    )
    with pytest.raises(BackendError, match="Could not find any implementation"):
        _load(backend, tmp_path, small_cnn(tmp_path / "cnn.onnx"))
    assert not list((tmp_path / "artifacts").glob("*.engine"))


def test_fake_trt_build_out_of_memory(backend, monkeypatch, tmp_path) -> None:
    fakes.install(monkeypatch, [fakes.H100], build_oom=True)
    with pytest.raises(BackendError, match="out of GPU memory"):
        _load(backend, tmp_path, small_cnn(tmp_path / "cnn.onnx"))


def test_fake_trt_build_timeout_cancels(backend, monkeypatch, tmp_path) -> None:
    fakes.install(monkeypatch, [fakes.H100], build_step_s=0.3)
    facts = load_facts(small_cnn(tmp_path / "cnn.onnx"))
    with pytest.raises(BackendError, match="longer than 0.2 s"):
        backend.load(
            Candidate.make("tensorrt", "cuda:0", "fp32"),
            facts,
            ctx(tmp_path, fakes.machine(fakes.H100), timeout_s=0.2),
        )


def test_fake_trt_out_of_device_memory(backend, monkeypatch, tmp_path) -> None:
    small = fakes.device_of(fakes.H100, memory_bytes=10 << 10)  # the 8 KiB output does not fit
    env = fakes.install(monkeypatch, [fakes.H100], cuda_devices=[small], activation_bytes=1 << 10)
    with pytest.raises(BackendError, match="out of GPU memory") as info:
        _load(backend, tmp_path, small_cnn(tmp_path / "cnn.onnx"))
    assert "cudaErrorMemoryAllocation" in str(info.value)
    assert env.cuda.device_bytes_in_use == 0 and not env.cuda.pinned and not env.cuda.streams


def test_fake_trt_no_memory_for_a_context(backend, monkeypatch, tmp_path) -> None:
    fakes.install(monkeypatch, [fakes.H100], activation_bytes=1 << 60)
    with pytest.raises(BackendError, match="out of GPU memory"):
        _load(backend, tmp_path, small_cnn(tmp_path / "cnn.onnx"))


def test_fake_trt_cuda_error_names_the_error(backend, monkeypatch, tmp_path) -> None:
    env = fakes.install(monkeypatch, [fakes.H100])
    path = small_cnn(tmp_path / "cnn.onnx")
    with _load(backend, tmp_path, path) as runner:
        env.cuda.fail_next["cudaMemcpyAsync"] = cudaError_t.cudaErrorIllegalAddress
        x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
        with pytest.raises(BackendError, match="cudaErrorIllegalAddress"):
            runner.run({"image": x})
        # the context that failed is dropped; a fresh one serves the next call
        np.testing.assert_allclose(
            runner.run({"image": x})[0], reference(path, {"image": x})[0], rtol=1e-5, atol=1e-5
        )


def test_fake_trt_data_dependent_output_is_unsupported(backend, monkeypatch, tmp_path) -> None:
    env = fakes.install(monkeypatch, [fakes.H100])
    with pytest.raises(UnsupportedModel, match="data-dependent"):
        _load(backend, tmp_path, nonzero(tmp_path / "nz.onnx"))
    assert env.cuda.device_bytes_in_use == 0


def test_unknown_settings_are_backend_errors(backend, tmp_path) -> None:
    facts = load_facts(small_cnn(tmp_path / "cnn.onnx"))
    for bad in ({"threads": 2}, {"opt_level": 9}, {"tf32": "yes"}):
        with pytest.raises(BackendError):
            backend.load(Candidate.make("tensorrt", "cuda:0", "fp32", **bad), facts, ctx(tmp_path))


def test_fake_trt_missing_gpu_is_unavailable(backend, monkeypatch, tmp_path) -> None:
    fakes.install(monkeypatch, [fakes.H100])
    with pytest.raises(BackendUnavailable):
        backend.load(
            Candidate.make("tensorrt", "cuda:3", "fp32"),
            load_facts(small_cnn(tmp_path / "cnn.onnx")),
            ctx(tmp_path, fakes.machine(fakes.H100)),
        )


# -- devices, layouts, threads, cleanup ------------------------------------------------------------


def test_fake_trt_nvml_index_is_mapped_to_the_cuda_ordinal(backend, monkeypatch, tmp_path) -> None:
    """NVML lists the T4 first; CUDA (fastest first) lists the H100 first."""
    t4 = fakes.T4
    h100 = fakes.H100.__class__(**{**fakes.H100.__dict__, "index": 1})
    env = fakes.install(monkeypatch, cuda_devices=[fakes.device_of(h100), fakes.device_of(t4)])
    hw = fakes.machine(t4, h100)
    facts = load_facts(small_cnn(tmp_path / "cnn.onnx"))
    with backend.load(Candidate.make("tensorrt", "cuda:1", "fp32"), facts, ctx(tmp_path, hw)) as r:
        assert engine_header(r.engine_path)["device_uuid"] == h100.uuid
        r.run({"image": np.zeros((1, 3, 16, 16), np.float32)})
    assert set(env.cuda.set_device_calls) == {0}


def test_fake_trt_legacy_cuda_cudart_module(backend, monkeypatch, tmp_path) -> None:
    fakes.install(monkeypatch, [fakes.H100], cuda_layout="legacy")
    assert backend.availability(fakes.machine(fakes.H100)).usable
    path = small_cnn(tmp_path / "cnn.onnx")
    with _load(backend, tmp_path, path) as r:
        x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
        np.testing.assert_allclose(
            r.run({"image": x})[1], reference(path, {"image": x})[1], rtol=1e-5, atol=1e-5
        )


def test_fake_trt_eight_threads(backend, monkeypatch, tmp_path) -> None:
    env = fakes.install(monkeypatch, [fakes.H100])
    path = dynamic_batch(tmp_path / "dyn.onnx")
    c = ctx(tmp_path, fakes.machine(fakes.H100), input_shapes={"x": (4, 3, 8, 8), "idx": (4,)})
    runner = backend.load(Candidate.make("tensorrt", "cuda:0", "fp32"), load_facts(path), c)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            start.wait()
            for _ in range(15):
                n = int(rng.integers(1, 17))
                feeds = {
                    "x": rng.standard_normal((n, 3, 8, 8)).astype(np.float32),
                    "idx": rng.integers(0, 5, size=n).astype(np.int64),
                }
                got = runner.run(feeds)
                want = sess.run(None, feeds)
                np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
                np.testing.assert_array_equal(got[1], want[1])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]
    assert env.violations == []
    assert 1 <= env.contexts <= trt_backend.DEFAULT_CONTEXTS
    runner.close()
    assert env.cuda.device_bytes_in_use == 0 and not env.cuda.pinned


def test_fake_trt_close_frees_and_refuses_runs(backend, monkeypatch, tmp_path) -> None:
    env = fakes.install(monkeypatch, [fakes.H100])
    runner = _load(backend, tmp_path, small_cnn(tmp_path / "cnn.onnx"))
    assert env.cuda.device_bytes_in_use > 0 and env.cuda.pinned
    runner.close()
    runner.close()  # idempotent
    assert env.cuda.device_bytes_in_use == 0 and not env.cuda.pinned and not env.cuda.streams
    assert sum(env.cuda.reserved) == 0
    with pytest.raises(BackendError, match="closed"):
        runner.run({"image": np.zeros((1, 3, 16, 16), np.float32)})


def test_fake_trt_dropped_runner_frees_device_memory(backend, monkeypatch, tmp_path) -> None:
    env = fakes.install(monkeypatch, [fakes.H100])
    runner = _load(backend, tmp_path, small_cnn(tmp_path / "cnn.onnx"))
    runner.run({"image": np.zeros((1, 3, 16, 16), np.float32)})
    del runner
    gc.collect()
    assert env.cuda.device_bytes_in_use == 0 and not env.cuda.pinned and not env.cuda.streams


def test_fake_trt_loads_without_hardware_facts(backend, monkeypatch, tmp_path) -> None:
    """LoadContext.hardware is optional: the device index is then CUDA's ordinal."""
    fakes.install(monkeypatch, [fakes.H100])
    path = small_cnn(tmp_path / "cnn.onnx")
    with backend.load(Candidate.make("tensorrt", "cuda:0", "fp16"), load_facts(path), ctx(tmp_path)) as r:
        x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
        np.testing.assert_allclose(
            r.run({"image": x})[0], reference(path, {"image": x})[0], rtol=1e-2, atol=1e-2
        )


# -- the fakes catch what they are there to catch --------------------------------------------------


def test_fake_cuda_catches_a_missing_synchronize(backend, monkeypatch, tmp_path) -> None:
    """Work is queued until the stream is synchronised, as on a GPU."""
    fakes.install(monkeypatch, [fakes.H100])
    path = small_cnn(tmp_path / "cnn.onnx")
    with _load(backend, tmp_path, path) as runner:
        monkeypatch.setattr(runner._cuda, "synchronize", lambda stream: None)
        x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
        got = runner.run({"image": x})
        assert not np.allclose(got[0], reference(path, {"image": x})[0], atol=1e-3)


def test_fake_trt_catches_a_context_shared_between_threads(monkeypatch, tmp_path) -> None:
    env = fakes.install(monkeypatch, [fakes.H100])
    trt, cudart = sys.modules["tensorrt"], sys.modules["cuda.bindings.runtime"]
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    assert trt.OnnxParser(network, logger).parse_from_file(str(small_cnn(tmp_path / "m.onnx")))
    plan = builder.build_serialized_network(network, builder.create_builder_config())
    context = trt.Runtime(logger).deserialize_cuda_engine(plan).create_execution_context()
    _, stream = cudart.cudaStreamCreate()
    for name, size in (("image", 3 * 16 * 16 * 4), ("logits", 40), ("features", 8 * 16 * 16 * 4)):
        _, ptr = cudart.cudaMalloc(size)
        assert context.set_tensor_address(name, ptr)
    assert context.execute_async_v3(int(stream))  # queued, not yet synchronised
    t = threading.Thread(target=context.set_input_shape, args=("image", (1, 3, 16, 16)))
    t.start()
    t.join()
    assert env.violations and "another thread" in env.violations[0]


# -- real hardware, where there is some ------------------------------------------------------------


@pytest.fixture()
def real_gpu(backend):
    import probes

    hw = probes.detect()
    av = backend.availability(hw)
    if not av.usable:
        pytest.skip(f"TensorRT is not usable here: {av.reason}")
    return hw, av.devices[0]


@pytest.mark.parametrize("precision, tol", [("fp32", 1e-3), ("fp16", 3e-2)])
def test_real_gpu_cnn_matches_onnxruntime(backend, real_gpu, tmp_path, precision, tol) -> None:
    hw, device = real_gpu
    path = small_cnn(tmp_path / "cnn.onnx")
    with backend.load(
        Candidate.make("tensorrt", device, precision), load_facts(path), ctx(tmp_path, hw)
    ) as runner:
        x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
        for got, want in zip(runner.run({"image": x}), reference(path, {"image": x}), strict=True):
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_real_gpu_dynamic_batch_and_threads(backend, real_gpu, tmp_path) -> None:
    hw, device = real_gpu
    path = dynamic_batch(tmp_path / "dyn.onnx")
    c = ctx(tmp_path, hw, input_shapes={"x": (4, 3, 8, 8), "idx": (4,)})
    runner = backend.load(Candidate.make("tensorrt", device, "fp32"), load_facts(path), c)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(10):
                n = int(rng.integers(1, 17))
                feeds = {
                    "x": rng.standard_normal((n, 3, 8, 8)).astype(np.float32),
                    "idx": rng.integers(0, 5, size=n).astype(np.int64),
                }
                got, want = runner.run(feeds), reference(path, feeds)
                np.testing.assert_allclose(got[0], want[0], rtol=1e-3, atol=1e-3)
                assert got[1].dtype == np.int64 and got[1].shape == (n,)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    runner.close()
    assert not errors, errors[0]


# -- issue 11: TensorRT 10 and 11, CUDA_VISIBLE_DEVICES, MIG, timing cache ------------------------


def _real(cands):
    return [(c.device, c.precision) for c in cands if isinstance(c, Candidate)]


def _why(cands):
    return {(c.device, c.precision): c.reason for c in cands if isinstance(c, Unsupported)}


def test_fake_tensorrt_11_has_no_fp16_or_int8_builder_flag(monkeypatch) -> None:
    """The fake models TensorRT 11's removal of the weak-typing flags, and 10's presence of them."""
    fakes.install(monkeypatch, [fakes.H100], trt_version="11.1.0")
    import tensorrt

    assert not hasattr(tensorrt.BuilderFlag, "FP16") and not hasattr(tensorrt.BuilderFlag, "INT8")
    fakes.install(monkeypatch, [fakes.H100], trt_version="10.13.0")
    import tensorrt as trt10

    assert hasattr(trt10.BuilderFlag, "FP16") and hasattr(trt10.BuilderFlag, "INT8")


def test_fake_tensorrt_11_offers_no_fp16_and_says_why(backend, monkeypatch, tmp_path) -> None:
    fakes.install(monkeypatch, [fakes.H100], trt_version="11.1.0")
    out = backend.candidates(load_facts(small_cnn(tmp_path / "m.onnx")), fakes.machine(fakes.H100), "latency")
    assert _real(out) == [("cuda:0", "fp32")]
    reason = _why(out)[("cuda:0", "fp16")]
    assert "strongly typed" in reason and "converted to fp16" in reason
    with pytest.raises(UnsupportedModel, match="strongly typed"):
        backend.load(
            Candidate.make("tensorrt", "cuda:0", "fp16"),
            load_facts(small_cnn(tmp_path / "m.onnx")),
            ctx(tmp_path, fakes.machine(fakes.H100)),
        )


@pytest.mark.parametrize("version", ["10.13.0", "11.1.0"])
def test_fake_tensorrt_10_and_11_build_fp32_and_qdq_int8(backend, monkeypatch, tmp_path, version) -> None:
    env = fakes.install(monkeypatch, [fakes.T4], trt_version=version)
    hw = fakes.machine(fakes.T4)
    path = small_cnn(tmp_path / "cnn.onnx")
    with backend.load(Candidate.make("tensorrt", "cuda:0", "fp32"), load_facts(path), ctx(tmp_path, hw)) as r:
        x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
        np.testing.assert_allclose(
            r.run({"image": x})[0], reference(path, {"image": x})[0], rtol=1e-4, atol=1e-4
        )
    assert BuilderFlag.TF32 not in env.last_build["flags"]
    q = qdq(tmp_path / "q.onnx")
    assert "int8" in [p for _, p in _real(backend.candidates(load_facts(q), hw, "latency"))]
    backend.load(Candidate.make("tensorrt", "cuda:0", "int8"), load_facts(q), ctx(tmp_path, hw)).close()
    flags = env.last_build["flags"]
    if version.startswith("11"):  # strongly typed: Q/DQ nodes carry int8, no flag exists
        assert env.last_build["strongly_typed"] and not flags & {BuilderFlag.FP16, BuilderFlag.INT8}
    else:
        assert {BuilderFlag.FP16, BuilderFlag.INT8} <= flags and not env.last_build["strongly_typed"]


def test_fake_cuda_visible_devices_subset_limits_tensorrt_candidates(backend, monkeypatch, tmp_path) -> None:
    """Eight GPUs, CUDA_VISIBLE_DEVICES=2,3: two candidates, on CUDA's ordinals 0 and 1."""
    gpus = fakes.eight_gpus()
    env = fakes.install(monkeypatch, gpus, visible="2,3")
    hw = fakes.machine(*gpus)
    facts = load_facts(small_cnn(tmp_path / "m.onnx"))
    out = backend.candidates(facts, hw, "latency")
    assert {d for d, _ in _real(out)} == {"cuda:2", "cuda:3"}
    assert all(
        "CUDA does not see" in why for (d, _), why in _why(out).items() if d not in ("cuda:2", "cuda:3")
    )
    assert backend.availability(hw).devices == ("cuda:2", "cuda:3")
    with backend.load(Candidate.make("tensorrt", "cuda:3", "fp32"), facts, ctx(tmp_path, hw)) as r:
        assert engine_header(r.engine_path)["device_uuid"] == gpus[3].uuid
    assert env.cuda.set_device_calls[-1] == 1
    with pytest.raises(BackendUnavailable, match="CUDA does not see"):
        backend.load(Candidate.make("tensorrt", "cuda:5", "fp32"), facts, ctx(tmp_path, hw))


def test_fake_cuda_visible_devices_by_uuid_selects_that_gpu(backend, monkeypatch, tmp_path) -> None:
    gpus = fakes.eight_gpus()
    env = fakes.install(monkeypatch, gpus, visible=gpus[5].uuid[:12])  # a unique prefix
    hw = fakes.machine(*gpus)
    facts = load_facts(small_cnn(tmp_path / "m.onnx"))
    assert {d for d, _ in _real(backend.candidates(facts, hw, "latency"))} == {"cuda:5"}
    backend.load(Candidate.make("tensorrt", "cuda:5", "fp32"), facts, ctx(tmp_path, hw)).close()
    assert env.cuda.set_device_calls[-1] == 0


def test_fake_cuda_mig_instance_is_the_device_and_its_memory_counts(backend, monkeypatch, tmp_path) -> None:
    gpu = fakes.A100_MIG
    small = fakes.mig_devices_of(gpu)[1]  # the 1g.5gb instance only
    env = fakes.install(monkeypatch, cuda_devices=[small])
    hw = fakes.machine(gpu)
    facts = load_facts(small_cnn(tmp_path / "m.onnx"))
    assert ("cuda:0", "fp32") in _real(backend.candidates(facts, hw, "latency"))
    # 8 GiB of weights fit the 40 GB card but not the 4.75 GiB instance CUDA gives this process.
    import dataclasses

    big = dataclasses.replace(facts, size_bytes=8 << 30)
    why = _why(backend.candidates(big, hw, "latency"))[("cuda:0", "fp32")]
    assert "MIG 1g.5gb" in why and "4.8 GiB" in why
    with backend.load(Candidate.make("tensorrt", "cuda:0", "fp32"), facts, ctx(tmp_path, hw)) as r:
        assert engine_header(r.engine_path)["device_uuid"] == small.uuid
    assert env.cuda.set_device_calls[-1] == 0


def test_fake_cuda_mig_gpu_without_a_visible_instance_has_no_candidate(
    backend, monkeypatch, tmp_path
) -> None:
    fakes.install(monkeypatch, cuda_devices=[fakes.device_of(fakes.T4)])
    t4 = dataclasses_replace(fakes.T4, index=1)
    hw = fakes.machine(fakes.A100_MIG, t4)
    out = backend.candidates(load_facts(small_cnn(tmp_path / "m.onnx")), hw, "latency")
    assert {d for d, _ in _real(out)} == {"cuda:1"}
    assert "MIG mode" in _why(out)[("cuda:0", "fp32")]


def dataclasses_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_fake_cuda_truncated_uuid_is_never_a_match(backend, monkeypatch, tmp_path) -> None:
    """CUDA's UUID cut at a zero byte: the bus id still places the GPU; without one, no guess."""
    dev = fakes.device_of(fakes.H100)
    dev.uuid_cut = 5
    fakes.install(monkeypatch, cuda_devices=[dev])
    facts = load_facts(small_cnn(tmp_path / "m.onnx"))
    assert _real(backend.candidates(facts, fakes.machine(fakes.H100), "latency"))
    no_bus = dataclasses_replace(fakes.H100, pci_bus_id=None)
    dev.pci_bus_id = None
    out = backend.candidates(facts, fakes.machine(no_bus), "latency")
    assert not _real(out) and "CUDA does not see" in _why(out)[("cuda:0", "fp32")]


def test_fake_cuda_gpu_without_uuid_or_bus_id_gets_no_guessed_ordinal(backend, monkeypatch, tmp_path) -> None:
    """ordinal_of used to fall back to NVML's index; now the GPU is left out, with the reason."""
    fakes.install(monkeypatch, cuda_devices=[fakes.device_of(fakes.T4), fakes.device_of(fakes.H100)])
    anon = dataclasses_replace(fakes.H100, index=0, uuid=None, pci_bus_id=None)
    facts = load_facts(small_cnn(tmp_path / "m.onnx"))
    out = backend.candidates(facts, fakes.machine(anon), "latency")
    assert not _real(out) and "neither a PCI bus id nor a UUID" in _why(out)[("cuda:0", "fp32")]
    with pytest.raises(BackendUnavailable, match="neither a PCI bus id"):
        backend.load(Candidate.make("tensorrt", "cuda:0", "fp32"), facts, ctx(tmp_path, fakes.machine(anon)))


def test_native_handle_falls_back_to_int_on_typeerror_with_fake_cuda(monkeypatch) -> None:
    import types

    from fakes.fake_cuda import cudaStream_t

    from autoinfer.backends import _cuda

    def unknown(obj):
        raise TypeError(f"unknown type {type(obj).__name__}")

    utils = types.ModuleType("cuda.bindings.utils")
    utils.get_cuda_native_handle = unknown
    monkeypatch.setitem(sys.modules, "cuda.bindings.utils", utils)
    assert _cuda._native_handle(cudaStream_t(0x7001)) == 0x7001
    utils.get_cuda_native_handle = lambda obj: 0x7002
    assert _cuda._native_handle(cudaStream_t(0x7001)) == 0x7002


def test_fake_tensorrt_timing_cache_is_shared_by_variants(backend, monkeypatch, tmp_path) -> None:
    env = fakes.install(monkeypatch, [fakes.H100])
    hw = fakes.machine(fakes.H100)
    facts = load_facts(small_cnn(tmp_path / "cnn.onnx"))
    model_dir = tmp_path / "artifacts" / "tensorrt" / "model"
    plain = LoadContext(artifact_dir=model_dir / "a", hardware=hw)
    backend.load(Candidate.make("tensorrt", "cuda:0", "fp32"), facts, plain).close()
    assert env.last_build["timing_cache"] and env.timing_cache_loaded == 0
    [cache] = list(model_dir.glob("tensorrt-timing-*.cache"))
    variant = LoadContext(artifact_dir=model_dir / "b", hardware=hw)
    backend.load(Candidate.make("tensorrt", "cuda:0", "fp32", opt_level=5), facts, variant).close()
    assert env.timing_cache_loaded == 1  # the second build started from the first one's timings
    cache.write_bytes(b"garbage")  # damaged: ignored, rebuilt, replaced
    third = LoadContext(artifact_dir=model_dir / "c", hardware=hw)
    backend.load(Candidate.make("tensorrt", "cuda:0", "fp32", tf32=True), facts, third).close()
    assert env.builds == 3 and cache.read_bytes().startswith(b"FTTC")


def test_pyproject_tensorrt_extra_bounds_tensorrt_and_raises_the_cuda_bindings_floor() -> None:
    import re

    import tomllib

    data = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    extra = data["project"]["optional-dependencies"]["tensorrt"]
    trt = next(r for r in extra if re.match(r"tensorrt\b", r))
    assert "<12" in trt.replace(" ", ""), trt  # 12 is untested: its API may change again
    cuda = next(r for r in extra if r.startswith(("cuda-python", "cuda-bindings")))
    floor = re.search(r">=\s*([\d.]+)", cuda)
    assert floor and tuple(int(x) for x in floor.group(1).split(".")) >= (12, 9, 1), cuda
