"""The ONNX Runtime backend against the real onnxruntime: contract, settings, errors."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import autoinfer
from autoinfer.backends import Candidate, LoadContext, Problem, Unsupported, get
from autoinfer.backends import onnxruntime as ortb
from autoinfer.errors import BackendError, InputError, UnsupportedModel
from autoinfer.model import load_facts

NAME = "onnxruntime"


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


def test_import_does_not_import_onnxruntime() -> None:
    code = (
        "import sys, autoinfer.backends.onnxruntime as m; "
        "assert 'onnxruntime' not in sys.modules, 'imported'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_declared_facts(backend: Any) -> None:
    assert backend.name == NAME and backend.pip_extra is None and backend.package == "onnxruntime"
    assert backend.capabilities.reference and backend.capabilities.dynamic_shapes
    assert "onnxruntime" in backend.versions()


def test_availability(backend: Any, hw: Any) -> None:
    import onnxruntime

    av = backend.availability(hw)
    assert av.installed and av.usable, av
    assert av.version == onnxruntime.__version__
    assert av.devices[0] == "cpu"


def test_provider_report_tries_each_listed_provider() -> None:
    import onnxruntime

    report = ortb.provider_report()
    listed = [p for p in onnxruntime.get_available_providers() if p != "CPUExecutionProvider"]
    assert [ep for ep, _, _ in report] == listed
    for ep, ok, why in report:
        assert ok or why, f"{ep} does not load but no reason was given"
    # A remote-inference provider is never offered as a local device.
    assert all(not ok for ep, ok, _ in report if ep == "AzureExecutionProvider")
    assert ortb.provider_report() is report  # probed once per process


def test_candidates_cpu_always_and_only_loading_providers(backend: Any, hw: Any, model_paths: dict) -> None:
    facts = load_facts(model_paths["tiny"])
    cands = backend.candidates(facts, hw, "latency")
    real = [c for c in cands if isinstance(c, Candidate)]
    assert real[0] == Candidate.make(NAME, "cpu", "fp32")
    loading = {ep for ep, ok, _ in ortb.provider_report() if ok}
    for c in real[1:]:
        assert c.get("provider") in loading


def test_variants_are_few_distinct_and_load(backend: Any, hw: Any, model_paths: dict, tmp_path: Path) -> None:
    facts = load_facts(model_paths["multi_io"])
    base = Candidate.make(NAME)
    for objective in ("latency", "throughput"):
        variants = backend.variants(base, facts, hw, objective)
        assert 1 <= len(variants) <= 5
        assert len({v.key for v in variants}) == len(variants) and base not in variants
    feeds = _multi_feeds(3)
    for v in backend.variants(base, facts, hw, "latency"):
        with _load(backend, model_paths["multi_io"], tmp_path, v) as r:
            for got, want in zip(r.run(feeds), _multi_expected(feeds), strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-6)
        est = backend.estimate(v, facts, hw, "latency")
        assert est.cost > 0 and est.reasons


def test_estimate_reference_is_one(backend: Any, hw: Any, model_paths: dict) -> None:
    facts = load_facts(model_paths["tiny"])
    est = backend.estimate(Candidate.make(NAME), facts, hw, "latency")
    assert est.cost == 1.0 and est.reasons


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


def test_dynamic_batch_two_sizes(backend: Any, model_paths: dict, tmp_path: Path) -> None:
    import onnx
    import zoo

    proto = onnx.load(str(model_paths["dynamic_batch"]))
    with _load(backend, model_paths["dynamic_batch"], tmp_path) as r:
        x8 = zoo.sample_inputs(proto, shapes={"input": (8, 3, 32, 32)})["input"]
        y8 = r.run({"input": x8})[0]
        y1 = r.run({"input": x8[:1]})[0]
        assert y8.shape == (8, 10) and y1.shape == (1, 10)
        np.testing.assert_allclose(y1[0], y8[0], rtol=1e-5, atol=1e-6)


def test_thread_safety_matches_serial(backend: Any, model_paths: dict, tmp_path: Path) -> None:
    with _load(backend, model_paths["multi_io"], tmp_path) as r:
        feeds = [_multi_feeds(16 + i, seed=i) for i in range(8)]
        serial = [r.run(f) for f in feeds]
        results: list[Any] = [None] * 8
        barrier = threading.Barrier(8)

        def work(i: int) -> None:
            barrier.wait()
            for _ in range(20):
                results[i] = r.run(feeds[i])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for got, want in zip(results, serial, strict=True):
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w)


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
        ({"x": "text", "ids": np.zeros(2, np.int64)}, r"input 'x': expected a numpy array"),
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


def test_closed_runner_raises(backend: Any, model_paths: dict, tmp_path: Path) -> None:
    r = _load(backend, model_paths["multi_io"], tmp_path)
    r.close()
    with pytest.raises(BackendError, match="closed"):
        r.run(_multi_feeds(1))


def test_unsupported_model_is_refused_with_reason(backend: Any, tmp_path: Path) -> None:
    import onnx

    # ai.onnx.preview.training.Gradient: defined by ONNX, implemented by no inference runtime.
    path = Path(onnx.__file__).parent / "backend/test/data/simple/test_gradient_of_add/model.onnx"
    with pytest.raises(UnsupportedModel) as info:
        _load(backend, path, tmp_path)
    assert "Gradient" in info.value.reason


def test_unknown_setting_is_an_autoinfer_error(backend: Any, model_paths: dict, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="unknown candidate settings"):
        _load(backend, model_paths["tiny"], tmp_path, Candidate.make(NAME, bogus=1))


def test_threads_never_exceed_the_quota(backend: Any, model_paths: dict, tmp_path: Path) -> None:
    cand = Candidate.make(NAME, intra_op_threads=64)
    with _load(backend, model_paths["tiny"], tmp_path, cand, threads=2) as r:
        assert r.session.get_session_options().intra_op_num_threads == 2
    with _load(backend, model_paths["tiny"], tmp_path, threads=3) as r:
        assert r.session.get_session_options().intra_op_num_threads == 3
    with _load(
        backend, model_paths["tiny"], tmp_path, Candidate.make(NAME, intra_op_threads=1), threads=2
    ) as r:
        assert r.session.get_session_options().intra_op_num_threads == 1


def test_the_reference_is_onnx_runtimes_own_default_pool_where_it_takes_nothing_more(
    backend: Any, model_paths: dict, tmp_path: Path
) -> None:
    """Left to ONNX Runtime (0: a thread per physical core, pinned) only where the process
    may use every CPU and the application named no count; else the quota, explicitly."""
    import dataclasses

    import probes

    hw = probes.detect()
    free = dataclasses.replace(
        hw, cpu=dataclasses.replace(hw.cpu, quota_cores=None, usable_cores=hw.cpu.logical_cores)
    )
    n = free.cpu.usable_cores

    def threads(h: Any, **ctx: Any) -> int:
        with _load(backend, model_paths["tiny"], tmp_path, hardware=h, threads=n, **ctx) as r:
            return r.session.get_session_options().intra_op_num_threads

    assert threads(free) == 0
    assert threads(free, threads_asked=True) == n
    assert threads(None) == n
    if n > 1:
        quota = dataclasses.replace(hw, cpu=dataclasses.replace(free.cpu, quota_cores=n - 0.5))
        assert threads(quota) == n


def test_settings_reach_the_session(backend: Any, model_paths: dict, tmp_path: Path) -> None:
    import onnxruntime

    cand = Candidate.make(NAME, graph_optimization="extended", allow_spinning=False)
    with _load(backend, model_paths["tiny"], tmp_path, cand) as r:
        so = r.session.get_session_options()
        assert so.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def _subnormals_survive() -> bool:
    return bool(np.array([1e-310])[0] * 1.0 != 0.0)


def test_tuning_never_switches_the_callers_thread_to_flush_to_zero(
    backend: Any, model_paths: dict, tmp_path: Path, hw: Any
) -> None:
    """denormal_as_zero sets FTZ/DAZ on the thread that creates the session (the
    application's): it works when asked for, in a child process, and is never tried
    automatically."""
    code = f"""
import numpy as np, tempfile
from pathlib import Path
from autoinfer.backends import get, Candidate, LoadContext
from autoinfer.model import load_facts
b = get({NAME!r})
before = bool(np.array([1e-310])[0] * 1.0 != 0.0)
r = b.load(Candidate.make({NAME!r}, denormal_as_zero=True), load_facts({str(model_paths["tiny"])!r}),
           LoadContext(Path(tempfile.mkdtemp())))
print(before, r.session.get_session_options().get_session_config_entry(
    "session.set_denormal_as_zero"), bool(np.array([1e-310])[0] * 1.0 != 0.0))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "1", "False"], out.stdout + out.stderr[-2000:]
    facts = load_facts(model_paths["mobilenetv2"])
    for objective in ("latency", "throughput"):
        for base in backend.candidates(facts, hw, objective):
            if isinstance(base, Unsupported):
                continue
            for v in backend.variants(base, facts, hw, objective):
                assert not v.get("denormal_as_zero"), v
    assert _subnormals_survive()


