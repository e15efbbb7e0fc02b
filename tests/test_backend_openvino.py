"""The OpenVINO backend against the real openvino: contract, settings, cache, errors, telemetry."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import autoinfer
from autoinfer.backends import Candidate, LoadContext, Unsupported, get
from autoinfer.backends import openvino as ovb
from autoinfer.errors import BackendError, InputError, UnsupportedModel
from autoinfer.model import load_facts

NAME = "openvino"


@pytest.fixture(scope="module")
def backend() -> Any:
    return get(NAME)


def _load(backend: Any, path: Path, tmp_path: Path, cand: Candidate | None = None, **ctx: Any) -> Any:
    facts = load_facts(path)
    ctx.setdefault("threads", 2)
    return backend.load(cand or Candidate.make(NAME), facts, LoadContext(tmp_path, **ctx))


def _multi_feeds(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((n, 4)).astype(np.float32),
        "ids": rng.integers(0, 1000, n).astype(np.int64),
    }


def _multi_expected(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    x, ids = feeds["x"], feeds["ids"]
    return [x.sum(axis=1) + np.float32(0.5), ids + 1, x > 0]


def _subprocess(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_import_does_not_import_openvino() -> None:
    out = _subprocess(
        "import sys, autoinfer.backends.openvino as m; "
        "print(sorted(k for k in sys.modules if k.startswith('openvino')))"
    )
    assert out.strip() == "[]"


def test_using_openvino_sends_no_telemetry(model_paths: dict) -> None:
    """`import openvino` forks a process that posts a Google Analytics event; autoinfer's does not."""
    # The model's facts first: load_facts forks a guard child of its own (see model.py).
    code = f"""
import sys
import numpy as np
from pathlib import Path
import tempfile
from autoinfer.backends import get, Candidate, LoadContext
from autoinfer.model import load_facts
facts = load_facts({str(model_paths["tiny"])!r})
events = []
sys.addaudithook(lambda e, a: events.append(e) if e in ('os.fork', 'os.posix_spawn',
    'subprocess.Popen', 'socket.connect', 'socket.getaddrinfo') else None)
b = get('openvino')
b.availability(None)
r = b.load(Candidate.make('openvino'), facts, LoadContext(Path(tempfile.mkdtemp())))
shape = [d if isinstance(d, int) else 1 for d in facts.inputs[0].shape]
r.run({{facts.inputs[0].name: np.zeros(shape, np.float32)}})
print(sorted(set(events)), 'openvino_telemetry' in sys.modules)
"""
    assert _subprocess(code).strip() == "[] False"


def test_openvino_imported_after_the_application_imported_its_telemetry_package() -> None:
    """The application imported openvino_telemetry first: autoinfer's import still binds the stub."""
    code = """
import sys
import openvino_telemetry  # the application's own import
events = []
sys.addaudithook(lambda e, a: events.append(e) if e in ('os.fork', 'socket.connect',
    'socket.getaddrinfo') else None)
from autoinfer.backends import openvino as ovb
ov = ovb.import_openvino()
ov.Core().available_devices
print(sorted(set(events)), ovb.telemetry_bound(), sys.modules['openvino_telemetry'] is openvino_telemetry)
"""
    assert _subprocess(code).strip() == "[] False True"


