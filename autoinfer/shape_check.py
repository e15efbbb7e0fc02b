"""ONNX shape inference, run where a crash cannot reach the caller, and what is read from it.

ONNX's shape inference runs every operator's shape function: the same code the
runtimes run when they load a graph. Some malformed attributes (a pooling kernel
larger than its input, for one) make that native code abort the whole process, ONNX
Runtime's included. So before any runtime sees a model, its graph (without the
weights' data: :mod:`~autoinfer.skeleton`) goes through shape inference in a child
process, and a crash there is the model's error, not the caller's death.

The child is a new interpreter (``-S -I``) that loads ONNX's native extension alone,
reads the serialized graph on stdin and writes the inferred one on stdout. It is
spawned, not forked: a fork would mark every page of the caller copy-on-write, and a
large process (an application, with ONNX Runtime in it) then pays a page fault for
each page it writes next, which made the runtime's own load that follows up to 40%
slower. :func:`start` spawns the child at once, so that its interpreter starts and
builds ONNX's operator registry while the caller reads the model; :meth:`Inference.send`
hands it the graph.

The inferred graph gives the FLOP estimate (:func:`flops_of`) and the types of outputs
the model declares without one (:func:`output_types`).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import logging
import marshal
import math
import os
import queue
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ._proc import ended, kill_group, start_child

log = logging.getLogger("autoinfer.model")

# -S -I: no site, no user paths, no PYTHON* variables; the extension is loaded by its path.
# A request on stdin: the serialized graph, then a list of operator queries
# (model_checks.operator_queries); an answer on stdout: a dict (the verdicts, and the
# error when inference refused the graph), then the inferred graph. Each part is an
# 8-byte little-endian length and that many bytes; the list and the dict are in
# ``marshal``'s format (built in: ``json`` would cost the child's start ~10 ms). The
# graph is inferred as soon as it is here: the caller sends the queries once it has
# parsed the model itself.
_CHILD = r"""
import _imp, marshal, sys
class Spec:  # what the extension loader reads of a module spec
    name, origin = "onnx.onnx_cpp2py_export", sys.argv[1]
C = _imp.create_dynamic(Spec)
_imp.exec_dynamic(C)
defs = C.defs
newest = {d: v[1] for d, v in defs.schema_version_map().items()}
defs.has_schema("Conv", "")  # builds the operator registry now, not once the graph is here
src, dst = sys.stdin.buffer, sys.stdout.buffer

def part():
    head = src.read(8)
    if len(head) < 8:
        raise EOFError
    return src.read(int.from_bytes(head, "little"))

def verdict(dom, op, version):  # as model_checks.verdict
    if newest.get("" if dom == "ai.onnx" else dom, 0) < version < 10**6:
        return "ok"
    if not defs.has_schema(op, dom):
        return "unknown"
    try:
        defs.get_schema(op, version, dom)
    except Exception:
        return "absent"
    return "ok"

while True:
    try:
        graph = part()
    except EOFError:  # the caller closed the pipe, or is gone
        break
    answer = {}
    try:
        out = C.shape_inference.infer_shapes(graph, False, False, False)
    except Exception as exc:
        answer["error"], out = f"{type(exc).__name__}: {exc}"[:2000], b""
    try:
        answer["verdicts"] = [verdict(*q) for q in marshal.loads(part())]
    except EOFError:
        break
    head = marshal.dumps(answer)
    dst.write(len(head).to_bytes(8, "little") + head + len(out).to_bytes(8, "little") + out)
    dst.flush()
"""


def _extension() -> Path | None:
    """The path of ONNX's native extension, found without importing ``onnx``."""
    spec = importlib.util.find_spec("onnx")
    if spec is None or not spec.submodule_search_locations:
        return None
    for d in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            p = Path(d) / f"onnx_cpp2py_export{suffix}"
            if p.is_file():
                return p
    return None


