"""NVML's GPUs mapped to CUDA's devices, and ONNX Runtime's CUDA and TensorRT providers.

No GPU exists where these tests run: CUDA is the fake in ``tests/fakes`` or is
absent, and the provider report is replaced, so every test here runs with fakes
(their names say so). They check that NVML's index never reaches ONNX Runtime
as a CUDA ``device_id``, that CUDA_VISIBLE_DEVICES and MIG are honoured, and
that the TensorRT provider falls back to CUDA before the CPU.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import fakes
import pytest

from autoinfer.backends import _cuda
from autoinfer.backends import onnxruntime as ortb
from autoinfer.backends.base import Candidate, LoadContext, Unsupported
from probes.testing import replay

MACHINES = Path(__file__).parent / "fixtures" / "machines"
GPU_EPS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture()
def gpu_providers(monkeypatch):
    """ONNX Runtime as onnxruntime-gpu with working CUDA and TensorRT providers."""
    report = tuple((ep, True, "") for ep in GPU_EPS)
    monkeypatch.setattr(ortb, "provider_report", lambda: report)


def _no_cuda_bindings(monkeypatch):
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)


def _gpu_candidates(out):
    return sorted(
        (c.get("provider"), c.device, c.get("device_id"))
        for c in out
        if isinstance(c, Candidate) and c.device.startswith("cuda")
    )


def _facts(tmp_path):
    from test_backend_tensorrt import small_cnn

    from autoinfer.model import load_facts

    return load_facts(small_cnn(tmp_path / "m.onnx"))


# -- the mapping --------------------------------------------------------------------------


def test_place_prefers_the_bus_id_and_never_matches_a_truncated_uuid_with_fake_cuda():
    gpus = fakes.eight_gpus()[:2]
    by_bus = [_cuda.CudaDevice(0, "0000:28:00.0", None), _cuda.CudaDevice(1, "0000:18:00.0", "ab")]
    placed, why = _cuda.place(gpus, by_bus)
    assert {i: p.ordinal for i, p in placed.items()} == {0: 1, 1: 0} and not why
    cut = dataclasses.replace(gpus[0], pci_bus_id=None, uuid="GPU-5b1e")  # a prefix is no match
    placed, why = _cuda.place([cut], [_cuda.CudaDevice(0, None, _cuda.bare_uuid(gpus[0].uuid))])
    assert not placed and "CUDA does not see" in why[0]


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, {i: i for i in range(8)}),
        ({"CUDA_VISIBLE_DEVICES": "2,3"}, {2: 0, 3: 1}),
        ({"CUDA_VISIBLE_DEVICES": "3,2"}, {3: 0, 2: 1}),
        ({"CUDA_VISIBLE_DEVICES": "1,9,2"}, {1: 0}),  # CUDA stops at the first invalid entry
        ({"CUDA_VISIBLE_DEVICES": "GPU-00000006"}, {6: 0}),
        ({"CUDA_VISIBLE_DEVICES": ""}, {}),
    ],
)
def test_visible_devices_from_the_environment_with_fake_gpus(env, expected):
    gpus = fakes.eight_gpus()
    devices, why = _cuda.visible_from_env(gpus, env)
    placed, _ = _cuda.place(gpus, devices)
    assert {i: p.ordinal for i, p in placed.items()} == expected


def test_unlike_gpus_in_fastest_first_order_are_not_guessed_with_fake_gpus():
    t4 = dataclasses.replace(fakes.T4, index=0)
    h100 = dataclasses.replace(fakes.H100, index=1)
    devices, why = _cuda.visible_from_env([t4, h100], {"CUDA_VISIBLE_DEVICES": "0"})
    assert devices is None and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in why
    devices, _ = _cuda.visible_from_env([t4, h100], {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    assert [d.pci_bus_id for d in devices] == ["0000:1b:00.0", "0000:5e:00.0"]


def test_mig_instance_named_in_the_environment_with_fake_gpus():
    gpu = fakes.A100_MIG
    devices, _ = _cuda.visible_from_env([gpu], {"CUDA_VISIBLE_DEVICES": gpu.mig_instances[1].uuid})
    placed, _ = _cuda.place([gpu], devices)
    assert placed[0].mig == gpu.mig_instances[1] and placed[0].memory_mb == 4864
    devices, why = _cuda.visible_from_env([gpu], {})
    assert devices is None and "MIG" in why


# -- ONNX Runtime's candidates ----------------------------------------------------------------


@pytest.mark.parametrize("with_bindings", [True, False])
def test_ort_gpu_candidates_on_the_recorded_8_gpu_host_with_fake_cuda(
    monkeypatch, tmp_path, gpu_providers, with_bindings
):
    """Recorded with CUDA_VISIBLE_DEVICES=2,3: 2 GPU candidates per provider, device_id 0 and 1."""
    root = MACHINES / "x86-server-8x-h100-cuda-visible-2-3"
    hw = replay(root)
    env, devices = fakes.cuda_from_fixture(root)
    if with_bindings:
        fakes.install(monkeypatch, cuda_devices=devices)
    else:
        _no_cuda_bindings(monkeypatch)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = ortb.OnnxRuntimeBackend().candidates(_facts(tmp_path), hw, "latency")
    got = {(p, d, i) for p, d, i in _gpu_candidates(out)}
    assert got == {(p, d, i) for p in GPU_EPS[:2] for d, i in (("cuda:2", 0), ("cuda:3", 1))}
    hidden = [c for c in out if isinstance(c, Unsupported) and c.device.startswith("cuda:")]
    assert len(hidden) == 2 * 6 and all("CUDA does not see" in c.reason for c in hidden)


def test_ort_gpu_candidates_on_the_recorded_mig_host_with_fake_cuda(monkeypatch, tmp_path, gpu_providers):
    root = MACHINES / "x86-server-a100-mig"
    hw = replay(root)
    env, devices = fakes.cuda_from_fixture(root)
    fakes.install(monkeypatch, cuda_devices=devices)
    out = ortb.OnnxRuntimeBackend().candidates(_facts(tmp_path), hw, "latency")
    assert {(d, i) for _, d, i in _gpu_candidates(out)} == {("cuda:0", 0)}


def test_ort_without_nvml_still_offers_cuda_0_with_fake_providers(tmp_path, gpu_providers):
    """Jetson: no NVML, but the CUDA provider loads; CUDA's first device is the candidate."""
    hw = replay(MACHINES / "jetson-agx-orin")
    out = ortb.OnnxRuntimeBackend().candidates(_facts(tmp_path), hw, "latency")
    assert ("CUDAExecutionProvider", "cuda:0", 0) in _gpu_candidates(out)


