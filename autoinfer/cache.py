"""Decisions and compiled artifacts, keyed and versioned, on disk.

Layout under the cache directory (created private to the user, 0700)::

    facts/<k>.json       model facts, keyed by the file's path, size, mtime and inode
    decisions/<k>.json   one decision per (model hash, hardware fingerprint,
                         runtime versions, objective, shape bucket, backend set)
    locks/<k>.lock       serialises selections of the same key across processes
    artifacts/<backend>/<model-sha>/<candidate-hash>/   conversions, engines, compile caches
    models/<sha>.onnx    models handed to Session as bytes

Everything is JSON written atomically (temporary file, fsync, rename) with a
SHA-256 of its content; nothing is pickled or executed from the cache. A
damaged file (unparsable, another schema, or content that no longer matches
its checksum: bit rot or a hand edit) is detected, removed and rebuilt; a
cache directory that cannot be written (read-only, full) makes autoinfer run
without a cache, with one warning.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._util import file_lock, stable_json
from .errors import CacheError

log = logging.getLogger("autoinfer.cache")

SCHEMA = 2  # 2: records carry the SHA-256 of their content
_WARNED: set[str] = set()
_WARN_LOCK = threading.Lock()


def warn_once(key: str, msg: str, *args: Any) -> None:
    with _WARN_LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    log.warning(msg, *args)


def digest(obj: Any, n: int = 24) -> str:
    return hashlib.sha256(stable_json(obj).encode()).hexdigest()[:n]


def record_digest(record: dict[str, Any]) -> str:
    """SHA-256 of a cache record's content, its own "sha256" field left out."""
    return hashlib.sha256(
        stable_json({k: v for k, v in record.items() if k != "sha256"}).encode()
    ).hexdigest()


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


