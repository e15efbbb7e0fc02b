"""Conformance: the onnx wheel's backend test models through every usable backend.

Every case of ``onnx/backend/test/data/{simple,pytorch-converted,pytorch-operator}``
(a model and test_data_set_*/input_*.pb, output_*.pb) and every ``light`` model
(the reduced ImageNet networks; onnx's runner feeds them its deterministic
dummy input and compares with the shipped ``light_*_output_0.pb``) runs
through each backend of the registry that is usable here, on each device it
offers an fp32 candidate for, and is compared with the expected outputs at the
case's tolerance (rtol 1e-3, atol 1e-7 unless the case says otherwise, as in
onnx's runner).

Outcomes:
  pass         every output matches (shape, dtype, values).
  unsupported  the backend said so: an :class:`Unsupported` from candidates(),
               or UnsupportedModel from load(). Reported as a skip with the
               backend's reason.
  load_failed  load() raised BackendError or BackendUnavailable: the backend
               meant to run the case and could not. A failure, unless the case
               is in KNOWN_LOAD_FAILURES (a reviewed limit of the runtime, with
               its reason), where it is an expected failure (xfail), as onnx's
               own backend test runner treats known limits.
  fail         anything else: a wrong answer, a run() that raises after a
               successful load, a runtime's own exception escaping. A backend
               that gets a case wrong must refuse it at load, with a reason.

``scripts/conformance_table.py`` runs the same cases and writes docs/conformance.md.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from autoinfer import backends
from autoinfer.backends import LoadContext
from autoinfer.backends._common import usable_cores
from autoinfer.errors import AutoinferError, BackendError, BackendUnavailable, ModelError, UnsupportedModel
from autoinfer.model import load_facts

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
SUITES = ("simple", "pytorch-converted", "pytorch-operator", "light")
DEFAULT_RTOL, DEFAULT_ATOL = 1e-3, 1e-7

# Looser tolerances for a backend, each with its reason. Empty: every backend meets
# the cases' own tolerances.
BACKEND_TOLERANCE: dict[str, tuple[float, float, str]] = {}


# Load failures that are known limits of a runtime, not autoinfer bugs:
# (backend, regex matched against the case id with re.fullmatch) -> reason.
# Reviewed by hand; each entry says what the runtime cannot do. Anything not listed
# here that fails to load is a test failure.
_PNNX_TRACES = (
    "pnnx converts by running the model through its bundled ONNX Runtime and segfaults when that run fails"
)
KNOWN_LOAD_FAILURES: dict[tuple[str, str], str] = {
    (
        "ncnn",
        r"pytorch-converted/test_(AvgPool[123]d.*|BatchNorm[123]d(_3d_input)?"
        r"(_momentum)?_eval|GLU(_dim)?|Linear|PReLU_[123]d(_multiparam)?"
        r"|PoissonNLLLLoss_no_reduce|Softsign)"
        r"|pytorch-operator/test_operator_(addmm|basic|mm|params|pow)",
    ): f"{_PNNX_TRACES}: ONNX Runtime has no kernel for these opset-1/6 operators "
    "(onnxruntime refuses the same cases)",
    (
        "ncnn",
        r"simple/test_expand_shape_model[1-4]|pytorch-converted/test_Embedding(_sparse)?",
    ): f"{_PNNX_TRACES}: it makes up the values of a shape or index input (Expand's shape, "
    "Gather's indices), and the model rejects them",
    ("ncnn", r"simple/test_sequence_model1"): f"{_PNNX_TRACES}: it cannot trace sequence-typed values",
}


def known_load_failure(backend_name: str, case_id: str) -> str | None:
    """The reason ``case_id`` is a known load failure of ``backend_name``, or None."""
    for (name, pattern), reason in KNOWN_LOAD_FAILURES.items():
        if name == backend_name and re.fullmatch(pattern, case_id):
            return reason
    return None


@dataclass(frozen=True)
class Case:
    suite: str
    name: str
    model: Path
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    expected: Path | None = None  # light models: the one expected output

    @property
    def id(self) -> str:
        return f"{self.suite}/{self.name}"


@dataclass(frozen=True)
class Outcome:
    status: str  # "pass" | "unsupported" | "load_failed" | "fail"
    detail: str = ""
    seconds: float = 0.0


def discover(data: Path = DATA) -> list[Case]:
    """Every case of SUITES shipped with the installed onnx, sorted."""
    cases: list[Case] = []
    for suite in SUITES[:-1]:
        for d in sorted((data / suite).glob("*/model.onnx")):
            rtol, atol = DEFAULT_RTOL, DEFAULT_ATOL
            meta = d.parent / "data.json"
            if meta.is_file():
                j = json.loads(meta.read_text())
                rtol, atol = j.get("rtol", rtol), j.get("atol", atol)
            cases.append(Case(suite, d.parent.name, d, rtol, atol))
    # The light models' tolerances live in the "real" suite's data.json files.
    tolerances = {}
    for meta in sorted((data / "real").glob("*/data.json")):
        j = json.loads(meta.read_text())
        tolerances[j.get("model_name")] = (j.get("rtol", DEFAULT_RTOL), j.get("atol", DEFAULT_ATOL))
    for model in sorted((data / "light").glob("light_*.onnx")):
        expected = model.with_name(model.stem + "_output_0.pb")
        if not expected.is_file():
            continue
        arch = model.stem.removeprefix("light_")
        rtol, atol = tolerances.get(arch, (DEFAULT_RTOL, DEFAULT_ATOL))
        cases.append(Case("light", model.stem, model, rtol, atol, expected))
    return cases


def _read_tensor(path: Path) -> np.ndarray:
    t = onnx.TensorProto()
    t.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(t)


def datasets(case: Case, input_names: list[str]) -> list[tuple[dict[str, np.ndarray], list[np.ndarray]]]:
    """(feeds, expected outputs) of each data set of ``case``."""
    if case.expected is not None:
        from onnx.backend.test.runner import Runner

        model = onnx.load(str(case.model), load_external_data=False)
        inits = {t.name for t in model.graph.initializer}
        feeds = {
            x.name: Runner.generate_dummy_data(x, seed=0, name=case.name, random=False)
            for x in model.graph.input
            if x.name not in inits
        }
        return [(feeds, [_read_tensor(case.expected)])]
    out = []
    for ds in sorted(case.model.parent.glob("test_data_set_*")):
        n_in = len(list(ds.glob("input_*.pb")))
        n_out = len(list(ds.glob("output_*.pb")))
        feeds = {}
        for i in range(n_in):
            t = onnx.TensorProto()
            t.ParseFromString((ds / f"input_{i}.pb").read_bytes())
            # The data sets name their tensors; onnx's runner matches them by position.
            name = t.name if t.name in input_names else input_names[i]
            feeds[name] = numpy_helper.to_array(t)
        out.append((feeds, [_read_tensor(ds / f"output_{i}.pb") for i in range(n_out)]))
    return out


def compare(expected: list[np.ndarray], got: list[np.ndarray], rtol: float, atol: float) -> str | None:
    """Why ``got`` does not match ``expected``, or None.

    onnx's own runner's judgement (``np.testing.assert_allclose``: ``|got - expected| <= atol
    + rtol * |expected|``, strings compared as strings), not ``autoinfer.measure.compare``:
    that one scales atol with the reference's largest magnitude, the selection's policy for
    comparing two runtimes, and would let an output of magnitude 1000 drift 1000 times the
    case's atol. The case's tolerances mean what onnx's runner means by them."""
    if len(got) != len(expected):
        return f"{len(got)} outputs, expected {len(expected)}"
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        g = np.asarray(g)
        if g.shape != e.shape:
            return f"output {i}: shape {g.shape}, expected {e.shape}"
        if e.dtype.kind in "OUS":
            if g.dtype.kind not in "OUS" or not np.array_equal(g.astype(str), e.astype(str)):
                return f"output {i}: strings {g.ravel()[:5]!r}, expected {e.ravel()[:5]!r}"
            continue
        if g.dtype != e.dtype:
            return f"output {i}: dtype {g.dtype}, expected {e.dtype}"
        if e.dtype.kind in "biu":
            if not np.array_equal(g, e):
                bad = int(np.sum(g != e))
                return f"output {i}: {bad} of {e.size} values differ"
            continue
        ok = np.isclose(g.astype(np.float64), e.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True)
        if not ok.all():
            diff = np.abs(g.astype(np.float64) - e.astype(np.float64))
            j = int(np.nanargmax(np.where(ok, 0, diff)))
            return (
                f"output {i}: {int((~ok).sum())} of {e.size} values differ beyond rtol={rtol} "
                f"atol={atol}; worst at flat index {j}: got {g.ravel()[j]!r}, expected "
                f"{e.ravel()[j]!r}"
            )
    return None


