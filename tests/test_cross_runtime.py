"""The same model gives the same outputs through every usable backend that accepts it.

Models: light ImageNet networks from the onnx wheel with seeded random weights
(their shipped constant weights make outputs nearly independent of the input),
and zoo models. Each backend's fp32 candidate on each device is compared with
the reference backend (the one whose capabilities say ``reference``) on the
same random input. The reference itself is not compared (that would compare it
with itself); its correctness is checked against the onnx data files' expected
outputs in test_conformance.py. A backend that refuses a model (Unsupported, or
UnsupportedModel at load) is skipped with its reason; a load that fails
(BackendError, BackendUnavailable) is a failure, and so is any other difference.

Tolerance: rtol 1e-3 and atol 1e-3 x the largest reference magnitude. fp32
runtimes differ by summation order only (measured: under 5e-5 of the output
scale on ResNet-50); a real error is of the order of the output itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _backends import reference_backend
from conftest import fp32_candidates, usable_backends

from autoinfer import backends
from autoinfer.backends import LoadContext
from autoinfer.backends._common import usable_cores
from autoinfer.errors import BackendError, BackendUnavailable, UnsupportedModel
from autoinfer.model import load_facts

RTOL, SCALED_ATOL = 1e-3, 1e-3

# (zoo name, batch sizes to run; None: the model's own fixed shapes)
MODELS: list[tuple[str, tuple[int, ...] | None]] = [
    ("light_resnet50", None),
    ("light_densenet121", None),
    ("light_squeezenet", None),
    ("light_shufflenet", None),
    ("light_inception_v1", None),
    ("mobilenetv2", None),
    ("transformer_small", None),
    ("dynamic_batch", (1, 4)),
]


def _is_reference(cand: Any) -> bool:
    """The reference candidate: the reference backend's CPU fp32 at its defaults."""
    return (
        backends.get(cand.backend).capabilities.reference
        and cand.device == "cpu"
        and cand.precision == "fp32"
        and not cand.settings
    )


class _Models:
    """Builds each zoo model once, with its feeds and reference outputs."""

    def __init__(self, root: Path, hw: Any) -> None:
        self.root, self.hw = root, hw
        self._built: dict[str, tuple[Path, Any]] = {}
        self._feeds: dict[tuple[str, int | None], dict[str, np.ndarray]] = {}
        self._ref: dict[tuple[str, int | None], list[np.ndarray]] = {}

    def path(self, name: str) -> tuple[Path, Any]:
        if name not in self._built:
            import onnx
            import zoo

            path = zoo.save(name, self.root / f"{name}.onnx", seed=0)
            self._built[name] = (path, onnx.load(str(path)))
        return self._built[name]

    def feeds(self, name: str, batch: int | None) -> dict[str, np.ndarray]:
        key = (name, batch)
        if key not in self._feeds:
            import zoo

            path, proto = self.path(name)
            shapes = None
            if batch is not None:
                facts = load_facts(path)
                shapes = {s.name: (batch, *s.shape[1:]) for s in facts.inputs}
            self._feeds[key] = zoo.sample_inputs(proto, seed=1, shapes=shapes)
        return self._feeds[key]

    def reference(self, name: str, batch: int | None) -> list[np.ndarray]:
        key = (name, batch)
        if key not in self._ref:
            ref = reference_backend()
            outs = _run(ref, name, [batch], self)
            assert not isinstance(outs, str), f"the reference backend {ref} refused {name}: {outs}"
            per_batch = next(p for c, p in outs if _is_reference(c))
            self._ref[key] = per_batch[batch]
        return self._ref[key]


def _run(
    backend_name: str, name: str, batches: list[int | None], models: _Models
) -> list[tuple[Any, dict[int | None, list[np.ndarray]]]] | str:
    """(candidate, outputs per batch) per fp32 candidate, or the backend's reason for
    refusing."""
    backend = backends.get(backend_name)
    path, _ = models.path(name)
    facts = load_facts(path)
    cands, reasons = fp32_candidates(backend, facts, models.hw)
    if not cands:
        return "; ".join(reasons) or "no fp32 candidate"
    # A backend that fixes shapes at load gets one runner per batch size.
    groups = [batches] if backend.capabilities.dynamic_shapes else [[b] for b in batches]
    results = []
    for cand in cands:
        per_batch: dict[int | None, list[np.ndarray]] = {}
        for group in groups:
            feeds = models.feeds(name, group[0])
            ctx = LoadContext(
                models.root / "artifacts" / backend_name / name / str(group[0]),
                threads=usable_cores(models.hw),
                input_shapes={k: tuple(v.shape) for k, v in feeds.items()},
                hardware=models.hw,
            )
            try:
                runner = backend.load(cand, facts, ctx)
            except UnsupportedModel as exc:
                return exc.reason
            except (BackendError, BackendUnavailable) as exc:
                pytest.fail(f"{cand}: load() of {name} failed: {exc}")
            with runner:
                for b in group:
                    per_batch[b] = runner.run(models.feeds(name, b))
        results.append((cand, per_batch))
    return results


@pytest.fixture(scope="module")
def models(tmp_path_factory: Any, hw: Any) -> _Models:
    return _Models(tmp_path_factory.mktemp("cross_runtime"), hw)


@pytest.mark.parametrize("backend_name", usable_backends())
@pytest.mark.parametrize("name,batches", MODELS, ids=[m for m, _ in MODELS])
def test_matches_reference(
    backend_name: str, name: str, batches: tuple[int, ...] | None, models: _Models
) -> None:
    sizes: list[int | None] = list(batches) if batches else [None]
    outs = _run(backend_name, name, sizes, models)
    if isinstance(outs, str):
        pytest.skip(f"{backend_name} unsupported, because {outs}")
    # The reference candidate's outputs are the expected values: comparing it would
    # compare it with itself. test_conformance.py checks it against the onnx data files.
    outs = [(c, p) for c, p in outs if not _is_reference(c)]
    if not outs:
        pytest.skip(
            f"{backend_name}'s only fp32 candidate here is the reference, whose "
            "outputs are the expected values; test_conformance.py checks it against "
            "the onnx data files' expected outputs"
        )
    path, _ = models.path(name)
    specs = load_facts(path).outputs
    for cand, per_batch in outs:
        for b in sizes:
            ref = models.reference(name, b)
            got = per_batch[b]
            assert len(got) == len(ref) == len(specs), (len(got), len(ref), len(specs))
            for spec, g, r in zip(specs, got, ref, strict=True):
                assert g.dtype == r.dtype and g.shape == r.shape, (spec.name, g.dtype, g.shape)
                assert np.isfinite(r).all() and np.ptp(r) > 0, "reference output is degenerate"
                scale = float(np.abs(r).max())
                np.testing.assert_allclose(
                    g,
                    r,
                    rtol=RTOL,
                    atol=SCALED_ATOL * scale,
                    err_msg=f"{cand} output {spec.name!r} of {name} (batch {b}) differs from the reference",
                )
