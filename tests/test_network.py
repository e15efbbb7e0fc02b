"""No network, traced the way a user runs autoinfer: every entry point in a fresh process.

Each case (``doctor``, ``doctor --json``, ``select``, ``bench``, ``run``, a cold
``Session``, ``patch()``) starts a new Python process with a clean environment (no
conftest, no telemetry opt-out set by the test: the library must set its own), a fresh
empty ``$HOME`` and cache directory, and traces it with
``strace -f -e trace=connect,sendto,sendmsg`` so that the measuring workers, the pnnx
converter, the ncnn self-check and native code (ONNX Runtime's telemetry uploader is C++)
count as much as Python. Allowed: AF_UNIX (nscd, logging sockets)
and AF_NETLINK; not allowed: any AF_INET or AF_INET6 connect or send, DNS included.

Second witness, for machines where strace cannot trace: a ``sitecustomize`` audit hook in
every Python process started (``socket.connect``, ``socket.getaddrinfo``, ``socket.sendto``).
It cannot see native code, so every case also asserts that nothing was written to the fresh
``$HOME``: ONNX Runtime's telemetry queues its events under ``~/.cache/Microsoft`` before it
uploads them, and OpenVINO's writes ``~/intel/openvino_telemetry``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import small_conv_model

ROOT = Path(__file__).resolve().parents[1]
TELEMETRY_PACKAGES = ("openvino_telemetry", "onnxruntime")
_HOOK = textwrap.dedent("""
    import os, sys
    def _autoinfer_net_hook(event, args):
        if event in ('socket.connect', 'socket.sendto', 'socket.getaddrinfo'):
            target = args[1] if event != 'socket.getaddrinfo' else args[:2]
            family = getattr(args[0], 'family', None) if event != 'socket.getaddrinfo' else 'dns'
            if str(family) not in ('AddressFamily.AF_UNIX', 'AddressFamily.AF_NETLINK'):
                with open(os.environ['AUTOINFER_TEST_NETLOG'], 'a') as f:
                    f.write(f'{os.getpid()} {event} {family} {target!r}\\n')
    sys.addaudithook(_autoinfer_net_hook)
