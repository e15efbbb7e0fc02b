"""Feed validation: an application's feed checked against the model's inputs, once.

The Session validates every feed before it reaches a runner, with ONNX Runtime's words
("Model requires N inputs. Input Feed contains M"); runners trust the feeds they get.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InputError
from .model import TensorSpec


class FeedValidator:
    """Checks feeds against ``inputs``: names, dtypes, ranks and fixed dimensions. A
    call returns the feed as C-contiguous numpy arrays (lists, scalars and array-likes
    converted), or raises InputError saying what is wrong.

    A non-tensor input (a sequence, an optional, a map) is handed on as it is, for the
    runtime to check, as ONNX Runtime does; an optional one may be left out or None."""

    def __init__(self, inputs: Sequence[TensorSpec]) -> None:
        self._inputs = tuple(i for i in inputs if i.is_tensor)
        self._opaque = tuple(i.name for i in inputs if not i.is_tensor)
        self._optional = frozenset(i.name for i in inputs if i.dtype.startswith("optional("))
        self._input_names = frozenset(i.name for i in inputs)
        checks = []
        for spec in self._inputs:
            try:
                dt = np.dtype(spec.dtype) if spec.dtype != "str" else np.dtype(object)
            except TypeError:
                dt = None
            fixed = tuple((i, d) for i, d in enumerate(spec.shape or ()) if isinstance(d, int))
            rank = len(spec.shape) if spec.shape is not None else -1
            checks.append((spec.name, dt, rank, fixed))
        self._checks = tuple(checks)

    def __call__(self, feed: Any) -> dict[str, np.ndarray]:
        if not isinstance(feed, Mapping):
            raise InputError(
                f"input_feed must be a dict of input name -> array, received {type(feed).__name__}"
            )
        if feed.keys() != self._input_names and not self._fits_optionals(feed):
            missing = sorted(self._input_names - set(feed) - self._optional)
            unknown = sorted(set(feed) - self._input_names)
            msg = (
                f"Model requires {len(self._input_names)} input(s) "
                f"{sorted(self._input_names)}. Input Feed contains {len(feed)}"
            )
            if missing:
                msg += f"; missing {missing}"
            if unknown:
                msg += f"; unknown {unknown}"
            raise InputError(msg)
        out = {}
        for name, dt, rank, fixed in self._checks:
            x = feed[name]
            if type(x) is not np.ndarray:
                x = self._convert(name, x, dt)
            if dt is not None and x.dtype != dt:
                raise InputError(
                    f"input {name!r}: expected dtype {dt} ({self._spec(name).ort_type}), received {x.dtype}"
                )
            if rank >= 0:
                if x.ndim != rank:
                    raise InputError(
                        f"input {name!r}: expected rank {rank} (shape "
                        f"{self._spec(name).shape}), received shape {x.shape}"
                    )
                shape = x.shape
                for i, d in fixed:
                    if shape[i] != d:
                        raise InputError(
                            f"input {name!r}: dimension {i} must be {d} (shape "
                            f"{list(self._spec(name).shape or ())}), received "
                            f"shape {list(shape)}"
                        )
            if not x.flags.c_contiguous:
                x = np.ascontiguousarray(x)
            out[name] = x
        for name in self._opaque:
            if feed.get(name) is not None:
                out[name] = feed[name]
            elif name not in self._optional:
                raise InputError(f"input {name!r}: expected a value, received None")
        return out

    def _fits_optionals(self, feed: Mapping[str, Any]) -> bool:
        """The feed names every input but some optional ones, and nothing else."""
        return self._input_names - self._optional <= feed.keys() <= self._input_names

    def _spec(self, name: str) -> TensorSpec:
        return next(i for i in self._inputs if i.name == name)

    @staticmethod
    def _convert(name: str, x: Any, dt: np.dtype[Any] | None) -> np.ndarray:
        if isinstance(x, np.ndarray):  # a subclass (np.matrix, memmap): view as a plain array
            return np.asarray(x)
        if isinstance(x, (list, tuple, int, float, bool, np.generic)):
            try:
                return np.asarray(x, dtype=dt)
            except (TypeError, ValueError, OverflowError) as exc:
                raise InputError(
                    f"input {name!r}: cannot convert {type(x).__name__} to {dt}: {exc}"
                ) from None
        if hasattr(x, "__array__"):
            return np.asarray(x)
        raise InputError(f"input {name!r}: expected a numpy array, received {type(x).__name__}")
