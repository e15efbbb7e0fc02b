"""ONNX -> ncnn conversion with the ``pnnx`` executable, cached and verified.

pnnx ships as a wheel whose Python package declares torch as a dependency, but
its executable is self-contained: this module finds the executable next to the
package's ``__init__.py`` without importing the package, and runs it in a
subprocess. Nothing here imports ncnn or onnxruntime.

One conversion lives in one directory ``<artifact_dir>/ncnn-<key>/`` holding
``model.ncnn.param``, ``model.ncnn.bin`` and ``manifest.json``. The key hashes
everything the files depend on (the model's bytes, the input shapes it was
converted at, the pnnx and ncnn versions). The manifest records how autoinfer
feeds and reads the graph (blob names, which axis pnnx treats as the batch, the
dtype ncnn expects) and the sha256 of both files, so a later load reuses the
files only when they are intact.

A conversion runs in a private temporary directory next to its final place and
is published with one ``os.replace``: two processes converting the same model
at once both finish, and one of the two identical results wins. pnnx writes its
side files (TorchScript-free ``.pnnx.*`` graphs, Python scripts, a simplified
ONNX) next to its input, so the model is linked into the temporary directory
first and the user's model directory is never written to.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._proc import run_bounded

log = logging.getLogger("autoinfer.backends.ncnn")

PARAM = "model.ncnn.param"
BIN = "model.ncnn.bin"
MANIFEST = "manifest.json"
SCRIPT = "model_ncnn.py"
LOG = "pnnx.log"
# Bump when the manifest's meaning or the conversion arguments change.
FORMAT = 1
NO_BATCH = 233  # pnnx's marker: "this blob has no batch axis"

# ONNX dtype -> pnnx's inputshape type suffix. ncnn Mats hold float32 or int32.
PNNX_TYPES = {"float32": "f32", "int64": "i64", "int32": "i32"}
# Lines by which pnnx says it left an operator unconverted: the ncnn graph it
# still writes would compute something else (an LSTM with no weights, say).
_RED_FLAG = re.compile(r"^(todo|ignore) (\S+)")


class ConversionError(Exception):
    """pnnx could not convert the model; ``reason`` is a sentence for the user.

    ``failed``: the converter or the check of its result crashed, hung or could not
    start, which is a load failure; otherwise pnnx refused the model.
    """

    def __init__(self, reason: str, failed: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failed = failed


# -- the executable ---------------------------------------------------------------


def pnnx_executable() -> Path | None:
    """The pnnx executable of the installed ``pnnx`` wheel, or None.

    ``find_spec`` of a top-level package locates it without running its
    ``__init__`` (which imports torch-dependent helpers).
    """
    try:
        spec = importlib.util.find_spec("pnnx")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    dirs = list(spec.submodule_search_locations or [])
    if spec.origin and spec.origin not in ("namespace", "built-in"):
        dirs.insert(0, os.path.dirname(spec.origin))
    exe_name = "pnnx.exe" if sys.platform == "win32" else "pnnx"
    for d in dirs:
        p = Path(d) / exe_name
        if p.is_file():
            return p
    return None


def is_executable(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


# -- conversion request -------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One conversion: the model, its concrete input shapes and dtypes, the tools' versions."""

    model_path: Path
    model_sha256: str
    external_data: tuple[Path, ...]
    inputs: tuple[tuple[str, str, tuple[int, ...]], ...]  # (name, dtype, shape)
    outputs: tuple[tuple[str, str], ...]  # (name, dtype)
    versions: Mapping[str, str]

    def key(self) -> str:
        material = {
            "format": FORMAT,
            "model": self.model_sha256,
            "inputs": [[n, d, list(s)] for n, d, s in self.inputs],
            "versions": dict(sorted(self.versions.items())),
            "fp16_weights": False,
        }
        raw = json.dumps(material, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def inputshape_arg(self) -> str:
        return ",".join(
            "[" + ",".join(str(d) for d in shape) + "]" + PNNX_TYPES[dtype] for _, dtype, shape in self.inputs
        )


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


# -- reading what pnnx wrote -----------------------------------------------------------


def red_flags(log_text: str) -> list[str]:
    """Operators pnnx said it left unconverted ('todo OP', 'ignore OP ...'), in order."""
    seen: dict[str, None] = {}
    for line in log_text.splitlines():
        m = _RED_FLAG.match(line.strip())
        if m:
            seen.setdefault(m.group(2), None)
    return list(seen)


def tail(text: str, lines: int = 8, limit: int = 800) -> str:
    """The last informative lines of pnnx's output (its banner tables left out)."""
    keep = [
        ln.rstrip()
        for ln in text.splitlines()
        if ln.strip() and not ln.lstrip().startswith(("│", "┌", "└", "├", "#"))
    ]
    out = " | ".join(keep[-lines:])
    return out[-limit:]


_IN_RE = re.compile(r'ex\.input\("(in\d+)",\s*ncnn\.Mat\((\w+)\.numpy\(\),\s*batch_index=(\d+)\)')
_OUT_RE = re.compile(
    r'_,\s*(out\d+)\s*=\s*ex\.extract\("(out\d+)"\)\s*\n\s*out\.append\('
    r"torch\.from_numpy\(\w+\.numpy\(batch_index=(\d+)\)"
)
_DTYPE_RE = re.compile(r"^\s*(in\d+)\s*=\s*torch\.\w+\(.*dtype=torch\.(\w+)\)", re.M)


def read_layout(script: str) -> tuple[dict[str, int], dict[str, int], dict[str, str]]:
    """Blob layout from the test script pnnx writes beside the ncnn graph.

    Returns ({in blob: batch axis}, {out blob: batch axis}, {in blob: torch dtype});
    the batch axis is ``NO_BATCH`` when pnnx kept the blob's full shape.
    """
    ins = {m.group(1): int(m.group(3)) for m in _IN_RE.finditer(script)}
    outs = {m.group(2): int(m.group(3)) for m in _OUT_RE.finditer(script)}
    dtypes = {m.group(1): m.group(2) for m in _DTYPE_RE.finditer(script)}
    return ins, outs, dtypes


def read_param_blobs(param_text: str) -> tuple[list[str], list[str], list[str]]:
    """(Input layer blobs, every blob a layer produces, layer types) of an ncnn .param file."""
    lines = [ln.split() for ln in param_text.splitlines() if ln.strip()]
    if len(lines) < 2 or lines[0] != ["7767517"]:
        raise ConversionError("pnnx wrote an ncnn .param file autoinfer cannot read (no 7767517 magic)")
    produced: list[str] = []
    inputs: list[str] = []
    types: list[str] = []
    for parts in lines[2:]:
        if len(parts) < 4:
            continue
        try:
            ltype, n_in, n_out = parts[0], int(parts[2]), int(parts[3])
        except ValueError:
            raise ConversionError(
                f"pnnx wrote an ncnn .param line autoinfer cannot read: {' '.join(parts)[:200]}"
            ) from None
        tops = parts[4 + n_in : 4 + n_in + n_out]
        types.append(ltype)
        produced.extend(tops)
        if ltype == "Input":
            inputs.extend(tops)
    return inputs, produced, types


# -- the store ---------------------------------------------------------------------------


def final_dir(artifact_dir: Path, req: Request) -> Path:
    return artifact_dir / f"ncnn-{req.key()}"


def read_manifest(d: Path, req: Request) -> dict[str, Any] | None:
    """The manifest of a finished conversion in ``d`` if its files are intact, else None.

    A damaged one (unreadable manifest, missing file, hash mismatch) is logged
    and reported as None so the caller converts again.
    """
    mpath = d / MANIFEST
    if not mpath.is_file():
        return None
    try:
        man = json.loads(mpath.read_text(encoding="utf-8"))
        if man.get("format") != FORMAT or man.get("key") != req.key():
            log.info("ncnn conversion in %s is for another format or key; converting again", d)
            return None
        for fname, digest in man["files"].items():
            got = sha256_file(d / fname)
            if got != digest:
                log.warning(
                    "ncnn conversion in %s is damaged (%s: sha256 %s, expected %s); converting again",
                    d,
                    fname,
                    got[:12],
                    str(digest)[:12],
                )
                return None
        return man
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ncnn conversion in %s is unreadable (%s); converting again", d, exc)
        return None


def discard(d: Path) -> None:
    """Remove a directory others may be reading: rename it aside first, then delete."""
    trash = d.with_name(f".trash-{d.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(d, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def publish(tmp: Path, final: Path, req: Request) -> Path:
    """Move the finished ``tmp`` into place; if another process won the race, use its copy."""
    try:
        os.replace(tmp, final)
        return final
    except OSError:
        pass
    if read_manifest(final, req) is not None:
        shutil.rmtree(tmp, ignore_errors=True)
        return final
    discard(final)
    try:
        os.replace(tmp, final)
        return final
    except OSError:
        if read_manifest(final, req) is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            return final
        raise


def sweep(artifact_dir: Path, older_than_s: float = 24 * 3600) -> None:
    """Remove work directories that conversions killed long ago left behind."""
    now = time.time()
    for p in artifact_dir.glob(".tmp-ncnn-*"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > older_than_s:
                shutil.rmtree(p, ignore_errors=True)
    for p in artifact_dir.glob(".trash-ncnn-*"):
        shutil.rmtree(p, ignore_errors=True)


def make_workdir(artifact_dir: Path, req: Request) -> Path:
    """A fresh directory next to the final one, holding links to the model's files."""
    artifact_dir.mkdir(parents=True, exist_ok=True)
    sweep(artifact_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-ncnn-{req.key()}-", dir=artifact_dir))
    _link(req.model_path, tmp / "model.onnx")
    base = req.model_path.parent
    for ext in req.external_data:
        try:
            rel = ext.relative_to(base)
        except ValueError:
            raise ConversionError(f"external data file {ext} is outside the model's directory") from None
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        _link(ext, tmp / rel)
    return tmp


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(os.path.abspath(src), dst)
    except (OSError, NotImplementedError):
        shutil.copyfile(src, dst)


def pnnx_input(
    workdir: Path, leading_one: bool, src: str = "model.onnx", dst: str = "pnnx_input.onnx"
) -> str:
    """The file pnnx converts: the model itself, or a copy that pnnx accepts.

    The copy is needed when the model lists initializers among its graph inputs
    (exporters before IR version 4 did; pnnx then expects a shape for each
    weight and fails) and when ``leading_one``: pnnx refuses an ``inputshape``
    that contradicts a fixed declared size, and a model declaring a fixed batch
    N > 1 is converted at batch 1 to be run one sample at a time. The copy drops
    intermediate shape annotations (they would contradict too); weights stored
    as external data stay where they are. Returns the file name in ``workdir``.
    """
    import onnx

    try:
        model = onnx.load(str(workdir / src), load_external_data=False)
        g = model.graph
        weights = {t.name for t in g.initializer} | {t.values.name for t in g.sparse_initializer}
        real = [vi for vi in g.input if vi.name not in weights]
        if len(real) == len(g.input) and not leading_one:
            return src
        del g.input[:]
        g.input.extend(real)
        if leading_one:
            for vi in (*g.input, *g.output):
                tt = vi.type.tensor_type
                if tt.HasField("shape") and len(tt.shape.dim):
                    tt.shape.dim[0].Clear()
                    tt.shape.dim[0].dim_value = 1
            del g.value_info[:]
        onnx.save(model, str(workdir / dst))
    except Exception as exc:
        raise ConversionError(
            f"cannot write the copy of the model pnnx converts ({type(exc).__name__}: {exc})"
        ) from None
    return dst


def run_pnnx(exe: Path, workdir: Path, req: Request, timeout_s: float, source: str = "model.onnx") -> str:
    """Run pnnx on ``workdir/source``; return its combined output. Raises ConversionError."""
    args = [
        str(exe),
        source,
        f"inputshape={req.inputshape_arg()}",
        "fp16=0",
        "device=cpu",
        f"ncnnparam={PARAM}",
        f"ncnnbin={BIN}",
        f"ncnnpy={SCRIPT}",
        "pnnxparam=model.pnnx.param",
        "pnnxbin=model.pnnx.bin",
        "pnnxpy=model_pnnx.py",
        "pnnxonnx=model.pnnx.onnx",
    ]
    try:
        res = run_bounded(args, timeout_s=timeout_s, cwd=workdir, log_path=workdir / LOG)
    except OSError as exc:
        raise ConversionError(f"pnnx could not be started ({exc.strerror or exc})", failed=True) from None
    if res.timed_out:
        raise ConversionError(
            f"pnnx did not finish converting within {timeout_s:g} s; "
            f"its last output: {tail(res.output) or '(none)'}",
            failed=True,
        )
    if res.returncode != 0:
        raise ConversionError(
            f"pnnx {res.describe()} converting the model; its last output: {tail(res.output) or '(none)'}",
            failed=res.returncode < 0,
        )
    return res.output


def keep_only(workdir: Path, names: Sequence[str]) -> None:
    """Delete everything in ``workdir`` but ``names`` (pnnx's intermediates, the model link)."""
    keep = set(names)
    for p in workdir.iterdir():
        if p.name in keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()


def write_manifest(workdir: Path, manifest: dict[str, Any]) -> None:
    manifest = dict(manifest)
    manifest["files"] = {f: sha256_file(workdir / f) for f in (PARAM, BIN)}
    tmp = workdir / (MANIFEST + ".part")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, workdir / MANIFEST)
