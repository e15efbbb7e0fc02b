"""The output comparison: one judge of "the same outputs" for the selection, the
backends' own checks (ncnn's conversion self-check) and the tests.

Imports nothing of autoinfer, so every layer may use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

TOLERANCES = {"fp32": (1e-3, 1e-4), "fp16": (2e-2, 2e-2), "bf16": (4e-2, 4e-2), "int8": (1e-1, 1e-1)}


def tolerance(precision: str, rtol: float | None = None, atol: float | None = None) -> tuple[float, float]:
    """The precision's default tolerance; the caller's rtol/atol, when given, for all."""
    r, a = TOLERANCES.get(precision, TOLERANCES["fp16"])
    return (rtol if rtol is not None else r), (atol if atol is not None else a)


def compare(
    outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray], rtol: float, atol: float
) -> tuple[bool, float, float, str]:
    """(ok, max abs error, max relative error, why not). atol scales with the
    reference's magnitude so that large-valued outputs are judged fairly."""
    if len(outputs) != len(reference):
        return False, math.inf, math.inf, f"{len(outputs)} outputs, reference has {len(reference)}"
    max_abs = max_rel = 0.0
    for i, (o, r) in enumerate(zip(outputs, reference, strict=True)):
        o = np.asarray(o)
        r = np.asarray(r)
        if o.shape != r.shape:
            return False, math.inf, math.inf, f"output {i} has shape {o.shape}, expected {r.shape}"
        if o.dtype != r.dtype:
            return False, math.inf, math.inf, f"output {i} has dtype {o.dtype}, expected {r.dtype}"
        if r.dtype.kind not in "fc":
            if not np.array_equal(o, r):
                n = int(np.sum(o != r))
                return False, math.inf, math.inf, f"output {i}: {n} of {r.size} values differ"
            continue
        of = o.astype(np.float64)
        rf = r.astype(np.float64)
        if not np.array_equal(np.isnan(of), np.isnan(rf)):
            return False, math.inf, math.inf, f"output {i}: NaN where the reference has none"
        fin = np.isfinite(rf)
        if not np.array_equal(of[~fin & ~np.isnan(rf)], rf[~fin & ~np.isnan(rf)]):
            return False, math.inf, math.inf, f"output {i}: infinities differ"
        if not np.all(np.isfinite(of[fin])):
            return False, math.inf, math.inf, f"output {i}: non-finite values"
        if not fin.any():
            continue
        diff = np.abs(of[fin] - rf[fin])
        scale = max(1.0, float(np.max(np.abs(rf[fin]))))
        a = float(diff.max())
        rel = float(np.max(diff / (np.abs(rf[fin]) + atol * scale)))
        max_abs, max_rel = max(max_abs, a), max(max_rel, rel)
        bad = diff > atol * scale + rtol * np.abs(rf[fin])
        if bad.any():
            return (
                False,
                max_abs,
                max_rel,
                f"output {i}: {int(bad.sum())} of {diff.size} values outside tolerance "
                f"(max abs error {a:.3g}, rtol {rtol:g}, atol {atol * scale:.3g})",
            )
    return True, max_abs, max_rel, ""
