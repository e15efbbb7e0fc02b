"""The ncnn backend against the real ncnn and pnnx: conversion, cache, layout, errors, threads.

Every model here is converted by the real pnnx executable and run by the real
ncnn; outputs are compared with ONNX Runtime.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
import zoo
from onnx import TensorProto as T
from onnx import helper, numpy_helper

import autoinfer
from autoinfer.backends import Candidate, LoadContext, Unsupported, _pnnx, get
from autoinfer.backends import ncnn as nb
from autoinfer.errors import BackendError, InputError, UnsupportedModel
from autoinfer.model import load_facts

NAME = "ncnn"


# -- models ----------------------------------------------------------------------------------


def _w(rng: np.random.Generator, name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _save(graph: onnx.GraphProto, path: Path, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _cnn(path: Path, batch: int | str = 1) -> Path:
    """Conv + Relu + MaxPool + grouped Conv + GlobalAveragePool + Gemm: [B,3,32,32] -> [B,10]."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("image", T.FLOAT, [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", T.FLOAT, [batch, 10])],
        [
            _w(rng, "w1", 16, 3, 3, 3),
            _w(rng, "b1", 16),
            _w(rng, "w2", 16, 2, 3, 3),
            _w(rng, "b2", 16),
            _w(rng, "wf", 10, 16),
            _w(rng, "bf", 10),
        ],
    )
    return _save(graph, path)


def _mlp(path: Path) -> Path:
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "w2", "b2"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", T.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", T.FLOAT, [1, 4])],
        [_w(rng, "w1", 32, 16), _w(rng, "b1", 32), _w(rng, "w2", 4, 32), _w(rng, "b2", 4)],
    )
    return _save(graph, path)