def test_openvino_imported_raw_by_the_application_is_noticed(tmp_path: Path) -> None:
    """A raw ``import openvino`` before autoinfer binds the real telemetry; autoinfer logs it.

    The consent file in a private $HOME says "0" (opted out), so the raw import sends nothing."""
    (tmp_path / "intel").mkdir()
    (tmp_path / "intel" / "openvino_telemetry").write_text("0\n")
    code = """
import logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format='%(name)s: %(message)s')
import openvino  # the application's own, raw import
from autoinfer.backends import openvino as ovb
assert ovb.import_openvino() is openvino
ovb.import_openvino()  # logged once only
print('bound', ovb.telemetry_bound())
"""
    import os

    env = {**os.environ, "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("openvino was imported before autoinfer") == 1, out.stdout
    assert "bound True" in out.stdout


def _fake_device_report(devices: dict[str, str]) -> Any:
    """A fake OpenVINO device list: name -> FULL_DEVICE_NAME, GPUs with FP16."""
    report = tuple(
        (d, full, frozenset({"FP32", "FP16"} if d.startswith("GPU") else {"FP32"}), frozenset())
        for d, full in devices.items()
    )
    return lambda: report


def _sysfs_gpu(kind: str, pci_id: str) -> Any:
    from probes import Accelerator

    return Accelerator(kind, "intel", f"Intel GPU [{pci_id}]", pci_id, "drm")


def test_a_lone_discrete_gpu_is_estimated_discrete_with_fake_openvino_devices(
    backend: Any, monkeypatch: Any
) -> None:
    """OpenVINO names a lone GPU "GPU" (not "GPU.0"): the lookup must find it (issue 11, item 11)."""
    from types import SimpleNamespace

    monkeypatch.setattr(
        ovb,
        "device_report",
        _fake_device_report({"CPU": "Intel(R) Xeon(R)", "GPU": "Intel(R) Arc(TM) A770 Graphics (dGPU)"}),
    )
    hw = SimpleNamespace(
        accelerators=(_sysfs_gpu("dgpu", "8086:56a0"),),
        cpu=SimpleNamespace(vendor="intel", usable_cores=8),
        nvidia_gpus=(),
    )
    facts = SimpleNamespace(flops=4e9, inputs=(), outputs=(), has_dynamic_inputs=False)
    cands = [c for c in backend.candidates(facts, hw, "latency") if isinstance(c, Candidate)]
    gpu = next(c for c in cands if c.device == "gpu:0" and c.precision == "fp32")
    assert ovb.ov_device_name("gpu:0") == "GPU"
    est = backend.estimate(gpu, facts, hw, "latency")
    assert any("a discrete Intel GPU" in r for r in est.reasons), est
    assert est.cost == pytest.approx(0.3)
    # Two GPUs: GPU.0 is the integrated one, GPU.1 the discrete one.
    monkeypatch.setattr(
        ovb,
        "device_report",
        _fake_device_report(
            {
                "CPU": "x",
                "GPU.0": "Intel(R) UHD Graphics 770 (iGPU)",
                "GPU.1": "Intel(R) Arc(TM) A770 Graphics (dGPU)",
            }
        ),
    )
    hw.accelerators = (_sysfs_gpu("igpu", "8086:a780"), _sysfs_gpu("dgpu", "8086:56a0"))
    assert ovb.ov_device_name("gpu:0") == "GPU.0" and ovb.ov_device_name("gpu:1") == "GPU.1"
    costs = {
        d: backend.estimate(Candidate.make(NAME, d), facts, hw, "latency").cost for d in ("gpu:0", "gpu:1")
    }
    assert costs == {"gpu:0": pytest.approx(0.6), "gpu:1": pytest.approx(0.3)}


def test_pairing_a_recorded_laptop_with_its_fake_openvino_devices() -> None:
    """The recorded Intel laptop and the device list OpenVINO gave there (openvino.json)."""
    import json

    from probes.testing import replay

    laptop = Path(__file__).parent / "fixtures/machines/intel-core-ultra-laptop-igpu-npu"
    hw = replay(laptop)
    devices = json.loads((laptop / "openvino.json").read_text())
    paired = ovb.pair_accelerators(hw.accelerators, devices)
    assert {d: (a.kind, a.pci_id) for d, a in paired.items()} == {
        "GPU": ("igpu", "8086:7d55"),
        "NPU": ("npu", "8086:7d1d"),
    }


def test_an_openvino_device_without_a_sysfs_entry_is_described_from_its_name() -> None:
    paired = ovb.pair_accelerators(
        (), {"CPU": "x", "GPU": "Intel(R) Arc(TM) A770 Graphics (dGPU)", "NPU": "NPU"}
    )
    assert {d: a.kind for d, a in paired.items()} == {"GPU": "dgpu", "NPU": "npu"}


def test_declared_facts(backend: Any) -> None:
    assert (backend.name, backend.pip_extra, backend.package) == (NAME, "openvino", "openvino")
    assert not backend.capabilities.reference and backend.capabilities.dynamic_shapes
    assert "openvino" in backend.versions()


def test_availability_lists_openvino_devices(backend: Any, hw: Any) -> None:
    av = backend.availability(hw)
    assert av.installed and av.usable, av
    ov = ovb.import_openvino()
    assert av.devices == tuple(ovb.to_device(d) for d in ov.Core().available_devices)
    assert "cpu" in av.devices


def test_device_names_round_trip() -> None:
    for ov_name, ours in [("CPU", "cpu"), ("GPU", "gpu:0"), ("GPU.1", "gpu:1"), ("NPU", "npu")]:
        assert ovb.to_device(ov_name) == ours
    assert ovb.to_ov_device("gpu:1") == "GPU.1" and ovb.to_ov_device("cpu") == "CPU"


def test_candidates(backend: Any, hw: Any, model_paths: dict) -> None:
    facts = load_facts(model_paths["tiny"])
    cands = backend.candidates(facts, hw, "latency")
    assert Candidate.make(NAME, "cpu", "fp32") in cands
    caps = next(c for d, _, c, _ in ovb.device_report() if d == "CPU")
    native = any(hw.cpu.has(f) for f in ("avx512_bf16", "amx_bf16"))  # not AVX-512 emulation
    assert (Candidate.make(NAME, "cpu", "bf16") in cands) == ("BF16" in caps and native)


def test_cpu_precisions_follow_the_hardware_facts_with_a_fake_openvino_report() -> None:
    """A recorded machine's CPU flags decide, not the live CPU's report (the connector test's
    bug); facts that name the CPU OpenVINO runs on need OpenVINO's word as well."""
    from types import SimpleNamespace

    def hw(name: str, *flags: str) -> Any:
        return SimpleNamespace(cpu=SimpleNamespace(model_name=name, flags=flags))

    everything = frozenset({"FP32", "BF16", "FP16", "INT8"})
    assert ovb.cpu_precisions(hw("AMD EPYC 7B13", "avx2", "f16c"), "Intel Xeon", everything) == []
    assert ovb.cpu_precisions(hw("Xeon 8480+", "avx512_bf16", "amx_bf16"), "EPYC", {"FP32"}) == ["bf16"]
    assert ovb.cpu_precisions(hw("Cortex-A76", "asimdhp", "fphp"), "Intel Xeon", set()) == ["fp16"]
    spr = hw("Intel(R) Xeon(R)  Platinum 8480+", "avx512_bf16", "amx_bf16", "avx512_fp16")
    assert ovb.cpu_precisions(spr, "Intel(R) Xeon(R) Platinum 8480+", everything) == ["bf16", "fp16"]
    assert ovb.cpu_precisions(spr, "intel(r) xeon(r) platinum 8480+", {"FP32", "FP16"}) == ["fp16"]


def test_npu_with_dynamic_shapes_is_unsupported_with_reason(
    backend: Any, hw: Any, model_paths: dict, monkeypatch: Any
) -> None:
    fake = (
        ("CPU", "cpu", frozenset({"FP32"}), frozenset()),
        ("NPU", "Intel NPU", frozenset({"FP16"}), frozenset()),
    )
    monkeypatch.setattr(ovb, "device_report", lambda: fake)
    cands = backend.candidates(load_facts(model_paths["dynamic_batch"]), hw, "latency")
    npu = [c for c in cands if c.device == "npu"]
    assert len(npu) == 1 and isinstance(npu[0], Unsupported)
    assert "static" in npu[0].reason and "input" in npu[0].reason
    static = backend.candidates(load_facts(model_paths["tiny"]), hw, "latency")
    assert Candidate.make(NAME, "npu", "fp16") in static


def test_float64_models_are_refused(backend: Any, hw: Any, tmp_path: Path) -> None:
    import onnx

    path = (
        Path(onnx.__file__).parent
        / "backend/test/data/pytorch-operator/test_operator_add_broadcast/model.onnx"
    )
    facts = load_facts(path)
    cands = backend.candidates(facts, hw, "latency")
    assert cands and all(isinstance(c, Unsupported) and "float64" in c.reason for c in cands)
    with pytest.raises(UnsupportedModel, match="float64"):
        _load(backend, path, tmp_path)


def test_variants_are_few_distinct_and_load(backend: Any, hw: Any, model_paths: dict, tmp_path: Path) -> None:
    facts = load_facts(model_paths["multi_io"])
    base = Candidate.make(NAME)
    feeds = _multi_feeds(3)
    for objective in ("latency", "throughput"):
        variants = backend.variants(base, facts, hw, objective)
        assert 1 <= len(variants) <= 5
        assert len({v.key for v in variants}) == len(variants) and base not in variants
        # flush-to-zero could reach the caller's thread: never tried automatically
        assert not any("CPU_DENORMALS_OPTIMIZATION" in v.settings_dict for v in variants), variants
        for v in variants:
            with _load(backend, model_paths["multi_io"], tmp_path / v.key, v, objective=objective) as r:
                for got, want in zip(r.run(feeds), _multi_expected(feeds), strict=True):
                    np.testing.assert_allclose(got, want, rtol=1e-6)
            assert backend.estimate(v, facts, hw, objective).reasons


def test_compile_config(backend: Any, model_paths: dict, tmp_path: Path) -> None:
    with _load(backend, model_paths["tiny"], tmp_path / "a", threads=2) as r:
        cm = r.compiled
        assert str(cm.get_property("PERFORMANCE_HINT")).endswith("LATENCY")
        assert cm.get_property("INFERENCE_NUM_THREADS") == 2
        # fp32 means fp32, even on a CPU where OpenVINO would default to bf16.
        assert "f32" in str(cm.get_property("INFERENCE_PRECISION_HINT")).lower() or "float32" in str(
            cm.get_property("INFERENCE_PRECISION_HINT")
        )
    with _load(backend, model_paths["tiny"], tmp_path / "b", threads=2, objective="throughput") as r:
        assert str(r.compiled.get_property("PERFORMANCE_HINT")).endswith("THROUGHPUT")
    cand = Candidate.make(NAME, INFERENCE_NUM_THREADS=64, NUM_STREAMS=1)
    with _load(backend, model_paths["tiny"], tmp_path / "c", cand, threads=1) as r:
        assert r.compiled.get_property("INFERENCE_NUM_THREADS") == 1  # never above the quota
        assert r.compiled.get_property("NUM_STREAMS") == 1


def test_cache_dir_is_the_artifact_dir(backend: Any, model_paths: dict, tmp_path: Path) -> None:
    art = tmp_path / "artifacts"
    t0 = time.perf_counter()
    with _load(backend, model_paths["mobilenetv2"], art):
        first = time.perf_counter() - t0
    blobs = list(art.iterdir())
    assert blobs, "compiling wrote nothing to the artifact directory"
    t0 = time.perf_counter()
    with _load(backend, model_paths["mobilenetv2"], art) as r:
        second = time.perf_counter() - t0
        assert r.compiled.get_property("LOADED_FROM_CACHE") is True
    print(f"mobilenetv2 on OpenVINO CPU: first load {first:.3f} s, cached {second:.3f} s")


def test_run_outputs_order_names_dtypes_shapes(backend: Any, model_paths: dict, tmp_path: Path) -> None:
    with _load(backend, model_paths["multi_io"], tmp_path) as r:
        assert r.input_names == ("x", "ids")
        assert r.output_names == ("sum", "next_ids", "positive")
        feeds = _multi_feeds(5)
        got = r.run(feeds)
        want = _multi_expected(feeds)
        assert [g.dtype for g in got] == [np.float32, np.int64, np.bool_]
        assert [g.shape for g in got] == [(5,), (5,), (5, 4)]
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[2], want[2])


