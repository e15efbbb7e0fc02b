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

import hashlib
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelError
from .model_checks import check_operators, non_utf8_field

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
    sha256: str
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
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
    def from_dict(cls, d: dict[str, Any]) -> ModelFacts:
        """Inverse of :meth:`to_dict`; raises KeyError/TypeError/ValueError on damaged data."""

        def spec(x: dict[str, Any]) -> TensorSpec:
            shape = x["shape"]
            return TensorSpec(str(x["name"]), str(x["dtype"]), None if shape is None else tuple(shape))

        return cls(
            path=Path(d["path"]),
            sha256=str(d["sha256"]),
            size_bytes=int(d["size_bytes"]),
            ir_version=int(d["ir_version"]),
            opsets=tuple((str(a), int(b)) for a, b in d["opsets"]),
            inputs=tuple(spec(x) for x in d["inputs"]),
            outputs=tuple(spec(x) for x in d["outputs"]),
            op_histogram=tuple((str(a), int(b)) for a, b in d["op_histogram"]),
            params=int(d["params"]),
            flops=int(d["flops"]),
            external_data=tuple(d["external_data"]),
            producer=str(d["producer"]),
            graph_name=str(d["graph_name"]),
            description=str(d["description"]),
            domain=str(d["domain"]),
            model_version=int(d["model_version"]),
            metadata=tuple((str(a), str(b)) for a, b in d["metadata"]),
            producer_name=str(d["producer_name"]),
            graph_description=str(d["graph_description"]),
        )


def hash_files(paths: Iterable[Path], chunk: int = 1 << 20, into: Any = None) -> str:
    """SHA-256 over the files' bytes, streamed (a 2 GB model needs 1 MB of memory);
    ``into``: a hash that already holds what comes before them."""
    h = into if into is not None else hashlib.sha256()
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


