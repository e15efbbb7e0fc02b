"""The selector: ranking, measured choice with the accuracy check, misbehaving
candidates survived, and the decision cache. Real ONNX Runtime, OpenVINO and
ncnn underneath; the misbehaving backends are ONNX Runtime with one fault each."""

from __future__ import annotations

import json
import time
from pathlib import Path

import misbehaving
import pytest
import zoo

import autoinfer
from autoinfer.cache import Cache
from autoinfer.config import Settings
from autoinfer.errors import ConfigError, NoCandidateError
from autoinfer.measure import PAUSE_S, compare
from autoinfer.model import load_facts
from autoinfer.policy import Decision, Options, decide, shape_bucket


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    return zoo.save("dynamic_batch", tmp_path / "m.onnx")


@pytest.fixture()
def fakes():
    with misbehaving.registered(misbehaving.ALL):
        yield


def _decide(model: Path, cache_dir: Path, **kw) -> Decision:
    settings = Settings.resolve(cache_dir=cache_dir, budget_s=kw.pop("budget_s", 2.0))
    cache = Cache(settings.cache_dir)
    import probes

    facts = load_facts(model)
    kw.setdefault("input_shapes", {"input": [1, 3, 32, 32]} if facts.has_dynamic_inputs else None)
    return decide(facts, probes.detect(), Options(**kw), cache, settings)


def test_measured_choice_has_reference_and_accuracy(model, tmp_path):
    dec = _decide(model, tmp_path / "c")
    assert dec.measured and not dec.from_cache
    measured = [r for r in dec.ranking if r.status == "measured"]
    assert len({r.candidate.backend for r in measured}) >= 2, dec.explain()
    for r in measured:
        assert r.measurement.median_s > 0
        assert r.measurement.max_abs_err is not None and r.measurement.max_abs_err < 1e-3
        # the race waits this long after its runs: measured, and never beyond the cap
        assert 0.0 < r.measurement.quiet_s <= PAUSE_S + 0.05, r.measurement
    win = dec.winner_entry
    assert win.status == "measured"
    # the reference stays unless a challenger raced faster with confidence
    ref = dec.reference_entry()
    assert ref is not None and ref.status == "measured"
    if dec.winner != ref.candidate:
        assert win.race is not None and win.race.verdict == "faster", dec.explain()
        assert win.race.high < 0.97 and win.race.rounds >= 6
    racers = [r for r in dec.ranking if r.race is not None]
    if racers:  # the reference races as the baseline; each ratio sits inside its interval
        assert ref.race is not None and ref.race.verdict == "reference"
        for r in racers:
            assert r.race.low <= r.race.ratio <= r.race.high, r.race
    text = dec.explain()
    assert dec.winner.key in text and "ranking:" in text


def test_a_small_models_decision_tells_its_gain_over_plain_onnxruntime(tmp_path):
    """On a model whose run takes microseconds, the call path is a fifth of the time: the
    race times the reference as the session calls it beside ``InferenceSession.run``."""
    from autoinfer.switching import Choice

    tiny = zoo.save("tiny", tmp_path / "tiny.onnx")
    # the default budget: at 2 s, a busy machine's race estimate can leave no room for a race
    dec = _decide(tiny, tmp_path / "c", backends=["onnxruntime"], budget_s=8.0)
    ref = dec.reference_entry()
    assert ref is not None and ref.race is not None, "no race: " + dec.explain()
    assert len(ref.race.plain) == ref.race.rounds >= 6
    plain = dec.vs_plain()
    # the binding under InferenceSession.run skips the wrapper's per-call checks
    assert plain is not None and plain.high < 1.0, dec.explain()
    assert "its runtime's plain call" in dec.explain()
    choice = Choice.of(dec, dec.winner)
    assert choice.vs_plain == pytest.approx(choice.ratio * plain.ratio)
    # stored and read back with the decision
    again = Decision.from_dict(json.loads(json.dumps(dec.to_dict())))
    assert again.vs_plain() == plain


def test_wrong_outputs_candidate_is_rejected_with_numbers(model, tmp_path, fakes):
    dec = _decide(model, tmp_path / "c", backends=["onnxruntime", "wrong_outputs"])
    bad = next(r for r in dec.ranking if r.candidate.backend == "wrong_outputs")
    assert bad.status == "rejected"
    assert "max abs error" in bad.status_reason and "0.5" in bad.status_reason
    assert dec.winner.backend == "onnxruntime"


@pytest.mark.parametrize(
    "fake, expect", [("crashes", "crashed"), ("hangs", "did not finish"), ("leaks", "MB (killed)")]
)
def test_crashing_hanging_leaking_candidates_are_survived(model, tmp_path, fakes, fake, expect):
    t0 = time.monotonic()
    dec = _decide(
        model, tmp_path / "c", backends=["onnxruntime", fake], candidate_timeout_s=4.0, memory_limit_mb=1500
    )
    bad = next(r for r in dec.ranking if r.candidate.backend == fake)
    assert bad.status == "failed" and expect in bad.status_reason, bad.status_reason
    assert dec.winner.backend == "onnxruntime"
    assert time.monotonic() - t0 < 60


