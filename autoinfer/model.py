"""Model facts, read once from the ONNX file.

:func:`load_facts` parses the model a single time (weights stored as external
data are not loaded), hashes the file and its external-data files in a
streamed pass, and answers everything the rest of autoinfer asks about the
model: inputs and outputs, opsets, operators, size, and a FLOP estimate.
Anything wrong with the file raises :class:`~autoinfer.errors.ModelError`
naming the file and the problem, but only what ONNX Runtime itself refuses
(ORT is the reference: every model it opens, autoinfer opens). Exporter quirks
that ORT accepts are accepted here too, some with a logged warning: negative
dimension values (Paddle2ONNX writes -1 for a dynamic dimension), dimensions
of 0, absurdly large declared dimensions, graphs without outputs, a missing IR
version, and non-tensor inputs and outputs (sequences, optionals, maps).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import shape_check
from .errors import ModelError
from .model_checks import check_operators, external_files, non_utf8_field, operator_queries
from .onnx_proto import parse_model
from .skeleton import read_skeleton

log = logging.getLogger("autoinfer.model")


# Above these, a declared shape fits no machine: opened (as ONNX Runtime does) with a warning.
MAX_DIM = 2**31 - 1
MAX_ELEMENTS = 2**36
UNTYPED = "untyped"  # an output the model declares without a type, until inferred
NO_VERSION = 2**63 - 1  # ONNX Runtime's model version when the model sets none

_ELEM_TO_NUMPY = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "str",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
    # no NumPy dtype: named as ONNX Runtime names them
    17: "float8e4m3fn",
    18: "float8e4m3fnuz",
    19: "float8e5m2",
    20: "float8e5m2fnuz",
    21: "uint4",
    22: "int4",
    23: "float4e2m1",
    24: "float8e8m0",
    25: "uint2",
    26: "int2",
}
_ELEM_TO_ORT = {
    "float32": "tensor(float)",
    "uint8": "tensor(uint8)",
    "int8": "tensor(int8)",
    "uint16": "tensor(uint16)",
    "int16": "tensor(int16)",
    "int32": "tensor(int32)",
    "int64": "tensor(int64)",
    "str": "tensor(string)",
    "bool": "tensor(bool)",
    "float16": "tensor(float16)",
    "float64": "tensor(double)",
    "uint32": "tensor(uint32)",
    "uint64": "tensor(uint64)",
    "complex64": "tensor(complex64)",
    "complex128": "tensor(complex128)",
    "bfloat16": "tensor(bfloat16)",
}

Dim = int | str | None


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, NumPy dtype name and shape.

    A dimension is an ``int`` when fixed, a ``str`` when symbolic ("batch"),
    and ``None`` when the model leaves it unnamed and unknown.
    """

    name: str
    dtype: str  # NumPy name; for a non-tensor, ONNX Runtime's type ("seq(tensor(float))")
    shape: tuple[Dim, ...] | None  # None: rank unknown

    @property
    def is_dynamic(self) -> bool:
        return self.shape is None or any(not isinstance(d, int) for d in self.shape)

    @property
    def is_tensor(self) -> bool:
        return "(" not in self.dtype

    @property
    def ort_type(self) -> str:
        if not self.is_tensor:
            return self.dtype
        return _ELEM_TO_ORT.get(self.dtype, f"tensor({self.dtype})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": None if self.shape is None else list(self.shape),
        }


