"""The cache under damage: truncated, corrupted and hand-edited decisions, artifacts whose
checksum no longer matches, and cache directories that are read-only or full.

In each case autoinfer either rebuilds what it can or runs without a cache, with one
warning, and the session's results stay those of ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from conftest import small_conv_model, usable_backends

import autoinfer
from autoinfer import backends as registry
from autoinfer import cache as cache_mod
from autoinfer.cache import Cache, record_digest

X = np.random.default_rng(5).standard_normal((1, 3, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory: Any) -> Path:
    return small_conv_model(tmp_path_factory.mktemp("damage") / "conv.onnx")


@pytest.fixture(scope="module")
def reference(model: Path) -> np.ndarray:
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": X})[0]


@pytest.fixture(autouse=True)
def _fresh_warnings() -> Iterator[None]:
    """Each test sees autoinfer's once-per-process warnings afresh."""
    cache_mod._WARNED.clear()
    yield
    cache_mod._WARNED.clear()


def _session(model: Path, cache_dir: Path, **kw: Any) -> autoinfer.Session:
    kw.setdefault("backends", ["onnxruntime"])
    kw.setdefault("benchmark", False)
    return autoinfer.Session(str(model), cache_dir=str(cache_dir), **kw)


def _check(sess: autoinfer.Session, reference: np.ndarray) -> None:
    np.testing.assert_allclose(sess.run(None, {"input": X})[0], reference, rtol=1e-4, atol=1e-5)


def _decision_files(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "decisions").glob("*.json"))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("autoinfer")
    ]


def _valid(path: Path) -> bool:
    rec = json.loads(path.read_text())
    return rec.get("sha256") == record_digest(rec)


# -- damaged decision files ------------------------------------------------------


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _garbage(p: Path) -> None:
    p.write_bytes(os.urandom(300))


def _hand_edit(p: Path) -> None:
    """A plausible edit that keeps the JSON valid: someone 'improves' a number."""
    rec = json.loads(p.read_text())
    rec["decision"]["winner"]["settings"] = {"intra_op_num_threads": 64}
    p.write_text(json.dumps(rec, indent=1))


def _other_schema(p: Path) -> None:
    rec = json.loads(p.read_text())
    rec["schema"] = 999
    p.write_text(json.dumps(rec))


def _not_an_object(p: Path) -> None:
    p.write_text("[1, 2, 3]")


@pytest.mark.parametrize(
    "damage",
    [_truncate, _garbage, _hand_edit, _other_schema, _not_an_object],
    ids=["truncated", "random bytes", "hand-edited", "other schema", "JSON but not a record"],
)
def test_a_damaged_decision_is_detected_and_rebuilt_with_one_warning(
    model: Path, reference: np.ndarray, tmp_path: Path, caplog: Any, damage: Any
) -> None:
    cache_dir = tmp_path / "cache"
    _session(model, cache_dir).close()
    (f,) = _decision_files(cache_dir)
    damage(f)
    caplog.set_level(logging.WARNING, logger="autoinfer")
    for _ in range(2):  # the second start uses the rebuilt file, and warns no more
        with _session(model, cache_dir) as s:
            _check(s, reference)
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "damaged" in warnings[0] and f.name in warnings[0], warnings
    (again,) = _decision_files(cache_dir)
    assert again == f and _valid(f), "the damaged decision was not rebuilt"


def test_a_decision_under_another_key_is_not_used(
    model: Path, reference: np.ndarray, tmp_path: Path, caplog: Any
) -> None:
    """A valid record copied over another key's file (a botched restore) is not trusted."""
    cache_dir = tmp_path / "cache"
    _session(model, cache_dir).close()
    _session(model, cache_dir, objective="memory").close()
    a, b = _decision_files(cache_dir)
    a.write_bytes(b.read_bytes())
    caplog.set_level(logging.WARNING, logger="autoinfer")
    with _session(model, cache_dir) as s1, _session(model, cache_dir, objective="memory") as s2:
        _check(s1, reference)
        _check(s2, reference)
    assert any("does not match its key" in w for w in _warnings(caplog)), _warnings(caplog)
    rec_a, rec_b = (json.loads(p.read_text()) for p in (a, b))
    assert rec_a["key"] == a.stem and rec_b["key"] == b.stem


def test_a_damaged_facts_record_is_rebuilt(
    model: Path, reference: np.ndarray, tmp_path: Path, caplog: Any
) -> None:
    cache_dir = tmp_path / "cache"
    _session(model, cache_dir).close()
    (f,) = sorted((cache_dir / "facts").glob("*.json"))
    rec = json.loads(f.read_text())
    rec["inputs"] = []  # would make every feed "unknown" if it were trusted
    f.write_text(json.dumps(rec))
    caplog.set_level(logging.WARNING, logger="autoinfer")
    with _session(model, cache_dir) as s:
        assert [i.name for i in s.get_inputs()] == ["input"]
        _check(s, reference)
    assert len(_warnings(caplog)) == 1 and _valid(f)


# -- artifacts -------------------------------------------------------------------

# Backends that load through a converted artifact in the cache (ncnn's pnnx conversion,
# TensorRT's engine), among those usable here.
CONVERTING = [b for b in usable_backends() if registry.get(b).capabilities.needs_conversion]


