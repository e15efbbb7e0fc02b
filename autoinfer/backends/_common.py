"""Small helpers shared by backends: feed checking, hardware look-ups, package facts.

Nothing here imports a runtime.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING, Any, Mapping, NoReturn, Sequence

import numpy as np

from .._hw import threads_for
from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from ..model import TensorSpec


# -- hardware -----------------------------------------------------------------

def cpu_has(hw: Any, flag: str) -> bool:
    """Whether the probed CPU has ``flag``; False when the hardware facts are missing."""
    cpu = getattr(hw, "cpu", None)
    has = getattr(cpu, "has", None)
    try:
        return bool(has(flag)) if callable(has) else flag in (getattr(cpu, "flags", ()) or ())
    except Exception:  # a damaged probe result never breaks a backend
        return False


# The thread count has one home, autoinfer._hw.threads_for; the old name stays for callers.
usable_cores = threads_for


# -- packages -------------------------------------------------------------------

def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


@functools.lru_cache(maxsize=1)
def _dist_index() -> tuple[tuple[str, str, str], ...]:
    """(canonical name, version, dist-info path) of every installed distribution.

    A listing of the ``*.dist-info`` directories on ``sys.path``, made once per
    process: ``importlib.metadata`` would parse every distribution's metadata
    and file list (a third of a second here), and this runs on every Session start.
    """
    out = []
    seen = set()
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for n in names:
            if not n.endswith(".dist-info"):
                continue
            name, _, version = n[: -len(".dist-info")].rpartition("-")
            key = _canonical(name)
            if name and key not in seen:  # the first on sys.path wins, as for imports
                seen.add(key)
                out.append((key, version, os.path.join(entry or ".", n)))
    return tuple(out)


def _provides(dist_info: str, module: str) -> bool:
    try:
        with open(os.path.join(dist_info, "top_level.txt"), encoding="utf-8") as f:
            return module in f.read().split()
    except OSError:
        pass
    try:
        with open(os.path.join(dist_info, "RECORD"), encoding="utf-8") as f:
            return any(line.startswith(f"{module}/") for line in f)
    except OSError:
        return False


@functools.lru_cache(maxsize=None)
def distributions_of(module: str) -> list[str]:
    """Installed pip distributions that provide top-level ``module``, sorted.

    ``onnxruntime`` and ``onnxruntime-gpu`` both provide module ``onnxruntime``;
    having both installed means one silently overwrote the other's files.
    Only distributions whose name mentions the module are inspected.
    """
    key = _canonical(module)
    return sorted(name for name, _v, path in _dist_index()
                  if key in name and _provides(path, module))


def dist_version(dist: str) -> str | None:
    key = _canonical(dist)
    for name, version, _path in _dist_index():
        if name == key:
            return version
    return None


# -- feeds ----------------------------------------------------------------------

def _type_name(dtype: np.dtype) -> str:
    if dtype.kind in "OUS":
        return "tensor(string)"
    return {"float32": "tensor(float)", "float64": "tensor(double)"}.get(
        dtype.name, f"tensor({dtype.name})")


class FeedChecker:
    """Checks a feed against the model's inputs and returns the arrays in input order.

    Errors are :class:`~autoinfer.errors.InputError` with ONNX Runtime's wording,
    so a user moving between runtimes reads the same messages. Lists and scalars
    are converted to the declared dtype, as ONNX Runtime does; a NumPy array of
    another dtype is an error (no silent cast). Build one per runner: the
    per-call work is one pass over the inputs.
    """

    def __init__(self, backend: str, inputs: Sequence["TensorSpec"]) -> None:
        self.backend = backend
        self.names = tuple(s.name for s in inputs)
        self._specs: tuple[tuple[str, np.dtype | None, tuple[int | None, ...] | None], ...] = tuple(
            (s.name, _numpy_dtype(s.dtype),
             None if s.shape is None else tuple(d if isinstance(d, int) else None
                                                for d in s.shape))
            for s in inputs)
        self._known = frozenset(self.names)

    def __call__(self, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        if not isinstance(feeds, Mapping):
            self._fail(f"feeds must be a mapping of input name to array, received "
                       f"{type(feeds).__name__}")
        if len(feeds) != len(self._specs) or not self._known.issuperset(feeds):
            self._wrong_names(feeds)
        out = []
        for name, dtype, shape in self._specs:
            x = feeds[name]
            if not isinstance(x, np.ndarray):
                try:
                    x = np.asarray(x, dtype=dtype)
                except (TypeError, ValueError) as exc:
                    self._fail(f"input {name!r}: cannot convert {type(x).__name__} to {dtype}: "
                               f"{exc}")
            if dtype is not None and x.dtype != dtype and not (
                    dtype.kind == "O" and x.dtype.kind in "OUS"):
                self._fail(f"Unexpected input data type for input {name!r}. Actual: "
                           f"({_type_name(x.dtype)}) , expected: ({_type_name(dtype)})")
            if shape is not None:
                if x.ndim != len(shape):
                    self._fail(f"Invalid rank for input: {name} Got: {x.ndim} Expected: "
                               f"{len(shape)} Please fix either the inputs or the model.")
                for i, (got, want) in enumerate(zip(x.shape, shape)):
                    if want is not None and got != want:
                        self._fail(f"Got invalid dimensions for input: {name} for the following "
                                   f"indices index: {i} Got: {got} Expected: {want} Please fix "
                                   "either the inputs or the model.")
            out.append(x)
        return out

    def _fail(self, message: str) -> NoReturn:
        raise InputError(f"{self.backend}: {message}")

    def _wrong_names(self, feeds: Mapping[str, Any]) -> NoReturn:
        unknown = [k for k in feeds if k not in self._known]
        if unknown:
            self._fail(f"Invalid input name: {unknown[0]!r}. The model's inputs are: "
                       f"{list(self.names)}")
        missing = [n for n in self.names if n not in feeds]
        self._fail(f"Model requires {len(self.names)} inputs. Input Feed contains {len(feeds)}. "
                   f"Missing: {missing}")


def _numpy_dtype(name: str) -> np.dtype | None:
    if name == "str":
        return np.dtype(object)
    try:
        return np.dtype(name)
    except TypeError:  # bfloat16 and other types NumPy does not know
        return None