@dataclass(frozen=True)
class ModelFacts:
    """What autoinfer knows about a model without running it."""

    path: Path
    digest: str | Digest  # the files' SHA-256, or one computed when first asked for
    size_bytes: int
    ir_version: int
    opsets: tuple[tuple[str, int], ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    op_histogram: tuple[tuple[str, int], ...]
    params: int
    flops: int
    external_data: tuple[str, ...] = ()
    producer: str = ""
    graph_name: str = ""
    description: str = ""
    domain: str = ""
    model_version: int = 0
    metadata: tuple[tuple[str, str], ...] = field(default=())
    producer_name: str = ""  # as ONNX Runtime's get_modelmeta() reports them
    graph_description: str = ""

    @property
    def sha256(self) -> str:
        """The SHA-256 of the model file and its external-data files (hashed on first use)."""
        d = self.digest
        return d if isinstance(d, str) else d.value()

    @property
    def hashed(self) -> bool:
        """Is the digest known (so that asking for it costs nothing)?"""
        d = self.digest
        return isinstance(d, str) or d.known() is not None

    @property
    def opaque_io(self) -> bool:
        """Does the model take or return a non-tensor (a sequence, an optional, a map)?"""
        return any(not t.is_tensor for t in (*self.inputs, *self.outputs))

    @property
    def has_dynamic_inputs(self) -> bool:
        return any(i.is_dynamic for i in self.inputs)

    @property
    def ops(self) -> frozenset[str]:
        return frozenset(op for op, _ in self.op_histogram)

    @property
    def opset(self) -> int:
        return dict(self.opsets).get("", dict(self.opsets).get("ai.onnx", 0))

    def op_count(self, *ops: str) -> int:
        h = dict(self.op_histogram)
        return sum(h.get(o, 0) for o in ops)

    def summary(self) -> str:
        return (
            f"{self.path.name}: {len(self.inputs)} input(s), {len(self.outputs)} output(s), "
            f"{sum(c for _, c in self.op_histogram)} nodes, {self.params / 1e6:.2f}M params, "
            f"~{self.flops / 1e9:.2f} GFLOP, opset {self.opset}"
        )

    def to_dict(self, *, hashed: bool = True) -> dict[str, Any]:
        """The facts as JSON; ``hashed=False`` leaves out a digest not computed yet."""
        known = self.digest if isinstance(self.digest, str) else self.digest.known()
        sha = self.sha256 if hashed else known
        return {
            "path": str(self.path),
            **({"sha256": sha} if sha is not None else {}),
            "size_bytes": self.size_bytes,
            "ir_version": self.ir_version,
            "opsets": [list(o) for o in self.opsets],
            "inputs": [i.to_dict() for i in self.inputs],
            "outputs": [o.to_dict() for o in self.outputs],
            "op_histogram": [list(o) for o in self.op_histogram],
            "params": self.params,
            "flops": self.flops,
            "external_data": list(self.external_data),
            "producer": self.producer,
            "graph_name": self.graph_name,
            "description": self.description,
            "domain": self.domain,
            "model_version": self.model_version,
            "metadata": [list(m) for m in self.metadata],
            "producer_name": self.producer_name,
            "graph_description": self.graph_description,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], on_hashed: Callable[[str], None] | None = None) -> ModelFacts:
        """Inverse of :meth:`to_dict`; raises KeyError/TypeError/ValueError on damaged data.
        Without a "sha256", the files are hashed when first asked for, and ``on_hashed``
        is told the digest."""

        def spec(x: dict[str, Any]) -> TensorSpec:
            shape = x["shape"]
            return TensorSpec(str(x["name"]), str(x["dtype"]), None if shape is None else tuple(shape))

        path = Path(d["path"])
        externals = tuple(str(e) for e in d["external_data"])
        return cls(
            path=path,
            digest=str(d["sha256"]) if "sha256" in d else Digest((path, *map(Path, externals)), on_hashed),
            size_bytes=int(d["size_bytes"]),
            ir_version=int(d["ir_version"]),
            opsets=tuple((str(a), int(b)) for a, b in d["opsets"]),
            inputs=tuple(spec(x) for x in d["inputs"]),
            outputs=tuple(spec(x) for x in d["outputs"]),
            op_histogram=tuple((str(a), int(b)) for a, b in d["op_histogram"]),
            params=int(d["params"]),
            flops=int(d["flops"]),
            external_data=externals,
            producer=str(d["producer"]),
            graph_name=str(d["graph_name"]),
            description=str(d["description"]),
            domain=str(d["domain"]),
            model_version=int(d["model_version"]),
            metadata=tuple((str(a), str(b)) for a, b in d["metadata"]),
            producer_name=str(d["producer_name"]),
            graph_description=str(d["graph_description"]),
        )


