"""The session starts at once on the safe choice and selects in the background: swaps
between calls, wait_for_choice/on_choice, the selection modes, close/exit/fork during a
selection, real inputs, and the race's statistic. Real runtimes underneath; the
"slow_reference" backend is ONNX Runtime with a delay, so that a switch is certain."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import psutil
import pytest
import slow_reference
import zoo
from onnx import TensorProto, helper

import autoinfer
from autoinfer import backends as registry
from autoinfer.errors import ConfigError, NoCandidateError
from autoinfer.measure import feed_hints, median_interval, race_order, sample_feeds, verdict
from autoinfer.model import load_facts

HERE = Path(__file__).resolve().parent


@pytest.fixture()
def slow_ref():
    registry.register("slow_reference", "slow_reference:SlowReference")
    yield
    registry.unregister("slow_reference")


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    return zoo.save("tiny", tmp_path / "tiny.onnx")


def _x(seed: int = 0) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(seed).random((1, 16), dtype=np.float32)}


def _children() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)


def _wait_for_worker(timeout: float = 60.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = [c for c in _children() if "autoinfer._worker" in " ".join(c.cmdline())]
        if kids:
            return kids
        time.sleep(0.02)
    raise AssertionError("no measuring process started")


# -- the swap under load ---------------------------------------------------------------
def test_nonstop_calls_during_the_background_selection_see_exactly_one_switch(
    tiny, tmp_path, slow_ref, caplog
):
    ref = ort.InferenceSession(str(tiny), providers=["CPUExecutionProvider"])
    feeds = [_x(i) for i in range(4)]
    want = [ref.run(None, f)[0] for f in feeds]
    told: list[tuple[str, str]] = []
    s = autoinfer.Session(
        tiny,
        cache_dir=tmp_path / "c",
        budget_s=3,
        backends=["slow_reference", "onnxruntime"],
        on_choice=lambda c: told.append((c.backend, threading.current_thread().name)),
    )
    assert s.choice.backend == "slow_reference" and s.choice.provisional
    assert s.selecting and s.wait_for_choice(timeout=0) is None  # waits for the first run()
    errors: list[BaseException] = []
    done = [0]
    stop = threading.Event()

    def app() -> None:
        i = 0
        while not stop.is_set():
            try:
                got = s.run(None, feeds[i % 4])[0]
                np.testing.assert_allclose(got, want[i % 4], rtol=1e-5, atol=1e-6)
                done[0] += 1
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return
            i += 1

    with caplog.at_level(logging.INFO, logger="autoinfer"):
        t = threading.Thread(target=app)
        t.start()
        choice = s.wait_for_choice(timeout=180)
        before = done[0]
        time.sleep(0.3)
        stop.set()
        t.join(timeout=30)
    assert not t.is_alive(), "the application thread is stuck"
    assert not errors, errors
    assert choice is not None and choice.backend == "onnxruntime" and choice.measured
    assert choice.ratio is not None and choice.interval[1] < 0.97, s.explain()
    assert s.choice == choice and done[0] > before  # and it runs on after the switch
    # what raced is exactly what runs: the same candidate, settings included
    assert s.choice.candidate == s.decision.winner
    assert s.choice.settings == dict(s.decision.winner.settings)
    switches = [r for r in caplog.records if "now runs on" in r.getMessage()]
    assert len(switches) == 1, [r.getMessage() for r in switches]
    assert told == [("onnxruntime", "autoinfer-selection")]
    assert s.decision.inputs == "run" and "feeds of the first run()" in s.explain()
    assert "race (per-round time / the reference's" in s.explain()
    assert f"{choice.ratio:.3f} [{choice.interval[0]:.3f}, {choice.interval[1]:.3f}]" in s.explain()
    # the replaced runner was closed once idle, and nothing ran on it after
    assert any(r.closed for r in slow_reference.SlowReference.runners)
    s.close()
    warm = autoinfer.Session(
        tiny, cache_dir=tmp_path / "c", budget_s=3, backends=["slow_reference", "onnxruntime"]
    )
    assert warm.choice.from_cache and warm.choice.backend == "onnxruntime" and not warm.selecting


# -- modes -------------------------------------------------------------------------------
def test_selection_modes(tiny, tmp_path):
    with pytest.raises(ConfigError, match="selection"):
        autoinfer.Session(tiny, cache_dir=tmp_path / "c", selection="later")
    with pytest.raises(ConfigError, match="threads"):
        autoinfer.Session(tiny, cache_dir=tmp_path / "c", threads=0)
    off = autoinfer.Session(tiny, cache_dir=tmp_path / "off", selection="off")
    assert not off.choice.measured and not off.choice.provisional and not off.selecting
    assert off._thread is None and off.wait_for_choice(timeout=0) == off.choice
    told = []
    blocking = autoinfer.Session(
        tiny, cache_dir=tmp_path / "b", budget_s=2, selection="blocking", on_choice=told.append
    )
    assert blocking.choice.measured and blocking.decision.inputs == "synthetic"
    assert told == [blocking.choice]  # no selection left: told at once
    bg = autoinfer.Session(tiny, cache_dir=tmp_path / "bg", budget_s=2, sample_inputs=_x(3), threads=1)
    assert bg.choice.provisional  # selecting at once, on the sample inputs given
    c = bg.wait_for_choice(timeout=120)
    assert c is not None and c.measured and bg.decision.inputs == "sample_inputs"
    assert bg._loader.threads == 1
    assert bg.decision.key != blocking.decision.key  # threads is part of the key
    for s in (off, blocking, bg):
        s.close()


# -- close and exit during a selection -----------------------------------------------------
def test_close_during_selection_leaves_no_process_and_no_partial_file(tiny, tmp_path):
    cache = tmp_path / "c"
    s = autoinfer.Session(tiny, cache_dir=cache, budget_s=60, sample_inputs=_x())
    kids = _wait_for_worker()
    t0 = time.monotonic()
    s.close()
    assert time.monotonic() - t0 < 10
    psutil.wait_procs(kids, timeout=5)
    assert not [k for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]
    assert not [c for c in _children() if "autoinfer._worker" in " ".join(c.cmdline())]
    assert not list((cache / "decisions").glob("*")), "a cancelled selection wrote a decision"
    assert not list(cache.rglob(".tmp-*"))


_EXITER = textwrap.dedent("""
    import sys, time, numpy as np, psutil, autoinfer
    s = autoinfer.Session(sys.argv[1], cache_dir=sys.argv[2], budget_s=60,
                          sample_inputs={"input": np.ones((1, 16), np.float32)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kids = [c for c in psutil.Process().children(recursive=True)
                if "autoinfer._worker" in " ".join(c.cmdline())]
        if kids:
            break
        time.sleep(0.02)
    print(" ".join(str(k.pid) for k in kids), flush=True)
    sys.exit(0)   # with the selection under way
""")


def test_exit_during_selection_leaves_no_process_and_no_partial_file(tiny, tmp_path):
    cache = tmp_path / "c"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", _EXITER, str(tiny), str(cache)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert time.monotonic() - t0 < 90
    pids = [int(p) for p in out.stdout.split()]
    assert pids, "the selection had not started a measuring process"
    time.sleep(0.5)
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"measuring processes outlived the interpreter: {alive}"
    assert not list((cache / "decisions").glob("*"))
    assert not list(cache.rglob(".tmp-*"))


# -- fork --------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_forked_child_does_not_inherit_the_selection(tiny, tmp_path):
    s = autoinfer.Session(tiny, cache_dir=tmp_path / "c", budget_s=3, threads=1, sample_inputs=_x())
    _wait_for_worker()
    assert s._thread is not None
    want = ort.InferenceSession(str(tiny), providers=["CPUExecutionProvider"]).run(None, _x(1))[0]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: runs on what it has, selects nothing
        code = 1
        try:
            got = s.run(None, _x(1))[0]
            ok = (
                np.allclose(got, want, rtol=1e-5, atol=1e-6)
                and s._thread is None
                and not s.selecting
                and s.wait_for_choice(timeout=1) is not None
                and not psutil.Process().children()
            )
            code = 0 if ok else 3
        finally:
            os.write(w, b"%d" % code)
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    answer = os.read(r, 16)
    os.close(r)
    assert os.WEXITSTATUS(status) == 0 and answer == b"0", answer
    # the parent's selection went on
    assert s.wait_for_choice(timeout=120) is not None and s.choice.measured
    s.close()


# -- real inputs and control flow ------------------------------------------------------------
def _if_model(path: Path, hinted: bool) -> Path:
    """y = 2x when sr == 8000, 3x when sr == 16000; any other sr fails (bad Reshape)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    sr = helper.make_tensor_value_info("sr", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])

    def branch(name: str, nodes: list, out: str) -> onnx.GraphProto:
        return helper.make_graph(
            nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)]
        )

    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    three = helper.make_tensor("three", TensorProto.FLOAT, [], [3.0])
    bad = helper.make_tensor("bad", TensorProto.INT64, [1], [7])
    c16 = helper.make_tensor("c16", TensorProto.INT64, [], [16000])
    then8 = branch("then8", [helper.make_node("Mul", ["x", "two"], ["y8"])], "y8")
    then16 = branch("then16", [helper.make_node("Mul", ["x", "three"], ["y16"])], "y16")
    fail = branch("fail", [helper.make_node("Reshape", ["x", "bad"], ["yf"])], "yf")
    inner = branch(
        "else8",
        [
            helper.make_node("Equal", ["sr", "c16"], ["is16"]),
            helper.make_node("If", ["is16"], ["yi"], then_branch=then16, else_branch=fail),
        ],
        "yi",
    )
    if hinted:
        c8 = [
            helper.make_node(
                "Constant", [], ["c8"], value=helper.make_tensor("v8", TensorProto.INT64, [], [8000])
            )
        ]
    else:  # 8000 and 16000 computed: nothing for the graph reader to see
        c8 = [
            helper.make_node(
                "Constant", [], ["half"], value=helper.make_tensor("v4", TensorProto.INT64, [], [4000])
            ),
            helper.make_node("Add", ["half", "half"], ["c8"]),
            helper.make_node("Add", ["c8", "c8"], ["c16"]),
        ]
    g = helper.make_graph(
        c8
        + [
            helper.make_node("Equal", ["sr", "c8"], ["is8"]),
            helper.make_node("If", ["is8"], ["y"], then_branch=then8, else_branch=inner),
        ],
        "vad_like",
        [x, sr],
        [y],
        [two, three, bad] + ([c16] if hinted else []),
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path


def _if_feed(sr: int) -> dict[str, np.ndarray]:
    return {"x": np.arange(4, dtype=np.float32).reshape(1, 4), "sr": np.array(sr, np.int64)}


def test_synthetic_inputs_take_a_value_the_if_accepts(tmp_path):
    p = _if_model(tmp_path / "if.onnx", hinted=True)
    assert feed_hints(p)["sr"] == ("value", 8000)
    feeds = sample_feeds(load_facts(p), {"x": (1, 4), "sr": ()})
    assert int(feeds["sr"]) == 8000
    s = autoinfer.Session(p, cache_dir=tmp_path / "c", budget_s=2, selection="blocking")
    assert s.choice.measured and s.decision.inputs == "synthetic"
    np.testing.assert_allclose(s.run(None, _if_feed(16000))[0], 3 * _if_feed(0)["x"])


def test_model_valid_only_at_a_few_values_opens_runs_and_selects_on_the_users_feeds(tmp_path):
    p = _if_model(tmp_path / "if.onnx", hinted=False)
    assert "sr" not in feed_hints(p)
    with pytest.raises(NoCandidateError, match="sample_inputs"):
        autoinfer.select(p, cache_dir=tmp_path / "sel", budget_s=2)
    dec = autoinfer.select(
        p, cache_dir=tmp_path / "sel", budget_s=2, sample_inputs=[_if_feed(16000), _if_feed(8000)]
    )
    assert dec.measured and dec.inputs == "sample_inputs"
    # blocking: the reference fails on synthetic inputs; the session still opens on it
    s = autoinfer.Session(p, cache_dir=tmp_path / "c", budget_s=2, selection="blocking")
    assert s.choice.provisional and s.choice.backend == "onnxruntime"
    np.testing.assert_allclose(s.run(None, _if_feed(16000))[0], 3 * _if_feed(0)["x"])
    c = s.wait_for_choice(timeout=120)
    assert c is not None and c.measured and s.decision.inputs == "run"
    np.testing.assert_allclose(s.run(None, _if_feed(8000))[0], 2 * _if_feed(0)["x"])
    s.close()


def test_gather_indices_stay_within_the_table(tmp_path):
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4])
    table = helper.make_tensor("table", TensorProto.FLOAT, [50, 4], np.arange(200, dtype=np.float32).tolist())
    g = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"])], "emb", [ids], [y], [table])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, tmp_path / "emb.onnx")
    assert feed_hints(tmp_path / "emb.onnx") == {"ids": ("range", 50)}
    f = sample_feeds(load_facts(tmp_path / "emb.onnx"), {"ids": (1, 8)})
    assert f["ids"].min() >= 0 and f["ids"].max() < 50 and len(np.unique(f["ids"])) > 2


