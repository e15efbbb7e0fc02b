"""The automatic choice on recorded machines, before anything is measured.

As Lightning's ``test_connector_auto_selection`` fakes the hardware and asserts the
accelerator picked per scenario, these tests take the recorded machines of
``tests/fixtures/machines`` (replayed through ``probes.testing.replay``) and
stub backends that declare what they can do and read the hardware facts the way
real backends do, and assert the static ranking: the order of the candidates,
the winner, and the reasons (``Estimate.reasons``, ``Unsupported.reason``).

The stubs are registered through the backend registry and removed afterwards.
They never load anything: ranking is static, and a stub's ``load`` fails the test.

The last test ranks the real registered backends on every recorded machine and
checks that none offers a candidate for hardware the machine does not have.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import small_conv_model

from autoinfer import backends
from autoinfer.backends import Availability, Backend, Candidate, Capabilities, Estimate, Unsupported
from autoinfer.model import load_facts

MACHINES = Path(__file__).parent / "fixtures" / "machines"


# -- the one call into the ranking ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ranking:
    """What the static ranking said: candidate keys best first, their reasons, and
    the combinations (or whole backends) left out with why."""

    candidates: list[Candidate]
    reasons: dict[str, tuple[str, ...]]
    unsupported: dict[str, str]

    @property
    def order(self) -> list[str]:
        return [c.key for c in self.candidates]

    @property
    def winner(self) -> str | None:
        return self.order[0] if self.order else None


def rank(
    model: Any, hw: Any, backend_names: list[str] | None, objective: str, precision: str, cache_dir: Path
) -> Ranking:
    """Rank ``backend_names`` (None: every registered backend) for ``model`` on ``hw``
    without measuring. The only place these tests reach into the ranking."""
    from autoinfer.cache import Cache
    from autoinfer.config import Settings
    from autoinfer.policy import Options, Selector

    settings = Settings.resolve(cache_dir=cache_dir)
    opts = Options(objective=objective, benchmark=False, backends=backend_names, precision=precision)
    ranked, unsupported = Selector(model, hw, opts, Cache(settings.cache_dir, enabled=False), settings).rank()
    return Ranking(
        [r.candidate for r in ranked],
        {r.candidate.key: tuple(r.reasons) for r in ranked},
        {u["key"]: u["reason"] for u in unsupported},
    )


# -- stub backends that read the hardware facts ---------------------------------------


class _Stub(Backend):
    package = "stub"
    extra = None

    def load(self, candidate: Candidate, model: Any, ctx: Any) -> Any:
        raise AssertionError(f"the static ranking loaded {candidate.key}")

    def versions(self) -> dict[str, str]:
        return {self.name: "0"}


class StubReference(_Stub):
    """A reference CPU runtime: usable everywhere, cost 1.0 by definition."""

    name = "stub_ref"
    capabilities = Capabilities(devices=("cpu",), precisions=("fp32",), dynamic_shapes=True, reference=True)

    def availability(self, hw: Any) -> Availability:
        return Availability(self.name, True, True, "0", ("cpu",))

    def candidates(self, model: Any, hw: Any, objective: str) -> list[Any]:
        return [Candidate.make(self.name)]

    def estimate(self, candidate: Candidate, model: Any, hw: Any, objective: str) -> Estimate:
        return Estimate(1.0, ("the reference runtime at its defaults",))


class StubX86(_Stub):
    """An x86 vector runtime: needs AVX2; cheaper with AVX-512 and VNNI; bf16 on AMX."""

    name = "stub_x86"
    capabilities = Capabilities(devices=("cpu",), precisions=("fp32", "bf16"), dynamic_shapes=True)

    def availability(self, hw: Any) -> Availability:
        if not (hw.cpu.is_x86 and hw.cpu.has("avx2")):
            return Availability(
                self.name, True, False, "0", reason=f"needs an x86-64 CPU with AVX2, this is {hw.cpu.arch}"
            )
        return Availability(self.name, True, True, "0", ("cpu",))

    def candidates(self, model: Any, hw: Any, objective: str) -> list[Any]:
        out: list[Any] = [Candidate.make(self.name)]
        if hw.cpu.has("amx_bf16"):
            out.append(Candidate.make(self.name, "cpu", "bf16"))
        return out

    def estimate(self, candidate: Candidate, model: Any, hw: Any, objective: str) -> Estimate:
        if candidate.precision == "bf16":
            return Estimate(0.3, ("AMX tiles compute bf16 matrix products",))
        cost, reasons = 0.9, ["AVX2 kernels"]
        if hw.cpu.has("avx512f"):
            cost, reasons = 0.7, ["AVX-512 kernels"]
        if hw.cpu.has("avx512_vnni") or hw.cpu.has("avx_vnni"):
            cost *= 0.9
            reasons.append("VNNI dot products")
        return Estimate(cost, tuple(reasons))


class StubArm(_Stub):
    """An ARM runtime: needs the dot-product extension; fp16 where the CPU computes it."""

    name = "stub_arm"
    capabilities = Capabilities(devices=("cpu",), precisions=("fp32", "fp16"), dynamic_shapes=False)

    def availability(self, hw: Any) -> Availability:
        if not hw.cpu.is_arm:
            return Availability(
                self.name, True, False, "0", reason=f"needs an ARM CPU, this is {hw.cpu.arch}"
            )
        return Availability(self.name, True, True, "0", ("cpu",))

    def candidates(self, model: Any, hw: Any, objective: str) -> list[Any]:
        if not hw.cpu.has("dotprod"):
            return [
                Unsupported(self.name, "cpu", "fp32", "needs the ARMv8.2 dot-product extension (asimddp)")
            ]
        out: list[Any] = [Candidate.make(self.name)]
        if hw.cpu.has("asimdhp"):
            out.append(Candidate.make(self.name, "cpu", "fp16"))
        return out

    def estimate(self, candidate: Candidate, model: Any, hw: Any, objective: str) -> Estimate:
        if candidate.precision == "fp16":
            cost, reasons = 0.5, ["native fp16 arithmetic (asimdhp)"]
        else:
            cost, reasons = 0.7, ["NEON dot-product kernels"]
        if hw.cpu.has_big_little:
            cost *= 1.1
            reasons.append("big.LITTLE: some threads land on the little cores")
        return Estimate(cost, tuple(reasons))


GPU_MIN_MB = 8192


class StubGpu(_Stub):
    """A GPU runtime: NVIDIA GPUs that NVML lists, each MIG instance as its own device,
    with at least GPU_MIN_MB of memory; fp16 on tensor cores; slow to load (it builds)."""

    name = "stub_gpu"
    capabilities = Capabilities(
        devices=("cuda",), precisions=("fp32", "fp16"), dynamic_shapes=False, needs_conversion=True
    )

    def availability(self, hw: Any) -> Availability:
        if not hw.nvidia_gpus:
            return Availability(self.name, True, False, "0", reason="no NVIDIA GPU listed by NVML")
        return Availability(self.name, True, True, "0", ("cuda",))

    @staticmethod
    def _devices(hw: Any) -> list[tuple[str, str, int, bool]]:
        out = []
        for g in hw.nvidia_gpus:
            if g.mig_enabled:
                out += [
                    (f"cuda:{g.index}/mig{m.index}", m.name, m.memory_total_mb, g.has_tensor_cores)
                    for m in g.mig_instances
                ]
            else:
                out.append((f"cuda:{g.index}", g.name, g.memory_total_mb, g.has_tensor_cores))
        return out

    def candidates(self, model: Any, hw: Any, objective: str) -> list[Any]:
        out: list[Any] = []
        for dev, name, mb, tensor_cores in self._devices(hw):
            if mb < GPU_MIN_MB:
                out.append(
                    Unsupported(self.name, dev, "fp32", f"{name} has {mb} MiB, needs {GPU_MIN_MB} MiB")
                )
                continue
            out.append(Candidate.make(self.name, dev, "fp32"))
            if tensor_cores:
                out.append(Candidate.make(self.name, dev, "fp16"))
        return out

    def estimate(self, candidate: Candidate, model: Any, hw: Any, objective: str) -> Estimate:
        name = next(n for d, n, _, _ in self._devices(hw) if d == candidate.device)
        if objective == "load_time":
            return Estimate(4.0, (f"{name}: compiles an engine at load",))
        if candidate.precision == "fp16":
            return Estimate(0.15, (f"{name}: tensor cores run fp16",))
        return Estimate(0.25, (f"{name}: fp32 on the GPU",))


class StubIntelAccel(_Stub):
    """A runtime for Intel integrated GPUs and NPUs (fp16 only): the NPU for latency,
    the GPU for throughput."""

    name = "stub_intel"
    capabilities = Capabilities(devices=("gpu", "npu"), precisions=("fp16",), dynamic_shapes=False)
    _COST = {
        ("npu", "latency"): (0.5, "NPU: low latency at batch 1"),
        ("npu", "throughput"): (0.9, "NPU: few parallel streams"),
        ("gpu", "latency"): (0.6, "iGPU: dispatch overhead at batch 1"),
        ("gpu", "throughput"): (0.35, "iGPU: many parallel streams"),
    }

    def availability(self, hw: Any) -> Availability:
        accs = hw.accelerators_of(vendor="intel")
        if not accs:
            return Availability(self.name, True, False, "0", reason="no Intel GPU or NPU found")
        return Availability(self.name, True, True, "0", tuple(a.kind for a in accs))

    def candidates(self, model: Any, hw: Any, objective: str) -> list[Any]:
        kinds = {"igpu": "gpu", "dgpu": "gpu", "npu": "npu"}
        return [
            Candidate.make(self.name, kinds[a.kind], "fp16")
            for a in hw.accelerators_of(vendor="intel")
            if a.kind in kinds
        ]

    def estimate(self, candidate: Candidate, model: Any, hw: Any, objective: str) -> Estimate:
        cost, why = self._COST.get((candidate.device, objective), (2.0, "not tuned for this"))
        return Estimate(cost, (why,))


STUBS = {cls.name: cls for cls in (StubReference, StubX86, StubArm, StubGpu, StubIntelAccel)}


@pytest.fixture
def stubs() -> Iterator[None]:
    for name, cls in STUBS.items():
        assert name not in backends.names(), f"{name} is already registered"
        backends.register(name, cls())
    try:
        yield
    finally:
        for name in STUBS:
            backends.unregister(name)


@pytest.fixture(scope="module")
def model(tmp_path_factory: Any) -> Any:
    return load_facts(small_conv_model(tmp_path_factory.mktemp("connector") / "conv.onnx"))


_hardware: dict[str, Any] = {}


def machine(name: str) -> Any:
    if name not in _hardware:
        from probes.testing import replay

        _hardware[name] = replay(MACHINES / name)
    return _hardware[name]


# -- the table --------------------------------------------------------------------------

ALL = ["stub_ref", "stub_x86", "stub_arm", "stub_gpu", "stub_intel"]
CPUS = ["stub_ref", "stub_x86", "stub_arm"]
H100S = [f"stub_gpu:cuda:{i}:fp32" for i in range(8)]
FP32_ONLY = "precision='fp32' keeps the model's fp32 arithmetic"


@dataclasses.dataclass(frozen=True)
class Row:
    machine: str
    stubs: list[str]
    objective: str
    precision: str
    order: list[str]  # expected ranking, best first; [0] is the winner
    reasons: dict[str, str]  # candidate key -> substring of one of its reasons
    unsupported: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> substring


ROWS = {
    "epyc-container-avx2": Row(
        "amd-epyc-2core-container",
        ALL,
        "latency",
        "auto",
        ["stub_x86:cpu:fp32", "stub_ref:cpu:fp32"],
        {"stub_x86:cpu:fp32": "AVX2 kernels", "stub_ref:cpu:fp32": "reference"},
        {
            "stub_arm": "needs an ARM CPU, this is x86_64",
            "stub_gpu": "no NVIDIA GPU",
            "stub_intel": "no Intel GPU or NPU",
        },
    ),
    "sapphire-rapids-amx-bf16": Row(
        "xeon-sapphire-rapids-amx",
        CPUS,
        "latency",
        "auto",
        ["stub_x86:cpu:bf16", "stub_x86:cpu:fp32", "stub_ref:cpu:fp32"],
        {"stub_x86:cpu:bf16": "AMX tiles", "stub_x86:cpu:fp32": "VNNI dot products"},
    ),
    "sapphire-rapids-fp32-only": Row(
        "xeon-sapphire-rapids-amx",
        CPUS,
        "latency",
        "fp32",
        ["stub_x86:cpu:fp32", "stub_ref:cpu:fp32"],
        {"stub_x86:cpu:fp32": "AVX-512 kernels"},
        {"stub_x86:cpu:bf16": FP32_ONLY},
    ),
    "core-ultra-npu-latency": Row(
        "intel-core-ultra-laptop-igpu-npu",
        ALL,
        "latency",
        "auto",
        ["stub_intel:npu:fp16", "stub_intel:gpu:fp16", "stub_x86:cpu:fp32", "stub_ref:cpu:fp32"],
        {"stub_intel:npu:fp16": "NPU: low latency", "stub_x86:cpu:fp32": "VNNI dot products"},
        {"stub_gpu": "no NVIDIA GPU"},
    ),
    "core-ultra-igpu-throughput": Row(
        "intel-core-ultra-laptop-igpu-npu",
        ALL,
        "throughput",
        "auto",
        ["stub_intel:gpu:fp16", "stub_x86:cpu:fp32", "stub_intel:npu:fp16", "stub_ref:cpu:fp32"],
        {"stub_intel:gpu:fp16": "iGPU: many parallel streams"},
    ),
    "core-ultra-fp32-keeps-cpu": Row(
        "intel-core-ultra-laptop-igpu-npu",
        ALL,
        "latency",
        "fp32",
        ["stub_x86:cpu:fp32", "stub_ref:cpu:fp32"],
        {"stub_x86:cpu:fp32": "AVX2 kernels"},
        {"stub_intel:npu:fp16": FP32_ONLY, "stub_intel:gpu:fp16": FP32_ONLY},
    ),
    "raspberry-pi-fp16": Row(
        "raspberry-pi-5",
        ALL,
        "latency",
        "auto",
        ["stub_arm:cpu:fp16", "stub_arm:cpu:fp32", "stub_ref:cpu:fp32"],
        {"stub_arm:cpu:fp16": "asimdhp", "stub_arm:cpu:fp32": "dot-product kernels"},
        {"stub_x86": "needs an x86-64 CPU with AVX2, this is aarch64"},
    ),
    "rockchip-big-little": Row(
        "rockchip-rk3588-big-little",
        CPUS,
        "latency",
        "fp32",
        ["stub_arm:cpu:fp32", "stub_ref:cpu:fp32"],
        {"stub_arm:cpu:fp32": "big.LITTLE"},
        {"stub_arm:cpu:fp16": FP32_ONLY},
    ),
    "jetson-no-nvml": Row(
        "jetson-agx-orin",
        ALL,
        "latency",
        "fp32",
        ["stub_arm:cpu:fp32", "stub_ref:cpu:fp32"],
        {"stub_arm:cpu:fp32": "NEON"},
        {"stub_gpu": "no NVIDIA GPU listed by NVML", "stub_x86": "this is aarch64"},
    ),
    "h100-fp16": Row(
        "x86-server-h100",
        ALL,
        "latency",
        "auto",
        ["stub_gpu:cuda:0:fp16", "stub_gpu:cuda:0:fp32", "stub_x86:cpu:fp32", "stub_ref:cpu:fp32"],
        {"stub_gpu:cuda:0:fp16": "H100 80GB HBM3: tensor cores", "stub_x86:cpu:fp32": "AVX-512 kernels"},
    ),
    "h100-load-time-prefers-cpu": Row(
        "x86-server-h100",
        ALL,
        "load_time",
        "fp32",
        ["stub_x86:cpu:fp32", "stub_ref:cpu:fp32", "stub_gpu:cuda:0:fp32"],
        {"stub_gpu:cuda:0:fp32": "compiles an engine at load"},
        {"stub_gpu:cuda:0:fp16": FP32_ONLY},
    ),
    "a100-mig-instance-too-small": Row(
        "x86-server-a100-mig",
        ALL,
        "latency",
        "fp32",
        ["stub_gpu:cuda:0/mig0:fp32", "stub_x86:cpu:fp32", "stub_ref:cpu:fp32"],
        {"stub_gpu:cuda:0/mig0:fp32": "MIG 3g.20gb: fp32 on the GPU"},
        {
            "stub_gpu:cuda:0/mig1:fp32": "MIG 1g.5gb has 4864 MiB, needs 8192 MiB",
            "stub_gpu:cuda:0/mig0:fp16": FP32_ONLY,
        },
    ),
    "8x-h100-throughput": Row(
        "x86-server-8x-h100-cuda-visible-2-3",
        ["stub_gpu", "stub_ref"],
        "throughput",
        "fp32",
        [*H100S, "stub_ref:cpu:fp32"],
        {k: "fp32 on the GPU" for k in H100S},
    ),
    "epyc-container-nothing-runs": Row(
        "amd-epyc-2core-container",
        ["stub_arm", "stub_gpu"],
        "latency",
        "auto",
        [],
        {},
        {"stub_arm": "needs an ARM CPU", "stub_gpu": "no NVIDIA GPU"},
    ),
}


def test_the_table_covers_six_machines_or_more() -> None:
    covered = {row.machine for row in ROWS.values()}
    recorded = {p.name for p in MACHINES.iterdir() if (p / "probes-meta.json").is_file()}
    assert covered <= recorded, f"rows name machines that are not recorded: {covered - recorded}"
    assert len(covered) >= 6, covered


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_connector_auto_selection(row: Row, stubs: None, model: Any, tmp_path: Path) -> None:
    got = rank(model, machine(row.machine), row.stubs, row.objective, row.precision, tmp_path)
    assert got.order == row.order, f"ranking on {row.machine}: {got}"
    assert got.winner == (row.order[0] if row.order else None)
    for key, part in row.reasons.items():
        assert any(part in r for r in got.reasons[key]), (
            f"{key}: no reason contains {part!r}: {got.reasons[key]}"
        )
    for key, part in row.unsupported.items():
        assert key in got.unsupported, f"{key} not reported unsupported: {got.unsupported}"
        assert part in got.unsupported[key], f"{key}: {got.unsupported[key]!r}"


# -- the real backends on every recorded machine ---------------------------------------


def _present(hw: Any, device: str) -> bool:
    """Whether the recorded machine has the hardware a candidate's device names."""
    kind = device.split(":")[0].split(".")[0].lower()
    gpus = [a for a in hw.accelerators if a.kind in ("igpu", "dgpu", "gpu")]
    if kind == "cpu":
        return True
    if kind == "cuda":
        return bool(hw.nvidia_gpus) or any(a.vendor == "nvidia" for a in gpus)
    if kind == "gpu":  # OpenVINO's GPU: Intel graphics
        return any(a.vendor == "intel" for a in gpus)
    if kind == "npu":
        return bool(hw.accelerators_of("npu"))
    if kind == "vulkan":
        return bool(gpus or hw.nvidia_gpus)
    if kind == "coreml":
        return hw.os == "Darwin"
    raise AssertionError(f"device {device!r} is new to this test: say what hardware it needs")