class Digest:
    """The SHA-256 of a model's files, computed when first asked for, once, on the thread
    that asks (others wait for it). A cold start does not wait for it: the safe choice loads
    without it, and the selection, which keys its cache by it, hashes in the background."""

    __slots__ = ("_paths", "_on_hashed", "_lock", "_value")

    def __init__(self, paths: Iterable[Path], on_hashed: Callable[[str], None] | None = None) -> None:
        self._paths = tuple(paths)
        self._on_hashed = on_hashed
        self._lock = threading.Lock()
        self._value: str | None = None

    def known(self) -> str | None:
        return self._value

    def value(self) -> str:
        with self._lock:
            if self._value is None:
                try:
                    self._value = hash_files(self._paths)
                except OSError as exc:
                    raise ModelError(f"{self._paths[0]}: cannot read ({exc.strerror})") from None
                if self._on_hashed is not None:
                    try:
                        self._on_hashed(self._value)
                    except Exception as exc:  # noqa: BLE001 - remembering it is an optimisation
                        log.debug("cannot remember the digest of %s: %s", self._paths[0], exc)
            return self._value

    def __repr__(self) -> str:
        return f"Digest({self._value or 'not computed yet'})"

    def __eq__(self, other: object) -> bool:  # facts compare equal whether or not hashed yet
        if isinstance(other, Digest):
            return self._paths == other._paths
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._paths)


def hash_files(paths: Iterable[Path], chunk: int = 1 << 20) -> str:
    """SHA-256 over the files' bytes, streamed (a 2 GB model needs 1 MB of memory)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while True:
                b = f.read(chunk)
                if not b:
                    break
                h.update(b)
    return h.hexdigest()


def _dims(type_proto: Any) -> tuple[str, tuple[Dim, ...] | None]:
    tt = type_proto.tensor_type
    dtype = _ELEM_TO_NUMPY.get(tt.elem_type, f"elem{tt.elem_type}")
    if not tt.HasField("shape"):
        return dtype, None
    dims: list[Dim] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dtype, tuple(dims)


def _ort_type_name(tp: Any) -> str:
    """ONNX Runtime's name of a type: ``tensor(float)``, ``seq(tensor(int64))``..."""
    kind = tp.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        elem = _ELEM_TO_NUMPY.get(getattr(tp, kind).elem_type, "")
        name = _ELEM_TO_ORT.get(elem, f"tensor(elem{getattr(tp, kind).elem_type})")
        return name if kind == "tensor_type" else "sparse_" + name
    if kind == "sequence_type":
        return f"seq({_ort_type_name(tp.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({_ort_type_name(tp.optional_type.elem_type)})"
    if kind == "map_type":
        key = _ELEM_TO_ORT.get(_ELEM_TO_NUMPY.get(tp.map_type.key_type, ""), "?")
        return f"map({key[7:-1]},{_ort_type_name(tp.map_type.value_type)})"
    return str(kind)


def _spec(value_info: Any, path: Path, what: str) -> TensorSpec:
    kind = value_info.type.WhichOneof("value")
    if kind is None:  # ONNX Runtime: "Model input (x) does not have type information"
        if what == "input":
            raise ModelError(f"{path}: {what} {value_info.name!r} has no type")
        return TensorSpec(value_info.name, UNTYPED, None)  # an output: inferred below
    if kind != "tensor_type":
        inner = value_info.type
        while inner.WhichOneof("value") == "optional_type":
            inner = inner.optional_type.elem_type
        shape = _dims(inner)[1] if inner.WhichOneof("value") == "tensor_type" else None
        return TensorSpec(value_info.name, _ort_type_name(value_info.type), shape)
    dtype, shape = _dims(value_info.type)
    if shape is not None:
        n = 1
        for d in shape:
            if isinstance(d, int):
                n *= d
        if n > MAX_ELEMENTS or any(isinstance(d, int) and d > MAX_DIM for d in shape):
            log.warning(
                "%s: %s %r declares %d elements (shape %s), more than any machine can hold",
                path,
                what,
                value_info.name,
                n,
                list(shape),
            )
    return TensorSpec(value_info.name, dtype, shape)