def _two_io(path: Path) -> Path:
    """Two inputs, two outputs, declared in an order that is not alphabetical; a 4-D
    elementwise branch (whose input ncnn only accepts in its own aligned memory)."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Relu", ["zeta"], ["zr"]),
        helper.make_node("Add", ["zr", "zeta"], ["sum"]),
        helper.make_node("Gemm", ["alpha", "w", "b"], ["proj"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "two_io",
        [
            helper.make_tensor_value_info("zeta", T.FLOAT, [1, 8, 4, 4]),
            helper.make_tensor_value_info("alpha", T.FLOAT, [1, 16]),
        ],
        [
            helper.make_tensor_value_info("sum", T.FLOAT, [1, 8, 4, 4]),
            helper.make_tensor_value_info("proj", T.FLOAT, [1, 5]),
        ],
        [_w(rng, "w", 5, 16), _w(rng, "b", 5)],
    )
    return _save(graph, path)


def _attention(path: Path, ids: bool, seq: int = 8, d: int = 16, heads: int = 2) -> Path:
    """LayerNorm + multi-head self-attention + residual, from float features or int64 ids."""
    rng = np.random.default_rng(4)
    inits = [
        _w(rng, "emb", 50, d, scale=1.0),
        _w(rng, "wq", d, d),
        _w(rng, "wk", d, d),
        _w(rng, "wv", d, d),
        _w(rng, "wo", d, d),
        numpy_helper.from_array(np.ones(d, np.float32), "g"),
        numpy_helper.from_array(np.zeros(d, np.float32), "bt"),
        numpy_helper.from_array(np.array([1, seq, heads, d // heads], np.int64), "s4"),
        numpy_helper.from_array(np.array([1, seq, d], np.int64), "s3"),
        numpy_helper.from_array(np.array(1.0 / np.sqrt(d // heads), np.float32), "scale"),
    ]
    if ids:
        x = helper.make_tensor_value_info("input_ids", T.INT64, [1, seq])
        nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["e"])]
    else:
        x = helper.make_tensor_value_info("features", T.FLOAT, [1, seq, d])
        nodes = [helper.make_node("Identity", ["features"], ["e"])]
        inits = inits[1:]
    nodes.append(helper.make_node("LayerNormalization", ["e", "g", "bt"], ["ln"], axis=-1))
    for n in "qkv":
        nodes += [
            helper.make_node("MatMul", ["ln", "w" + n], [n]),
            helper.make_node("Reshape", [n, "s4"], [n + "4"]),
            helper.make_node(
                "Transpose", [n + "4"], [n + "t"], perm=[0, 2, 3, 1] if n == "k" else [0, 2, 1, 3]
            ),
        ]
    nodes += [
        helper.make_node("MatMul", ["qt", "kt"], ["att"]),
        helper.make_node("Mul", ["att", "scale"], ["atts"]),
        helper.make_node("Softmax", ["atts"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "vt"], ["ctx"]),
        helper.make_node("Transpose", ["ctx"], ["ctxt"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctxt", "s3"], ["ctx3"]),
        helper.make_node("MatMul", ["ctx3", "wo"], ["o"]),
        helper.make_node("Add", ["o", "e"], ["hidden"]),
    ]
    graph = helper.make_graph(
        nodes, "attention", [x], [helper.make_tensor_value_info("hidden", T.FLOAT, [1, seq, d])], inits
    )
    return _save(graph, path)


def _batch_mixing(path: Path) -> Path:
    """y = conv(x) - mean over the batch: correct at batch 1 when split, wrong at batch 2."""
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["c", "axes"], ["m"], keepdims=1),
        helper.make_node("Sub", ["c", "m"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mix",
        [helper.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", T.FLOAT, ["N", 4, 8, 8])],
        [_w(rng, "w", 4, 3, 3, 3), numpy_helper.from_array(np.array([0], np.int64), "axes")],
    )
    return _save(graph, path, opset=18)


def _int_output(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("ArgMax", ["x"], ["k"], axis=1, keepdims=0)],
        "argmax",
        [helper.make_tensor_value_info("x", T.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("k", T.INT64, [1])],
    )
    return _save(graph, path)


@pytest.fixture(scope="module")
def models(tmp_path_factory: Any) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("user_models")
    paths = {
        "cnn": _cnn(d / "cnn.onnx"),
        "cnn_batch2": _cnn(d / "cnn_batch2.onnx", batch=2),
        "mlp": _mlp(d / "mlp.onnx"),
        "two_io": _two_io(d / "two_io.onnx"),
        "attention": _attention(d / "attention.onnx", ids=False),
        "token_ids": _attention(d / "token_ids.onnx", ids=True),
        "mix": _batch_mixing(d / "mix.onnx"),
        "argmax": _int_output(d / "argmax.onnx"),
    }
    for name in ("mobilenetv2", "dynamic_batch", "dynamic", "lstm", "transformer_small"):
        paths[name] = zoo.save(name, d / f"{name}.onnx")
    return paths


@pytest.fixture(scope="module")
def backend() -> Any:
    return get(NAME)


@pytest.fixture(scope="module")
def art_root(tmp_path_factory: Any) -> Path:
    return tmp_path_factory.mktemp("artifacts")


def _load(backend: Any, path: Path, art: Path, cand: Candidate | None = None, **ctx: Any) -> Any:
    ctx.setdefault("threads", 2)
    ctx.setdefault("timeout_s", 120.0)
    return backend.load(cand or Candidate.make(NAME), load_facts(path), LoadContext(art, **ctx))


def _feeds(
    path: Path, batch: int | None = None, seed: int = 0, shapes: dict[str, tuple[int, ...]] | None = None
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for spec in load_facts(path).inputs:
        shape = list((shapes or {}).get(spec.name) or spec.shape)
        if batch is not None:
            shape[0] = batch
        if spec.dtype == "int64":
            out[spec.name] = rng.integers(0, 50, shape).astype(np.int64)
        else:
            out[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def _reference(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def _assert_close(
    got: list[np.ndarray], ref: list[np.ndarray], rtol: float = 1e-3, atol: float = 1e-4
) -> None:
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        assert g.shape == r.shape and g.dtype == r.dtype
        scale = max(1.0, float(np.abs(r).max()))
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol * scale)


def _fake_hw(*flags: str, arm: bool = False, cores: int = 2) -> Any:
    cpu = SimpleNamespace(
        has=lambda f: f in flags, flags=flags, is_arm=arm, is_x86=not arm, usable_cores=cores
    )
    return SimpleNamespace(cpu=cpu, nvidia_gpus=(), accelerators=())


def _listing(d: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(d.rglob("*"))}


def _pnnx_calls(monkeypatch: Any) -> list[int]:
    """Count pnnx runs (the real pnnx still runs)."""
    calls: list[int] = []
    real = _pnnx.run_pnnx

    def counting(*a: Any, **k: Any) -> str:
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(_pnnx, "run_pnnx", counting)
    return calls


def _fake_pnnx(monkeypatch: Any, tmp_path: Path, body: str) -> Path:
    exe = tmp_path / "fake-pnnx"
    exe.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    exe.chmod(0o755)
    monkeypatch.setattr(_pnnx, "pnnx_executable", lambda: exe)
    return exe


# -- import, availability, candidates ------------------------------------------------------------


def test_import_does_not_import_ncnn() -> None:
    code = (
        "import sys; from autoinfer.backends import get; b = get('ncnn'); v = b.versions(); "
        "print(sorted(k for k in sys.modules if k.split('.')[0] in "
        "('ncnn', 'pnnx', 'onnxruntime', 'torch'))); print(sorted(v))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    mods, vers = out.stdout.strip().splitlines()
    assert mods == "[]"
    assert vers == "['ncnn', 'pnnx']"  # a pnnx upgrade changes the key of every decision


def test_availability(backend: Any) -> None:
    av = backend.availability(_fake_hw("f16c"))
    assert av.installed and av.usable, av.reason
    assert av.version and av.devices[0] == "cpu"
    assert set(av.devices) <= {"cpu", "vulkan"}
    exe = _pnnx.pnnx_executable()
    assert exe is not None and _pnnx.is_executable(exe)
    assert "pnnx" not in sys.modules  # found without importing its torch-dependent package


def test_availability_without_pnnx(backend: Any, monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setattr(_pnnx, "pnnx_executable", lambda: None)
    av = backend.availability(_fake_hw())
    assert av.installed and not av.usable
    assert "pnnx" in av.reason and "pip install --no-deps pnnx" in av.fix
    assert backend.diagnose(_fake_hw())[0].severity == "error"
    plain = tmp_path / "pnnx"
    plain.write_text("not executable")
    plain.chmod(0o644)
    monkeypatch.setattr(_pnnx, "pnnx_executable", lambda: plain)
    av = backend.availability(_fake_hw())
    assert not av.usable and "not executable" in av.reason


def test_candidates(backend: Any, models: dict[str, Path]) -> None:
    facts = load_facts(models["mobilenetv2"])
    plain = [c.key for c in backend.candidates(facts, _fake_hw(), "latency")]
    assert plain[0] == "ncnn:cpu:fp32" and "ncnn:cpu:fp16" not in plain
    with_f16c = [c.key for c in backend.candidates(facts, _fake_hw("f16c"), "latency")]
    assert "ncnn:cpu:fp16" in with_f16c
    for name, words in (("lstm", "LSTM"), ("argmax", "int64")):
        out = backend.candidates(load_facts(models[name]), _fake_hw("f16c"), "latency")
        assert out and all(isinstance(c, Unsupported) for c in out)
        assert all(words in c.reason for c in out)


def test_variants_and_estimate(backend: Any, models: dict[str, Path]) -> None:
    facts = load_facts(models["mobilenetv2"])
    base = Candidate.make(NAME)
    vs = backend.variants(base, facts, _fake_hw(cores=8), "latency")
    assert 1 <= len(vs) <= 5 and len({v.key for v in vs}) == len(vs)
    assert all(set(v.settings_dict) <= set(nb.SETTINGS) and v.settings_dict for v in vs)
    assert base not in vs
    x86 = backend.estimate(base, facts, _fake_hw("f16c"), "latency")
    arm = backend.estimate(base, facts, _fake_hw("asimd", "asimdhp", arm=True), "latency")
    assert x86.cost > 0 and x86.reasons and arm.cost < x86.cost
    fp16_arm = backend.estimate(
        Candidate.make(NAME, "cpu", "fp16"), facts, _fake_hw("asimd", "asimdhp", arm=True), "latency"
    )
    assert fp16_arm.cost < arm.cost


# -- correctness -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cnn", "mlp", "two_io", "attention", "token_ids", "mobilenetv2"])
def test_outputs_match_onnxruntime(backend: Any, models: dict[str, Path], art_root: Path, name: str) -> None:
    path = models[name]
    facts = load_facts(path)
    with _load(backend, path, art_root / name) as runner:
        assert runner.input_names == tuple(s.name for s in facts.inputs)
        assert runner.output_names == tuple(s.name for s in facts.outputs)
        for seed in (0, 1):
            feeds = _feeds(path, seed=seed)
            got = runner.run(feeds)
            assert len(got) == len(facts.outputs), (len(got), len(facts.outputs))
            for g, spec in zip(got, facts.outputs, strict=True):
                assert g.dtype == np.dtype(spec.dtype) and g.shape == tuple(spec.shape)
            _assert_close(got, _reference(path, feeds))


def test_dynamic_batch_runs_sample_by_sample(
    backend: Any, models: dict[str, Path], art_root: Path, monkeypatch: Any
) -> None:
    path, art = models["dynamic_batch"], art_root / "dynamic_batch"
    with _load(backend, path, art, input_shapes={"input": (1, 3, 32, 32)}) as runner:
        for batch in (1, 2, 3):
            feeds = _feeds(path, batch=batch, seed=batch)
            _assert_close(runner.run(feeds), _reference(path, feeds))
        empty = runner.run({"input": np.zeros((0, 3, 32, 32), np.float32)})
        assert empty[0].shape == (0, 10)
    manifest = json.loads(next(art.glob("ncnn-*/manifest.json")).read_text())
    assert manifest["batch_loop"] is True
    # A load at batch 4 reuses the batch-1 conversion.
    calls = _pnnx_calls(monkeypatch)
    with _load(backend, path, art, input_shapes={"input": (4, 3, 32, 32)}) as runner:
        feeds = _feeds(path, batch=4)
        _assert_close(runner.run(feeds), _reference(path, feeds))
    assert calls == [] and len(list(art.glob("ncnn-*"))) == 1


def test_fixed_batch_model(backend: Any, models: dict[str, Path], art_root: Path, tmp_path: Path) -> None:
    path = models["cnn_batch2"]
    with _load(backend, path, art_root / "cnn_batch2") as runner:
        feeds = _feeds(path)
        got = runner.run(feeds)
        assert got[0].shape == (2, 10)
        _assert_close(got, _reference(path, feeds))
    # another batch than the fixed one is refused by the Session, before ncnn sees it
    s = autoinfer.Session(path, cache_dir=tmp_path, benchmark=False, backends=[NAME])
    with pytest.raises(InputError, match=r"input 'image': dimension 0 must be 2"):
        s.run(None, _feeds(path, batch=1))
    _assert_close(s.run(None, feeds), _reference(path, feeds))


def test_batch_mixing_model_is_not_split(backend: Any, models: dict[str, Path], art_root: Path) -> None:
    path, art = models["mix"], art_root / "mix"
    with pytest.raises(UnsupportedModel, match="influence each other"):
        _load(backend, path, art, input_shapes={"x": (2, 3, 8, 8)})
    with _load(backend, path, art, input_shapes={"x": (1, 3, 8, 8)}) as runner:
        feeds = _feeds(path, batch=1)
        _assert_close(runner.run(feeds), _reference(path, feeds))
        with pytest.raises(InputError, match="influence each other"):
            runner.run(_feeds(path, batch=2))


def test_dynamic_dims_need_concrete_shapes(backend: Any, models: dict[str, Path], art_root: Path) -> None:
    path = models["dynamic"]
    with pytest.raises(UnsupportedModel, match="input_shapes"):
        _load(backend, path, art_root / "dynamic")
    shapes = {"input": (1, 3, 40, 48)}
    with _load(backend, path, art_root / "dynamic", input_shapes=shapes) as runner:
        feeds = _feeds(path, shapes=shapes)
        _assert_close(runner.run(feeds), _reference(path, feeds))
        with pytest.raises(InputError, match="input_shapes"):
            runner.run(_feeds(path, shapes={"input": (1, 3, 32, 32)}))


def test_fp16_and_variants(backend: Any, models: dict[str, Path], art_root: Path, monkeypatch: Any) -> None:
    path, art = models["mobilenetv2"], art_root / "mobilenetv2_variants"
    feeds = _feeds(path)
    ref = _reference(path, feeds)
    calls = _pnnx_calls(monkeypatch)
    with _load(backend, path, art, Candidate.make(NAME, "cpu", "fp16")) as runner:
        _assert_close(runner.run(feeds), ref, rtol=2e-2, atol=2e-2)
    base = Candidate.make(NAME)
    for cand in backend.variants(base, load_facts(path), _fake_hw(cores=8), "latency"):
        with _load(backend, path, art, cand) as runner:
            _assert_close(runner.run(feeds), ref)
    assert len(calls) == 1  # settings change how ncnn runs, not the conversion


def test_fp32_turns_off_ncnn_fp16_default() -> None:
    ncnn = nb.import_ncnn()
    opt = ncnn.Option()
    assert opt.use_fp16_storage  # ncnn's default, which an fp32 candidate must not keep
    nb._configure(opt, Candidate.make(NAME, "cpu", "fp32", winograd=False, threads=3), 2)
    assert not (opt.use_fp16_storage or opt.use_fp16_packed or opt.use_fp16_arithmetic)
    assert not opt.use_bf16_storage and not opt.use_winograd_convolution
    assert opt.num_threads == 3 and opt.use_sgemm_convolution and not opt.use_vulkan_compute
    nb._configure(opt, Candidate.make(NAME, "cpu", "fp16"), 2)
    assert opt.use_fp16_storage and opt.use_fp16_packed and opt.num_threads == 2


# -- conversion store ---------------------------------------------------------------------------------


def test_conversion_writes_only_into_artifact_dir(backend: Any, tmp_path: Path) -> None:
    user = tmp_path / "user dir"
    user.mkdir()
    path = _cnn(user / "model.onnx")
    before = _listing(user)
    art = tmp_path / "art"
    with _load(backend, path, art) as runner:
        runner.run(_feeds(path))
    assert _listing(user) == before
    (conv,) = art.iterdir()
    assert conv.name.startswith("ncnn-")
    assert sorted(p.name for p in conv.iterdir()) == [_pnnx.MANIFEST, _pnnx.BIN, _pnnx.PARAM]
    manifest = json.loads((conv / _pnnx.MANIFEST).read_text())
    assert manifest["inputs"][0]["name"] == "image" and manifest["inputs"][0]["blob"] == "in0"
    assert manifest["outputs"][0]["shape"] == [1, 10]
    assert manifest["files"][_pnnx.BIN] == _pnnx.sha256_file(conv / _pnnx.BIN)
    assert set(manifest["versions"]) == {"ncnn", "pnnx"}


def test_second_load_reuses_conversion(
    backend: Any, models: dict[str, Path], tmp_path: Path, monkeypatch: Any
) -> None:
    path = models["cnn"]
    with _load(backend, path, tmp_path):
        pass
    manifest = next(tmp_path.glob("ncnn-*/manifest.json"))
    stamp = manifest.stat().st_mtime_ns

    def no(*a: Any, **k: Any) -> Any:
        raise AssertionError("converted again")

    monkeypatch.setattr(_pnnx, "run_pnnx", no)
    monkeypatch.setattr(nb, "_self_check", no)
    t0 = time.perf_counter()
    with _load(backend, path, tmp_path) as runner:
        feeds = _feeds(path)
        _assert_close(runner.run(feeds), _reference(path, feeds))
    assert time.perf_counter() - t0 < 5
    assert manifest.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("damage", ["bin", "manifest"])
def test_damaged_conversion_is_redone(
    backend: Any, models: dict[str, Path], tmp_path: Path, monkeypatch: Any, damage: str
) -> None:
    path = models["cnn"]
    with _load(backend, path, tmp_path):
        pass
    conv = next(tmp_path.glob("ncnn-*"))
    if damage == "bin":
        data = bytearray((conv / _pnnx.BIN).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (conv / _pnnx.BIN).write_bytes(bytes(data))
    else:
        (conv / _pnnx.MANIFEST).write_text("{not json")
    calls = _pnnx_calls(monkeypatch)
    with _load(backend, path, tmp_path) as runner:
        feeds = _feeds(path)
        _assert_close(runner.run(feeds), _reference(path, feeds))
    assert calls == [1]
    conv = next(tmp_path.glob("ncnn-*"))
    manifest = json.loads((conv / _pnnx.MANIFEST).read_text())
    assert manifest["files"][_pnnx.BIN] == _pnnx.sha256_file(conv / _pnnx.BIN)
    assert [p.name for p in tmp_path.iterdir()] == [conv.name]


def test_concurrent_conversions_of_one_model(models: dict[str, Path], tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import numpy as np
        from pathlib import Path
        from autoinfer.backends import Candidate, LoadContext, get
        from autoinfer.model import load_facts
        r = get("ncnn").load(Candidate.make("ncnn"), load_facts({str(models["mlp"])!r}),
                             LoadContext(Path({str(tmp_path)!r}), threads=1))
        print(r.run({{"x": np.ones((1, 16), np.float32)}})[0].tolist())
    """)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert outs[0][0] == outs[1][0]
    assert [p.name for p in tmp_path.iterdir()] == [next(tmp_path.glob("ncnn-*")).name]


