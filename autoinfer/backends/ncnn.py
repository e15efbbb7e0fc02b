"""ncnn: Tencent's inference runtime for mobile and embedded CPUs, and Vulkan GPUs.

ncnn does not read ONNX. The model is converted once with the ``pnnx``
executable (see :mod:`._pnnx`) into an ncnn ``.param``/``.bin`` pair inside the
candidate's artifact directory, at concrete input shapes; later loads reuse the
files when their hashes still match.

Before a conversion is published it is run once in a child process on random
inputs and compared with ONNX Runtime. That catches what pnnx gets wrong
without saying so (a blob layout it guessed, an operator it translated into
something else) and keeps a graph that crashes ncnn out of the caller's
process: such a model is reported as :class:`~autoinfer.errors.UnsupportedModel`
with the reason, never run.

How the runner maps tensors:

- pnnx names the graph's blobs ``in0..`` and ``out0..`` in the ONNX model's
  input and output order; the counts are checked against the model.
- ncnn Mats have no batch axis. pnnx says, per blob, which axis it treats as the
  batch (its generated test script records it); that axis, of size 1, is
  dropped before feeding and restored on the way out, and every output is
  reshaped to the shape ONNX Runtime produced at the same input shapes and cast
  to the declared dtype.
- Batches larger than 1 run one sample at a time, and only for models whose
  inputs and outputs share a leading (batch) axis, either dynamic (the split is
  checked against ONNX Runtime at batch 2 when the model is converted) or fixed
  at N > 1 (pnnx converts a copy declaring 1; the split is checked at N). A
  model whose samples influence each other (a reduction over the batch, say)
  fails that check; any batch but the one it was converted at is then refused
  rather than guessed.
- int64 inputs (token ids) are fed as int32, as pnnx's graphs expect; values
  outside int32 are an input error.

Candidate settings: ``threads`` (Option.num_threads), ``winograd``
(use_winograd_convolution), ``sgemm`` (use_sgemm_convolution) and ``packing``
(use_packing_layout). Precision ``fp16`` turns on ncnn's fp16 storage (weights
and activations stored in 16 bits; on x86 arithmetic stays fp32), ``fp32`` turns
it off: ncnn's own default is fp16 storage, which an fp32 candidate must not get.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import json
import logging
import math
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._hw import threads_for
from .._lazy import import_optional
from .._proc import child_env, run_bounded
from ..errors import BackendError, BackendUnavailable, InputError, ModelError, UnsupportedModel
from . import _pnnx
from ._common import cpu_has, dist_version
from .base import (
    Availability,
    Backend,
    Candidate,
    Capabilities,
    Estimate,
    LoadContext,
    Runner,
    Unsupported,
    resolve_shapes,
)

if TYPE_CHECKING:  # pragma: no cover
    from probes import Hardware

    from ..model import ModelFacts

log = logging.getLogger("autoinfer.backends.ncnn")

NAME = "ncnn"
FIX = 'pip install "autoinfer[ncnn]" && pip install --no-deps pnnx'
_PNNX_FIX = "pip install --no-deps pnnx  (pnnx declares torch, but its converter does not need it)"
SETTINGS = ("threads", "winograd", "sgemm", "packing")
# ONNX operators pnnx leaves unconverted ("todo LSTM"): its ncnn graph would be wrong.
_UNCONVERTIBLE_OPS = {
    "LSTM": "pnnx does not convert the ONNX LSTM operator (it leaves it as 'todo LSTM')",
    "GRU": "pnnx does not convert the ONNX GRU operator (it leaves it as 'todo GRU')",
    "RNN": "pnnx does not convert the ONNX RNN operator",
}
_MAX_FEED_RANK = 4  # ncnn Mats have at most 4 axes (c, d, h, w)
_SELF_CHECK_RTOL = 1e-2
_SELF_CHECK_ATOL = 1e-3


# -- the runtime ------------------------------------------------------------------------


def import_ncnn() -> Any:
    """``import ncnn``, or BackendUnavailable with the extra to install."""
    return import_optional("ncnn", fix=FIX)


def _vulkan_loader_present() -> bool:
    """Whether the Vulkan loader library can be opened, without asking ncnn.

    ncnn prints a dlopen error per attempt when there is no loader; checking
    first keeps ``doctor`` quiet on machines without Vulkan.
    """
    names = {"win32": ("vulkan-1.dll",), "darwin": ("libvulkan.1.dylib", "libMoltenVK.dylib")}
    for lib in names.get(sys.platform, ("libvulkan.so.1", "libvulkan.so")):
        try:
            ctypes.CDLL(lib)
            return True
        except OSError:
            continue
    return False


@functools.lru_cache(maxsize=1)
def vulkan_gpu_count() -> int:
    """GPUs ncnn can compute on through Vulkan; 0 when built without Vulkan or none works."""
    try:
        ncnn = import_ncnn()
        if not hasattr(ncnn, "get_gpu_count") or not _vulkan_loader_present():
            return 0
        return max(0, int(ncnn.get_gpu_count()))
    except Exception as exc:  # a broken driver never breaks the CPU backend
        log.debug("ncnn Vulkan probe failed: %s", exc)
        return 0


def _fp16_storage_supported(hw: Hardware) -> bool:
    """ncnn stores fp16 on x86 through F16C and on ARM through NEON's half conversions."""
    cpu = getattr(hw, "cpu", None)
    if getattr(cpu, "is_arm", False):
        return cpu_has(hw, "asimd") or cpu_has(hw, "fphp") or cpu_has(hw, "neon")
    return cpu_has(hw, "f16c")