def _untyped_from(inferred: Any, outputs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """Outputs declared without a type get the inferred one, as ONNX Runtime does."""
    found = {o.name: o for o in inferred.graph.output}
    return tuple(
        _spec(found[o.name], Path(), "output") if o.dtype == UNTYPED and o.name in found else o
        for o in outputs
    )


def _count_params(model: Any) -> int:
    n = 0
    for t in model.graph.initializer:
        n += math.prod(t.dims) if t.dims else 1
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.HasField("t"):
                    n += math.prod(a.t.dims) if a.t.dims else 1
    return n


def _checked(
    queries: list[Any], graph: bytes, inference: shape_check.Inference, path: Path, size: int
) -> tuple[dict[Any, str] | None, Any]:
    """The verdicts on ``queries`` (the operator queries sent) and the model with inferred
    shapes, from the child that :func:`shape_check.start` spawned (a crash there is the
    model's :class:`ModelError`). Verdicts None: ask them here; inferred None: inference
    refused the model or timed out."""
    outcome, value = inference.result(60.0 + 60.0 * size / 2**30)
    if outcome in ("ok", "error"):
        answer = value[0] if outcome == "ok" else value
        verdicts = dict(zip(queries, answer["verdicts"], strict=True))
        if outcome == "ok":
            return verdicts, parse_model(value[1])
        log.debug("shape inference of %s failed: %s", path, answer.get("error"))
        return verdicts, None
    if outcome == "crashed":
        raise ModelError(
            f"{path}: malformed model: ONNX shape inference crashed on it ({value}); "
            "a runtime loading it would crash the same way"
        )
    if outcome == "timeout":
        log.debug("shape inference of %s did not finish", path)
        return None, None
    import onnx

    from ._proc import in_child  # no child of its own: a forked one, else this process

    light = onnx.load_model_from_string(graph)
    outcome, value = in_child(lambda: shape_check.infer_here(light).SerializeToString().hex(), 120.0)
    if outcome == "crashed":
        raise ModelError(f"{path}: malformed model: ONNX shape inference crashed on it ({value})")
    if outcome == "ok":
        return None, onnx.load_model_from_string(bytes.fromhex(value))
    return None, shape_check.infer_here(light) if outcome == "unavailable" else None


def _read_model(p: Path, inference: shape_check.Inference) -> tuple[int, Any, bytes | None]:
    """The file's size, the model parsed from it and its serialized skeleton: its graph
    without the data of large tensors (:mod:`~autoinfer.skeleton`), which goes to
    ``inference`` before it is parsed here; or, where the file does not walk as protobuf,
    the whole file (no skeleton), whose parse error names what is wrong."""
    if not p.exists():
        raise ModelError(f"{p}: no such file")
    if p.is_dir():
        raise ModelError(f"{p}: is a directory, not an ONNX model file")
    try:
        skeleton = read_skeleton(p)
        if skeleton is not None:
            inference.send(skeleton)  # the child infers while this process parses and checks
            with contextlib.suppress(Exception):  # the whole file's parse gives the error
                return p.stat().st_size, parse_model(skeleton), skeleton
        blob = p.read_bytes()
    except PermissionError:
        raise ModelError(f"{p}: permission denied") from None
    except OSError as exc:
        raise ModelError(f"{p}: cannot read ({exc.strerror})") from None
    if not blob:
        raise ModelError(f"{p}: the file is empty")
    try:
        return len(blob), parse_model(blob), None
    except Exception as exc:
        raise ModelError(
            f"{p}: not a readable ONNX model ({type(exc).__name__}: "
            f"{str(exc)[:200] or 'truncated or corrupt protobuf'})"
        ) from None


def load_facts(path: str | os.PathLike[str], on_hashed: Callable[[str], None] | None = None) -> ModelFacts:
    """Read the model at ``path`` once and return its facts.

    Raises :class:`ModelError` for what ONNX Runtime refuses too: a missing path, a
    directory, an empty or truncated file, bytes that are not an ONNX model, an
    input without a type, duplicate input names, unknown operators or domains
    (ONNX Runtime opens those only with a custom-operator library), operators
    absent at the model's opset, and missing or escaping external data.
    """
    p = Path(path)
    inference = shape_check.start()  # the child starts while the model is read
    try:
        return _facts(p, inference, on_hashed)
    finally:
        inference.cancel()


def _facts(p: Path, inference: shape_check.Inference, on_hashed: Callable[[str], None] | None) -> ModelFacts:
    size, model, skeleton = _read_model(p, inference)
    bad_text = non_utf8_field(model, skeleton)  # first: the operator queries hold the model's text
    if bad_text is not None:
        raise ModelError(f"{p}: corrupt model: the text of {bad_text} is not valid UTF-8")
    if not model.HasField("graph") or not model.opset_import:  # ONNX Runtime refuses these
        raise ModelError(f"{p}: parses as protobuf but is not an ONNX model (no graph or opset import)")
    graph = skeleton if skeleton is not None else shape_check.without_weights(model).SerializeToString()
    queries = operator_queries(model)
    inference.send(graph)  # where the skeleton did not go already
    inference.ask(queries)
    if model.ir_version <= 0:
        log.warning("%s: the model declares no IR version; ONNX Runtime opens it anyway", p)
    g = model.graph
    if not g.output:
        log.warning("%s: the graph declares no outputs; run() will return nothing", p)
    externals = external_files(model, p)
    inits = {t.name for t in g.initializer} | {t.name for t in g.sparse_initializer}
    inputs = tuple(_spec(i, p, "input") for i in g.input if i.name not in inits)
    outputs = tuple(_spec(o, p, "output") for o in g.output)
    hist, params = Counter(n.op_type for n in g.node), _count_params(model)  # while the child works
    verdicts, inferred = _checked(queries, graph, inference, p, size)  # a crash is the model's error
    check_operators(model, p, verdicts)
    if inferred is not None and any(o.dtype == UNTYPED for o in outputs):
        outputs = _untyped_from(inferred, outputs)
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise ModelError(f"{p}: input names are not unique: {names}")
    return ModelFacts(
        path=p.resolve(),
        digest=Digest((p, *externals), on_hashed),
        size_bytes=size + sum(e.stat().st_size for e in externals),
        ir_version=int(model.ir_version),
        opsets=tuple(sorted((o.domain, int(o.version)) for o in model.opset_import)),
        inputs=inputs,
        outputs=outputs,
        op_histogram=tuple(sorted(hist.items())),
        params=params,
        flops=shape_check.flops_of(inferred) if inferred is not None else 0,
        external_data=tuple(str(e) for e in externals),
        producer=(model.producer_name + " " + model.producer_version).strip(),
        graph_name=g.name,
        description=model.doc_string,
        domain=model.domain,
        # ONNX Runtime reports an unset version as INT64_MAX; so does get_modelmeta()
        model_version=int(model.model_version) if model.HasField("model_version") else NO_VERSION,
        metadata=tuple((m.key, m.value) for m in model.metadata_props),
        producer_name=model.producer_name,
        graph_description=g.doc_string,
    )


def _ext_stats(paths: Iterable[str]) -> list[list[int]]:
    out = []
    for e in paths:
        st = os.stat(e)
        out.append([st.st_size, st.st_mtime_ns])
    return out


def load_facts_cached(path: str | os.PathLike[str], cache: Any) -> ModelFacts:
    """:func:`load_facts`, memoised in ``cache`` by the file's path, size, mtime and
    inode (and those of its external-data files), so a warm start neither parses
    nor hashes the model again. The record is written at once, without the digest,
    and again with it once something has asked for it."""
    p = Path(path)
    key = cache.facts_key(p) if p.is_file() else None
    known: list[ModelFacts] = []

    def store(*_digest: str) -> None:  # the digest, once known, is in the facts themselves
        if key is None or not known:
            return
        rec = known[0].to_dict(hashed=False)
        try:
            cache.put_facts(p, {"facts": rec, "ext": _ext_stats(known[0].external_data)}, key=key)
        except OSError as exc:  # the cache is an optimisation only
            log.debug("cannot store facts of %s: %s", p, exc)

    if key is not None:
        rec = cache.get_facts(p)
        if rec is not None:
            try:
                facts = ModelFacts.from_dict(rec["facts"], on_hashed=store)
                if _ext_stats(facts.external_data) == rec["ext"]:
                    known.append(facts)
                    return facts
            except (KeyError, TypeError, ValueError, OSError) as exc:
                log.debug("cached facts of %s unusable: %s", p, exc)
    known.append(load_facts(p, on_hashed=store))
    store()
    return known[0]
