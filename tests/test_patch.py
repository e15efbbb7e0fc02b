"""One-line adoption: ``autoinfer.patch()``, the launcher, and the hints read from
ONNX Runtime's arguments."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import zoo

import autoinfer
from autoinfer.backends.onnxruntime_api import hints_from_ort, original_class

ROOT = Path(__file__).resolve().parents[1]
X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)


def quick() -> dict[str, Any]:
    """autoinfer's own keyword to open without measuring, passed through the patched class."""
    params = inspect.signature(autoinfer.Session.__init__).parameters
    return {"selection": "off"} if "selection" in params else {"benchmark": False}


@pytest.fixture
def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUTOINFER_CACHE_DIR", str(tmp_path / "cache"))
    return zoo.save("tiny", tmp_path / "tiny.onnx")


@pytest.fixture
def patched() -> Any:
    original = ort.InferenceSession
    cls = autoinfer.patch()
    yield cls
    autoinfer.unpatch()
    assert ort.InferenceSession is original


def test_patch_is_idempotent_and_unpatch_restores_the_exact_class() -> None:
    original = ort.InferenceSession
    a = autoinfer.patch()
    b = autoinfer.patch()
    assert a is b is ort.InferenceSession and a is not original
    assert issubclass(a, autoinfer.Session)
    autoinfer.unpatch()
    autoinfer.unpatch()
    assert ort.InferenceSession is original


