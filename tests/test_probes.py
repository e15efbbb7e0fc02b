"""probes: recorded machines give the right answers; the live machine works; nothing raises or hangs."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import probes
from autoinfer import backends
from probes import Accelerator, Hardware
from probes import nvidia as nvml_probe
from probes.cpu import clusters as cpu_clusters
from probes.nvidia import cuda_version_string
from probes.system import open_system
from probes.testing import FakeNVML, record, replay

MACHINES = Path(__file__).parent / "fixtures" / "machines"
MACHINE_NAMES = sorted(p.name for p in MACHINES.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def machines() -> dict[str, Hardware]:
    return {name: replay(MACHINES / name) for name in MACHINE_NAMES}


def copy_machine(name: str, tmp_path: Path) -> Path:
    root = tmp_path / name
    shutil.copytree(MACHINES / name, root)
    return root


def statuses(hw: Hardware) -> dict[str, str]:
    return {n.probe: n.status for n in hw.notes}


# -- each recorded machine ------------------------------------------------------------


def test_every_recorded_machine_is_present():
    assert set(MACHINE_NAMES) >= {
        "intel-core-ultra-laptop-igpu-npu",
        "xeon-sapphire-rapids-amx",
        "amd-epyc-2core-container",
        "raspberry-pi-5",
        "jetson-agx-orin",
        "rockchip-rk3588-big-little",
        "x86-server-h100",
    }


def test_intel_laptop_has_igpu_npu_and_avx_vnni_but_no_avx512(machines):
    hw = machines["intel-core-ultra-laptop-igpu-npu"]
    cpu = hw.cpu
    assert (cpu.vendor, cpu.arch, cpu.model_name) == ("intel", "x86_64", "Intel(R) Core(TM) Ultra 7 155H")
    assert (cpu.physical_cores, cpu.logical_cores, cpu.usable_cores, cpu.quota_cores) == (16, 22, 22, None)
    assert cpu.is_x86 and not cpu.is_arm
    assert all(cpu.has(f) for f in ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni"))
    assert not any(cpu.has(f) for f in ("avx512f", "avx512_vnni", "amx_tile"))
    # Hybrid cores: P (4.8 GHz), E (3.8 GHz), LP E (2.5 GHz).
    assert [(len(c.cpus), c.max_freq_mhz) for c in cpu.clusters] == [(12, 4800.0), (8, 3800.0), (2, 2500.0)]
    assert cpu.has_big_little and cpu.max_freq_mhz == 4800.0
    assert hw.nvidia_gpus == ()
    assert hw.accelerators == (
        Accelerator("igpu", "intel", "Intel integrated GPU [8086:7d55]", "8086:7d55", "drm"),
        Accelerator("npu", "intel", "Intel NPU [8086:7d1d]", "8086:7d1d", "accel"),
    )


def test_xeon_sapphire_rapids_has_amx_and_avx512(machines):
    cpu = machines["xeon-sapphire-rapids-amx"].cpu
    assert (cpu.vendor, cpu.physical_cores, cpu.logical_cores, cpu.usable_cores) == ("intel", 4, 8, 8)
    for flag in (
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
        "avx_vnni",
    ):
        assert cpu.has(flag), flag
    assert cpu.max_freq_mhz is None  # a VM has no cpufreq
    assert cpu.clusters == (probes.CpuCluster(tuple(range(8)), None),) and not cpu.has_big_little


def test_amd_epyc_container_is_limited_to_two_cores_by_its_cgroup(machines):
    hw = machines["amd-epyc-2core-container"]
    cpu = hw.cpu
    assert (cpu.vendor, cpu.model_name) == ("amd", "AMD EPYC 7B13")
    assert (cpu.physical_cores, cpu.logical_cores) == (32, 64)
    assert cpu.quota_cores == 2.0 and cpu.usable_cores == 2
    assert cpu.has("avx2") and not cpu.has("avx512f")
    assert "docker-" in hw.note("cgroup").detail and "2 cores" in hw.note("cgroup").detail
    assert hw.summary.startswith("AMD EPYC 7B13 (x86_64, 2 of 64 cores usable, avx2 f16c fma)")


def test_raspberry_pi_5(machines):
    hw = machines["raspberry-pi-5"]
    cpu = hw.cpu
    assert (cpu.vendor, cpu.arch, cpu.model_name) == ("arm", "aarch64", "Cortex-A76")
    assert (cpu.physical_cores, cpu.logical_cores, cpu.usable_cores) == (4, 4, 4)
    assert cpu.soc_model == "Raspberry Pi 5 Model B Rev 1.0"
    assert cpu.is_arm and cpu.has("neon") and cpu.has("dotprod") and cpu.has("asimdhp")
    assert not any(cpu.has(f) for f in ("i8mm", "bf16", "sve", "avx2"))
    assert cpu.clusters == (probes.CpuCluster((0, 1, 2, 3), 2400.0),)
    assert hw.accelerators == ()  # the v3d DRM card is a platform device
    assert "1 other entry skipped" in hw.note("drm").detail


def test_jetson_orin_has_no_nvml_gpu_but_its_igpu_from_the_device_tree(machines):
    hw = machines["jetson-agx-orin"]
    assert hw.cpu.model_name == "Cortex-A78AE" and hw.cpu.logical_cores == 12
    assert hw.cpu.soc_model == "NVIDIA Jetson AGX Orin Developer Kit"
    assert hw.cpu.clusters == (probes.CpuCluster(tuple(range(12)), 2201.6),)
    assert hw.nvidia_gpus == ()
    assert hw.note("nvml").status == "absent" and "no driver" in hw.note("nvml").detail
    (gpu,) = hw.accelerators
    assert (gpu.kind, gpu.vendor, gpu.source, gpu.compute_capability) == (
        "igpu",
        "nvidia",
        "devicetree",
        (8, 7),
    )


def test_rk3588_has_two_clusters(machines):
    cpu = machines["rockchip-rk3588-big-little"].cpu
    assert cpu.model_name == "4x Cortex-A55 + 4x Cortex-A76"
    assert cpu.clusters == (probes.CpuCluster((0, 1, 2, 3), 1800.0), probes.CpuCluster((4, 5, 6, 7), 2400.0))
    assert cpu.has_big_little and cpu.max_freq_mhz == 2400.0
    assert cpu.soc_model == "Radxa ROCK 5 Model B"


def test_h100_server(machines):
    hw = machines["x86-server-h100"]
    assert hw.cpu.vendor == "amd" and hw.cpu.has("avx512_bf16") and not hw.cpu.has("amx_tile")
    (gpu,) = hw.nvidia_gpus
    assert gpu == probes.NvidiaGPU(
        0,
        "NVIDIA H100 80GB HBM3",
        "GPU-00000000-0000-0000-0000-000000000000",
        81559,
        (9, 0),
        "580.159.04",
        "13.0",
    )
    assert gpu.supports_fp16 and gpu.supports_int8 and gpu.has_tensor_cores
    # QEMU's VGA at the iGPU slot is ignored; the H100's DRM card is folded into the NVML GPU.
    assert hw.accelerators == ()
    assert "H100" in hw.summary and hw.note("nvml").status == "ok"


def test_fingerprints_differ_between_machines_and_are_stable(machines):
    prints = {name: hw.fingerprint for name, hw in machines.items()}
    assert len(set(prints.values())) == len(prints)
    for name in MACHINE_NAMES:
        assert replay(MACHINES / name).fingerprint == prints[name]
        assert re.fullmatch(r"[0-9a-f]{16}", prints[name]), prints[name]
        hw = machines[name]
        assert Hardware.from_dict(hw.to_dict()).fingerprint == prints[name]  # same facts
        more = dataclasses.replace(
            hw.cpu,
            flags=tuple(sorted({*hw.cpu.flags, "avx512_fp16"}))
            if "avx512_fp16" not in hw.cpu.flags
            else tuple(f for f in hw.cpu.flags if f != "avx512_fp16"),
        )
        assert dataclasses.replace(hw, cpu=more).fingerprint != prints[name]  # one fact changed


@pytest.mark.parametrize("cpu_max, usable", [("400000 100000", 4), ("150000 100000", 2), ("max 100000", 64)])
def test_quota_change_changes_the_fingerprint(tmp_path, machines, cpu_max, usable):
    root = copy_machine("amd-epyc-2core-container", tmp_path)
    (scope,) = root.glob("sys/fs/cgroup/system.slice/docker-*.scope")
    (scope / "cpu.max").write_text(cpu_max + "\n")
    hw = replay(root)
    assert hw.cpu.usable_cores == usable
    assert hw.fingerprint != machines["amd-epyc-2core-container"].fingerprint


def test_notes_do_not_change_the_fingerprint(machines):
    hw = machines["raspberry-pi-5"]
    quiet = Hardware(hw.cpu, hw.nvidia_gpus, hw.accelerators, hw.os, notes=())
    assert quiet.fingerprint == hw.fingerprint


@pytest.mark.parametrize("name", MACHINE_NAMES)
def test_to_dict_round_trips_through_json(machines, name):
    hw = machines[name]
    data = json.loads(hw.to_json())
    assert data == hw.to_dict()
    again = Hardware.from_dict(data)
    assert again == hw and again.fingerprint == hw.fingerprint


def test_from_dict_rejects_what_is_not_a_hardware_dict():
    with pytest.raises(ValueError, match="Expected"):
        Hardware.from_dict({"cpu": {}})
    with pytest.raises(ValueError, match="schema"):
        Hardware.from_dict({"schema": 99})


# -- CPU quota and affinity -----------------------------------------------------------


def test_affinity_alone_limits_usable_cores(tmp_path):
    root = copy_machine("amd-epyc-2core-container", tmp_path)
    (scope,) = root.glob("sys/fs/cgroup/system.slice/docker-*.scope")
    (scope / "cpu.max").write_text("max 100000\n")
    (root / "proc/self/status").write_text("Name:\tpython3\nCpus_allowed_list:\t0-1\n")
    cpu = replay(root).cpu
    assert (cpu.quota_cores, cpu.usable_cores, cpu.logical_cores) == (None, 2, 64)


def test_a_smaller_limit_on_an_ancestor_cgroup_wins(tmp_path):
    root = copy_machine("amd-epyc-2core-container", tmp_path)
    (root / "sys/fs/cgroup/system.slice/cpu.max").write_text("100000 100000\n")
    assert replay(root).cpu.quota_cores == 1.0


def test_cgroup_path_missing_under_the_mount_falls_back_to_the_root(tmp_path):
    root = copy_machine("amd-epyc-2core-container", tmp_path)
    shutil.rmtree(root / "sys/fs/cgroup/system.slice")
    (root / "sys/fs/cgroup/cpu.max").write_text("300000 100000\n")
    assert replay(root).cpu.usable_cores == 3


@pytest.mark.parametrize("mount", ["cpu,cpuacct", "cpu"])
def test_cgroup_v1_quota(tmp_path, mount):
    root = copy_machine("amd-epyc-2core-container", tmp_path)
    shutil.rmtree(root / "sys/fs/cgroup")
    (root / "proc/self/cgroup").write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    base = root / "sys/fs/cgroup" / mount
    base.mkdir(parents=True)
    (base / "cpu.cfs_quota_us").write_text("-1\n")  # the host's root: unlimited
    (base / "cpu.cfs_period_us").write_text("100000\n")
    (base / "docker/abc").mkdir(parents=True)
    (base / "docker/abc/cpu.cfs_quota_us").write_text("150000\n")
    (base / "docker/abc/cpu.cfs_period_us").write_text("100000\n")
    hw = replay(root)
    assert (hw.cpu.quota_cores, hw.cpu.usable_cores) == (1.5, 2)
    assert "cgroup v1" in hw.note("cgroup").detail


def test_recorded_machines_make_no_live_syscalls(monkeypatch):
    def refuse(*args):
        raise AssertionError("live syscall while replaying a recorded machine")

    monkeypatch.setattr(os, "sched_getaffinity", refuse, raising=False)
    monkeypatch.setattr("platform.machine", refuse)
    monkeypatch.setattr("platform.system", refuse)
    hw = replay(MACHINES / "raspberry-pi-5")
    assert hw.cpu.arch == "aarch64" and hw.cpu.usable_cores == 4


# -- sysfs devices and OpenVINO -------------------------------------------------------


def _intel_card(root: Path, card: str, device: str, slot: str, symlink: bool) -> None:
    pci = root / "sys/devices/pci0000:00" / slot
    pci.mkdir(parents=True)
    (pci / "vendor").write_text("0x8086\n")
    (pci / "device").write_text(f"0x{device}\n")
    (pci / "uevent").write_text("DRIVER=i915\n" + ("" if symlink else f"PCI_SLOT_NAME={slot}\n"))
    (root / "sys/class/drm" / card).mkdir(parents=True)
    target = os.path.relpath(pci, root / "sys/class/drm" / card)
    (root / "sys/class/drm" / card / "device").symlink_to(target)


def test_discrete_intel_gpu_is_told_from_its_pci_slot(tmp_path):
    _intel_card(tmp_path, "card0", "a780", "0000:00:02.0", symlink=True)
    _intel_card(tmp_path, "card1", "56a0", "0000:03:00.0", symlink=True)
    hw = probes.detect(root=tmp_path)
    assert [(a.kind, a.pci_id, a.source) for a in hw.accelerators] == [
        ("igpu", "8086:a780", "drm"),
        ("dgpu", "8086:56a0", "drm"),
    ]


# -- NVML -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error, status, words",
    [
        ("LIBRARY_NOT_FOUND", "absent", "no driver"),
        ("DRIVER_NOT_LOADED", "absent", "no driver"),
        ("NO_PERMISSION", "permission", "permission"),
        ("LIB_RM_VERSION_MISMATCH", "error", "NVML failed"),
    ],
)
def test_nvml_failures_are_answers_not_exceptions(error, status, words):
    hw = probes.detect(root=MACHINES / "x86-server-h100", nvml=FakeNVML.failing(error))
    assert hw.nvidia_gpus == ()
    assert hw.note("nvml").status == status and words in hw.note("nvml").detail
    # Without NVML, the H100's DRM card is still reported.
    assert [(a.vendor, a.kind, a.pci_id) for a in hw.accelerators] == [("nvidia", "gpu", "10de:2330")]


def test_nvml_with_old_bytes_api_and_no_devices():
    data = json.loads((MACHINES / "x86-server-h100/nvml.json").read_text())
    fake = FakeNVML.from_dict(data)
    fake.names_as_bytes = True
    hw = probes.detect(root=MACHINES / "x86-server-h100", nvml=fake)
    assert (
        hw.nvidia_gpus[0].name == "NVIDIA H100 80GB HBM3" and hw.nvidia_gpus[0].driver_version == "580.159.04"
    )
    assert fake.initialised == 0  # shut down again
    empty = probes.detect(root=MACHINES / "x86-server-h100", nvml=FakeNVML(driver_version="580.159.04"))
    assert empty.nvidia_gpus == () and empty.note("nvml").status == "absent"
    assert "no device" in empty.note("nvml").detail


def test_cuda_version_string():
    assert cuda_version_string(12040) == "12.4"
    assert cuda_version_string(13000) == "13.0"
    assert cuda_version_string(11080) == "11.8"


def test_gpu_capabilities_follow_compute_capability():
    def gpu(cc):
        return probes.NvidiaGPU(0, "x", None, 1, cc, "1", None)

    assert not gpu((5, 2)).supports_fp16 and gpu((5, 3)).supports_fp16
    assert not gpu((6, 0)).supports_int8 and gpu((6, 1)).supports_int8
    assert not gpu((6, 1)).has_tensor_cores and gpu((7, 5)).has_tensor_cores


def test_a_hanging_nvml_is_bounded_by_the_timeout():
    release = threading.Event()
    try:
        started = time.monotonic()
        hw = probes.detect(root=MACHINES / "x86-server-h100", nvml=FakeNVML(block=release), timeout_s=0.3)
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert elapsed < 2.0
    assert hw.nvidia_gpus == () and hw.note("nvml").status == "timeout"


# -- nothing raises -------------------------------------------------------------------


def test_garbage_files_give_a_hardware_with_notes(tmp_path):
    garbage = bytes(range(256)) * 4
    for rel in (
        "proc/cpuinfo",
        "proc/self/status",
        "proc/self/cgroup",
        "sys/fs/cgroup/cgroup.controllers",
        "sys/fs/cgroup/cpu.max",
        "sys/devices/system/cpu/online",
        "sys/class/drm/card0/device/vendor",
        "sys/class/drm/card0/device/device",
        "sys/class/accel/accel0/device/uevent",
        "proc/device-tree/model",
        "proc/device-tree/compatible",
        "probes-meta.json",
        "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq",
    ):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(garbage)
    (tmp_path / "sys/fs/cgroup/cpu.max").write_text("lots 100000\n")
    hw = probes.detect(root=tmp_path, nvml=FakeNVML.failing())
    assert isinstance(hw, Hardware) and hw.cpu.usable_cores >= 1
    assert statuses(hw)["cgroup"] == "error" and statuses(hw)["soc"] == "error"
    assert hw.cpu.soc_model is None and hw.cpu.arch == "unknown"
    assert all(len(n.detail) < 400 for n in hw.notes)
    assert {"platform", "cpuinfo", "cgroup", "drm", "accel", "nvml"} <= set(statuses(hw))
    json.dumps(hw.to_dict())


def test_an_empty_or_missing_root_still_answers(tmp_path):
    for root in (tmp_path, tmp_path / "does-not-exist"):
        hw = probes.detect(root=root)
        assert hw.cpu.arch == "unknown" and hw.cpu.logical_cores == 1 and hw.os == "unknown"
        assert statuses(hw)["nvml"] == "absent"


def test_permission_denied_is_recorded(monkeypatch, tmp_path):
    root = copy_machine("amd-epyc-2core-container", tmp_path)
    real_read = probes.system.RecordedSystem.read

    def read(self, rel):
        if rel.endswith("cpu.max"):
            raise PermissionError(13, "Permission denied", rel)
        return real_read(self, rel)

    monkeypatch.setattr(probes.system.RecordedSystem, "read", read)
    hw = replay(root)
    assert hw.note("cgroup").status == "permission"
    assert hw.cpu.quota_cores is None and hw.cpu.usable_cores == 64


# -- the live machine -----------------------------------------------------------------


def test_nvml_is_asked_only_where_an_nvidia_driver_shows(tmp_path, monkeypatch):
    system = probes.system.RecordedSystem(tmp_path)
    monkeypatch.delenv(nvml_probe.ASK_ALWAYS_ENV, raising=False)
    assert not nvml_probe.driver_present(system)
    monkeypatch.setenv(nvml_probe.ASK_ALWAYS_ENV, "1")  # a stand-in pynvml, asked anyway
    assert nvml_probe.driver_present(system)
    monkeypatch.delenv(nvml_probe.ASK_ALWAYS_ENV)
    for path in nvml_probe.DRIVER_PATHS:  # /proc/driver/nvidia, /dev/nvidiactl, WSL 2's /dev/dxg
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).touch()
        assert nvml_probe.driver_present(system), path
        (tmp_path / path).unlink()


def test_a_live_probe_without_an_nvidia_driver_does_not_import_pynvml():
    if not sys.platform.startswith("linux"):
        pytest.skip("the driver's files are read on Linux only")
    if nvml_probe.driver_present(probes.system.open_system(None)):
        pytest.skip("an NVIDIA driver is loaded here: NVML is asked, as it must be")
    code = "import sys, probes; hw = probes.detect(); print(hw.note('nvml').status, 'pynvml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["absent", "False"], out.stdout + out.stderr


def test_live_machine():
    hw = probes.detect()
    assert 1 <= hw.cpu.usable_cores <= os.cpu_count()
    assert hw.cpu.logical_cores >= hw.cpu.usable_cores
    assert hw.cpu.arch != "unknown" and hw.os
    if not hw.nvidia_gpus:
        assert hw.note("nvml").status in ("absent", "timeout", "error", "permission")
        assert hw.note("nvml").detail
    assert {n.probe for n in hw.notes} >= {"platform", "cpuinfo", "cgroup", "affinity", "nvml"}
    assert Hardware.from_dict(hw.to_dict()) == hw


def test_live_detection_is_cached_and_thread_safe():
    results = []
    threads = [threading.Thread(target=lambda: results.append(probes.detect())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is results[0] for r in results) and probes.detect() is results[0]
    fresh = probes.detect(refresh=True)
    assert fresh is not results[0] and fresh.fingerprint == results[0].fingerprint
    assert probes.detect() is fresh
    assert probes.detected() is fresh  # the cached answer, without probing again


def test_a_session_starts_no_probing_thread_once_the_answer_is_known():
    from autoinfer.loader import detect_beside

    hw = probes.detect()
    before = threading.active_count()
    wait = detect_beside()
    assert threading.active_count() == before and wait() is hw


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="recording reads /proc and /sys")
def test_recording_the_live_machine_replays_to_the_same_fingerprint(tmp_path):
    recorded = record(tmp_path / "live")
    assert recorded.fingerprint == probes.detect().fingerprint
    assert (tmp_path / "live/proc/cpuinfo").exists() and (tmp_path / "live/probes-meta.json").exists()


# Backend names are the runtimes' package names (autoinfer/backends/__init__.py).
RUNTIME_MODULES = backends.names()


def test_importing_probes_imports_no_runtime_and_detect_runs_in_a_fresh_process():
    code = (
        "import sys, probes\n"
        f"heavy = [m for m in {(*RUNTIME_MODULES, 'pynvml')!r} if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print(probes.detect())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "cores usable" in result.stdout
    assert result.stderr == ""  # the library prints nothing, not even warnings


# -- issue 11: NVML per-device failures, MIG, bus ids, NVML's own bound; CPU clusters ----------


def _gpu(i, **kw):
    return {
        "name": f"GPU {i}",
        "uuid": f"GPU-{i:08x}-0000-0000-0000-000000000000",
        "memory_total_bytes": 16 << 30,
        "compute_capability": [8, 6],
        "pci_bus_id": f"00000000:{0x10 + i:02X}:00.0",
        **kw,
    }


@pytest.mark.parametrize(
    "broken",
    [
        {"error": "GPU_IS_LOST"},
        {"error": "NO_PERMISSION"},
        {"errors": {"nvmlDeviceGetMemoryInfo": "NO_PERMISSION"}},
    ],
)
def test_one_failing_gpu_keeps_the_others_with_fake_nvml(broken):
    fake = FakeNVML(devices=[_gpu(0), _gpu(1, **broken), _gpu(2)], driver_version="550.54.15")
    hw = probes.detect(root=MACHINES / "x86-server-h100", nvml=fake)
    assert [g.index for g in hw.nvidia_gpus] == [0, 2]
    note = hw.note("nvml")
    assert note.status in ("error", "permission") and "GPU 1 left out" in note.detail
    assert "2 GPU(s)" in note.detail


def test_every_gpu_denied_is_a_permission_note_with_fake_nvml():
    fake = FakeNVML(
        devices=[_gpu(0, error="NO_PERMISSION"), _gpu(1, error="NO_PERMISSION")], driver_version="550.54.15"
    )
    hw = probes.detect(root=MACHINES / "x86-server-h100", nvml=fake)
    assert hw.nvidia_gpus == () and hw.note("nvml").status == "permission"


def test_pci_bus_ids_are_read_and_spelled_one_way_with_fake_nvml():
    hw = probes.detect(root=MACHINES / "x86-server-h100", nvml=FakeNVML(devices=[_gpu(0)]))
    assert hw.nvidia_gpus[0].pci_bus_id == "0000:10:00.0"
    assert nvml_probe.normal_bus_id("00000000:3B:00.0") == nvml_probe.normal_bus_id("0000:3b:00.0\x00")
    assert nvml_probe.normal_bus_id("garbage") is None


def test_mig_host_fixture_lists_instances_with_their_memory(machines):
    hw = machines["x86-server-a100-mig"]
    (gpu,) = hw.nvidia_gpus
    assert gpu.mig_enabled and gpu.pci_bus_id == "0000:07:00.0"
    assert [(m.uuid[-2:], m.memory_total_mb) for m in gpu.mig_instances] == [("b1", 19968), ("b2", 4864)]
    assert "MIG: 2 instance(s)" in hw.note("nvml").detail and "MIG" in hw.summary
    assert Hardware.from_dict(hw.to_dict()) == hw


def test_mig_layout_changes_the_fingerprint_but_non_mig_fingerprints_stay(machines):
    hw = machines["x86-server-a100-mig"]
    (gpu,) = hw.nvidia_gpus
    import dataclasses

    resliced = dataclasses.replace(gpu, mig_instances=gpu.mig_instances[:1])
    assert dataclasses.replace(hw, nvidia_gpus=(resliced,)).fingerprint != hw.fingerprint
    # A GPU without MIG hashes as before the MIG fields existed.
    h100 = machines["x86-server-h100"]
    assert h100.fingerprint_material()["nvidia_gpus"] == [
        ["NVIDIA H100 80GB HBM3", 81559, [9, 0], "580.159.04", "13.0"]
    ]


def test_mig_mode_off_and_unsupported_with_fake_nvml():
    fake = FakeNVML(devices=[_gpu(0, mig_mode=0), _gpu(1)])
    gpus = probes.detect(root=MACHINES / "x86-server-h100", nvml=fake).nvidia_gpus
    assert [(g.mig_enabled, g.mig_instances) for g in gpus] == [(False, ()), (None, ())]


def test_eight_gpu_fixture_has_distinct_bus_ids(machines):
    gpus = machines["x86-server-8x-h100-cuda-visible-2-3"].nvidia_gpus
    assert len(gpus) == 8 and len({g.pci_bus_id for g in gpus}) == 8


def test_live_nvml_query_has_its_own_bound_and_is_not_stacked_with_fake_nvml(monkeypatch):
    release = threading.Event()
    fake = FakeNVML(devices=[_gpu(0)], block=release)
    loads = []
    monkeypatch.setattr(nvml_probe, "load_pynvml", lambda: loads.append(1) or fake)
    monkeypatch.setattr(nvml_probe, "TIMEOUT_S", 0.2)
    try:
        with pytest.raises(nvml_probe.NvmlTimeout):
            nvml_probe.query(None)
        with pytest.raises(nvml_probe.NvmlTimeout):
            nvml_probe.query(None)  # joins the query still running
        assert len(loads) == 1
        assert nvml_probe.failure_note(nvml_probe.NvmlTimeout("x")).status == "timeout"
    finally:
        release.set()
    monkeypatch.setattr(nvml_probe, "TIMEOUT_S", 5.0)
    assert [g.name for g in nvml_probe.query(None)] == ["GPU 0"]


def test_recording_keeps_mig_and_bus_ids_with_fake_nvml(monkeypatch, tmp_path):
    gpu = _gpu(
        0,
        mig_mode=1,
        mig_devices=[
            {
                "slot": 3,
                "uuid": "MIG-00000000-0000-0000-0000-000000000003",
                "name": "A100 MIG 2g.10gb",
                "memory_total_bytes": 9728 << 20,
            }
        ],
    )
    monkeypatch.setattr(
        nvml_probe, "load_pynvml", lambda: FakeNVML(devices=[gpu], driver_version="550.54.15")
    )
    hw = record(tmp_path / "m")
    (got,) = hw.nvidia_gpus
    assert got.pci_bus_id == "0000:10:00.0" and got.mig_enabled
    assert [(m.index, m.memory_total_mb) for m in got.mig_instances] == [(3, 9728)]


def _cpu_root(tmp_path, cpuinfo, freqs_khz, capacity=None, pmus=None):
    root = tmp_path / "cpus"
    (root / "proc").mkdir(parents=True)
    (root / "proc/cpuinfo").write_text(cpuinfo)
    for cpu, khz in enumerate(freqs_khz):
        d = root / f"sys/devices/system/cpu/cpu{cpu}"
        (d / "cpufreq").mkdir(parents=True)
        (d / "cpufreq/cpuinfo_max_freq").write_text(f"{khz}\n")
        if capacity is not None:
            (d / "cpu_capacity").write_text(f"{capacity[cpu]}\n")
    for pmu, cpus in (pmus or {}).items():
        (root / f"sys/devices/{pmu}").mkdir(parents=True)
        (root / f"sys/devices/{pmu}/cpus").write_text(cpus + "\n")
    return open_system(root)


def _x86_info(n):
    return "".join(
        f"processor\t: {i}\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse avx2\n\n" for i in range(n)
    )


def _arm_info(parts):
    return "".join(
        f"processor\t: {i}\nCPU implementer\t: 0x41\nCPU part\t: {p}\n\n" for i, p in enumerate(parts)
    )


def test_intel_favoured_cores_are_not_big_little(tmp_path):
    """Turbo Boost Max 3.0: two cores of eight run 5.8 GHz, the rest 5.5 GHz; all are P-cores."""
    system = _cpu_root(tmp_path, _x86_info(8), [5800000] * 2 + [5500000] * 6)
    found, with_freq = cpu_clusters(system, list(range(8)))
    assert found == (probes.CpuCluster(tuple(range(8)), 5800.0),) and with_freq == 8


def test_intel_hybrid_pmus_split_p_and_e_cores(tmp_path):
    system = _cpu_root(
        tmp_path, _x86_info(6), [4400000] * 2 + [4200000] * 4, pmus={"cpu_core": "0-1", "cpu_atom": "2-5"}
    )
    found, _ = cpu_clusters(system, list(range(6)))
    assert [c.cpus for c in found] == [(0, 1), (2, 3, 4, 5)]


def test_binned_arm_cores_of_one_part_are_one_cluster(tmp_path):
    """RK3588-like: A55 x4, then A76 binned at 2.4 and 2.256 GHz: two kinds, not three."""
    system = _cpu_root(
        tmp_path,
        _arm_info(["0xd05"] * 4 + ["0xd0b"] * 4),
        [1800000] * 4 + [2400000] * 2 + [2256000] * 2,
        capacity=[414] * 4 + [1024] * 2 + [962] * 2,
    )
    found, _ = cpu_clusters(system, list(range(8)))
    assert found == (probes.CpuCluster((0, 1, 2, 3), 1800.0), probes.CpuCluster((4, 5, 6, 7), 2400.0))


def test_cpu_capacity_groups_cores_without_a_part(tmp_path):
    system = _cpu_root(tmp_path, "", [2000000] * 4, capacity=[1024, 1024, 400, 400])
    found, _ = cpu_clusters(system, list(range(4)))
    assert [c.cpus for c in found] == [(0, 1), (2, 3)]