def _infer_untyped(model: Any, outputs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """Outputs declared without a type get the inferred one, as ONNX Runtime does."""
    import onnx

    try:
        inferred = {
            o.name: o for o in onnx.shape_inference.infer_shapes(model, strict_mode=False).graph.output
        }
    except Exception as exc:  # noqa: BLE001 - the type stays unknown
        log.debug("shape inference failed: %s", exc)
        return outputs
    return tuple(
        _spec(inferred[o.name], Path(), "output") if o.dtype == UNTYPED and o.name in inferred else o
        for o in outputs
    )


def _external_files(model: Any, base: Path) -> list[Path]:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    files: dict[str, Path] = {}
    for t in _get_all_tensors(model):
        if uses_external_data(t):
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if not loc:
                raise ModelError(f"{base}: tensor {t.name!r} uses external data with no location")
            p = (base.parent / loc).resolve()
            if base.parent.resolve() not in p.parents and p != base.parent.resolve():
                raise ModelError(
                    f"{base}: external data {loc!r} of tensor {t.name!r} points outside the model's directory"
                )
            files[loc] = p
    for loc, p in files.items():
        if not p.is_file():
            raise ModelError(f"{base}: external-data file {loc!r} is missing (expected at {p})")
    return sorted(files.values())


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


def _estimate_flops(model: Any) -> int:
    """Multiply-accumulates x2 of Conv, Gemm and MatMul, with dynamic dims taken as 1."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:  # shape inference can fail on odd but runnable models
        log.debug("shape inference failed, FLOP estimate is partial: %s", exc)
        inferred = model
    shapes: dict[str, list[int]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.type.WhichOneof("value") == "tensor_type" and vi.type.tensor_type.HasField("shape"):
            shapes[vi.name] = [
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                for d in vi.type.tensor_type.shape.dim
            ]
    for t in inferred.graph.initializer:
        shapes[t.name] = list(t.dims)
    flops = 0
    for node in inferred.graph.node:
        try:
            if node.op_type == "Conv" and len(node.input) >= 2:
                w, y = shapes.get(node.input[1]), shapes.get(node.output[0])
                if w and y:
                    flops += 2 * math.prod(y) * math.prod(w[1:])
            elif node.op_type in ("MatMul", "Gemm") and len(node.input) >= 2:
                a, y = shapes.get(node.input[0]), shapes.get(node.output[0])
                if a and y:
                    k = a[-1]
                    if node.op_type == "Gemm":
                        trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
                        k = a[0] if trans_a else a[-1]
                    flops += 2 * math.prod(y) * k
        except Exception:  # an odd node never stops the estimate
            continue
    return int(flops)


def _without_weights(model: Any) -> Any:
    """``model`` with the data of its large initializers dropped (their dims and types stay),
    IN PLACE: for a forked child only. Shape inference needs the types; it reads the values
    of small constants (a Reshape's shape) only, and serialising hundreds of megabytes of
    weights to hand them to it is what made reading a large model slow."""
    for t in model.graph.initializer:
        if len(t.raw_data) > _KEEP_BYTES:
            t.ClearField("raw_data")
        for name in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            if len(getattr(t, name)) * 4 > _KEEP_BYTES:
                t.ClearField(name)
    return model


_KEEP_BYTES = 1 << 16


def _checked_flops(model: Any, path: Path, size: int, meanwhile: Any = None) -> int:
    """The FLOP estimate, computed where a crash cannot reach the caller.

    ONNX's shape inference runs every operator's shape function, the same code
    the runtimes run when they load a graph. Some malformed attributes (a
    kernel larger than its input, for one) make that native code abort the
    whole process, ONNX Runtime included; a model that crashes it here is
    rejected before any runtime sees it.
    """
    from ._proc import in_child

    outcome, value = in_child(
        lambda: _estimate_flops(_without_weights(model)), 60.0 + 60.0 * size / 2**30, meanwhile
    )
    if outcome == "ok":
        return int(value)
    if outcome == "crashed":
        raise ModelError(
            f"{path}: malformed model: ONNX shape inference crashed on it ({value}); "
            "a runtime loading it would crash the same way"
        )
    if outcome in ("timeout", "error"):
        log.debug("FLOP estimate of %s unavailable: %s", path, value or "timed out")
        return 0
    if meanwhile is not None:  # no fork here: the caller's work, then the estimate in process
        meanwhile()
    return _estimate_flops(model)


def _read_model(p: Path) -> tuple[bytes, Any]:
    """The file's bytes and the model parsed from them (its external data not loaded)."""
    import onnx

    if not p.exists():
        raise ModelError(f"{p}: no such file")
    if p.is_dir():
        raise ModelError(f"{p}: is a directory, not an ONNX model file")
    try:
        blob = p.read_bytes()
    except PermissionError:
        raise ModelError(f"{p}: permission denied") from None
    except OSError as exc:
        raise ModelError(f"{p}: cannot read ({exc.strerror})") from None
    if not blob:
        raise ModelError(f"{p}: the file is empty")
    try:
        return blob, onnx.load_model_from_string(blob)
    except Exception as exc:
        raise ModelError(
            f"{p}: not a readable ONNX model ({type(exc).__name__}: "
            f"{str(exc)[:200] or 'truncated or corrupt protobuf'})"
        ) from None


def load_facts(path: str | os.PathLike[str]) -> ModelFacts:
    """Read the model at ``path`` once and return its facts.

    Raises :class:`ModelError` for what ONNX Runtime refuses too: a missing path, a
    directory, an empty or truncated file, bytes that are not an ONNX model, an
    input without a type, duplicate input names, unknown operators or domains
    (ONNX Runtime opens those only with a custom-operator library), operators
    absent at the model's opset, and missing or escaping external data.
    """
    p = Path(path)
    blob, model = _read_model(p)
    size = len(blob)
    bad_text = non_utf8_field(model)
    if bad_text is not None:
        raise ModelError(f"{p}: corrupt model: the text of {bad_text} is not valid UTF-8")
    if not model.HasField("graph") or not model.opset_import:  # ONNX Runtime refuses these
        raise ModelError(f"{p}: parses as protobuf but is not an ONNX model (no graph or opset import)")
    if model.ir_version <= 0:
        log.warning("%s: the model declares no IR version; ONNX Runtime opens it anyway", p)
    g = model.graph
    if not g.output:
        log.warning("%s: the graph declares no outputs; run() will return nothing", p)
    externals = _external_files(model, p)
    check_operators(model, p)
    inits = {t.name for t in g.initializer} | {t.name for t in g.sparse_initializer}
    inputs = tuple(_spec(i, p, "input") for i in g.input if i.name not in inits)
    outputs = tuple(_spec(o, p, "output") for o in g.output)
    hashed: list[Any] = []  # the files' hash, computed while the child infers shapes

    def hash_now() -> None:
        try:
            h = hashlib.sha256(blob)  # the bytes already read: the file is read once
            hashed.append(hash_files(externals, into=h))
        except OSError as exc:
            hashed.append(exc)

    flops = _checked_flops(model, p, size, hash_now)  # first: it finds graphs that crash inference
    if any(o.dtype == UNTYPED for o in outputs):
        outputs = _infer_untyped(model, outputs)
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise ModelError(f"{p}: input names are not unique: {names}")
    if not hashed:
        hash_now()
    digest = hashed[0]
    if isinstance(digest, OSError):
        raise ModelError(f"{p}: cannot read ({digest.strerror})")
    hist = Counter(n.op_type for n in g.node)
    return ModelFacts(
        path=p.resolve(),
        sha256=digest,
        size_bytes=size + sum(e.stat().st_size for e in externals),
        ir_version=int(model.ir_version),
        opsets=tuple(sorted((o.domain, int(o.version)) for o in model.opset_import)),
        inputs=inputs,
        outputs=outputs,
        op_histogram=tuple(sorted(hist.items())),
        params=_count_params(model),
        flops=flops,
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
    nor hashes the model again."""
    p = Path(path)
    if p.is_file():
        rec = cache.get_facts(p)
        if rec is not None:
            try:
                facts = ModelFacts.from_dict(rec["facts"])
                if _ext_stats(facts.external_data) == rec["ext"]:
                    return facts
            except (KeyError, TypeError, ValueError, OSError) as exc:
                log.debug("cached facts of %s unusable: %s", p, exc)
    facts = load_facts(p)
    try:
        cache.put_facts(p, {"facts": facts.to_dict(), "ext": _ext_stats(facts.external_data)})
    except OSError as exc:  # the cache is an optimisation only
        log.debug("cannot store facts of %s: %s", p, exc)
    return facts