@pytest.mark.parametrize("name", ["amd-epyc-2core-container", "intel-core-ultra-laptop-igpu-npu"])
def test_ort_offers_no_cuda_where_the_facts_show_no_nvidia_gpu_with_fake_providers(
    name, tmp_path, gpu_providers
):
    """onnxruntime-gpu's CUDA provider loads where the CUDA libraries are installed, GPU or not:
    without an NVIDIA GPU in the hardware facts there is no CUDA candidate, and it says why."""
    hw = replay(MACHINES / name)
    assert not hw.nvidia_gpus and not any(a.vendor == "nvidia" for a in hw.accelerators)
    out = ortb.OnnxRuntimeBackend().candidates(_facts(tmp_path), hw, "latency")
    assert _gpu_candidates(out) == []
    why = {c.reason for c in out if isinstance(c, Unsupported) and c.device == "cuda"}
    assert why == {f"{ep} loads, but the hardware facts show no NVIDIA GPU" for ep in GPU_EPS[:2]}
    assert "cuda" not in " ".join(ortb.OnnxRuntimeBackend().availability(hw).devices)


def test_ort_tensorrt_provider_falls_back_to_cuda_then_cpu_with_fake_providers(tmp_path, gpu_providers):
    cand = Candidate.make("onnxruntime", "cuda:3", "fp16", provider="TensorrtExecutionProvider", device_id=1)
    names, opts = ortb.OnnxRuntimeBackend._providers(cand, LoadContext(artifact_dir=tmp_path / "a"))
    assert names == GPU_EPS
    assert opts[0]["device_id"] == 1 and opts[1] == {"device_id": 1} and opts[2] == {}
    cuda = Candidate.make("onnxruntime", "cuda:3", "fp32", provider="CUDAExecutionProvider", device_id=1)
    names, _ = ortb.OnnxRuntimeBackend._providers(cuda, LoadContext(artifact_dir=tmp_path / "b"))
    assert names == ["CUDAExecutionProvider", "CPUExecutionProvider"]