def test_only_bad_candidates_raise_no_candidate(model, tmp_path, fakes):
    with pytest.raises(NoCandidateError) as ei:
        _decide(model, tmp_path / "c", backends=["crashes"], candidate_timeout_s=4.0)
    assert "crashes" in str(ei.value)


def test_decision_cache_hit_and_invalidation(model, tmp_path):
    c = tmp_path / "c"
    first = _decide(model, c, backends=["onnxruntime"])
    second = _decide(model, c, backends=["onnxruntime"])
    assert second.from_cache and second.winner == first.winner and second.key == first.key
    other = _decide(model, c, backends=["onnxruntime"], objective="throughput")
    assert not other.from_cache and other.key != first.key
    # a changed model is another key
    import onnx

    m = onnx.load(model)
    m.doc_string = "changed"
    onnx.save(m, model)
    third = _decide(model, c, backends=["onnxruntime"])
    assert not third.from_cache and third.key != first.key
    # decisions are JSON, never pickle
    for f in (c / "decisions").glob("*.json"):
        rec = json.loads(f.read_text())
        assert rec["decision"]["winner"]["backend"] == "onnxruntime"


def test_rank_only_measures_nothing(model, tmp_path):
    dec = _decide(model, tmp_path / "c", benchmark=False)
    assert not dec.measured
    assert all(r.measurement is None for r in dec.ranking)
    assert dec.ranking[0].candidate == dec.winner
    assert all(r.reasons for r in dec.ranking)


def test_bad_options_are_config_errors(model, tmp_path):
    with pytest.raises(ConfigError, match="objective"):
        _decide(model, tmp_path / "c", objective="fastest")
    with pytest.raises(ConfigError, match="unknown backend 'nope'"):
        _decide(model, tmp_path / "c", backends=["nope"])
    with pytest.raises(ConfigError, match="does not fit"):
        _decide(model, tmp_path / "c", input_shapes={"input": [1, 4, 32, 32]})


def test_compare_judges_shapes_dtypes_nan_and_tolerance():
    import numpy as np

    ref = [np.array([1.0, 2.0, 3.0], dtype=np.float32)]
    assert compare([ref[0] + 1e-6], ref, 1e-3, 1e-4)[0]
    assert not compare([ref[0] + 0.1], ref, 1e-3, 1e-4)[0]
    assert not compare([ref[0].astype(np.float64)], ref, 1e-3, 1e-4)[0]
    assert not compare([ref[0][:2]], ref, 1e-3, 1e-4)[0]
    assert not compare([np.array([1.0, np.nan, 3.0], np.float32)], ref, 1e-3, 1e-4)[0]
    ints = [np.array([1, 2], dtype=np.int64)]
    assert compare(ints, ints, 0, 0)[0] and not compare([ints[0] + 1], ints, 0, 0)[0]


def test_shape_bucket_rounds_dynamic_dims_to_powers_of_two(model):
    facts = load_facts(model)
    assert shape_bucket(facts, {"input": (3, 3, 32, 32)}) == "input=4x3x32x32"
    assert shape_bucket(facts, {"input": (4, 3, 32, 32)}) == "input=4x3x32x32"
    assert shape_bucket(facts, {"input": (5, 3, 32, 32)}) == "input=8x3x32x32"
    assert shape_bucket(facts, {"input": (1, 3, 32, 32)}) == "input=1x3x32x32"


def test_public_select_function(model, tmp_path):
    dec = autoinfer.select(
        model,
        backends=["onnxruntime"],
        cache_dir=tmp_path / "c",
        input_shapes={"input": [2, 3, 32, 32]},
        budget_s=3,
    )
    assert dec.winner.backend == "onnxruntime" and dec.measured


def test_reduced_precision_is_tried_only_when_asked_and_at_its_own_tolerance(model, tmp_path):
    from autoinfer.compare import TOLERANCES

    exact = _decide(model, tmp_path / "c", benchmark=False)
    assert all(r.candidate.precision == "fp32" for r in exact.ranking), exact.explain()
    held_back = {u["key"] for u in exact.unsupported if "precision='auto'" in u.get("fix", "")}
    auto = _decide(model, tmp_path / "c2", precision="auto")
    reduced = {r.candidate.base.key for r in auto.ranking if r.candidate.precision != "fp32"}
    # the same candidates: held back by default, considered with precision="auto" (on a CPU
    # without fp16/bf16 arithmetic there are none)
    assert held_back == reduced, (held_back, reduced)
    for r in auto.ranking:
        if r.status == "measured":
            rtol, atol = TOLERANCES[r.candidate.precision]
            assert r.measurement.max_abs_err <= atol * 10 + rtol * 10, r
    assert exact.key != auto.key