# -- failures --------------------------------------------------------------------------------------------


def test_pnnx_failing_is_unsupported(
    backend: Any, models: dict[str, Path], tmp_path: Path, monkeypatch: Any
) -> None:
    _fake_pnnx(
        monkeypatch,
        tmp_path,
        """\
        echo "loading model.onnx"
        echo "error: unexpected operator FancyOp" >&2
        exit 1
    """,
    )
    art = tmp_path / "art"
    with pytest.raises(UnsupportedModel) as info:
        _load(backend, models["mlp"], art)
    assert "exited with status 1" in info.value.reason
    assert "unexpected operator FancyOp" in info.value.reason
    assert list(art.iterdir()) == []  # the failed attempt left nothing behind


def test_pnnx_crashing_is_a_load_failure(
    backend: Any, models: dict[str, Path], tmp_path: Path, monkeypatch: Any
) -> None:
    """A converter that dies of a signal did not refuse the model: it broke. That is a
    BackendError (a load failure), never "unsupported", so conformance runs see it."""
    _fake_pnnx(
        monkeypatch,
        tmp_path,
        """\
        echo "shape_inference ..."
        kill -SEGV $$
    """,
    )
    art = tmp_path / "art"
    with pytest.raises(BackendError, match="killed by signal 11"):
        _load(backend, models["mlp"], art)
    assert list(art.iterdir()) == []  # the failed attempt left nothing behind