def test_outputs_are_copies_not_views_of_reused_tensors(
    backend: Any, model_paths: dict, tmp_path: Path
) -> None:
    with _load(backend, model_paths["multi_io"], tmp_path) as r:
        a, b = _multi_feeds(4, seed=1), _multi_feeds(4, seed=2)
        first = r.run(a)
        kept = [x.copy() for x in first]
        r.run(b)
        for x, k in zip(first, kept, strict=True):
            np.testing.assert_array_equal(x, k)


def test_read_only_and_non_contiguous_inputs(backend: Any, model_paths: dict, tmp_path: Path) -> None:
    with _load(backend, model_paths["multi_io"], tmp_path) as r:
        feeds = _multi_feeds(6)
        want = r.run(feeds)
        x = np.asfortranarray(feeds["x"])
        ids = feeds["ids"].copy()
        ids.setflags(write=False)
        got = r.run({"x": x, "ids": ids})
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


def test_dynamic_batch_two_sizes(backend: Any, model_paths: dict, tmp_path: Path) -> None:
    import onnx
    import zoo

    proto = onnx.load(str(model_paths["dynamic_batch"]))
    with _load(backend, model_paths["dynamic_batch"], tmp_path) as r:
        x8 = zoo.sample_inputs(proto, shapes={"input": (8, 3, 32, 32)})["input"]
        y8 = r.run({"input": x8})[0]
        y1 = r.run({"input": x8[:1]})[0]
        assert y8.shape == (8, 10) and y1.shape == (1, 10)
        np.testing.assert_allclose(y1[0], y8[0], rtol=1e-4, atol=1e-5)