# -- the race's statistic ------------------------------------------------------------------
def test_race_verdict_clear_win_clear_loss_and_tie():
    rng = np.random.default_rng(0)
    win = list(0.80 + 0.02 * rng.standard_normal(20))
    loss = list(1.30 + 0.02 * rng.standard_normal(20))
    tie = list(1.00 + 0.03 * rng.standard_normal(40))
    assert verdict(win).verdict == "faster" and verdict(win).high < 0.97
    assert verdict(loss).verdict == "not faster"
    assert verdict(tie).verdict != "faster"  # the reference stays
    near = list(0.975 + 0.03 * rng.standard_normal(40))  # close to the threshold
    assert verdict(near).verdict != "faster"
    assert verdict(win[:5]).verdict == "undecided"  # too few rounds for an interval
    med, lo, hi = median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert (med, lo, hi) == (3.5, 1.0, 6.0)
    assert median_interval([1.0, 2.0])[1] == -np.inf
    assert sorted(race_order(3, 0)) == [0, 1, 2]
    assert [race_order(3, r)[0] for r in range(3)] != [0, 0, 0]  # the lead rotates


def test_a_decision_of_the_older_format_is_selected_again(tiny, tmp_path):
    from autoinfer.cache import Cache
    from autoinfer.decision import DECISION_FORMAT

    c = tmp_path / "c"
    first = autoinfer.select(tiny, cache_dir=c, budget_s=2, backends=["onnxruntime"])
    f = next((c / "decisions").glob("*.json"))
    cache = Cache(c)
    rec = cache.read_json(f)
    rec["decision"]["format"] = DECISION_FORMAT - 1
    for r in rec["decision"]["ranking"]:
        r.pop("race", None)
    assert cache.write_json(f, {k: v for k, v in rec.items() if k not in ("sha256", "schema")})
    s = autoinfer.Session(tiny, cache_dir=c, budget_s=2, backends=["onnxruntime"])
    assert s.choice.provisional  # not trusted: selecting again, and running meanwhile
    s.run(None, _x())
    assert s.wait_for_choice(timeout=120) is not None and s.choice.measured
    s.close()
    again = autoinfer.select(tiny, cache_dir=c, budget_s=2, backends=["onnxruntime"])
    assert again.from_cache and again.key == first.key
    assert cache.read_json(f)["decision"]["format"] == DECISION_FORMAT