def test_pnnx_timeout_is_a_load_failure(
    backend: Any, models: dict[str, Path], tmp_path: Path, monkeypatch: Any
) -> None:
    pid_file = tmp_path / "pid"
    _fake_pnnx(
        monkeypatch,
        tmp_path,
        f"""\
        echo $$ > '{pid_file}'
        echo "pass_level1 ..."
        exec sleep 60
    """,
    )
    t0 = time.perf_counter()
    with pytest.raises(BackendError, match="did not finish converting within 1 s"):
        _load(backend, models["mlp"], tmp_path / "art", timeout_s=1.0)
    assert time.perf_counter() - t0 < 15
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_pnnx_writing_nothing_is_unsupported(
    backend: Any, models: dict[str, Path], tmp_path: Path, monkeypatch: Any
) -> None:
    _fake_pnnx(monkeypatch, tmp_path, "echo done\nexit 0\n")
    with pytest.raises(UnsupportedModel, match="without writing"):
        _load(backend, models["mlp"], tmp_path / "art")


@pytest.mark.parametrize("name,words", [("transformer_small", "Tensor.to"), ("lstm", "LSTM")])
def test_models_pnnx_cannot_convert(
    backend: Any, models: dict[str, Path], tmp_path: Path, name: str, words: str
) -> None:
    with pytest.raises(UnsupportedModel, match=words):
        _load(backend, models[name], tmp_path)