# -- scripts/gpu_check.sh ------------------------------------------------------------------------

SCRIPT = Path(__file__).parent.parent / "scripts" / "gpu_check.sh"
FAKE_PYNVML = """
import sys
sys.path.insert(0, {tests!r})
from probes.testing import FakeNVML, FakeNVMLError
NVMLError = FakeNVMLError
_f = FakeNVML(devices=[{{"name": "NVIDIA H200", "uuid": "GPU-11111111-2222-4333-8444-555566667777",
    "memory_total_bytes": 143771 << 20, "compute_capability": [9, 0], "pci_bus_id": "00000000:1B:00.0",
    "mig_mode": 0}}], driver_version="580.65.06", cuda_driver_version=13000)
def __getattr__(name):
    return getattr(_f, name)
"""
FAKE_RUNTIME = """
import sys
sys.path.insert(0, {tests!r})
from fakes.fake_cuda import FakeCuda, FakeDevice
_c = FakeCuda([FakeDevice("NVIDIA H200", "GPU-11111111-2222-4333-8444-555566667777", (9, 0), 1 << 30,
                          pci_bus_id="0000:1b:00.0")])
globals().update({{k: v for k, v in vars(_c.module()).items() if not k.startswith("__")}})
"""


def _script(tmp_path, extra_path: str = "", **env):
    import os
    import subprocess

    full = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_MEMSET_MB": "8", **env}
    full["PYTHONPATH"] = extra_path
    return subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True, env=full, timeout=400
    )


def test_gpu_check_script_without_a_gpu_says_so_and_exits_2(tmp_path):
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("this machine has a working NVML: the no-GPU path cannot be shown here")
    except ImportError:
        pass
    except Exception:  # no driver: the path under test
        pass
    run = _script(tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "no NVIDIA GPU here" in run.stdout
    assert "NOGPU" in (tmp_path / "out" / "summary.txt").read_text()


def test_gpu_check_script_dry_run_with_fake_nvml_and_fake_cuda(tmp_path):
    """Every step's Python runs against fake pynvml and cuda-bindings: it shows the script's
    own logic is sound, nothing about real hardware."""
    fake = tmp_path / "fake"
    tests = str(Path(__file__).parent)
    (fake / "cuda" / "bindings").mkdir(parents=True)
    (fake / "cuda" / "__init__.py").write_text("")
    (fake / "cuda" / "bindings" / "__init__.py").write_text("")
    (fake / "pynvml.py").write_text(FAKE_PYNVML.format(tests=tests))
    (fake / "cuda" / "bindings" / "runtime.py").write_text(FAKE_RUNTIME.format(tests=tests))
    # no NVIDIA driver here: the probe asks the stand-in NVML only when told to
    run = _script(tmp_path, str(fake), PROBES_ASK_NVML="1")
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert run.returncode == 0, summary + run.stdout[-3000:] + run.stderr[-3000:]
    for step in ("nvml: PASS", "cuda: PASS", "doctor: PASS", "fixture: PASS"):
        assert step in summary, summary
    assert "ort: SKIP" in summary or "ort: PASS" in summary
    recorded = next((tmp_path / "out" / "fixture").iterdir())
    assert replay(recorded).nvidia_gpus[0].pci_bus_id == "0000:1b:00.0"
    assert json_of(recorded / "cuda.json")["devices"][0]["pci_bus_id"] == "0000:1b:00.0"


def json_of(path):
    import json

    return json.loads(path.read_text())