def _fp16_arithmetic(hw: Hardware) -> bool:
    return bool(getattr(getattr(hw, "cpu", None), "is_arm", False)) and (
        cpu_has(hw, "asimdhp") or cpu_has(hw, "fphp")
    )


# -- static model checks ------------------------------------------------------------------


def _static_reason(model: ModelFacts) -> str | None:
    """Why ncnn cannot run ``model``, judged from its facts alone; None if it may."""
    for spec in model.inputs:
        if spec.dtype not in _pnnx.PNNX_TYPES:
            return (
                f"input {spec.name!r} is {spec.dtype}; ncnn takes float32 tensors and "
                "integer ids (int32/int64) only"
            )
        if spec.shape is not None and not 1 <= len(spec.shape) <= _MAX_FEED_RANK + 1:
            return (
                f"input {spec.name!r} has rank {len(spec.shape)}; ncnn tensors have 1 to "
                f"{_MAX_FEED_RANK} axes plus a batch axis"
            )
    for spec in model.outputs:
        if spec.dtype != "float32":
            return f"output {spec.name!r} is {spec.dtype}; ncnn graphs produce float32 tensors only"
    for op, why in _UNCONVERTIBLE_OPS.items():
        if model.op_count(op):
            return why
    return None


def _batch_axis(model: ModelFacts) -> tuple[bool, int | None]:
    """Whether axis 0 may be a batch to split into samples, and its fixed size if declared.

    Either every input and output declares a dynamic leading axis (the same one
    by name): (True, None); or every input declares the same fixed leading size
    B > 1 and no output declares another: (True, B). Anything else: (False, None).
    Splitting is still checked against ONNX Runtime when the model is converted.
    """
    lead = set()
    for spec in model.inputs:
        if not spec.shape:
            return False, None
        lead.add(spec.shape[0])
    dynamic = not any(isinstance(d, int) for d in lead)
    if dynamic:
        names = {d for d in lead if isinstance(d, str)}
    elif len(lead) == 1 and next(iter(lead)) > 1:  # type: ignore[operator]
        fixed = int(next(iter(lead)))  # type: ignore[arg-type]
    else:
        return False, None
    for spec in model.outputs:
        if spec.shape is None:  # rank unknown: the check at conversion decides
            continue
        if not spec.shape:
            return False, None
        d = spec.shape[0]
        if dynamic:
            if isinstance(d, int):
                return False, None
            if isinstance(d, str):
                names.add(d)
        elif isinstance(d, int) and d != fixed:
            return False, None
    if dynamic:
        return len(names) <= 1, None
    return True, fixed


# -- settings -> ncnn.Option ---------------------------------------------------------------


def _configure(opt: Any, candidate: Candidate, threads: int) -> None:
    fp16 = candidate.precision == "fp16"
    opt.num_threads = max(1, int(candidate.get("threads", threads) or threads))
    opt.lightmode = True
    opt.use_vulkan_compute = candidate.device == "vulkan"
    opt.use_fp16_storage = fp16
    opt.use_fp16_packed = fp16
    opt.use_fp16_arithmetic = fp16  # only CPUs with fp16 ALUs (ARMv8.2 asimdhp) and GPUs use it
    opt.use_bf16_storage = False
    if hasattr(opt, "use_bf16_packed"):
        opt.use_bf16_packed = False
    winograd = bool(candidate.get("winograd", True))
    opt.use_winograd_convolution = winograd
    for attr in ("use_winograd23_convolution", "use_winograd43_convolution", "use_winograd63_convolution"):
        if hasattr(opt, attr):
            setattr(opt, attr, winograd)
    opt.use_sgemm_convolution = bool(candidate.get("sgemm", True))
    opt.use_packing_layout = bool(candidate.get("packing", True))


def _open_net(ncnn: Any, directory: Path, candidate: Candidate, threads: int) -> Any:
    net = ncnn.Net()
    _configure(net.opt, candidate, threads)
    if candidate.device == "vulkan" and hasattr(net, "set_vulkan_device"):
        net.set_vulkan_device(int(candidate.get("gpu", 0) or 0))
    rc = net.load_param(str(directory / _pnnx.PARAM))
    if rc != 0:
        net.clear()
        raise BackendError(NAME, f"ncnn could not load {directory / _pnnx.PARAM} (status {rc})")
    rc = net.load_model(str(directory / _pnnx.BIN))
    if rc != 0:
        net.clear()
        raise BackendError(NAME, f"ncnn could not load {directory / _pnnx.BIN} (status {rc})")
    return net


# -- the runner ------------------------------------------------------------------------------


