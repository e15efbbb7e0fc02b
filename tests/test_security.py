"""Security: a private cache, nothing unpickled or executed from it, no network connection.

The network test traces a whole cold selection over every usable runtime (the measuring
subprocesses and the pnnx converter included) with ``strace -f``, so a connection made by
native code counts as much as one made from Python.
"""
from __future__ import annotations

import os
import pickle
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import autoinfer

from conftest import small_conv_model, usable_backends

X = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory: Any) -> Path:
    return small_conv_model(tmp_path_factory.mktemp("security") / "conv.onnx", "Sigmoid",
                            seed=4)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_the_cache_is_private_to_the_user(model: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "deep" / "cache"
    old = os.umask(0o022)  # the usual umask: would make 0755 directories
    try:
        with autoinfer.Session(str(model), cache_dir=str(cache_dir), benchmark=True,
                               budget_s=2, selection="blocking") as s:
            s.run(None, {"input": X})
    finally:
        os.umask(old)
    assert _mode(cache_dir) == 0o700
    # every directory autoinfer itself creates, down to each candidate's artifact directory
    mine = [cache_dir, *(p for p in cache_dir.iterdir() if p.is_dir())]
    art = cache_dir / "artifacts"
    mine += [p for p in art.glob("*") if p.is_dir()] + [p for p in art.glob("*/*") if p.is_dir()]
    mine += [p for p in art.glob("*/*/*") if p.is_dir()]
    assert len(list(art.glob("*/*/*"))) >= len(usable_backends()), mine
    loose = {str(p.relative_to(cache_dir)): oct(_mode(p)) for p in mine if _mode(p) != 0o700}
    assert not loose, f"cache directories readable by others: {loose}"
    files = [p for p in cache_dir.glob("*/*.json")]
    assert files and all(_mode(p) & 0o077 == 0 for p in files), \
        {str(p): oct(_mode(p)) for p in files}


def test_an_existing_cache_directory_open_to_others_is_made_private(model: Path,
                                                                    tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(mode=0o777)
    cache_dir.chmod(0o777)
    with autoinfer.Session(str(model), cache_dir=str(cache_dir), benchmark=False) as s:
        s.run(None, {"input": X})
    assert _mode(cache_dir) == 0o700


class _Plant:
    """A pickle that, if anything ever unpickled it, would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> Any:
        return (open, (self.marker, "w"))


def test_pickles_and_scripts_planted_in_the_cache_are_never_loaded_or_run(
        model: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    with autoinfer.Session(str(model), cache_dir=str(cache_dir), backends=["onnxruntime"],
                           benchmark=False) as s:
        want = s.run(None, {"input": X})[0]
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_Plant(marker))
    assert pickle.loads(payload) and marker.exists()  # the plant works when unpickled
    marker.unlink()
    planted = []
    for f in [*cache_dir.glob("*/*.json")]:
        f.write_bytes(payload)
        planted.append(f)
    for name in ("decisions/evil.pkl", "facts/evil.pickle", "artifacts/evil.npy"):
        (cache_dir / name).write_bytes(payload)
    for name in ("artifacts/run.sh", "models/x.py"):  # executables: never run
        (cache_dir / name).write_text(f"touch {marker}\n")
        (cache_dir / name).chmod(0o700)
    assert len(planted) >= 2
    code = textwrap.dedent(f"""
        import sys, numpy as np, autoinfer
        seen = []
        def hook(e, a):
            if e == 'pickle.find_class':  # anything unpickled, from anywhere
                seen.append((e, a))
            elif e in ('subprocess.Popen', 'os.exec', 'os.posix_spawn'):
                prog = a[0] or (list(a[1])[0] if a[1] else '')
                if str(prog).startswith({str(cache_dir)!r}):  # a program from the cache
                    seen.append((e, prog))
        sys.addaudithook(hook)
        x = np.load({str(tmp_path / 'x.npy')!r})
        for objective in ('latency', 'memory'):
            with autoinfer.Session({str(model)!r}, cache_dir={str(cache_dir)!r}, benchmark=True,
                                   budget_s=2, objective=objective, selection="blocking") as s:
                y = s.run(None, {{'input': x}})[0]
        np.save({str(tmp_path / 'y.npy')!r}, y)
        print('events', seen)
    """)
    np.save(tmp_path / "x.npy", X)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "events []" in r.stdout, r.stdout
    assert not marker.exists(), "something from the cache was unpickled or executed"
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-4, atol=1e-5)


def test_autoinfer_makes_no_network_connection(model: Path, tmp_path: Path) -> None:
    """A cold selection over every usable runtime, traced with strace -f: no AF_INET/AF_INET6
    connect or send, from any process (Python or native code, telemetry included)."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed here, so native connections cannot be traced")
    probe = subprocess.run([strace, "-qq", "-e", "trace=none", "true"], capture_output=True,
                           text=True)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here (ptrace refused?): {probe.stderr.strip()}")
    code = textwrap.dedent(f"""
        import numpy as np, autoinfer
        x = {{'input': np.zeros((1, 3, 8, 8), np.float32)}}
        ran = []
        with autoinfer.Session({str(model)!r}, cache_dir={str(tmp_path / 'cache')!r},
                               benchmark=True, budget_s=3,
                               selection="blocking") as s:  # a measured selection
            s.run(None, x)
        for name in {usable_backends()!r}:  # and every runtime, whether measured or not
            with autoinfer.Session({str(model)!r}, cache_dir={str(tmp_path / 'cache')!r},
                                   backends=[name], benchmark=False) as s:
                s.run(None, x)
                ran.append(s.choice.backend)
        print('ran on', s.choice.backend, sorted(ran))
    """)
    log = tmp_path / "strace.txt"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AUTOINFER_", "OPENVINO_TELEMETRY", "OV_"))}
    r = subprocess.run([strace, "-f", "-qq", "-e", "signal=none", "-e",
                        "trace=connect,sendto,sendmsg", "-o", str(log), sys.executable, "-c",
                        code], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    measured = re.search(r"ran on \S+ \[(.*)\]", r.stdout)
    assert measured, r.stdout
    for name in usable_backends():  # the trace covered every runtime usable here
        assert repr(name) in measured.group(1), (name, r.stdout)
    inet = [line for line in log.read_text().splitlines()
            if re.search(r"AF_INET6?\b", line)]
    assert not inet, "network traffic:\n" + "\n".join(inet[:20])
