"""Security: a private cache, and nothing unpickled or executed from it.

No network connection is tested in test_network.py, per entry point, in fresh processes.
"""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import small_conv_model, usable_backends

import autoinfer

X = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory: Any) -> Path:
    return small_conv_model(tmp_path_factory.mktemp("security") / "conv.onnx", "Sigmoid", seed=4)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_the_cache_is_private_to_the_user(model: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "deep" / "cache"
    old = os.umask(0o022)  # the usual umask: would make 0755 directories
    try:
        with autoinfer.Session(
            str(model), cache_dir=str(cache_dir), benchmark=True, budget_s=2, selection="blocking"
        ) as s:
            s.run(None, {"input": X})
    finally:
        os.umask(old)
    assert _mode(cache_dir) == 0o700
    # every directory autoinfer itself creates, down to each candidate's artifact directory
    mine = [cache_dir, *(p for p in cache_dir.iterdir() if p.is_dir())]
    art = cache_dir / "artifacts"
    mine += [p for p in art.glob("*") if p.is_dir()] + [p for p in art.glob("*/*") if p.is_dir()]
    mine += [p for p in art.glob("*/*/*") if p.is_dir()]
    from autoinfer import backends as registry
    from autoinfer.backends.base import Candidate

    # a runtime that keeps no files for its default candidate loads from a private directory
    keeping = [b for b in usable_backends() if registry.get(b).keeps_artifacts(Candidate.make(b))]
    assert len(list(art.glob("*/*/*"))) >= len(keeping), mine
    loose = {str(p.relative_to(cache_dir)): oct(_mode(p)) for p in mine if _mode(p) != 0o700}
    assert not loose, f"cache directories readable by others: {loose}"
    files = [p for p in cache_dir.glob("*/*.json")]
    assert files and all(_mode(p) & 0o077 == 0 for p in files), {str(p): oct(_mode(p)) for p in files}


def test_an_existing_cache_directory_open_to_others_is_made_private(model: Path, tmp_path: Path) -> None:
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
    model: Path, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    with autoinfer.Session(
        str(model), cache_dir=str(cache_dir), backends=["onnxruntime"], benchmark=False
    ) as s:
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
        x = np.load({str(tmp_path / "x.npy")!r})
        for objective in ('latency', 'memory'):
            with autoinfer.Session({str(model)!r}, cache_dir={str(cache_dir)!r}, benchmark=True,
                                   budget_s=2, objective=objective, selection="blocking") as s:
                y = s.run(None, {{'input': x}})[0]
        np.save({str(tmp_path / "y.npy")!r}, y)
        print('events', seen)
    """)
    np.save(tmp_path / "x.npy", X)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "events []" in r.stdout, r.stdout
    assert not marker.exists(), "something from the cache was unpickled or executed"
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-4, atol=1e-5)