class NcnnRunner(Runner):
    """Runs a converted model; one ncnn Extractor per call (and per sample)."""

    def __init__(self, candidate: Candidate, manifest: Mapping[str, Any], net: Any, ncnn: Any) -> None:
        self.candidate = candidate
        self._ncnn = ncnn
        self._net = net
        ins, outs = manifest["inputs"], manifest["outputs"]
        self.input_names = tuple(i["name"] for i in ins)
        self.output_names = tuple(o["name"] for o in outs)
        self._in_blobs = tuple(i["blob"] for i in ins)
        self._in_axes = tuple(i["batch_index"] for i in ins)
        self._in_feed = tuple(np.dtype(i["feed_dtype"]) for i in ins)
        self._in_shapes = tuple(tuple(i["shape"]) for i in ins)
        self._out_blobs = tuple(o["blob"] for o in outs)
        self._out_shapes = tuple(tuple(o["shape"]) for o in outs)
        self._out_dtypes = tuple(np.dtype(o["dtype"]) for o in outs)
        self._loop = bool(manifest.get("batch_loop"))
        self._no_split_reason = "" if self._loop else str(manifest.get("batch_loop_reason") or "")
        # CPU extractors of one Net may run concurrently (ncnn documents
        # create_extractor as thread-safe); Vulkan ones share allocators, so serialise.
        self._serial = threading.Lock() if candidate.device == "vulkan" else None
        self._state = threading.Condition()
        self._active = 0
        self._closed = False

    # public ------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        arrays = [feeds[n] for n in self.input_names]  # checked by the Session
        batch = self._batch_of(arrays)
        arrays = [
            self._to_feed_dtype(n, a, dt)
            for n, a, dt in zip(self.input_names, arrays, self._in_feed, strict=True)
        ]
        with self._state:
            if self._closed:
                raise BackendError(NAME, "this runner is closed")
            self._active += 1
        try:
            with self._serial if self._serial is not None else contextlib.nullcontext():
                if not self._loop:
                    return self._extract(arrays)
                if batch == 0:
                    return [
                        np.empty((0, *s[1:]), dtype=dt)
                        for s, dt in zip(self._out_shapes, self._out_dtypes, strict=True)
                    ]
                per_sample = [self._extract([a[b : b + 1] for a in arrays]) for b in range(batch)]
                return [
                    np.concatenate([s[j] for s in per_sample], axis=0) for j in range(len(self.output_names))
                ]
        finally:
            with self._state:
                self._active -= 1
                self._state.notify_all()

    def close(self) -> None:
        with self._state:
            if self._closed:
                return
            self._closed = True
            while self._active:
                self._state.wait()
        with contextlib.suppress(Exception):
            self._net.clear()

    # internals ---------------------------------------------------------------------------
    def _batch_of(self, arrays: Sequence[np.ndarray]) -> int:
        if self._loop:
            batches = {int(a.shape[0]) if a.ndim else -1 for a in arrays}
            ok = len(batches) == 1 and all(
                a.shape[1:] == s[1:] for a, s in zip(arrays, self._in_shapes, strict=True)
            )
            if ok:
                return batches.pop()
        elif all(a.shape == s for a, s in zip(arrays, self._in_shapes, strict=True)):
            return 1
        got = {n: list(a.shape) for n, a in zip(self.input_names, arrays, strict=True)}
        want = {
            n: (["batch", *s[1:]] if self._loop else list(s))
            for n, s in zip(self.input_names, self._in_shapes, strict=True)
        }
        hint = (
            "ncnn runs the shapes it was converted at: load the model again with "
            "input_shapes set to these shapes"
        )
        if self._no_split_reason:
            hint += (
                f" (a batch other than {self._in_shapes[0][0]} cannot run on ncnn: {self._no_split_reason})"
            )
        raise InputError(f"ncnn converted this model for input shapes {want}; got {got}. " + hint)

    @staticmethod
    def _to_feed_dtype(name: str, a: np.ndarray, dt: np.dtype) -> np.ndarray:
        if a.dtype == dt:
            return a
        if dt == np.int32 and a.dtype.kind in "iu":
            if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
                raise InputError(
                    f"input {name!r}: ncnn takes integer inputs as int32 and a value is outside its range"
                )
            return a.astype(np.int32)
        return a.astype(dt)

    def _extract(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        ncnn = self._ncnn
        try:
            ex = self._net.create_extractor()
            mats = []
            for blob, a, axis in zip(self._in_blobs, arrays, self._in_axes, strict=True):
                x = a if axis is None else a.reshape(a.shape[:axis] + a.shape[axis + 1 :])
                # Mat(array) borrows the array's memory with numpy's channel step; ncnn's
                # kernels assume its own aligned channel step (unaligned 4-D inputs crash
                # them), so copy into an ncnn-allocated Mat.
                mat = ncnn.Mat(np.ascontiguousarray(x)).clone()
                mats.append(mat)
                rc = ex.input(blob, mat)
                if rc != 0:
                    raise BackendError(NAME, f"ncnn refused input blob {blob} (status {rc})")
            outs = []
            for blob, shape, dt in zip(self._out_blobs, self._out_shapes, self._out_dtypes, strict=True):
                rc, mat = ex.extract(blob)
                if rc != 0:
                    raise BackendError(NAME, f"ncnn failed computing output blob {blob} (status {rc})")
                y = np.array(mat, dtype=np.float32, copy=True)
                if y.size != math.prod(shape):
                    raise BackendError(
                        NAME,
                        f"ncnn produced {y.size} values ({list(y.shape)}) "
                        f"for output blob {blob}, expected shape {list(shape)}",
                    )
                outs.append(y.reshape(shape).astype(dt, copy=False))
            del mats
            return outs
        except (BackendError, InputError):
            raise
        except Exception as exc:
            raise BackendError(NAME, f"ncnn failed: {type(exc).__name__}: {exc}") from None


# -- conversion ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    shapes: dict[str, tuple[int, ...]]  # the shapes pnnx converts at
    batch: int  # the batch the caller will feed
    loop: bool  # split axis 0 into samples of batch 1
    single: bool  # the model accepts batch 1 (checkable as such)
    check_batch: int  # the batch the split is checked at


def _plan(model: ModelFacts, ctx: LoadContext) -> _Plan:
    try:
        shapes = resolve_shapes(model, ctx.input_shapes)
    except ValueError as exc:
        raise UnsupportedModel(
            NAME, f"ncnn needs concrete input shapes at load time: {exc}; pass input_shapes"
        ) from None
    for name, shape in shapes.items():
        if not shape or any(d <= 0 for d in shape):
            raise UnsupportedModel(
                NAME,
                f"input {name!r} has shape {list(shape)}; ncnn needs at least one axis and no empty axes",
            )
    splittable, fixed = _batch_axis(model)
    batches = {s[0] for s in shapes.values()}
    if splittable and len(batches) == 1:
        one = {n: (1, *s[1:]) for n, s in shapes.items()}
        if fixed is None:
            return _Plan(one, batches.pop(), loop=True, single=True, check_batch=2)
        return _Plan(one, fixed, loop=True, single=False, check_batch=fixed)
    return _Plan(shapes, 1, loop=False, single=True, check_batch=0)


def _request(
    model: ModelFacts, shapes: Mapping[str, tuple[int, ...]], versions: Mapping[str, str]
) -> _pnnx.Request:
    return _pnnx.Request(
        model_path=Path(model.path),
        model_sha256=model.sha256,
        external_data=tuple(Path(p) for p in model.external_data),
        inputs=tuple((s.name, s.dtype, tuple(shapes[s.name])) for s in model.inputs),
        outputs=tuple((s.name, s.dtype) for s in model.outputs),
        versions=dict(versions),
    )


def _check_written(workdir: Path, log_text: str) -> None:
    """pnnx converted every operator and wrote the param, bin and script files."""
    flags = _pnnx.red_flags(log_text)
    if flags:
        raise _pnnx.ConversionError(
            "pnnx left operator(s) it cannot express in ncnn unconverted: "
            + ", ".join(flags[:8])
            + (" (Tensor.to is an ONNX Cast)" if "Tensor.to" in flags else "")
        )
    for f in (_pnnx.PARAM, _pnnx.BIN, _pnnx.SCRIPT):
        if not (workdir / f).is_file():
            raise _pnnx.ConversionError(
                f"pnnx finished without writing {f}; its last output: {_pnnx.tail(log_text) or '(none)'}"
            )


def _check_blobs(workdir: Path, req: _pnnx.Request) -> tuple[list[str], list[str]]:
    """(input blobs, output blobs) of the ncnn graph, one per input and output of the model."""
    in_blobs, produced, _ = _pnnx.read_param_blobs(
        (workdir / _pnnx.PARAM).read_text(encoding="utf-8", errors="replace")
    )
    want_in = [f"in{i}" for i in range(len(req.inputs))]
    want_out = [f"out{i}" for i in range(len(req.outputs))]
    if sorted(in_blobs) != sorted(want_in):
        raise _pnnx.ConversionError(
            f"the ncnn graph has input blobs {in_blobs}, but the model has {len(req.inputs)} "
            f"input(s) {[n for n, _, _ in req.inputs]}"
        )
    outs_found = sorted(b for b in set(produced) if re.fullmatch(r"out\d+", b))
    if outs_found != sorted(want_out):
        raise _pnnx.ConversionError(
            f"the ncnn graph has output blobs {outs_found}, but the model has "
            f"{len(req.outputs)} output(s) {[n for n, _ in req.outputs]}"
        )
    return want_in, want_out


def _input_entry(
    blob: str, name: str, dtype: str, shape: tuple[int, ...], axis: int, blob_type: str
) -> dict[str, Any]:
    """The manifest entry of one input, refused where ncnn cannot take it as pnnx laid it out."""
    batch: int | None = None if axis == _pnnx.NO_BATCH else axis
    if batch is not None and (batch >= len(shape) or shape[batch] != 1):
        raise _pnnx.ConversionError(
            f"pnnx treats axis {batch} of input {name!r} {list(shape)} as its batch axis; "
            "ncnn runs one sample at a time and that axis is not 1"
        )
    rank = len(shape) - (batch is not None)
    if rank > _MAX_FEED_RANK:
        raise _pnnx.ConversionError(
            f"input {name!r} {list(shape)} would be a {rank}-axis "
            f"ncnn tensor; ncnn has at most {_MAX_FEED_RANK}"
        )
    feed = "int32" if blob_type in ("int", "int32", "long", "int64") else "float32"
    if (feed == "int32") != (dtype in ("int64", "int32")):
        raise _pnnx.ConversionError(f"pnnx expects input {name!r} as {feed}, but it is {dtype}")
    return {
        "name": name,
        "blob": blob,
        "batch_index": batch,
        "feed_dtype": feed,
        "dtype": dtype,
        "shape": list(shape),
    }


def _layout(workdir: Path, req: _pnnx.Request, log_text: str) -> dict[str, Any]:
    """The draft manifest: blob names and batch axes, checked against the model."""
    _check_written(workdir, log_text)
    want_in, want_out = _check_blobs(workdir, req)
    script = (workdir / _pnnx.SCRIPT).read_text(encoding="utf-8", errors="replace")
    in_axes, out_axes, in_types = _pnnx.read_layout(script)
    if set(in_axes) != set(want_in) or set(out_axes) != set(want_out):
        raise _pnnx.ConversionError(
            "pnnx's generated script does not describe every input "
            "and output blob; autoinfer cannot tell their layout"
        )
    inputs = [
        _input_entry(blob, name, dtype, shape, in_axes[blob], in_types.get(blob, "float"))
        for blob, (name, dtype, shape) in zip(want_in, req.inputs, strict=True)
    ]
    outputs = [
        {
            "name": name,
            "blob": blob,
            "batch_index": None if out_axes[blob] == _pnnx.NO_BATCH else out_axes[blob],
            "dtype": dtype,
            "shape": None,
        }
        for blob, (name, dtype) in zip(want_out, req.outputs, strict=True)
    ]
    return {
        "format": _pnnx.FORMAT,
        "key": req.key(),
        "backend": NAME,
        "model_sha256": req.model_sha256,
        "versions": dict(req.versions),
        "inputs": inputs,
        "outputs": outputs,
    }


def _self_check(workdir: Path, plan: _Plan, timeout_s: float) -> dict[str, Any]:
    """Run the converted graph in a child process against ONNX Runtime."""
    pkg_root = str(Path(__file__).resolve().parents[2])
    pythonpath = pkg_root + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    env = child_env({"PYTHONPATH": pythonpath})  # with every runtime's telemetry opt-outs
    env.setdefault("OMP_NUM_THREADS", "1")
    args = [sys.executable, "-m", "autoinfer.backends.ncnn", "--self-check", str(workdir)]
    if plan.loop:
        args += ["--batch", str(plan.check_batch)]
    if not plan.single:
        args.append("--no-single")
    result = workdir / "check.json"
    if timeout_s <= 0:
        raise _pnnx.ConversionError(
            "the conversion used up its time limit before the converted graph could be checked", failed=True
        )
    try:
        proc = run_bounded(args, timeout_s=timeout_s, env=env)
    except OSError as exc:
        raise _pnnx.ConversionError(
            f"the check of the converted ncnn graph could not be started ({exc.strerror or exc})", failed=True
        ) from None
    if proc.timed_out:
        raise _pnnx.ConversionError(
            f"the converted ncnn graph did not finish one inference within {timeout_s:g} s", failed=True
        )
    out = proc.output
    if proc.returncode < 0:
        raise _pnnx.ConversionError(
            f"ncnn crashed (signal {-proc.returncode}) running the "
            f"converted graph; its last output: "
            f"{_pnnx.tail(out, 4) or '(none)'}",
            failed=True,
        )
    try:
        report = json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise _pnnx.ConversionError(
            f"the check of the converted ncnn graph failed (exit status "
            f"{proc.returncode}): {_pnnx.tail(out, 6) or '(no output)'}"
        ) from None
    if not report.get("ok"):
        raise _pnnx.ConversionError(str(report.get("reason") or "the converted graph failed"))
    return report


def convert(
    model: ModelFacts, ctx: LoadContext, versions: Mapping[str, str]
) -> tuple[Path, dict[str, Any], int]:
    """The conversion for ``model`` at the load context's shapes: (directory, manifest, batch).

    Reuses an intact earlier conversion; otherwise converts, checks and publishes
    one. Raises UnsupportedModel with the reason when pnnx refuses the model or the check
    finds it computes something else; BackendError when pnnx or the check crashes or hangs.
    """
    plan = _plan(model, ctx)
    req = _request(model, plan.shapes, versions)
    artifact_dir = Path(ctx.artifact_dir)
    final = _pnnx.final_dir(artifact_dir, req)
    man = _pnnx.read_manifest(final, req)
    if man is not None:
        log.debug("reusing ncnn conversion %s", final)
    else:
        if final.exists():
            _pnnx.discard(final)
        man = _convert_fresh(req, artifact_dir, final, plan, ctx.timeout_s)
    if plan.batch != 1 and not man.get("batch_loop"):
        why = man.get("batch_loop_reason") or "this model cannot be split into samples"
        raise UnsupportedModel(NAME, f"batch {plan.batch}: ncnn runs one sample at a time and {why}")
    return final, man, plan.batch


def _conversion_error(exc: _pnnx.ConversionError) -> BackendError | UnsupportedModel:
    """A crash, hang or failed start of the converter or of the check is a load failure
    (BackendError); pnnx refusing the model, or a conversion that computes something else,
    is UnsupportedModel with the reason."""
    return BackendError(NAME, exc.reason) if exc.failed else UnsupportedModel(NAME, exc.reason)


def _convert_fresh(
    req: _pnnx.Request, artifact_dir: Path, final: Path, plan: _Plan, timeout_s: float
) -> dict[str, Any]:
    exe = _pnnx.pnnx_executable()
    if exe is None or not _pnnx.is_executable(exe):
        raise BackendUnavailable(
            "the pnnx converter is not installed"
            if exe is None
            else f"the pnnx converter at {exe} is not executable",
            fix=_PNNX_FIX,
        )
    if not req.model_path.is_file():
        raise ModelError(f"{req.model_path}: no such file (it was there when its facts were read)")
    t0 = time.monotonic()
    try:
        workdir = _pnnx.make_workdir(artifact_dir, req)
    except OSError as exc:
        raise BackendError(NAME, f"cannot prepare a conversion directory in {artifact_dir}: {exc}") from None
    except _pnnx.ConversionError as exc:
        raise _conversion_error(exc) from None
    try:
        # The model itself stays the reference the check compares with.
        source = _pnnx.pnnx_input(workdir, leading_one=not plan.single)
        text = _pnnx.run_pnnx(exe, workdir, req, timeout_s, source)
        man = _layout(workdir, req, text)
        (workdir / _pnnx.MANIFEST).write_text(json.dumps(man), encoding="utf-8")
        report = _self_check(workdir, plan, timeout_s - (time.monotonic() - t0))
        for o, shape in zip(man["outputs"], report["output_shapes"], strict=True):
            o["shape"] = shape
        man["batch_loop"] = bool(plan.loop and report.get("batch_loop"))
        man["batch_loop_reason"] = report.get("batch_loop_reason", "")
        man["check"] = report.get("check", {})
        man["convert_s"] = round(time.monotonic() - t0, 3)
        _pnnx.keep_only(workdir, [_pnnx.PARAM, _pnnx.BIN])
        _pnnx.write_manifest(workdir, man)
        published = _pnnx.publish(workdir, final, req)
    except _pnnx.ConversionError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise _conversion_error(exc) from None
    except OSError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise BackendError(NAME, f"cannot write the ncnn conversion in {artifact_dir}: {exc}") from None
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    log.info("converted %s to ncnn in %.2f s", req.model_path.name, man["convert_s"])
    return _pnnx.read_manifest(published, req) or man


# -- the backend ------------------------------------------------------------------------------------


# A conversion by pnnx and its check take about this many loads of the model by the reference.
CONVERSION_LOADS = 12.0


class NcnnBackend(Backend):
    name = NAME
    package = "ncnn"
    pip_extra = "ncnn"
    capabilities = Capabilities(
        devices=("cpu", "vulkan"),
        precisions=("fp32", "fp16"),
        dynamic_shapes=False,
        needs_conversion=True,
        reference=False,
    )

    def versions(self) -> dict[str, str]:
        out = {}
        for dist in ("ncnn", "pnnx"):
            v = dist_version(dist)
            if v:
                out[dist] = v
        return out

    def availability(self, hw: Hardware) -> Availability:
        installed_version = dist_version("ncnn")
        try:
            ncnn = import_ncnn()
        except BackendUnavailable as exc:
            return Availability(
                NAME,
                installed=installed_version is not None,
                usable=False,
                version=installed_version,
                reason=str(exc) if installed_version else "ncnn is not installed",
                fix=FIX,
            )
        except Exception as exc:  # never raises
            return Availability(
                NAME,
                installed=True,
                usable=False,
                version=installed_version,
                reason=f"ncnn fails on import: {exc}",
                fix="pip install --force-reinstall ncnn",
            )
        version = installed_version or str(getattr(ncnn, "__version__", "")) or None
        exe = _pnnx.pnnx_executable()
        if exe is None:
            return Availability(
                NAME,
                installed=True,
                usable=False,
                version=version,
                reason="the pnnx converter (ONNX -> ncnn) is not installed",
                fix=FIX,
            )
        if not _pnnx.is_executable(exe):
            return Availability(
                NAME,
                installed=True,
                usable=False,
                version=version,
                reason=f"the pnnx converter at {exe} is not executable",
                fix=f"chmod +x {exe}  (or: pip install --force-reinstall --no-deps pnnx)",
            )
        devices = ("cpu", "vulkan") if vulkan_gpu_count() > 0 else ("cpu",)
        return Availability(NAME, installed=True, usable=True, version=version, devices=devices)

    # -- choice -------------------------------------------------------------------------------

    def candidates(self, model: ModelFacts, hw: Hardware, objective: str) -> list[Candidate | Unsupported]:
        combos = [("cpu", "fp32")]
        if _fp16_storage_supported(hw):
            combos.append(("cpu", "fp16"))
        if vulkan_gpu_count() > 0:
            combos += [("vulkan", "fp32"), ("vulkan", "fp16")]
        why = _static_reason(model)
        if why is not None:
            return [Unsupported(NAME, d, p, why) for d, p in combos]
        return [Candidate.make(NAME, d, p) for d, p in combos]

    def variants(
        self, candidate: Candidate, model: ModelFacts, hw: Hardware, objective: str
    ) -> list[Candidate]:
        if candidate.device != "cpu":
            return []
        cores = threads_for(hw)
        tiny = model.flops < 20_000_000
        convs = model.op_count("Conv") > 0
        out: list[dict[str, Any]] = []
        if cores > 1 and (tiny or objective == "throughput"):
            out.append({"threads": 1})
        if convs:
            out += [{"winograd": False}, {"sgemm": False}]
        out.append({"packing": False})
        if cores >= 4 and not tiny:
            out.append({"threads": cores // 2})
        base = candidate.settings_dict
        seen, result = set(), []
        for change in out:
            if all(base.get(k) == v for k, v in change.items()):
                continue
            c = candidate.with_settings(**change)
            if c.key not in seen:
                seen.add(c.key)
                result.append(c)
        return result[:5]

    def expected_load_s(
        self, candidate: Candidate, model: ModelFacts, ctx: LoadContext, reference_load_s: float
    ) -> float:
        """A conversion not yet in the artifact directory: pnnx, then the check of the
        converted graph, about a dozen reference loads (measured on x86 CPUs: 10x to 14x);
        a finished one only opens its files."""
        try:
            plan = _plan(model, ctx)
            req = _request(model, plan.shapes, self.versions())
            if (_pnnx.final_dir(Path(ctx.artifact_dir), req) / _pnnx.MANIFEST).is_file():
                return reference_load_s
        except Exception:  # noqa: BLE001 - an estimate never raises; load() will say why
            pass
        return 0.5 + CONVERSION_LOADS * reference_load_s

    def estimate(self, candidate: Candidate, model: ModelFacts, hw: Hardware, objective: str) -> Estimate:
        cpu = getattr(hw, "cpu", None)
        arm = bool(getattr(cpu, "is_arm", False))
        reasons: list[str] = []
        attention = model.op_count("Softmax", "LayerNormalization") > 0 and model.op_count("MatMul") > 0
        convs = model.op_count("Conv")
        gemms = model.op_count("MatMul", "Gemm")
        if candidate.device == "vulkan":
            if model.flops > 1_000_000_000:
                cost = 0.6
                reasons.append("a Vulkan GPU beats the CPU on a model of this size")
            else:
                cost = 1.5
                reasons.append("small model: Vulkan upload and dispatch overhead dominates")
        elif arm:
            cost = 0.85
            reasons.append("ncnn's ARM NEON kernels are tuned for mobile CPUs")
            if convs and model.flops < 2_000_000_000:
                cost *= 0.8
                reasons.append("small convolutional net: ncnn's home ground on ARM")
        else:
            # Measured on an AVX2 x86 CPU: MobileNetV2 1.3x, ResNet-50 1.15x ONNX Runtime.
            cost = 1.3
            reasons.append("on x86 ncnn's kernels usually trail ONNX Runtime's MLAS")
            if gemms > convs:
                cost *= 1.25
                reasons.append("GEMM-heavy model: the gap to MLAS grows")
            elif convs and model.flops > 2_000_000_000:
                cost *= 0.9
                reasons.append("large convolutional net: the gap to ONNX Runtime narrows")
        if model.flops < 1_000_000 and candidate.device == "cpu":
            cost *= 2.0
            reasons.append(
                "tiny model: ncnn's per-call overhead (~35 us through its Python binding) dominates"
            )
        if attention:
            cost *= 1.3
            reasons.append(
                "attention blocks convert through pnnx pattern matching: "
                "conversion risk, and ncnn's MatMul is not its strength"
            )
        if candidate.precision == "fp16":
            if candidate.device == "cpu" and _fp16_arithmetic(hw):
                cost *= 0.6
                reasons.append("fp16 storage and arithmetic on this ARM CPU")
            elif candidate.device == "cpu":
                reasons.append(
                    "fp16 storage halves weight memory; arithmetic stays fp32, "
                    "so it is rarely faster on this CPU"
                )
            else:
                cost *= 0.7
                reasons.append("fp16 on the GPU")
        if objective == "load_time":
            cost *= 2.0
            reasons.append(
                "the first load converts with pnnx and checks the result "
                "(seconds); later loads reuse the conversion"
            )
        elif objective == "memory":
            cost *= 0.7
            reasons.append("ncnn's light mode frees intermediate tensors as it goes")
        elif objective == "throughput" and candidate.device == "cpu":
            reasons.append("batches run one sample at a time")
        return Estimate(round(cost, 3), tuple(reasons))

    # -- loading ---------------------------------------------------------------------------------

    def load(self, candidate: Candidate, model: ModelFacts, ctx: LoadContext) -> Runner:
        if candidate.backend != NAME:
            raise BackendError(NAME, f"candidate {candidate.key} is not an ncnn candidate")
        unknown = set(candidate.settings_dict) - set(SETTINGS) - {"gpu"}
        if unknown:
            raise BackendError(
                NAME, f"unknown ncnn settings {sorted(unknown)}; expected some of {list(SETTINGS)}"
            )
        if candidate.device not in ("cpu", "vulkan") or candidate.precision not in ("fp32", "fp16"):
            raise UnsupportedModel(
                NAME,
                f"ncnn runs on cpu or vulkan in fp32 or fp16, not {candidate.device} {candidate.precision}",
            )
        ncnn = import_ncnn()
        if candidate.device == "vulkan" and vulkan_gpu_count() == 0:
            raise BackendUnavailable(
                "ncnn found no Vulkan GPU here", fix="install a Vulkan driver (libvulkan) for the GPU"
            )
        why = _static_reason(model)
        if why is not None:
            raise UnsupportedModel(NAME, why)
        directory, manifest, _ = convert(model, ctx, self.versions())
        net = _open_net(ncnn, directory, candidate, max(1, int(ctx.threads)))
        return NcnnRunner(candidate, manifest, net, ncnn)


# -- the check child: python -m autoinfer.backends.ncnn --self-check DIR -------------------------


def _feeds(man: Mapping[str, Any], batch: int | None, seed: int) -> dict[str, np.ndarray]:
    """Random inputs for the conversion check, from the manifest (the child has no model facts).

    Not ``measure.sample_feeds``: that draws floats in [0, 1), inputs the model accepts; this
    check asks whether pnnx translated every operator faithfully, and standard-normal floats
    (both signs) also exercise the negative side of each activation, clip and comparison that
    [0, 1) would leave untested."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in man["inputs"]:
        shape = list(i["shape"])
        if batch is not None:
            shape[0] = batch
        if i["dtype"] in ("int64", "int32"):
            # 0 and 1 are valid ids for any embedding table, mask and token-type input
            feeds[i["name"]] = rng.integers(0, 2, size=shape).astype(i["dtype"])
        else:
            feeds[i["name"]] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _check_child(workdir: Path, batch: int, single: bool) -> dict[str, Any]:
    """Compare the graph with ONNX Runtime at batch 1 (``single``) and split at ``batch``."""
    from .onnxruntime import import_ort

    ort = import_ort()  # with its telemetry off
    man = json.loads((workdir / _pnnx.MANIFEST).read_text(encoding="utf-8"))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(workdir / "model.onnx"), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        return {
            "ok": False,
            "reason": "no reference to check the converted ncnn graph "
            f"against: onnxruntime cannot load the model ({exc})"[:600],
        }
    ncnn = import_ncnn()
    cand = Candidate.make(NAME, "cpu", "fp32")
    net = _open_net(ncnn, workdir, cand, 1)
    report: dict[str, Any] = {
        "ok": True,
        "batch_loop": False,
        "batch_loop_reason": "",
        "check": {"reference": f"onnxruntime {ort.__version__}"},
    }
    if single:
        feeds = _feeds(man, None, 0)
        try:
            refs = sess.run(None, feeds)
        except Exception as exc:
            return {
                "ok": False,
                "reason": "no reference to check the converted ncnn graph "
                f"against: onnxruntime cannot run it ({exc})"[:600],
            }
        for o, r in zip(man["outputs"], refs, strict=True):
            o["shape"] = list(r.shape)
        why, errs = _agree(NcnnRunner(cand, {**man, "batch_loop": False}, net, ncnn), feeds, refs, man)
        if why:
            return {"ok": False, "reason": why + ": pnnx translated the model into something else"}
        report["output_shapes"] = [list(r.shape) for r in refs]
        report["check"]["max_abs_error"] = errs
    if batch:
        split = _check_split(sess, man, cand, net, ncnn, batch)
        if not single and not split.get("batch_loop"):
            return {
                "ok": False,
                "reason": f"batch {batch}: ncnn runs one sample at a time and {split['batch_loop_reason']}",
            }
        report.update(split)
    net.clear()
    return report


def _agree(
    runner: NcnnRunner, feeds: Mapping[str, np.ndarray], refs: Sequence[np.ndarray], man: Mapping[str, Any]
) -> tuple[str, list[float]]:
    """('', errors) when the runner matches ``refs``, else (why not, errors)."""
    from ..compare import compare

    outs = runner.run(feeds)
    errs = []
    for o, got, ref in zip(man["outputs"], outs, refs, strict=True):
        ok, err, _rel, why = compare([got], [ref], _SELF_CHECK_RTOL, _SELF_CHECK_ATOL)
        errs.append(err)
        if not ok:
            why = re.sub(r"^output 0:? *", "", why)  # compared alone, it is "output 0"
            return (
                f"the converted ncnn graph disagrees with ONNX Runtime on output "
                f"{o['name']!r} (max abs error {err:.3g} on random inputs: {why})"
            ), errs
    return "", errs


def _check_split(
    sess: Any, man: dict[str, Any], cand: Candidate, net: Any, ncnn: Any, batch: int
) -> dict[str, Any]:
    """Whether running ``batch`` samples one by one gives ONNX Runtime's batched answer."""
    feeds = _feeds(man, batch, 1)
    try:
        refs = sess.run(None, feeds)
    except Exception as exc:
        return {
            "batch_loop": False,
            "batch_loop_reason": f"ONNX Runtime cannot run this model at batch {batch} ({exc})"[:300],
        }
    shapes = []
    for o, r in zip(man["outputs"], refs, strict=True):
        sample = [1, *r.shape[1:]] if r.ndim and r.shape[0] == batch else None
        if sample is None or (o.get("shape") is not None and list(o["shape"]) != sample):
            return {
                "batch_loop": False,
                "batch_loop_reason": f"output {o['name']!r} has no leading batch axis",
            }
        shapes.append(sample)
    for o, shape in zip(man["outputs"], shapes, strict=True):
        o["shape"] = shape
    why, errs = _agree(NcnnRunner(cand, {**man, "batch_loop": True}, net, ncnn), feeds, refs, man)
    if why:
        return {
            "batch_loop": False,
            "batch_loop_reason": "samples of a batch influence each other's results ("
            + why.replace("the converted ncnn graph ", "the split ")
            + ")",
        }
    return {"batch_loop": True, "batch_loop_reason": "", "output_shapes": shapes, "split_max_abs_error": errs}


def _main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m autoinfer.backends.ncnn")
    p.add_argument("--self-check", type=Path, required=True, metavar="DIR")
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--no-single", dest="single", action="store_false")
    a = p.parse_args(argv)
    try:
        report = _check_child(a.self_check, a.batch, a.single)
    except Exception as exc:
        report = {
            "ok": False,
            "reason": f"the converted ncnn graph fails to run: {type(exc).__name__}: {exc}"[:600],
        }
    (a.self_check / "check.json").write_text(json.dumps(report), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