# -- the runner ---------------------------------------------------------------------------------------


def test_runner_is_thread_safe(backend: Any, models: dict[str, Path], art_root: Path) -> None:
    path = models["cnn"]
    with _load(backend, path, art_root / "cnn") as runner:
        feeds = [_feeds(path, seed=i) for i in range(8)]
        expected = [runner.run(f)[0] for f in feeds]
        errors: list[BaseException] = []
        barrier = threading.Barrier(8)

        def work(i: int) -> None:
            try:
                barrier.wait()
                for _ in range(10):
                    np.testing.assert_allclose(runner.run(feeds[i])[0], expected[i], rtol=1e-5, atol=1e-6)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]


def test_input_errors_come_from_the_session_and_close(
    backend: Any, models: dict[str, Path], art_root: Path, tmp_path: Path
) -> None:
    """Feeds are checked once, by the Session; the runner trusts its feeds."""
    path = models["cnn"]
    good = _feeds(path)["image"]
    s = autoinfer.Session(path, cache_dir=tmp_path, benchmark=False, backends=[NAME])
    with pytest.raises(InputError, match=r"input 'image': expected dtype float32"):
        s.run(None, {"image": good.astype(np.float64)})
    with pytest.raises(InputError, match=r"input 'image': dimension 2 must be 32"):
        s.run(None, {"image": np.zeros((1, 3, 16, 16), np.float32)})
    with pytest.raises(InputError, match=r"missing \['image'\]; unknown \['picture'\]"):
        s.run(None, {"picture": good})
    np.testing.assert_allclose(
        s.run(None, {"image": good})[0], _reference(path, {"image": good})[0], rtol=1e-4, atol=1e-5
    )
    runner = _load(backend, path, art_root / "cnn")
    runner.close()
    with pytest.raises(BackendError, match="closed"):
        runner.run({"image": good})


def test_token_ids_beyond_int32_are_an_input_error(
    backend: Any, models: dict[str, Path], art_root: Path
) -> None:
    path = models["token_ids"]
    with _load(backend, path, art_root / "token_ids") as runner:
        ids = np.zeros((1, 8), np.int64)
        ids[0, 3] = 2**40
        with pytest.raises(InputError, match="int32"):
            runner.run({"input_ids": ids})