""")


def _strace() -> tuple[str | None, str]:
    """strace's path, or None and why it cannot be used here."""
    strace = shutil.which("strace")
    if strace is None:
        return None, "strace is not installed (make test installs it when run as root)"
    probe = subprocess.run([strace, "-qq", "-e", "trace=none", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None, f"strace cannot trace here (ptrace refused?): {probe.stderr.strip()}"
    return strace, ""


@pytest.fixture(scope="module")
def model(tmp_path_factory: Any) -> Path:
    return small_conv_model(tmp_path_factory.mktemp("network") / "conv.onnx", "Sigmoid", seed=4)


def test_the_telemetry_packages_are_installed() -> None:
    """The cases below prove something only where the telemetry is there to be sent."""
    missing = [p for p in TELEMETRY_PACKAGES if importlib.util.find_spec(p) is None]
    assert not missing, f"telemetry packages missing, the no-network test would prove less: {missing}"


def _clean_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT") if k in os.environ}
    env.update(
        HOME=str(home),
        AUTOINFER_CACHE_DIR=str(tmp_path / "cache"),
        PYTHONPATH=str(ROOT),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _trace(
    argv: list[str], tmp_path: Path, timeout: float = 300, witness: str = "best"
) -> subprocess.CompletedProcess[str]:
    """Run ``python argv...`` traced; assert it succeeded, sent nothing and wrote nothing to $HOME.

    witness: "best" (strace where it can trace, else the audit hook), "strace" or "hook".
    """
    env = _clean_env(tmp_path)
    strace, why = _strace()
    if witness == "strace" and strace is None:
        print(f"skipped: {why}")
        pytest.skip(why)
    if witness == "hook":
        strace, why = None, "the audit-hook witness was asked for"
    cmd = [sys.executable, *argv]
    log = tmp_path / "trace.txt"
    if strace is not None:
        cmd = [
            strace,
            "-f",
            "-qq",
            "-e",
            "signal=none",
            "-e",
            "trace=connect,sendto,sendmsg",
            "-o",
            str(log),
            *cmd,
        ]
    else:  # the audit-hook witness, in every Python process started
        hook_dir = tmp_path / "hook"
        hook_dir.mkdir()
        (hook_dir / "sitecustomize.py").write_text(_HOOK)
        env["PYTHONPATH"] = f"{hook_dir}{os.pathsep}{env['PYTHONPATH']}"
        env["AUTOINFER_TEST_NETLOG"] = str(log)
        log.write_text("")
        print(f"tracing with a Python audit hook only: {why}")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    text = log.read_text()
    inet = (
        [ln for ln in text.splitlines() if re.search(r"\bAF_INET6?\b", ln)]
        if strace is not None
        else text.splitlines()
    )
    assert not inet, "network traffic:\n" + "\n".join(inet[:20])
    written = [str(p.relative_to(env["HOME"])) for p in Path(env["HOME"]).rglob("*") if p.is_file()]
    assert not written, f"files written to $HOME (telemetry queued for later?): {written}"
    return r


def test_doctor_makes_no_network_connection(tmp_path: Path) -> None:
    r = _trace(["-m", "autoinfer.cli", "doctor"], tmp_path)
    assert "Runtimes" in r.stdout


def test_doctor_json_makes_no_network_connection(tmp_path: Path) -> None:
    r = _trace(["-m", "autoinfer.cli", "doctor", "--json"], tmp_path)
    assert '"runtimes"' in r.stdout


def test_select_over_every_runtime_makes_no_network_connection(model: Path, tmp_path: Path) -> None:
    r = _trace(["-m", "autoinfer.cli", "select", str(model), "--budget", "5"], tmp_path)
    assert "winner:" in r.stdout
    from conftest import usable_backends

    for name in usable_backends():  # the selection spanned every runtime usable here
        assert f"{name}:" in r.stdout, (name, r.stdout)


def test_bench_makes_no_network_connection(model: Path, tmp_path: Path) -> None:
    r = _trace(["-m", "autoinfer.cli", "bench", str(model), "--budget", "5"], tmp_path)
    assert "winner:" in r.stdout


def test_run_makes_no_network_connection(model: Path, tmp_path: Path) -> None:
    r = _trace(["-m", "autoinfer.cli", "run", str(model), "--budget", "5", "--repeat", "1"], tmp_path)
    assert "running on" in r.stdout


def test_a_cold_session_makes_no_network_connection(model: Path, tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import numpy as np, autoinfer
        x = {{'input': np.zeros((1, 3, 8, 8), np.float32)}}
        with autoinfer.Session({str(model)!r}, benchmark=True, budget_s=3) as s:
            y = s.run(None, x)[0]
        print('ran on', s.choice.backend, y.shape)
    """)
    r = _trace(["-c", code], tmp_path)
    assert "ran on" in r.stdout


def test_patch_and_an_app_style_inference_session_make_no_network_connection(
    model: Path, tmp_path: Path
) -> None:
    import autoinfer

    if not callable(getattr(autoinfer, "patch", None)):
        print("autoinfer.patch() does not exist yet")
        pytest.skip("autoinfer.patch() does not exist yet")
    code = textwrap.dedent(f"""
        import numpy as np, autoinfer
        autoinfer.patch()
        import onnxruntime as ort  # the application's own code, unchanged
        sess = ort.InferenceSession({str(model)!r}, providers=['CPUExecutionProvider'])
        y = sess.run(None, {{'input': np.zeros((1, 3, 8, 8), np.float32)}})[0]
        print('ran', y.shape)
    """)
    r = _trace(["-c", code], tmp_path)
    assert "ran (1, 4, 8, 8)" in r.stdout


@pytest.mark.parametrize("witness", ["strace", "hook"])
def test_the_witness_sees_a_connection_from_a_child_process(witness: str, tmp_path: Path) -> None:
    """Each witness works: a child process that connects (to a closed local port) is caught."""
    child = (
        "import socket\ns = socket.socket()\ns.settimeout(1)\n"
        "try:\n    s.connect(('127.0.0.1', 9))\nexcept OSError:\n    pass\n"
    )
    code = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {child!r}], check=True)\n"
    with pytest.raises(AssertionError, match="network traffic"):
        _trace(["-c", code], tmp_path, witness=witness)


def test_the_hook_witness_passes_a_quiet_process(tmp_path: Path) -> None:
    r = _trace(
        ["-c", "import autoinfer, probes; print(probes.detect().cpu.usable_cores)"], tmp_path, witness="hook"
    )
    assert int(r.stdout.split()[-1]) >= 1