def test_user_session_options_and_providers_are_honoured(
    backend: Any, model_paths: dict, tmp_path: Path
) -> None:
    import onnxruntime

    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    with _load(
        backend,
        model_paths["tiny"],
        tmp_path,
        threads=2,
        app_options={"sess_options": so, "providers": ["CPUExecutionProvider"]},
    ) as r:
        got = r.session.get_session_options()
        assert got.intra_op_num_threads == 1
        assert got.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        assert r.providers == ("CPUExecutionProvider",)


def test_diagnose_two_distributions_is_an_error(backend: Any, hw: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(ortb, "distributions_of", lambda m: ["onnxruntime", "onnxruntime-gpu"])
    problems = backend.diagnose(hw)
    err = [p for p in problems if p.severity == "error"]
    assert err and "onnxruntime-gpu" in err[0].message and "pip uninstall" in err[0].fix


def test_diagnose_listed_provider_not_loading_is_a_warning(backend: Any, hw: Any, monkeypatch: Any) -> None:
    report = (("CUDAExecutionProvider", False, "libcudnn.so.9: cannot open shared object file"),)
    monkeypatch.setattr(ortb, "provider_report", lambda: report)
    problems = backend.diagnose(hw)
    warn = [p for p in problems if p.severity == "warning"]
    assert warn and "CUDAExecutionProvider" in warn[0].message and "libcudnn" in warn[0].message
    assert "cudnn" in warn[0].fix.lower()
    # ...and the provider is offered as Unsupported, with the reason, not as a candidate.
    facts_cands = backend.candidates(load_facts_tiny(), hw, "latency")
    assert any(not isinstance(c, Candidate) and "does not load" in c.reason for c in facts_cands)
    assert all(isinstance(p, Problem) for p in problems)


def load_facts_tiny() -> Any:
    import tempfile

    import zoo

    d = Path(tempfile.mkdtemp())
    return load_facts(zoo.save("tiny", d / "tiny.onnx"))


def test_diagnose_clean_install_has_no_error(backend: Any, hw: Any) -> None:
    assert not [p for p in backend.diagnose(hw) if p.severity == "error"]


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


def test_string_tensors(backend: Any, tmp_path: Path) -> None:
    with _load(backend, _string_model(tmp_path / "strings.onnx"), tmp_path / "art") as r:
        (out,) = r.run({"s": np.array(["ab", "c"], dtype=object)})
        assert out.dtype == object and out.tolist() == ["ab", "c"]
