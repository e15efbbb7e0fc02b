"""Fakes of the NVIDIA stack (TensorRT, cuda-python) and of NVIDIA machines, for tests
that must run where there is no GPU.

    env = fakes.install(monkeypatch, [fakes.H100], trt_version="10.3.0")
    hw = fakes.machine(fakes.H100)

``install`` puts a fake ``tensorrt`` and a fake ``cuda.bindings.runtime`` (or,
with ``cuda_layout="legacy"``, ``cuda.cudart``) into ``sys.modules`` for the
test's duration. What they verify and what they cannot is written down in
docs/tensorrt.md.
"""
from __future__ import annotations

import sys
import types
from typing import Any

from probes import CPU, CpuCluster, Hardware, NvidiaGPU

from .fake_cuda import FakeCuda, FakeDevice
from .fake_tensorrt import FakeTRTEnv
from .fake_tensorrt import module as trt_module

__all__ = ["H100", "OLD_GPU", "T4", "machine", "install", "FakeTRTEnv", "FakeCuda"]

H100 = NvidiaGPU(index=0, name="NVIDIA H100 80GB HBM3",
                 uuid="GPU-5b1e4c2a-9d3f-4e71-8a60-0c2d9e7f1a11", memory_total_mb=81559,
                 compute_capability=(9, 0), driver_version="550.54.15", cuda_driver_version="12.4")
# Maxwell: no fp16 arithmetic, no tensor cores; TensorRT 8.6 is the last to run on it.
OLD_GPU = NvidiaGPU(index=1, name="NVIDIA GeForce GTX 750 Ti",
                    uuid="GPU-0a9f3b7e-1c2d-4e5f-8a9b-112233445566", memory_total_mb=2048,
                    compute_capability=(5, 0), driver_version="550.54.15",
                    cuda_driver_version="12.4")
T4 = NvidiaGPU(index=0, name="Tesla T4", uuid="GPU-77aa88bb-99cc-4ddd-8eee-ffff00001111",
               memory_total_mb=15360, compute_capability=(7, 5), driver_version="550.54.15",
               cuda_driver_version="12.4")


def machine(*gpus: NvidiaGPU, cores: int = 8) -> Hardware:
    cpu = CPU(vendor="intel", model_name="Intel(R) Xeon(R) Platinum 8480+", arch="x86_64",
              physical_cores=cores, logical_cores=cores * 2, quota_cores=None, usable_cores=cores,
              flags=("avx", "avx2", "fma", "sse4_2"), max_freq_mhz=3800.0,
              clusters=(CpuCluster(tuple(range(cores * 2)), 3800.0),), soc_model=None)
    return Hardware(cpu=cpu, nvidia_gpus=tuple(gpus), accelerators=(), os="Linux")


def device_of(gpu: NvidiaGPU, memory_bytes: int | None = None) -> FakeDevice:
    return FakeDevice(gpu.name, gpu.uuid or "", gpu.compute_capability,
                      memory_bytes if memory_bytes is not None else gpu.memory_total_mb << 20)


def install(monkeypatch: Any, gpus: list[NvidiaGPU] | None = None, *, trt_version: str = "10.3.0",
            cuda_layout: str = "bindings", cuda_devices: list[FakeDevice] | None = None,
            dists: dict[str, str] | None = None, with_cuda: bool = True,
            **env: Any) -> FakeTRTEnv:
    """Fake TensorRT ``trt_version`` and cuda-python for the GPUs (in CUDA's order).

    ``dists``: the pip distributions the backend believes are installed.
    ``with_cuda=False``: cuda-python missing. Other keywords set FakeTRTEnv fields.
    """
    from autoinfer.backends import tensorrt as backend

    devices = cuda_devices if cuda_devices is not None else [device_of(g) for g in gpus or []]
    cuda = FakeCuda(devices)
    fake = FakeTRTEnv(version=trt_version, cuda=cuda, **env)
    monkeypatch.setitem(sys.modules, "tensorrt", trt_module(fake))
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.bindings.utils",
                 "cuda.cudart"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    if with_cuda:
        pkg = types.ModuleType("cuda")
        pkg.__path__ = []  # a namespace-like package with nothing else findable
        monkeypatch.setitem(sys.modules, "cuda", pkg)
        if cuda_layout == "bindings":
            sub = types.ModuleType("cuda.bindings")
            sub.__path__ = []
            rt = cuda.module("cuda.bindings.runtime")
            sub.runtime = rt
            pkg.bindings = sub
            monkeypatch.setitem(sys.modules, "cuda.bindings", sub)
            monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
        elif cuda_layout == "legacy":
            rt = cuda.module("cuda.cudart")
            pkg.cudart = rt
            monkeypatch.setitem(sys.modules, "cuda.cudart", rt)
        else:
            raise ValueError(cuda_layout)
    else:
        monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setattr(backend, "_installed_dists", lambda: dict(dists or {}))
    return fake