def test_thread_safety_matches_serial(backend: Any, model_paths: dict, tmp_path: Path) -> None:
    for objective in ("latency", "throughput"):
        with _load(backend, model_paths["multi_io"], tmp_path / objective, objective=objective) as r:
            feeds = [_multi_feeds(16 + i, seed=i) for i in range(8)]
            serial = [r.run(f) for f in feeds]
            results: list[Any] = [None] * 8
            errors: list[BaseException] = []
            barrier = threading.Barrier(8)

            def work(i: int) -> None:
                try:
                    barrier.wait()  # noqa: B023 - joined before the loop moves on
                    for _ in range(20):
                        got = r.run(feeds[i])  # noqa: B023 - joined before the loop moves on
                        for g, w in zip(got, serial[i], strict=True):  # noqa: B023 - joined before the loop moves on
                            np.testing.assert_array_equal(g, w)
                    results[i] = got  # noqa: B023 - joined before the loop moves on
                except BaseException as exc:  # reported below, in the main thread
                    errors.append(exc)  # noqa: B023 - joined before the loop moves on

            threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors[0]
            assert all(res is not None for res in results)


@pytest.mark.parametrize(
    "feeds,match",
    [
        (
            {"x": np.zeros((2, 4)), "ids": np.zeros(2, np.int64)},
            r"input 'x': expected dtype float32 \(tensor\(float\)\), received float64",
        ),
        (
            {"x": np.zeros((2, 5), np.float32), "ids": np.zeros(2, np.int64)},
            r"input 'x': dimension 1 must be 4",
        ),
        ({"x": np.zeros((4,), np.float32), "ids": np.zeros(1, np.int64)}, r"input 'x': expected rank 2"),
        ({"x": np.zeros((2, 4), np.float32)}, r"Input Feed contains 1; missing \['ids'\]"),
        (
            {"x": np.zeros((2, 4), np.float32), "ids": np.zeros(2, np.int64), "nope": np.zeros(1)},
            r"unknown \['nope'\]",
        ),
        (
            {"x": np.zeros((2, 4), np.float32), "ids": np.zeros(2, np.int32)},
            r"input 'ids': expected dtype int64 \(tensor\(int64\)\), received int32",
        ),
    ],
)
def test_bad_feeds_are_refused_by_the_session(
    model_paths: dict, tmp_path: Path, feeds: dict, match: str
) -> None:
    """Feeds are checked once, by the Session, whichever runtime runs; runners trust theirs."""
    s = autoinfer.Session(model_paths["multi_io"], cache_dir=tmp_path, benchmark=False, backends=[NAME])
    with pytest.raises(InputError, match=match):
        s.run(None, feeds)
    good = _multi_feeds(2)
    np.testing.assert_array_equal(s.run(None, good)[1], _multi_expected(good)[1])  # still usable


