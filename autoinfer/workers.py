"""The measuring workers: one subprocess per job stream, and the protocol to talk to it.

A :class:`Worker` runs ``python -m autoinfer._worker`` in its own session (its process
group is its own, see :func:`autoinfer._proc.start_child`), with every runtime's telemetry
opt-outs in its environment. A job is one JSON line on its stdin, the answer one JSON line
on its stdout. The worker is restarted after a crash; a time-out, a memory use over the
limit or ``cancel`` set kills its whole process group (:func:`autoinfer._proc.kill_group`).
The worker kills itself when the thread that started it ends (``_worker._die_with_parent``);
the workers still alive when this process exits are killed by an exit handler, and a
forked child forgets its parent's workers.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from ._proc import kill_group, start_child

_LIVE: weakref.WeakSet[Worker] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def kill_all_workers() -> None:
    """Kill every measuring process of this process (at exit, or on cancel)."""
    with _LIVE_LOCK:
        workers = list(_LIVE)
    for w in workers:
        w.kill()


def _forget_workers_in_child() -> None:
    global _LIVE_LOCK
    _LIVE_LOCK = threading.Lock()
    _LIVE.clear()  # the parent's measuring processes are the parent's


atexit.register(kill_all_workers)
os.register_at_fork(after_in_child=_forget_workers_in_child)


class Worker:
    """One measuring subprocess (its own process group), restarted after a crash or a
    time-out; ``cancel`` set stops a job at once and kills the process."""

    def __init__(self, workdir: Path, memory_limit_mb: float, cancel: threading.Event | None = None) -> None:
        self.workdir = workdir
        self.memory_limit_mb = memory_limit_mb
        self.cancel = cancel
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = b""

    def _start(self) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"worker-{time.monotonic_ns()}.log", "wb") as errlog:
            self.proc = start_child(
                [sys.executable, "-m", "autoinfer._worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errlog,
            )
        self._buf = b""
        with _LIVE_LOCK:
            _LIVE.add(self)
        return self.proc

    def _rss_mb(self) -> float:
        if self.proc is None:
            return 0.0
        try:
            with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return 0.0

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            kill_group(proc, wait_s=5.0)
            for s in (proc.stdin, proc.stdout):
                with contextlib.suppress(Exception):  # a broken pipe flushing stdin
                    s.close()  # type: ignore[union-attr]

    def release(self) -> None:
        """Tell the process to end (its job stream closes) without waiting for it."""
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()  # type: ignore[union-attr]

    def close(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(timeout=5)
        self.kill()

    def submit(self, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        if self.cancel is not None and self.cancel.is_set():
            return {"ok": False, "kind": "cancelled", "reason": "cancelled"}
        proc = self.proc if self.proc is not None and self.proc.poll() is None else self._start()
        try:
            proc.stdin.write((json.dumps(job) + "\n").encode())  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        except OSError as exc:
            self.kill()
            return {"ok": False, "kind": "crash", "reason": f"the worker died ({exc})"}
        fd = proc.stdout.fileno()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if self.cancel is not None and self.cancel.is_set():
                self.kill()
                return {"ok": False, "kind": "cancelled", "reason": "cancelled"}
            if left <= 0:
                self.kill()
                return {
                    "ok": False,
                    "kind": "timeout",
                    "reason": f"did not finish within {timeout_s:.0f} s (killed)",
                }
            ready, _, _ = select.select([fd], [], [], min(left, 0.05))
            if self.memory_limit_mb and self._rss_mb() > self.memory_limit_mb:
                self.kill()
                return {
                    "ok": False,
                    "kind": "memory",
                    "reason": f"used more than {self.memory_limit_mb:.0f} MB (killed)",
                }
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    code = proc.wait()
                    self.proc = None
                    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                    return {
                        "ok": False,
                        "kind": "crash",
                        "reason": f"the runtime crashed the measuring process ({how})",
                    }
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            self.kill()
            return {"ok": False, "kind": "crash", "reason": "garbled answer from the worker"}


def default_memory_limit_mb() -> float:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return 0.75 * pages / 2**20
    except (ValueError, OSError):
        return 0.0