@pytest.mark.parametrize("backend", CONVERTING)
def test_a_conversion_whose_checksum_no_longer_matches_is_redone(
    backend: str, model: Path, reference: np.ndarray, tmp_path: Path, caplog: Any
) -> None:
    cache_dir = tmp_path / "cache"
    _session(model, cache_dir, backends=[backend]).close()
    files = [p for p in (cache_dir / "artifacts" / backend).rglob("*") if p.is_file() and p.suffix != ".json"]
    assert files, f"{backend} left no artifact in the cache"
    weights = max(files, key=lambda p: p.stat().st_size)  # the weights: the largest file
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte: weights that would give wrong answers
    weights.write_bytes(bytes(blob))
    caplog.set_level(logging.WARNING, logger="autoinfer")
    with _session(model, cache_dir, backends=[backend]) as s:
        assert s.choice.backend == backend
        _check(s, reference)
    assert any("damaged" in w for w in _warnings(caplog)), _warnings(caplog)
    assert weights.read_bytes() != bytes(blob), "the damaged weights were kept"


# -- directories that cannot be written ----------------------------------------------


@contextlib.contextmanager
def _immutable(d: Path) -> Iterator[None]:
    """``chattr +i``: read-only even for root, which ignores permission bits."""
    r = subprocess.run(["chattr", "+i", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot make {d} read-only here: chattr +i failed: {r.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(d)], check=False)


def _readonly_case(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o500)
        try:
            yield d / "cache"
        finally:
            d.chmod(0o700)
        return
    d = tmp_path / "ro"
    d.mkdir()
    with _immutable(d):
        yield d / "cache"


def test_a_read_only_cache_location_runs_without_cache_with_one_warning(
    model: Path, reference: np.ndarray, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING, logger="autoinfer")
    gen = _readonly_case(tmp_path)
    cache_dir = next(gen)
    try:
        for _ in range(2):
            with _session(
                model, cache_dir, backends=None, benchmark=True, budget_s=2, selection="blocking"
            ) as s:
                _check(s, reference)
                assert s.choice.measured
        assert not cache_dir.exists()
    finally:
        gen.close()
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "running without a cache" in warnings[0], warnings


def test_a_populated_cache_made_read_only_is_left_untouched_with_one_warning(
    model: Path, reference: np.ndarray, tmp_path: Path, caplog: Any
) -> None:
    """A cache that became read-only (a read-only home, a system image): autoinfer runs
    without it, warns once, and changes nothing in it."""
    cache_dir = tmp_path / "cache"
    _session(model, cache_dir).close()
    before = {p: p.read_bytes() for p in cache_dir.rglob("*") if p.is_file()}
    caplog.set_level(logging.WARNING, logger="autoinfer")
    if os.geteuid() == 0:
        cm: Any = _immutable(cache_dir)
    else:
        cache_dir.chmod(0o500)
        cm = contextlib.nullcontext()
    try:
        with cm:
            for _ in range(2):
                with _session(model, cache_dir) as s:
                    _check(s, reference)
            after = {p: p.read_bytes() for p in cache_dir.rglob("*") if p.is_file()}
    finally:
        cache_dir.chmod(0o700)
    assert after == before
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "running without a cache" in warnings[0], warnings


def test_a_full_disk_disables_the_cache_with_one_warning_simulated_enospc(
    model: Path, reference: np.ndarray, tmp_path: Path, caplog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC on every cache write (a full disk, simulated: this machine's disk is not full):
    each temporary file is created, and its bytes go to /dev/full, which refuses them as a
    full disk does."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here to refuse the writes with ENOSPC")
    real_mkstemp = cache_mod.tempfile.mkstemp

    def full(*args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, name = real_mkstemp(*args, **kwargs)
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name

    monkeypatch.setattr(cache_mod.tempfile, "mkstemp", full)
    caplog.set_level(logging.WARNING, logger="autoinfer")
    cache_dir = tmp_path / "cache"
    for _ in range(2):
        with _session(model, cache_dir) as s:
            _check(s, reference)
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "No space left" in warnings[0], warnings
    leftovers = [p for p in cache_dir.rglob("*") if p.is_file() and p.suffix == ".json"]
    assert leftovers == [], f"half-written files left behind: {leftovers}"
    assert not list(cache_dir.rglob(".tmp-*"))


def test_a_decision_reaches_the_disk_and_the_facts_memo_costs_a_cold_start_no_fsync(
    model: Path, reference: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decision (seconds of measuring) is flushed to the disk before it is renamed into
    place; the facts record, written on a cold start's path, is a memo of what the model's
    file says: a lost one is read again, so it waits for no fsync (tens of ms on a busy disk)."""
    synced: list[Path] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(cache_mod.os, "fsync", fsync)
    cache_dir = tmp_path / "cache"
    with _session(model, cache_dir) as s:
        _check(s, reference)
    assert list((cache_dir / "facts").glob("*.json")) and _decision_files(cache_dir)
    dirs = {p.parent.name for p in synced if cache_dir.resolve() in p.resolve().parents}
    assert dirs == {"decisions"}, synced


def test_a_cache_path_that_is_a_file_is_left_alone(
    model: Path, reference: np.ndarray, tmp_path: Path, caplog: Any
) -> None:
    """AUTOINFER_CACHE_DIR pointing at a user's file: the file is never touched."""
    f = tmp_path / "notes.txt"
    f.write_text("my notes\n")
    caplog.set_level(logging.WARNING, logger="autoinfer")
    with _session(model, f) as s:
        _check(s, reference)
    assert f.read_text() == "my notes\n"
    assert len(_warnings(caplog)) == 1


def test_clear_of_a_damaged_cache_removes_only_autoinfers_subdirectories(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    c = Cache(cache_dir)
    assert c.write_json(c.path("decisions", "k.json"), {"key": "k"})
    (cache_dir / "decisions" / "junk.json").write_bytes(b"\x00\xff")
    (cache_dir / "README-mine.txt").write_text("a file someone put here")
    c.clear()
    assert not (cache_dir / "decisions").exists()
    assert (cache_dir / "README-mine.txt").read_text() == "a file someone put here"
