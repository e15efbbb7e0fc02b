"""`autoinfer doctor`: the report (doctor.py) and its two renderings (cli.py), as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import usable_backends

from autoinfer import backends, doctor
from autoinfer.backends.onnxruntime import OnnxRuntimeBackend

ROOT = Path(__file__).resolve().parents[1]


def run_doctor(*args: str, cache: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "AUTOINFER_CACHE_DIR": str(cache),
        **env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-m", "autoinfer.cli", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=full,
        stdin=subprocess.DEVNULL,
    )


def test_doctor_text_lists_every_runtime_and_says_ok(tmp_path: Path) -> None:
    r = run_doctor(cache=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "autoinfer doctor" and "Hardware" in lines and "Runtimes" in lines
    for name in backends.names():
        row = next((ln for ln in lines if ln.strip().startswith(name + " ")), None)
        assert row is not None, (name, r.stdout)
        assert ("OK " in row) == (name in usable_backends()), row
    assert lines[-1].startswith(f"OK: {len(usable_backends())} runtime(s) usable here")
    assert str(tmp_path) in r.stdout and r.stderr == ""


def test_doctor_json_is_the_report(tmp_path: Path) -> None:
    r = run_doctor("--json", cache=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["ok"] is True
    assert [x["backend"] for x in rep["runtimes"]] == list(backends.names())
    assert sorted(x["backend"] for x in rep["runtimes"] if x["usable"]) == sorted(usable_backends())
    assert all(x["devices"] for x in rep["runtimes"] if x["usable"])
    assert rep["hardware"]["cpu"]["usable_cores"] >= 1 and len(rep["fingerprint"]) == 16
    assert rep["cache"]["path"] == str(tmp_path) and rep["cache"]["writable"] is True


def test_doctor_warns_about_a_thread_variable_above_the_quota(tmp_path: Path) -> None:
    r = run_doctor("--json", cache=tmp_path, OMP_NUM_THREADS="9999", ORT_NUM_THREADS="many")
    assert r.returncode == 0, r.stderr
    messages = [p["message"] for p in json.loads(r.stdout)["problems"]]
    assert any(m.startswith("OMP_NUM_THREADS=9999 is above the") for m in messages), messages
    assert "ORT_NUM_THREADS='many' is not a number" in messages, messages


def test_doctor_reads_the_thread_variables_backends_declare(hw: Any, monkeypatch: Any) -> None:
    """doctor.py names no runtime's variable: a backend's ``thread_env_vars`` are read."""

    class FakeThreadsBackend(OnnxRuntimeBackend):
        thread_env_vars = ("FAKE_RUNTIME_THREADS",)

    monkeypatch.setenv("FAKE_RUNTIME_THREADS", str(hw.cpu.usable_cores + 100))
    assert "FAKE_RUNTIME_THREADS" not in doctor.thread_vars()
    backends.register("fake_threads", FakeThreadsBackend())
    try:
        assert doctor.thread_vars()[:3] == doctor.THREAD_VARS
        assert "FAKE_RUNTIME_THREADS" in doctor.thread_vars()
        problems = doctor._env_problems(hw)
    finally:
        backends.unregister("fake_threads")
    assert [p["fix"] for p in problems if "FAKE_RUNTIME_THREADS" in p["message"]] == [
        f"export FAKE_RUNTIME_THREADS={hw.cpu.usable_cores} (or unset it; autoinfer sizes threads itself)"
    ]


def test_a_broken_backend_is_reported_not_raised(hw: Any, tmp_path: Path) -> None:
    class BrokenBackend(OnnxRuntimeBackend):
        def availability(self, hw: Any) -> Any:
            raise RuntimeError("the runtime's library is damaged")

    backends.register("broken_fake", BrokenBackend())
    try:
        rep = doctor.report(hw=hw, cache_dir=tmp_path)
    finally:
        backends.unregister("broken_fake")
    broken = next(r for r in rep["runtimes"] if r["backend"] == "broken_fake")
    assert broken["usable"] is False and "damaged" in broken["reason"]
    assert rep["ok"] is True  # the working runtimes still count


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: no unwritable directory")
def test_an_unwritable_cache_is_a_warning(hw: Any, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    rep = doctor.report(hw=hw, cache_dir=locked / "cache")
    assert rep["cache"]["writable"] is False
    assert any("not writable" in p["message"] for p in rep["problems"])