def _leave_undecided(cache_dir: Path, ref_t: float, ratios: list[float]) -> None:
    """Rewrite the one cached decision as an earlier start would have left an undecided
    race: the reference won, and onnxruntime's per-round ``ratios`` did not prove it faster."""
    from autoinfer.cache import Cache

    assert verdict(ratios).verdict == "undecided", ratios
    cache = Cache(cache_dir)
    (f,) = (cache_dir / "decisions").glob("*.json")
    rec = cache.read_json(f)
    dec = rec["decision"]
    for r in dec["ranking"]:
        backend = r["candidate"]["backend"]
        if backend == "slow_reference":
            dec["winner"] = r["candidate"]
            r["race"] = {
                "ratio": 1.0,
                "low": 1.0,
                "high": 1.0,
                "rounds": len(ratios),
                "verdict": "reference",
                "times": [ref_t] * len(ratios),
            }
        elif r["race"] is not None:  # onnxruntime's default, and any variant raced
            med, lo, hi = median_interval(ratios)
            r["race"] = {
                "ratio": med,
                "low": lo,
                "high": hi,
                "rounds": len(ratios),
                "verdict": verdict(ratios).verdict,
                "times": [x * ref_t for x in ratios],
            }
    assert cache.write_json(f, {k: v for k, v in rec.items() if k not in ("sha256", "schema")})