def test_int64_beyond_int32_is_refused_not_wrong(backend: Any, model_paths: dict, tmp_path: Path) -> None:
    with _load(backend, model_paths["multi_io"], tmp_path) as r:
        feeds = {"x": np.zeros((1, 4), np.float32), "ids": np.array([2**40], np.int64)}
        with pytest.raises(BackendError, match="int32"):
            r.run(feeds)
        feeds["ids"] = np.array([2**31 - 2], np.int64)
        assert r.run(feeds)[1][0] == 2**31 - 1


def test_closed_runner_raises(backend: Any, model_paths: dict, tmp_path: Path) -> None:
    r = _load(backend, model_paths["multi_io"], tmp_path)
    r.close()
    with pytest.raises(BackendError, match="closed"):
        r.run(_multi_feeds(1))


def test_unsupported_model_is_refused_with_reason(backend: Any, tmp_path: Path) -> None:
    import onnx

    path = Path(onnx.__file__).parent / "backend/test/data/simple/test_gradient_of_add/model.onnx"
    with pytest.raises(UnsupportedModel) as info:
        _load(backend, path, tmp_path)
    assert "Gradient" in info.value.reason


def test_unknown_setting_is_an_autoinfer_error(backend: Any, model_paths: dict, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="unknown candidate settings"):
        _load(backend, model_paths["tiny"], tmp_path, Candidate.make(NAME, bogus=1))