RECORDED = sorted(p.name for p in MACHINES.iterdir() if (p / "probes-meta.json").is_file())


@pytest.mark.parametrize("name", RECORDED)
def test_real_backends_rank_only_hardware_the_machine_has(name: str, model: Any, tmp_path: Path) -> None:
    hw = machine(name)
    got = rank(model, hw, None, "latency", "auto", tmp_path)
    assert got.order, f"no real backend ranks anything on {name}: {got.unsupported}"
    for c in got.candidates:
        caps = backends.get(c.backend).capabilities
        assert _present(hw, c.device), f"{c.key} ranked on {name}, which has no such device"
        assert c.device.split(":")[0].split(".")[0].lower() in caps.devices, (
            f"{c.key}: device not among {c.backend}'s declared devices {caps.devices}"
        )
        assert c.precision in caps.precisions, (
            f"{c.key}: precision not among {c.backend}'s declared precisions {caps.precisions}"
        )


def _cpu_computes(hw: Any, precision: str) -> bool:
    """Whether the recorded CPU computes ``precision`` natively (fp32 always)."""
    if precision == "fp32":
        return True
    if precision == "bf16":
        return any(hw.cpu.has(f) for f in ("avx512_bf16", "amx_bf16", "bf16"))
    if precision == "fp16":  # x86 converts with F16C; ARM computes with FP16 arithmetic
        return any(hw.cpu.has(f) for f in ("f16c", "avx512_fp16", "fphp", "asimdhp"))
    return False


@pytest.mark.parametrize("name", RECORDED)
def test_real_backends_reduced_precision_only_where_the_cpu_computes_it(
    name: str, model: Any, tmp_path: Path
) -> None:
    hw = machine(name)
    got = rank(model, hw, None, "latency", "auto", tmp_path)
    wrong = [c for c in got.candidates if c.device == "cpu" and not _cpu_computes(hw, c.precision)]
    assert not wrong, f"ranked on {name}, whose CPU does not compute that precision: {wrong}"