class Cache:
    """The on-disk cache. ``enabled`` turns False (with one warning) when the
    directory cannot be used; every method then degrades to a no-op."""

    def __init__(self, root: Path, *, enabled: bool = True, max_bytes: int = 2 << 30) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.enabled = enabled
        self._ready = False
        self._lock = threading.Lock()

    # -- directory -------------------------------------------------------
    def _ensure(self) -> bool:
        if not self.enabled:
            return False
        if self._ready:
            return True
        with self._lock:
            if self._ready:
                return True
            try:
                self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
                st = self.root.stat()
                if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
                    os.chmod(self.root, 0o700)
                for sub in ("facts", "decisions", "locks", "artifacts", "models"):
                    (self.root / sub).mkdir(exist_ok=True, mode=0o700)
                if not os.access(self.root, os.W_OK | os.X_OK):
                    raise PermissionError(errno.EACCES, "not writable", str(self.root))
            except OSError as exc:
                self._disable(exc)
                return False
            self._ready = True
            return True

    def _disable(self, exc: BaseException) -> None:
        self.enabled = False
        warn_once(
            f"disabled:{self.root}",
            "autoinfer cache at %s cannot be used (%s); running without a cache",
            self.root,
            exc,
        )

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    # -- JSON files --------------------------------------------------------
    def read_json(self, path: Path) -> dict[str, Any] | None:
        """The JSON object at ``path``; None when absent; damaged files are removed."""
        if not self._ensure():
            return None
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read().decode("utf-8"))
            if not isinstance(data, dict) or data.get("schema") != SCHEMA:
                raise ValueError(f"not an autoinfer cache record of schema {SCHEMA}")
            if data.get("sha256") != record_digest(data):
                raise ValueError("its content does not match its checksum")
            return data
        except FileNotFoundError:
            return None
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            warn_once(f"damaged:{path}", "autoinfer cache file %s is damaged (%s); rebuilding it", path, exc)
            with contextlib.suppress(OSError):
                path.unlink()
            return None

    def write_json(self, path: Path, data: dict[str, Any], durable: bool = True) -> bool:
        """Write atomically; False (and the cache disabled) when the disk refuses.
        ``durable``: on the disk before this returns (see :meth:`atomic_write`)."""
        if not self._ensure():
            return False
        try:
            # the checksum covers the content as it will read back (tuples as lists, ...)
            record = json.loads(json.dumps({**data, "schema": SCHEMA}, default=str))
            record["sha256"] = record_digest(record)
            blob = json.dumps(record, indent=1, sort_keys=True).encode()
            for _ in range(3):
                try:
                    self.atomic_write(path, blob, durable)
                    return True
                except FileNotFoundError:  # a clear() moved the directory away meanwhile
                    pass
            self.atomic_write(path, blob, durable)  # a fourth time, its error disables the cache
            return True
        except OSError as exc:
            self._disable(exc)
            return False

    @staticmethod
    def atomic_write(path: Path, blob: bytes, durable: bool = True) -> None:
        """``blob`` at ``path`` whole or not at all (a temporary file renamed over it).
        ``durable``: flushed to the disk first (an fsync: ~ms on an SSD, tens of ms on a busy
        laptop disk); a record that is only a memo of what can be read again (a model's facts)
        is not, and one lost or cut short by a power cut fails its checksum and is rebuilt."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # gone after a clear()
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # -- locks -------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, key: str, timeout_s: float = 600.0) -> Iterator[bool]:
        """An exclusive inter-process lock for ``key``; yields False when unavailable."""
        if not self._ensure():
            yield False
            return
        path = self.path("locks", f"{key}.lock")

        def cannot(exc: OSError) -> None:
            warn_once(f"lock:{self.root}", "autoinfer cannot lock %s (%s)", path, exc)

        with file_lock(path, timeout_s, on_error=cannot) as held:
            yield held

    # -- model facts -------------------------------------------------------
    def facts_key(self, model_path: Path) -> str | None:
        try:
            st = model_path.stat()
        except OSError:
            return None
        return digest([str(model_path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino])

    def get_facts(self, model_path: Path) -> dict[str, Any] | None:
        key = self.facts_key(model_path)
        if key is None:
            return None
        return self.read_json(self.path("facts", f"{key}.json"))

    def put_facts(self, model_path: Path, facts: dict[str, Any], key: str | None = None) -> None:
        """``key``: the file's key when it was read (default: as it is now)."""
        key = key or self.facts_key(model_path)
        if key is not None:  # a memo, written on a cold start's path: no fsync
            self.write_json(self.path("facts", f"{key}.json"), facts, durable=False)

    # -- decisions ---------------------------------------------------------
    def get_decision(self, key: str) -> dict[str, Any] | None:
        rec = self.read_json(self.path("decisions", f"{key}.json"))
        if rec is not None and rec.get("key") != key:
            warn_once(f"damaged:{key}", "autoinfer decision %s does not match its key; ignoring it", key)
            with contextlib.suppress(OSError):
                self.path("decisions", f"{key}.json").unlink()
            return None
        return rec

    def put_decision(self, key: str, decision: dict[str, Any]) -> bool:
        return self.write_json(self.path("decisions", f"{key}.json"), {"key": key, **decision})

    # -- artifacts ---------------------------------------------------------
    def artifact_dir(self, backend: str, model_sha: str, candidate_key: Any) -> Path | None:
        """A directory for one candidate's compiled artifacts; None without a cache."""
        if not self._ensure():
            return None
        d = self.path("artifacts", backend, model_sha[:24], digest(candidate_key, 16))
        try:
            # level by level: mkdir(parents=True) would create the parents 0755
            for level in (d.parent.parent.parent, d.parent.parent, d.parent, d):
                level.mkdir(exist_ok=True, mode=0o700)
            os.utime(d)  # recency, for the size cap
        except OSError as exc:
            self._disable(exc)
            return None
        return d

    def prune(self, keep: Path | None = None) -> int:
        """Remove least recently used artifact directories above the size cap."""
        if not self._ensure():
            return 0
        dirs: list[tuple[float, int, Path]] = []
        base = self.path("artifacts")
        for backend_dir in base.iterdir() if base.exists() else []:
            for model_dir in backend_dir.iterdir() if backend_dir.is_dir() else []:
                for cand_dir in model_dir.iterdir() if model_dir.is_dir() else []:
                    with contextlib.suppress(OSError):
                        dirs.append((cand_dir.stat().st_mtime, dir_size(cand_dir), cand_dir))
        total = sum(s for _, s, _ in dirs)
        removed = 0
        for _mtime, size, d in sorted(dirs):
            if total <= self.max_bytes:
                break
            if keep is not None and (d == keep or keep in d.parents):
                continue
            shutil.rmtree(d, ignore_errors=True)
            total -= size
            removed += 1
        return removed

    def hold_model(self, blob: bytes) -> tuple[Path, int] | None:
        """Store model bytes given to Session and hold the copy for as long as the
        returned descriptor is open: :meth:`clear` leaves held copies in place, so
        the runtimes of an open session can always load it. (path, descriptor), or
        None without a cache."""
        for _ in range(5):
            p = self.model_copy(blob)
            if p is None:
                return None
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:  # cleared between the write and the open
                continue
            except OSError as exc:
                self._disable(exc)
                return None
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_SH)
            except (ImportError, OSError):  # no locks here: a clear() may remove it
                return p, fd
            try:
                if os.fstat(fd).st_ino == os.stat(p).st_ino:
                    return p, fd
            except FileNotFoundError:
                pass
            os.close(fd)  # removed while we waited for the lock: store it again
        return None

    def model_copy(self, blob: bytes) -> Path | None:
        """Store model bytes given to Session; the path, or None without a cache."""
        if not self._ensure():
            return None
        sha = hashlib.sha256(blob).hexdigest()
        p = self.path("models", f"{sha}.onnx")
        try:
            if not p.exists() or p.stat().st_size != len(blob):
                self.atomic_write(p, blob)
        except OSError as exc:
            self._disable(exc)
            return None
        return p

    # -- housekeeping (CLI) --------------------------------------------------
    def size(self) -> int:
        return dir_size(self.root) if self.root.exists() else 0

    def decisions(self) -> list[dict[str, Any]]:
        d = self.path("decisions")
        out = []
        for f in sorted(d.glob("*.json")) if d.exists() else []:
            rec = self.read_json(f)
            if rec:
                out.append(rec)
        return out

    def clear(self) -> None:
        """Remove everything autoinfer stored; sessions already open keep working."""
        if not self.root.exists():
            return
        for sub in ("facts", "decisions", "artifacts", "models"):
            p = self.root / sub
            if sub == "models" and p.is_dir():
                self._clear_models(p)
            elif p.exists():
                # rename first, so a concurrent reader never sees a half-deleted tree
                tmp = self.root / f".trash-{sub}-{os.getpid()}-{time.monotonic_ns()}"
                try:
                    os.replace(p, tmp)
                except OSError as exc:
                    raise CacheError(f"cannot clear {p}: {exc}") from None
                shutil.rmtree(tmp, ignore_errors=True)
        self._ready = False

    @staticmethod
    def _clear_models(d: Path) -> None:
        """Remove the stored models that no open session holds (see :meth:`hold_model`)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            fcntl = None  # type: ignore[assignment]
        for f in list(d.iterdir()):
            try:
                if f.name.startswith(".tmp-") and time.time() - f.stat().st_mtime < 3600:
                    continue  # another process is writing it
                fd = os.open(f, os.O_RDONLY)
            except OSError:
                continue
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                f.unlink()
            except OSError:  # held by an open session, or already gone
                continue
            finally:
                os.close(fd)