def test_diagnose(backend: Any, hw: Any, monkeypatch: Any) -> None:
    assert not [p for p in backend.diagnose(hw) if p.severity == "error"]
    gpu = type("Acc", (), {"kind": "igpu", "vendor": "intel", "name": "Iris Xe"})()
    fake_hw = type("Hw", (), {"accelerators": (gpu,), "cpu": None, "nvidia_gpus": ()})()
    problems = backend.diagnose(fake_hw)
    assert any(p.severity == "warning" and "igpu" in p.message and "opencl" in p.fix for p in problems)


def _string_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto as T
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["o"])],
        "strings",
        [helper.make_tensor_value_info("s", T.STRING, ["N"])],
        [helper.make_tensor_value_info("o", T.STRING, ["N"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_string_models_are_refused(backend: Any, hw: Any, tmp_path: Path) -> None:
    path = _string_model(tmp_path / "strings.onnx")
    cands = backend.candidates(load_facts(path), hw, "latency")
    assert cands and all(isinstance(c, Unsupported) and "string" in c.reason for c in cands)
    with pytest.raises(UnsupportedModel, match="string"):
        _load(backend, path, tmp_path / "art")


def test_a_tiny_model_ranks_openvino_after_the_reference(
    backend: Any, hw: Any, model_paths: dict, tmp_path: Path
) -> None:
    """On a model of a few kFLOP the call, not the kernels, sets the time, and OpenVINO's
    call costs more than ONNX Runtime's (benchmarks: 1.6x to 11x on tiny, lstm, dynamic):
    the ranking puts it after the reference, so a session that only ranks opens on ONNX
    Runtime (in ~2 ms, not OpenVINO's ~200 ms compile)."""
    facts = load_facts(model_paths["tiny"])
    assert facts.flops < 1e7
    s = autoinfer.Session(model_paths["tiny"], cache_dir=tmp_path / "c", selection="off")
    try:
        assert s.choice.backend == "onnxruntime", s.explain()
        ranked = [line for line in s.explain().splitlines() if "estimated cost" in line]
        assert "openvino:cpu:fp32" in "".join(ranked[1:]), ranked
        est = backend.estimate(Candidate.make(NAME, "cpu", "fp32"), facts, hw, "latency")
        assert est.cost > 1.0 and any("per-call cost" in r for r in est.reasons), est
    finally:
        s.close()