class _Child:
    """One shape-inference process; it serves model after model until one crashes it."""

    def __init__(self, ext: Path) -> None:
        # stderr: a pipe, read once the child has died (an abort's message is one line)
        self.proc = start_child(
            [sys.executable, "-S", "-I", "-c", _CHILD, str(ext)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ),  # it loads ONNX's extension only: no runtime's settings
        )
        self.lock = threading.Lock()
        self.writer: threading.Thread | None = None
        self.queries: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()  # the request's

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, graph: bytes) -> None:
        """Hand the child a graph, on a thread of its own (the pipe holds 64 KiB, and the
        child reads only once its interpreter has started), which then writes the queries
        that :meth:`ask` hands it."""
        self.queries = queue.SimpleQueue()
        self.writer = threading.Thread(
            target=self._write, args=(_part(graph),), name="autoinfer-shape-request", daemon=True
        )
        self.writer.start()

    def ask(self, queries: list[Any]) -> None:
        self.queries.put(_part(marshal.dumps(queries)))  # model_checks.Query: plain tuples

    def _write(self, graph: bytes) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError, ValueError):  # it died: receive() says how
            self.proc.stdin.write(graph)
            self.proc.stdin.flush()
            queries = self.queries.get()
            if queries is not None:  # None: closed before the queries came
                self.proc.stdin.write(queries)
                self.proc.stdin.flush()

    def receive(self, timeout_s: float) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout_s
        try:
            parts = []
            for _ in range(2):
                head = self._read(8, deadline)
                if len(head) < 8:
                    return "crashed", self._how()
                parts.append(self._read(int.from_bytes(head, "little"), deadline))
        except TimeoutError:
            self.close()
            return "timeout", None
        except OSError:
            return "crashed", self._how()
        finally:
            if self.writer is not None:
                self.writer.join()  # it has written all, or met a closed pipe
                self.writer = None
        answer = marshal.loads(parts[0])  # from the child this process started
        if "error" in answer:
            return "error", answer
        return "ok", (answer, parts[1])

    def _read(self, n: int, deadline: float) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        chunks: list[bytes] = []
        while n > 0:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(fd, min(n, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _how(self) -> str:
        """How it ended (it has): its signal or exit status, and its last words."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        code = self.proc.returncode
        if code is None:
            self.close()
            return "stopped answering"
        err = b""
        if self.proc.stderr is not None:
            with contextlib.suppress(OSError, ValueError):
                err = self.proc.stderr.read()[-2000:]
        self.close()
        return ended(code, err.decode("utf-8", "replace").strip().splitlines())

    def close(self) -> None:
        kill_group(self.proc)
        if self.writer is not None:
            self.queries.put(None)  # a writer waiting for queries goes
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


def _part(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data


_child: _Child | None = None  # the process's shape-inference child, started on first need
_child_lock = threading.Lock()


def _forget_child_in_child() -> None:
    global _child, _child_lock
    _child, _child_lock = None, threading.Lock()  # the parent's: a forked child leaves it alone


os.register_at_fork(after_in_child=_forget_child_in_child)


class Inference:
    """Shape inference and operator checks of one model in a child process (:func:`start`):
    :meth:`send` the graph as soon as it is read (the child infers it at once), :meth:`ask`
    the operator queries once the caller has parsed the model, :meth:`result` once the
    caller's own checks are done."""

    def __init__(self, child: _Child | None, own: bool) -> None:
        self._child = child
        self._own = own  # a child for this model only (the shared one was busy)
        self._sent = False
        self._asked = False

    def send(self, graph: bytes) -> None:
        """Start inferring ``graph`` (a serialized ModelProto)."""
        child = self._child
        if child is None or self._sent:
            return
        if not self._own:
            child.lock.acquire()
        self._sent = True
        child.send(graph)

    def ask(self, queries: list[Any]) -> None:
        """The operator queries to answer (:func:`~autoinfer.model_checks.operator_queries`),
        once the graph is sent."""
        if self._child is not None and self._sent and not self._asked:
            self._asked = True
            self._child.ask(queries)

    def result(self, timeout_s: float) -> tuple[str, Any]:
        """Returns ("ok", (answer, inferred ModelProto bytes)) where answer["verdicts"]
        holds the queries' verdicts; ("error", answer) when inference refused the graph
        (answer["error"] says why); ("crashed", how); ("timeout", None); or
        ("unavailable", reason) when no child could run: the caller then does it all in
        its own process."""
        if self._child is not None and self._sent and not self._asked:
            raise RuntimeError("the operator queries were not sent: ask() before result()")
        child, self._child = self._child, None
        if child is None or not self._sent:
            return "unavailable", "no child process"
        try:
            return child.receive(timeout_s)
        finally:
            self._release(child)

    def cancel(self) -> None:
        """The model needs no answer after all (the caller found an error of its own)."""
        child, self._child = self._child, None
        if child is None:
            return
        if self._sent and not self._own:
            child.close()  # its answer would come to the next model: start afresh
        self._release(child)

    def _release(self, child: _Child) -> None:
        """A child of its own is closed; the shared one's lock, taken in send(), released
        (``lock.locked()`` would not say who holds it)."""
        if self._own:
            child.close()
        elif self._sent:
            child.lock.release()


def start() -> Inference:
    """The child that will infer one model's shapes: the process's own, started now on first
    need (its interpreter starts while the caller reads the model) and kept for the next
    models; a child of its own when another thread is using that one. The child leaves
    when this process does (its stdin closes)."""
    global _child
    ext = _extension() if os.name == "posix" else None  # select() on pipes: POSIX only
    if ext is None:
        return Inference(None, False)
    try:
        with _child_lock:
            if _child is None or not _child.alive():
                _child = _Child(ext)
            if not _child.lock.locked():
                return Inference(_child, False)
        return Inference(_Child(ext), True)
    except OSError as exc:
        log.debug("cannot start the shape-inference child: %s", exc)
        return Inference(None, False)


def infer_here(model: Any) -> Any:
    """Shape inference in this process (where no child could run), or the model itself."""
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:  # noqa: BLE001 - shape inference can fail on odd but runnable models
        log.debug("shape inference failed, FLOP estimate is partial: %s", exc)
        return model


def flops_of(inferred: Any) -> int:
    """Multiply-accumulates x2 of Conv, Gemm and MatMul in an inferred model, with dynamic
    dims taken as 1."""
    wanted: set[str] = set()  # the shapes the estimate reads: a few per Conv, Gemm, MatMul
    for node in inferred.graph.node:
        if node.op_type in ("Conv", "MatMul", "Gemm") and len(node.input) >= 2:
            wanted.update((node.input[0], node.input[1], node.output[0]) if node.output else ())
    shapes: dict[str, list[int]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.name not in wanted:
            continue
        if vi.type.WhichOneof("value") == "tensor_type" and vi.type.tensor_type.HasField("shape"):
            shapes[vi.name] = [
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                for d in vi.type.tensor_type.shape.dim
            ]
    for t in inferred.graph.initializer:
        if t.name in wanted:
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
        except Exception:  # noqa: BLE001 - an odd node never stops the estimate
            continue
    return int(flops)


def without_weights(model: Any) -> Any:
    """A copy of ``model`` with the data of its large initializers dropped (their dims and
    types stay), for a model that was read whole."""
    import onnx

    from .skeleton import KEEP_BYTES

    light = onnx.ModelProto()
    light.CopyFrom(model)
    for t in light.graph.initializer:
        if len(t.raw_data) > KEEP_BYTES:
            t.ClearField("raw_data")
        for name in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            if len(getattr(t, name)) * 4 > KEEP_BYTES:
                t.ClearField(name)
    return light
