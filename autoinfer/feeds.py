"""Sample feeds: synthetic inputs that respect the graph (``feed_hints``, ``sample_feeds``),
and feeds on disk for the measuring subprocess (``save_feeds``, ``load_feeds``)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .model import ModelFacts

log = logging.getLogger("autoinfer.measure")

Feed = Mapping[str, np.ndarray]

_PASS_THROUGH = {"Cast", "Squeeze", "Unsqueeze", "Reshape", "Identity", "Flatten"}
_COMPARE = {"Equal": 0, "Greater": 1, "Less": -1, "GreaterOrEqual": 0, "LessOrEqual": 0}


def feed_hints(path: str | os.PathLike[str]) -> dict[str, tuple[str, Any]]:
    """What the graph tells about the values of its inputs, for synthetic feeds:
    ("range", n) for an integer input that indexes a Gather over an axis of n;
    ("value", v) for a scalar compared with a constant on the way to an ``If``."""
    try:
        import onnx
        from onnx import numpy_helper

        from .skeleton import read_skeleton

        skeleton = read_skeleton(Path(path))  # the graph and small constants: all it reads
        if skeleton is not None:
            proto = onnx.load_model_from_string(skeleton)
        else:
            proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - hints are a help, never a requirement
        log.debug("no feed hints for %s: %s", path, exc)
        return {}
    g = proto.graph
    inputs = {i.name for i in g.input}
    shapes = {t.name: tuple(t.dims) for t in g.initializer}
    consts: dict[str, np.ndarray] = {}
    for t in g.initializer:
        if int(np.prod(t.dims, dtype=np.int64)) <= 16:
            with contextlib.suppress(Exception):
                consts[t.name] = numpy_helper.to_array(t)
    nodes: list[Any] = []
    stack = [g]
    while stack:
        graph = stack.pop()
        for n in graph.node:
            nodes.append(n)
            for a in n.attribute:
                if a.g is not None and a.g.node:
                    stack.append(a.g)
                stack.extend(x for x in a.graphs)
    producer = {o: n for n in nodes for o in n.output}
    for n in nodes:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value" and a.t is not None:
                    with contextlib.suppress(Exception):
                        consts[n.output[0]] = numpy_helper.to_array(a.t)

    def source(name: str) -> str | None:
        for _ in range(8):
            if name in inputs:
                return name
            n = producer.get(name)
            if n is None or n.op_type not in _PASS_THROUGH or not n.input:
                return None
            name = n.input[0]
        return None

    hints: dict[str, tuple[str, Any]] = {}
    for n in nodes:
        if n.op_type == "Gather" and len(n.input) == 2 and n.input[0] in shapes:
            src = source(n.input[1])
            axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
            dims = shapes[n.input[0]]
            if src and dims and -len(dims) <= axis < len(dims):
                hints.setdefault(src, ("range", int(dims[axis])))
        if n.op_type in _COMPARE and len(n.input) == 2:
            for x, c in ((0, 1), (1, 0)):
                src = source(n.input[x])
                if src and n.input[c] in consts and consts[n.input[c]].size == 1:
                    v = consts[n.input[c]].reshape(()).item()
                    step = _COMPARE[n.op_type] * (1 if x == 0 else -1)
                    if isinstance(v, (int, np.integer)):
                        v = int(v) + step
                    else:
                        v = float(v) + step
                    if _feeds_if(n, producer, nodes):
                        hints.setdefault(src, ("value", v))
    return hints


def _feeds_if(node: Any, producer: Mapping[str, Any], nodes: Sequence[Any]) -> bool:
    """Whether ``node``'s output reaches an ``If`` condition (through Not/And/Or/Cast...)."""
    conds = {n.input[0] for n in nodes if n.op_type == "If" and n.input}
    todo, seen = [node.output[0]], set()
    users: dict[str, list[Any]] = {}
    for n in nodes:
        for i in n.input:
            users.setdefault(i, []).append(n)
    while todo:
        name = todo.pop()
        if name in conds:
            return True
        if name in seen:
            continue
        seen.add(name)
        for u in users.get(name, []):
            if u.op_type in ("Not", "And", "Or", "Xor", "Cast", "Squeeze", "Reshape", "Identity"):
                todo.extend(u.output)
    return False


def sample_feeds(
    model: ModelFacts,
    shapes: Mapping[str, Sequence[int]],
    seed: int = 0,
    hints: Mapping[str, tuple[str, Any]] | None = None,
) -> dict[str, np.ndarray]:
    """Deterministic synthetic inputs that respect what the graph tells (``feed_hints``):
    floats in [0, 1), integers in {0, 1} or within a Gather's axis, booleans, and a
    scalar tested by an ``If`` at a value its branches accept."""
    rng = np.random.default_rng(seed)
    hints = hints if hints is not None else feed_hints(model.path)
    feeds = {}
    for spec in model.inputs:
        shape = tuple(shapes[spec.name])
        dt = np.dtype(spec.dtype) if spec.dtype not in ("str", "bfloat16") else None
        if dt is None:
            raise ConfigError(
                f"input {spec.name!r} has dtype {spec.dtype}, which autoinfer "
                "cannot generate sample inputs for; pass sample_inputs="
            )
        kind, what = hints.get(spec.name, ("", None))
        if kind == "value" and dt.kind in "iuf":
            feeds[spec.name] = np.full(shape, what, dtype=dt)
        elif dt.kind == "f":
            feeds[spec.name] = rng.random(shape, dtype=np.float32).astype(dt)
        elif dt.kind in "iu":
            high = max(1, int(what)) if kind == "range" else 2
            feeds[spec.name] = rng.integers(0, high, size=shape).astype(dt)
        elif dt.kind == "b":
            feeds[spec.name] = rng.random(shape) < 0.5
        else:
            raise ConfigError(f"input {spec.name!r}: unsupported dtype {spec.dtype}")
    return feeds


def save_feeds(path: Path, feeds: Sequence[Feed]) -> None:
    arrays: dict[str, Any] = {f"f{i}_{k}": np.asarray(v) for i, f in enumerate(feeds) for k, v in f.items()}
    np.savez(path, **arrays)


def load_feeds(path: str | os.PathLike[str]) -> list[dict[str, np.ndarray]]:
    out: dict[int, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            idx, name = key[1:].split("_", 1)
            out.setdefault(int(idx), {})[name] = z[key]
    return [out[i] for i in sorted(out)]
