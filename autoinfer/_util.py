"""Small helpers every layer may use; imports nothing of autoinfer."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any


def stable_json(obj: Any) -> str:
    """Canonical JSON used for keys and hashes: sorted keys, no spaces, ``str`` of the rest."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


# -- locks ------------------------------------------------------------------------------------
class KeyedLocks:
    """One ``threading.Lock`` per key, made on first use and kept.

    A forked child starts with none of them: a lock held by another thread of the parent
    at the fork would otherwise stay held in the child for ever."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        _ALL_KEYED.add(self)

    def lock(self, key: str) -> threading.Lock:
        """The lock of ``key``; the same object for the same key until a fork."""
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _forget(self) -> None:
        self._guard = threading.Lock()
        self._locks = {}


_ALL_KEYED: weakref.WeakSet[KeyedLocks] = weakref.WeakSet()


def _fresh_locks_in_child() -> None:
    for keyed in list(_ALL_KEYED):
        keyed._forget()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_fresh_locks_in_child)

_POLL_S = 0.05


@contextlib.contextmanager
def file_lock(
    path: str | os.PathLike[str],
    timeout_s: float | None = None,
    *,
    on_error: Callable[[OSError], None] | None = None,
) -> Iterator[bool]:
    """An exclusive ``flock`` of ``path`` (created 0600 when absent) for the ``with`` block.

    Yields True while the lock is held, False when it is not; the block runs either way.
    False means locking is impossible here (no ``fcntl``, the file cannot be opened, a file
    system without locks: ``on_error`` gets the ``OSError``) or ``timeout_s`` passed while
    another open file held it. ``timeout_s=None`` waits as long as that takes."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield False
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        if on_error is not None:
            on_error(exc)
        yield False
        return
    try:
        held = _flock(fd, timeout_s, on_error)
        try:
            yield held
        finally:
            if held:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _flock(fd: int, timeout_s: float | None, on_error: Callable[[OSError], None] | None) -> bool:
    import fcntl

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if deadline is None else fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:  # held elsewhere
            if deadline is None or time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)
        except OSError as exc:  # no locks on this file system
            if on_error is not None:
                on_error(exc)
            return False


_PATH_LOCKS = KeyedLocks()


@contextlib.contextmanager
def exclusive(
    path: str | os.PathLike[str],
    timeout_s: float | None = None,
    *,
    on_error: Callable[[OSError], None] | None = None,
) -> Iterator[bool]:
    """Held by one thread of one process at a time: a thread lock per path, then
    :func:`file_lock` of it. Yields True when both are held. False when the file lock is
    impossible (the block then still excludes this process's other threads) or when
    ``timeout_s`` passed first (then it excludes nothing)."""
    start = time.monotonic()
    lock = _PATH_LOCKS.lock(os.path.abspath(path))
    if not lock.acquire(timeout=-1 if timeout_s is None else max(0.0, timeout_s)):
        yield False
        return
    try:
        left = None if timeout_s is None else max(0.0, timeout_s - (time.monotonic() - start))
        with file_lock(path, left, on_error=on_error) as held:
            yield held
    finally:
        lock.release()