def run_case(backend_name: str, case: Case, hw: Any) -> Outcome:
    """Run ``case`` through ``backend_name``; never raises."""
    start = time.perf_counter()

    def done(status: str, detail: str = "") -> Outcome:
        return Outcome(status, detail, time.perf_counter() - start)

    try:
        facts = load_facts(case.model)
    except ModelError as exc:
        return done("unsupported", f"autoinfer does not run this model: {exc}")
    from conftest import fp32_candidates

    backend = backends.get(backend_name)
    cands, reasons = fp32_candidates(backend, facts, hw)
    if not cands:
        return done("unsupported", "; ".join(reasons) or "no fp32 candidate")
    rtol, atol = case.rtol, case.atol
    if backend_name in BACKEND_TOLERANCE:
        b_rtol, b_atol, _ = BACKEND_TOLERANCE[backend_name]
        rtol, atol = max(rtol, b_rtol), max(atol, b_atol)
    data = datasets(case, [s.name for s in facts.inputs])
    for cand in cands:
        with tempfile.TemporaryDirectory(prefix="autoinfer-conformance-") as tmp:
            shapes = {k: tuple(v.shape) for k, v in data[0][0].items()} if data else None
            ctx = LoadContext(
                Path(tmp),
                threads=usable_cores(hw),
                input_shapes=shapes,
                objective="latency",
                timeout_s=120.0,
                hardware=hw,
            )
            try:
                runner = backend.load(cand, facts, ctx)
            except UnsupportedModel as exc:
                return done("unsupported", exc.reason)
            except (BackendError, BackendUnavailable) as exc:
                return done("load_failed", f"{cand}: load() failed: {exc}")
            except Exception as exc:
                return done(
                    "fail", f"{cand}: load() raised {type(exc).__name__}, not an autoinfer error: {exc}"
                )
            try:
                for i, (feeds, expected) in enumerate(data):
                    try:
                        got = runner.run(feeds)
                    except AutoinferError as exc:
                        return done("fail", f"{cand}: run() raised after a successful load: {exc}")
                    except Exception as exc:
                        return done(
                            "fail",
                            f"{cand}: run() raised {type(exc).__name__}, not an autoinfer error: {exc}",
                        )
                    why = compare(expected, got, rtol, atol)
                    if why and case.suite == "light":
                        note = ill_conditioned_softmax(backend, cand, case, feeds, ctx, rtol)
                        if note:
                            return done("pass", note)
                    if why:
                        return done("fail", f"{cand}: WRONG ANSWER on data set {i}: {why}")
            finally:
                runner.close()
    return done("pass")