def test_patch_from_many_threads_at_once_installs_one_class() -> None:
    original = ort.InferenceSession
    got: list[type] = []
    threads = [threading.Thread(target=lambda: got.append(autoinfer.patch())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1 and ort.InferenceSession is got[0]
    autoinfer.unpatch()
    assert ort.InferenceSession is original


def test_an_application_idiom_runs_and_matches_plain_onnxruntime(model: Path, patched: Any) -> None:
    expected = original_class()(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": X})
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"], **quick())
    assert isinstance(s, autoinfer.Session) and isinstance(s, ort.InferenceSession)
    assert isinstance(s.get_providers()[0], str)
    name = s.get_inputs()[0].name
    np.testing.assert_allclose(s.run(None, {name: X})[0], expected[0], rtol=1e-5, atol=1e-6)
    assert s._threads == 1  # intra_op_num_threads is honoured
    # autoinfer's own ONNX Runtime session is ONNX Runtime's class, not the patched one
    runner = s._current_runner()
    if hasattr(runner, "session"):
        assert type(runner.session) is original_class()
        assert runner.session.get_session_options().intra_op_num_threads == 1


def test_models_as_bytes_and_subclasses_and_old_sessions_work(model: Path, patched: Any) -> None:
    old = original_class()(str(model))
    assert isinstance(old, ort.InferenceSession)  # created before the patch: still one

    class AppSession(ort.InferenceSession):  # applications subclass it
        def __init__(self, path: Any) -> None:
            super().__init__(path, providers=["CPUExecutionProvider"], **quick())

        def infer(self, x: np.ndarray) -> np.ndarray:
            return self.run(None, {"input": x})[0]

    s = AppSession(model.read_bytes())
    assert isinstance(s, ort.InferenceSession) and isinstance(s, autoinfer.Session)
    np.testing.assert_allclose(s.infer(X), old.run(None, {"input": X})[0], rtol=1e-5, atol=1e-6)


def test_the_default_patched_session_chooses_and_gives_onnxruntimes_outputs(
    model: Path, patched: Any
) -> None:
    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    expected = original_class()(str(model)).run(None, {"input": X})[0]
    np.testing.assert_allclose(s.run(None, {"input": X})[0], expected, rtol=1e-4, atol=1e-5)
    wait = getattr(s, "wait_for_choice", None)
    if wait is not None:
        wait()
        np.testing.assert_allclose(s.run(None, {"input": X})[0], expected, rtol=1e-4, atol=1e-5)


# -- hints, as data (no GPU here: the GPU rows are the mapping only) ----------------------
def test_hints_cpu_only_providers_choose_among_cpu_runtimes() -> None:
    h = hints_from_ort(None, ["CPUExecutionProvider"])
    assert not h.pinned and h.devices == ("cpu",)
    assert "tensorrt" in h.session_kwargs["exclude"]
    assert "onnxruntime" not in h.session_kwargs["exclude"]
    assert "openvino" not in h.session_kwargs["exclude"]


def test_hints_threads_are_honoured_and_onnxruntime_internals_are_not_carried() -> None:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 3
    so.inter_op_num_threads = 2
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.enable_cpu_mem_arena = False
    h = hints_from_ort(so, None)
    assert h.session_kwargs == {"threads": 3} and not h.pinned and h.devices == ()


def test_hints_gpu_providers_map_to_gpu_candidates_with_fake_cuda() -> None:
    h = hints_from_ort(None, [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"])
    assert not h.pinned and h.devices == ("cuda:1", "cpu") and "exclude" not in h.session_kwargs
    h = hints_from_ort(
        None, ["TensorrtExecutionProvider", "CUDAExecutionProvider"], [{"trt_fp16_enable": True}, {}]
    )
    assert h.devices == ("cuda",) and h.session_kwargs["precision"] == "auto"
    h = hints_from_ort(None, [("OpenVINOExecutionProvider", {"device_type": "GPU"})])
    assert h.devices == ("gpu",)


def test_the_registry_hands_the_arguments_to_the_backend_that_claims_them() -> None:
    from autoinfer import backends

    h = backends.claim_app_options(None, ["CPUExecutionProvider"])
    assert h == hints_from_ort(None, ["CPUExecutionProvider"])
    assert h is not None and h.backend == "onnxruntime" and not h.pinned
    assert h.stay_kwargs == {
        "sess_options": None,
        "providers": ["CPUExecutionProvider"],
        "provider_options": None,
    }
    assert hints_from_ort().stay_kwargs["providers"] == ["CPUExecutionProvider"]
    others = [n for n in backends.names() if n != "onnxruntime"]
    assert others and all(
        backends.get(n).claim_app_options(None, ["CPUExecutionProvider"]) is None for n in others
    )


@pytest.mark.parametrize("case", ["unknown provider", "profiling", "optimized model file", "ort keyword"])
def test_hints_that_only_onnxruntime_can_honour_pin_it(case: str, tmp_path: Path) -> None:
    so, providers, kw = ort.SessionOptions(), ["CPUExecutionProvider"], {}
    if case == "unknown provider":
        providers = ["QNNExecutionProvider", "CPUExecutionProvider"]
    elif case == "profiling":
        so.enable_profiling = True
    elif case == "optimized model file":
        so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    else:
        kw = {"disabled_optimizers": ["ConstantFolding"]}
    h = hints_from_ort(so, providers, None, **kw)
    assert h.pinned and h.session_kwargs["sess_options"] is so
    assert h.session_kwargs["providers"] == providers and h.notes
    assert h.backend == "onnxruntime" and h.stay_kwargs["sess_options"] is so


def test_profiling_under_the_patch_stays_on_onnxruntime(model: Path, patched: Any) -> None:
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(model.parent / "prof")
    s = ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])
    s.run(None, {"input": X})
    assert s.choice.backend == "onnxruntime"
    assert Path(s.end_profiling()).is_file()


# -- the process: imports, launcher ---------------------------------------------------
def _py(
    code_or_args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, *code_or_args], capture_output=True, text=True, env=e, cwd=cwd, timeout=300
    )


def test_import_is_light_and_patch_imports_no_other_runtime(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import sys, autoinfer
        heavy = ("onnxruntime", "openvino", "ncnn", "tensorrt", "onnx")
        assert not [m for m in heavy if m in sys.modules], sys.modules.keys()
        autoinfer.patch()
        import onnxruntime
        assert onnxruntime.InferenceSession.__mro__[1].__module__ == "autoinfer.session"
        from autoinfer.backends.onnxruntime_api import hints_from_ort
        hints_from_ort(None, ["CPUExecutionProvider"])  # reads the registry's capabilities
        assert not [m for m in ("openvino", "ncnn", "tensorrt") if m in sys.modules]
        print("ok")
    """)
    r = _py(["-c", code], {"AUTOINFER_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


APP = textwrap.dedent("""
    import sys
    import onnxruntime as ort
    import numpy as np
    s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    y = s.run(None, {s.get_inputs()[0].name: np.ones((1, 16), np.float32)})[0]
    print(type(s).__mro__[1].__module__, sys.argv[0].rsplit("/", 1)[-1], __name__,
          round(float(y.sum()), 4))
""")


@pytest.mark.parametrize("mode", ["script", "module", "AUTOINFER_PATCH=0"])
def test_the_launcher_runs_an_unmodified_application_under_the_patch(
    mode: str, model: Path, tmp_path: Path
) -> None:
    (tmp_path / "demo_app.py").write_text(APP)
    env = {"AUTOINFER_CACHE_DIR": str(tmp_path / "c"), "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    if mode == "module":
        args = ["-m", "autoinfer.patch", "-m", "demo_app", str(model)]
    else:
        args = ["-m", "autoinfer.patch", str(tmp_path / "demo_app.py"), str(model)]
        if mode == "AUTOINFER_PATCH=0":
            env["AUTOINFER_PATCH"] = "0"
    r = _py(args, env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    owner, argv0, name, total = r.stdout.split()
    expected = ort.InferenceSession(str(model)).run(None, {"input": np.ones((1, 16), np.float32)})
    assert abs(float(total) - round(float(expected[0].sum()), 4)) < 1e-3
    assert name == "__main__"
    assert argv0 in ("demo_app.py", "demo_app")
    if mode == "AUTOINFER_PATCH=0":
        assert owner != "autoinfer.session"
    else:
        assert owner == "autoinfer.session"


def test_autoinfer_patch_stays_callable_after_the_submodule_is_imported() -> None:
    import autoinfer.patch  # noqa: F401 - Python sets the submodule on the package
    from autoinfer.patch import unpatch

    module = sys.modules["autoinfer.patch"]
    assert callable(autoinfer.patch) and callable(module)
    original = ort.InferenceSession
    module()
    assert ort.InferenceSession is not original
    unpatch()
    assert ort.InferenceSession is original
