"""The command line as a user runs it: real subprocesses, real runtimes, exit codes and messages.

Exit codes: 0 success, 1 ``doctor`` found no usable runtime, 2 bad input (an autoinfer error
or an argparse usage error), 130 interrupted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import small_conv_model, usable_backends

from autoinfer import backends
from autoinfer.config import OBJECTIVES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory: Any) -> Path:
    return small_conv_model(tmp_path_factory.mktemp("cli") / "conv.onnx")


def cli(*args: str, cache: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AUTOINFER_CACHE_DIR": str(cache),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-m", "autoinfer.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_select_measures_and_explains_the_winner(model: Path, tmp_path: Path) -> None:
    r = cli("select", str(model), "--budget", "5", cache=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"autoinfer select {model}")
    winner = next(ln for ln in r.stdout.splitlines() if ln.startswith("winner: "))
    assert winner.split()[1].split(":")[0] in usable_backends(), winner
    assert "ranking:" in r.stdout and r.stderr == ""


def test_select_json_is_a_decision_and_a_second_call_hits_the_cache(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = cli("select", str(model), "--no-benchmark", "--json", cache=tmp_path)
    assert first.returncode == 0, first.stderr
    dec = json.loads(first.stdout)
    assert dec["winner"]["backend"] in usable_backends() and dec["objective"] == "latency"
    assert dec["from_cache"] is False and len(dec["key"]) >= 16
    again = json.loads(cli("select", str(model), "--no-benchmark", "--json", cache=tmp_path).stdout)
    assert again["from_cache"] is True and again["winner"] == dec["winner"]
    listed = cli("cache", "list", cache=tmp_path)
    assert listed.returncode == 0 and "1 decision(s)" in listed.stdout, listed.stdout
    # the cache command manages what is on disk even when the cache is off for selections
    monkeypatch.setenv("AUTOINFER_NO_CACHE", "1")
    listed = cli("cache", "list", cache=tmp_path)
    assert listed.returncode == 0 and "1 decision(s)" in listed.stdout, listed.stdout


def test_open_cache_follows_the_settings_unless_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autoinfer.config import open_cache

    monkeypatch.setenv("AUTOINFER_NO_CACHE", "1")
    monkeypatch.setenv("AUTOINFER_CACHE_MAX_MB", "3")
    settings, cache = open_cache(tmp_path, 7.0)
    assert (settings.cache_dir, settings.budget_s, settings.cache_enabled) == (tmp_path, 7.0, False)
    assert cache.root == tmp_path and not cache.enabled and cache.max_bytes == 3 * 2**20
    assert open_cache(tmp_path, enabled=True)[1].enabled
    monkeypatch.delenv("AUTOINFER_NO_CACHE")
    assert open_cache(tmp_path)[1].enabled and not open_cache(tmp_path, enabled=False)[1].enabled


def test_select_restricted_to_one_backend(model: Path, tmp_path: Path) -> None:
    name = usable_backends()[0]
    r = cli(
        "select",
        str(model),
        "--no-benchmark",
        "--json",
        "--backends",
        name,
        "--objective",
        "throughput",
        cache=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    dec = json.loads(r.stdout)
    assert dec["winner"]["backend"] == name and dec["objective"] == "throughput"


def test_bench_json_lists_measured_candidates(model: Path, tmp_path: Path) -> None:
    r = cli("bench", str(model), "--json", "--backends", "onnxruntime", "--budget", "5", cache=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    measured = [row for row in out["rows"] if row["median_ms"] is not None]
    assert measured and all(row["median_ms"] > 0 for row in measured)
    assert out["winner"].startswith("onnxruntime:")


def test_a_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    r = cli("select", str(missing), cache=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == f"autoinfer: error: {missing}: no such file"


def test_a_file_that_is_not_onnx_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model\n")
    r = cli("select", str(bad), cache=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith(f"autoinfer: error: {bad}: not a readable ONNX model"), r.stderr
    assert "Traceback" not in r.stderr
    assert bad.read_text() == "not a model\n"  # the user's file is untouched


def test_a_bad_objective_lists_the_objectives(model: Path, tmp_path: Path) -> None:
    r = cli("select", str(model), "--objective", "fastest", cache=tmp_path)
    assert r.returncode == 2
    assert "invalid choice: 'fastest'" in r.stderr
    assert all(repr(o) in r.stderr for o in OBJECTIVES), r.stderr


def test_the_objective_choices_are_the_library_objectives() -> None:
    from autoinfer.cli import build_parser

    parser = build_parser()
    for cmd in ("select", "bench", "run"):
        args = parser.parse_args([cmd, "m.onnx"])
        assert args.objective == OBJECTIVES[0]
        for objective in OBJECTIVES:
            assert parser.parse_args([cmd, "m.onnx", "--objective", objective]).objective == objective


def test_an_unknown_backend_names_the_known_ones(model: Path, tmp_path: Path) -> None:
    r = cli("select", str(model), "--backends", "nope", cache=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "autoinfer: error: unknown backend 'nope'. Expected one of: " + ", ".join(backends.names())
    )


def test_a_malformed_input_shape_is_a_clear_error(model: Path, tmp_path: Path) -> None:
    r = cli("select", str(model), "--input-shape", "x", cache=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "autoinfer: error: --input-shape: expected NAME=D1,D2,..., received 'x'"


def test_no_command_prints_usage(tmp_path: Path) -> None:
    r = cli(cache=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("usage: autoinfer")
    assert "doctor" in r.stderr and "select" in r.stderr


def test_cache_path_and_clear(model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert cli("cache", "path", cache=cache).stdout.strip() == str(cache)
    assert cli("select", str(model), "--no-benchmark", cache=cache).returncode == 0
    cleared = cli("cache", "clear", cache=cache)
    assert cleared.returncode == 0 and cleared.stdout.startswith(f"cleared {cache}")
    assert "0 decision(s)" in cli("cache", "list", cache=cache).stdout
