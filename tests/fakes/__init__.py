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

from probes import CPU, CpuCluster, Hardware, MigInstance, NvidiaGPU

from .fake_cuda import FakeCuda, FakeDevice, cuda_visible
from .fake_tensorrt import FakeTRTEnv
from .fake_tensorrt import module as trt_module

__all__ = [
    "H100",
    "OLD_GPU",
    "T4",
    "A100_MIG",
    "machine",
    "install",
    "FakeTRTEnv",
    "FakeCuda",
    "eight_gpus",
    "device_of",
    "mig_devices_of",
    "cuda_visible",
]

H100 = NvidiaGPU(
    index=0,
    name="NVIDIA H100 80GB HBM3",
    uuid="GPU-5b1e4c2a-9d3f-4e71-8a60-0c2d9e7f1a11",
    memory_total_mb=81559,
    compute_capability=(9, 0),
    driver_version="550.54.15",
    cuda_driver_version="12.4",
    pci_bus_id="0000:1b:00.0",
)
# Maxwell: no fp16 arithmetic, no tensor cores; TensorRT 8.6 is the last to run on it.
OLD_GPU = NvidiaGPU(
    index=1,
    name="NVIDIA GeForce GTX 750 Ti",
    uuid="GPU-0a9f3b7e-1c2d-4e5f-8a9b-112233445566",
    memory_total_mb=2048,
    compute_capability=(5, 0),
    driver_version="550.54.15",
    cuda_driver_version="12.4",
    pci_bus_id="0000:3b:00.0",
)
T4 = NvidiaGPU(
    index=0,
    name="Tesla T4",
    uuid="GPU-77aa88bb-99cc-4ddd-8eee-ffff00001111",
    memory_total_mb=15360,
    compute_capability=(7, 5),
    driver_version="550.54.15",
    cuda_driver_version="12.4",
    pci_bus_id="0000:5e:00.0",
)
# An A100 40GB in MIG mode with two instances: CUDA lists the instances, not the card.
A100_MIG = NvidiaGPU(
    index=0,
    name="NVIDIA A100-SXM4-40GB",
    uuid="GPU-a1000000-1111-4222-8333-444455556666",
    memory_total_mb=40960,
    compute_capability=(8, 0),
    driver_version="550.54.15",
    cuda_driver_version="12.4",
    pci_bus_id="0000:07:00.0",
    mig_enabled=True,
    mig_instances=(
        MigInstance(
            0, "MIG-0a1b2c3d-0000-5111-8222-333344445555", "NVIDIA A100-SXM4-40GB MIG 3g.20gb", 19968
        ),
        MigInstance(1, "MIG-0a1b2c3d-9999-5111-8222-333344445555", "NVIDIA A100-SXM4-40GB MIG 1g.5gb", 4864),
    ),
)


def eight_gpus() -> list[NvidiaGPU]:
    """Eight identical H100s, as NVML lists them (PCI order)."""
    return [
        NvidiaGPU(
            index=i,
            name=H100.name,
            uuid=f"GPU-{i:08x}-9d3f-4e71-8a60-0c2d9e7f1a11",
            memory_total_mb=H100.memory_total_mb,
            compute_capability=(9, 0),
            driver_version=H100.driver_version,
            cuda_driver_version="12.4",
            pci_bus_id=f"0000:{0x18 + 0x10 * i:02x}:00.0",
        )
        for i in range(8)
    ]


def machine(*gpus: NvidiaGPU, cores: int = 8) -> Hardware:
    cpu = CPU(
        vendor="intel",
        model_name="Intel(R) Xeon(R) Platinum 8480+",
        arch="x86_64",
        physical_cores=cores,
        logical_cores=cores * 2,
        quota_cores=None,
        usable_cores=cores,
        flags=("avx", "avx2", "fma", "sse4_2"),
        max_freq_mhz=3800.0,
        clusters=(CpuCluster(tuple(range(cores * 2)), 3800.0),),
        soc_model=None,
    )
    return Hardware(cpu=cpu, nvidia_gpus=tuple(gpus), accelerators=(), os="Linux")


def device_of(gpu: NvidiaGPU, memory_bytes: int | None = None) -> FakeDevice:
    return FakeDevice(
        gpu.name,
        gpu.uuid or "",
        gpu.compute_capability,
        memory_bytes if memory_bytes is not None else gpu.memory_total_mb << 20,
        pci_bus_id=gpu.pci_bus_id,
    )


def mig_devices_of(gpu: NvidiaGPU) -> list[FakeDevice]:
    """The CUDA devices of a GPU in MIG mode: one per instance, sharing the GPU's bus id."""
    return [
        FakeDevice(
            m.name, m.uuid or "", gpu.compute_capability, m.memory_total_mb << 20, pci_bus_id=gpu.pci_bus_id
        )
        for m in gpu.mig_instances
    ]


def install(
    monkeypatch: Any,
    gpus: list[NvidiaGPU] | None = None,
    *,
    trt_version: str = "10.3.0",
    cuda_layout: str = "bindings",
    cuda_devices: list[FakeDevice] | None = None,
    dists: dict[str, str] | None = None,
    with_cuda: bool = True,
    visible: str | None = None,
    **env: Any,
) -> FakeTRTEnv:
    """Fake TensorRT ``trt_version`` and cuda-python for the GPUs (in CUDA's order).

    ``dists``: the pip distributions the backend believes are installed.
    ``visible``: CUDA_VISIBLE_DEVICES, applied to the devices (see fake_cuda.cuda_visible).
    ``with_cuda=False``: cuda-python missing. Other keywords set FakeTRTEnv fields.
    """
    from autoinfer.backends import tensorrt as backend

    devices = cuda_devices if cuda_devices is not None else [device_of(g) for g in gpus or []]
    devices = cuda_visible(devices, visible)
    cuda = FakeCuda(devices)
    fake = FakeTRTEnv(version=trt_version, cuda=cuda, **env)
    monkeypatch.setitem(sys.modules, "tensorrt", trt_module(fake))
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.bindings.utils", "cuda.cudart"):
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


def cuda_from_fixture(directory: Any) -> tuple[dict[str, str], list[FakeDevice]]:
    """A recorded machine's ``cuda.json``: (environment, the devices CUDA listed, in its order)."""
    import json
    from pathlib import Path

    data = json.loads((Path(directory) / "cuda.json").read_text())
    devices = [
        FakeDevice(d["name"], d["uuid"], (0, 0), int(d["memory_bytes"]), pci_bus_id=d["pci_bus_id"])
        for d in sorted(data["devices"], key=lambda d: d["ordinal"])
    ]
    return dict(data.get("env", {})), devices