# fp32 rounds to a relative 2**-24; summing in another order moves a value by a few of
# those, a relative ~1e-6 in all, which any two correct fp32 implementations may differ by.
FP32_ORDER_NOISE = 1e-6


def ill_conditioned_softmax(
    backend: Any, cand: Any, case: Case, feeds: dict[str, np.ndarray], ctx: LoadContext, rtol: float
) -> str | None:
    """The ``light`` models carry constant weights instead of trained ones, so their logits
    grow to ~1e10 and every class ties: the final Softmax then turns fp32's summation-order
    noise (a relative 1e-6, i.e. ~1e4 at that size) into a different distribution, and the
    shipped expected output holds only for an implementation that sums in the reference's
    order. For such a case, compare where the comparison means something: the Softmax
    input, against ONNX Runtime's (which reproduces the expected output exactly), at the
    case's rtol. A note when the logits match and the Softmax is provably ill-conditioned;
    None otherwise (the case then fails as it stands)."""
    if backend.capabilities.reference:
        return None  # its logits would be compared with its own
    import onnxruntime as ort

    model = onnx.load(str(case.model))
    last = model.graph.node[-1]
    if last.op_type != "Softmax" or len(model.graph.output) != 1:
        return None
    logits_name = last.input[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(logits_name, onnx.TensorProto.FLOAT, None))
    with tempfile.TemporaryDirectory(prefix="autoinfer-logits-") as tmp:
        path = Path(tmp) / f"{case.name}_logits.onnx"
        onnx.save(model, str(path))
        ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[1]
        scale = float(np.max(np.abs(ref)))
        if scale * FP32_ORDER_NOISE <= 1e-3:  # the Softmax is well-conditioned here
            return None
        runner = backend.load(
            cand,
            load_facts(path),
            LoadContext(
                Path(tmp) / "art",
                threads=ctx.threads,
                input_shapes=ctx.input_shapes,
                objective="latency",
                timeout_s=120.0,
                hardware=ctx.hardware,
            ),
        )
        try:
            got = np.asarray(runner.run(feeds)[1], np.float64)
        finally:
            runner.close()
    err = float(np.max(np.abs(got - ref)))
    if err > rtol * scale:
        return None
    return (
        f"compared at the Softmax input: the constant weights drive the logits to "
        f"{scale:.2g}, where fp32 summation order alone (~{FP32_ORDER_NOISE:g} relative) "
        f"moves the Softmax beyond the tolerance; logits max error {err:.3g} "
        f"({err / scale:.1e} relative, rtol {rtol:g})"
    )


CASES = discover()


def _params() -> list[Any]:
    from conftest import usable_backends

    return [pytest.param(b, c, id=f"{b}-{c.id}") for b in usable_backends() for c in CASES]


def test_cases_are_found() -> None:
    suites = {c.suite for c in CASES}
    assert suites == set(SUITES), f"missing suites: {set(SUITES) - suites}"
    assert len(CASES) > 100


@pytest.mark.parametrize("backend_name,case", _params())
def test_conformance(backend_name: str, case: Case, hw: Any) -> None:
    outcome = run_case(backend_name, case, hw)
    if outcome.status == "unsupported":
        pytest.skip(f"{backend_name} unsupported, because {outcome.detail}")
    if outcome.status == "load_failed":
        known = known_load_failure(backend_name, case.id)
        if known:
            pytest.xfail(f"known {backend_name} limit: {known} ({outcome.detail})")
    assert outcome.status == "pass", outcome.detail