def test_an_undecided_race_goes_on_at_the_next_start_and_proves_the_winner(tiny, tmp_path, slow_ref):
    """A race the budget left undecided (a challenger that looks faster, not proven) goes on
    at the next start, from the rounds already run, and switches once it is proven; a
    decided race does not run again."""
    from autoinfer.verdicts import RESUME_MAX_ROUNDS, resumable

    c, names = tmp_path / "c", ["slow_reference", "onnxruntime"]
    first = autoinfer.Session(tiny, cache_dir=c, budget_s=3, backends=names)
    first.run(None, _x())
    assert first.wait_for_choice(timeout=120).backend == "onnxruntime"
    first.close()
    ratios = [0.5, 1.2, 0.6, 1.1, 0.7, 0.9]  # median 0.8, interval [0.5, 1.2]: undecided
    _leave_undecided(c, slow_reference.DELAY_S, ratios)

    s = autoinfer.Session(tiny, cache_dir=c, budget_s=3, backends=names)
    assert s.choice.from_cache and s.choice.backend == "slow_reference"  # at once, as decided
    assert resumable(s.decision) and s.selecting and "race" in s.explain()
    want = ort.InferenceSession(str(tiny)).run(None, _x(1))[0]
    np.testing.assert_allclose(s.run(None, _x(1))[0], want, rtol=1e-5, atol=1e-6)
    choice = s.wait_for_choice(timeout=120)
    assert choice is not None and choice.backend == "onnxruntime", s.explain()
    dec = s.decision
    ort_entry = dec.winner_entry
    assert ort_entry.race.verdict == "faster" and ort_entry.race.rounds > len(ratios)
    # it went on from the rounds already run: they come first, as they were
    np.testing.assert_allclose(
        ort_entry.race.times[: len(ratios)], [x * slow_reference.DELAY_S for x in ratios]
    )
    assert "the race resumed on a later start: 6 rounds" in s.explain()
    assert not resumable(dec)
    s.close()

    again = autoinfer.Session(tiny, cache_dir=c, budget_s=3, backends=names)
    assert again.choice.from_cache and again.choice.backend == "onnxruntime" and not again.selecting
    again.close()

    # a near-tie is not worth more rounds, nor a race that has run its rounds
    _leave_undecided(c, slow_reference.DELAY_S, [0.9, 1.1, 0.95, 1.05, 1.0, 1.02])
    tie = autoinfer.Session(tiny, cache_dir=c, budget_s=3, backends=names)
    assert tie.choice.backend == "slow_reference" and not tie.selecting and not resumable(tie.decision)
    tie.close()
    _leave_undecided(c, slow_reference.DELAY_S, [0.5, 1.2] * (RESUME_MAX_ROUNDS // 2))
    spent = autoinfer.Session(tiny, cache_dir=c, budget_s=3, backends=names)
    assert spent.choice.backend == "slow_reference" and not spent.selecting
    spent.close()


def test_sample_inputs_must_be_feeds(tiny, tmp_path):
    with pytest.raises(ConfigError, match="sample_inputs"):
        autoinfer.Session(tiny, cache_dir=tmp_path / "c", sample_inputs=[np.ones(3)])


def test_the_worker_loads_with_the_sessions_context(tiny, tmp_path):
    """One LoadContext construction: what the measuring worker rebuilds from its job is
    what the session uses, hardware facts and threads included."""
    import probes
    from autoinfer.backends.base import Candidate
    from autoinfer.cache import Cache
    from autoinfer.loader import Loader, context_from_job, context_to_job

    hw = probes.detect()
    loader = Loader(load_facts(tiny), hw, Cache(tmp_path / "c"), objective="latency", threads=1)
    ctx = loader.context(Candidate.make("onnxruntime"), {"input": (1, 16)})
    back = context_from_job(context_to_job(ctx))
    assert back.hardware is not None and back.hardware.fingerprint == hw.fingerprint
    assert (back.artifact_dir, back.threads, back.input_shapes, back.objective) == (
        ctx.artifact_dir,
        1,
        {"input": (1, 16)},
        "latency",
    )
    # ONNX Runtime on the CPU keeps no files: a private directory, and no wait for the hash
    assert ctx.artifact_dir.is_dir() and not str(ctx.artifact_dir).startswith(str(tmp_path / "c"))
    keeps = loader.context(Candidate.make("openvino"), {"input": (1, 16)})
    assert keeps.artifact_dir.is_dir() and str(keeps.artifact_dir).startswith(str(tmp_path / "c"))
    assert loader.model.hashed


def test_dynamic_model_with_input_shapes_runs_other_shapes_and_selects_them(tmp_path):
    p = zoo.save("dynamic_batch", tmp_path / "d.onnx")
    ref = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    s = autoinfer.Session(p, cache_dir=tmp_path / "c", budget_s=2, input_shapes={"input": [2, 3, 32, 32]})
    assert s.choice.provisional
    rng = np.random.default_rng(4)
    for b in (2, 5):
        x = {"input": rng.random((b, 3, 32, 32), dtype=np.float32)}
        np.testing.assert_allclose(s.run(None, x)[0], ref.run(None, x)[0], rtol=1e-3, atol=1e-4)
    assert s.wait_for_choice(timeout=180) is not None
    assert {"input=2x3x32x32", "input=8x3x32x32"} <= set(s._by_bucket)
    x = {"input": rng.random((5, 3, 32, 32), dtype=np.float32)}
    np.testing.assert_allclose(s.run(None, x)[0], ref.run(None, x)[0], rtol=1e-3, atol=1e-4)
    assert s.choice.measured and s.decision.bucket == "input=8x3x32x32"
    s.close()


def test_without_the_reference_the_safe_choice_is_one_that_needs_no_conversion(tiny, tmp_path):
    """Where the reference is not among the runtimes, the session starts on a runtime that
    loads the model as it is: a conversion (seconds) would keep the application waiting."""
    hw = __import__("probes").detect()
    usable = [registry.get(n) for n in registry.names() if registry.get(n).availability(hw).usable]
    others = [b for b in usable if not b.capabilities.reference]
    direct = [b.name for b in others if not b.capabilities.needs_conversion]
    converted = [b.name for b in others if b.capabilities.needs_conversion]
    if not direct or not converted:
        print(f"runtimes usable here besides the reference: {[b.name for b in others]}")
        pytest.skip("needs a usable runtime with and one without a conversion, besides the reference")
    with autoinfer.Session(tiny, backends=direct + converted, cache_dir=tmp_path / "c") as s:
        assert s.choice is not None and s.choice.provisional
        assert s.choice.backend in direct, (s.choice, direct, converted)
        np.testing.assert_allclose(s.run(None, _x())[0], s.run(None, _x())[0])
