"""Child processes: the one home of how autoinfer runs anything in a child.

- :func:`start_child`: a child in its own session (so its process group is its own) with
  :func:`child_env` as its environment; the measuring workers start this way.
- :func:`kill_group`: kill a child's whole process group and reap it.
- :func:`run_bounded`: a converter or a check run to completion, bounded in time.
- :func:`in_child`: a function run in a forked child, so that native code crashing on a
  malformed model takes down the child, not the caller.

:func:`run_bounded` starts the command in its own session (so its process group
is its own), with :func:`child_env` as its environment (every runtime's
telemetry opt-outs, see :func:`autoinfer.backends.child_environment`), stdin
closed, and stdout and stderr together in a log file (or a private temporary
file when none is given). It waits up to ``timeout_s``; on time-out, on
KeyboardInterrupt or any other exception while waiting, and after a normal exit
as well, it kills the whole process group, so no child or grandchild outlives
the call. The result is a :class:`ChildResult`; a failure to start is the
``OSError`` of ``subprocess.Popen``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("autoinfer.proc")


@dataclass(frozen=True)
class ChildResult:
    """How a bounded child ended.

    returncode: its exit status; negative: killed by that signal (``-9`` after a time-out).
    output:     its stdout and stderr together, decoded (invalid bytes replaced).
    elapsed_s:  wall time from start to end.
    timed_out:  it was killed because it ran past ``timeout_s``.
    """

    returncode: int
    output: str
    elapsed_s: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        """How it ended, in words: "exited with status 2", "was killed by signal 11"..."""
        if self.timed_out:
            return f"did not finish within {self.elapsed_s:.3g} s"
        if self.returncode < 0:
            return f"was killed by signal {-self.returncode}"
        return f"exited with status {self.returncode}"


def child_env(updates: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus every runtime's opt-outs, plus ``updates``."""
    from .backends import child_environment

    env = child_environment(os.environ)
    env.update(updates or {})
    return env


def start_child(
    args: Sequence[str],
    *,
    stdin: Any = subprocess.DEVNULL,
    stdout: Any = None,
    stderr: Any = None,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own session (its process group is its own, for
    :func:`kill_group`), with ``env`` as its whole environment (default :func:`child_env`).
    ``stdin``, ``stdout`` and ``stderr`` are as for ``subprocess.Popen``. Raises OSError
    when it cannot be started."""
    return subprocess.Popen(
        list(args),
        cwd=cwd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        env=dict(env) if env is not None else child_env(),
    )


def run_bounded(
    args: Sequence[str],
    *,
    timeout_s: float,
    cwd: str | Path | None = None,
    log_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    memory_limit_bytes: int | None = None,
) -> ChildResult:
    """Run ``args`` to completion or for at most ``timeout_s`` seconds; never leave it behind.

    cwd:                the child's working directory.
    log_path:           where its output goes (truncated first); kept after the call.
    env:                its whole environment (default :func:`child_env`).
    memory_limit_bytes: a cap on its address space (``RLIMIT_AS``, Linux), None for none.
    Raises OSError when it cannot be started, and re-raises whatever interrupted the wait
    (KeyboardInterrupt included) after killing the child's process group.
    """
    with contextlib.ExitStack() as stack:
        out: IO[bytes]
        if log_path is not None:
            out = stack.enter_context(open(log_path, "w+b"))
        else:
            out = stack.enter_context(tempfile.TemporaryFile())
        t0 = time.monotonic()
        proc = start_child(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        timed_out = False
        try:
            if memory_limit_bytes is not None:
                _limit_memory(proc.pid, memory_limit_bytes)
            try:
                proc.wait(timeout=max(0.0, timeout_s))
            except subprocess.TimeoutExpired:
                timed_out = True
        finally:
            kill_group(proc)  # on time-out, interruption and exit alike: nothing survives
        elapsed = time.monotonic() - t0
        rc = proc.returncode if proc.returncode is not None else -signal.SIGKILL
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    log.debug(
        "%s %s in %.2f s (status %s)",
        os.path.basename(str(args[0])),
        "timed out" if timed_out else "finished",
        elapsed,
        rc,
    )
    return ChildResult(rc, text, elapsed, timed_out)


def kill_group(proc: subprocess.Popen[bytes], wait_s: float = 10.0) -> None:
    """Kill ``proc``'s process group (it leads one: started in its own session) and reap it,
    waiting at most ``wait_s`` seconds."""
    with contextlib.suppress(OSError):
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        elif proc.returncode is None:  # pragma: no cover - Windows
            proc.kill()
    with contextlib.suppress(Exception):
        proc.wait(timeout=wait_s)


def _limit_memory(pid: int, nbytes: int) -> None:
    try:
        import resource

        resource.prlimit(pid, resource.RLIMIT_AS, (nbytes, nbytes))
    except (ImportError, AttributeError, OSError, ValueError) as exc:  # not Linux, or gone
        log.debug("cannot limit the memory of child %d: %s", pid, exc)


def in_child(
    fn: Callable[[], Any], timeout_s: float, meanwhile: Callable[[], None] | None = None
) -> tuple[str, Any]:
    """``fn()`` in a forked child process, so that native code that aborts or
    segfaults on a malformed model takes down the child, not the caller.

    ``meanwhile``, when given, runs in this process while the child computes (after the
    fork, so no thread of ours is running at the fork); its exceptions propagate after the
    child is reaped.

    Returns ("ok", value), ("crashed", how), ("error", message) when ``fn``
    raised, ("timeout", None), or ("unavailable", None) where fork is not safe
    or possible (not Linux, or the system refused): the caller then runs ``fn``
    itself.
    """
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return "unavailable", None

    err = tempfile.TemporaryFile()
    r, w = os.pipe()
    try:
        with warnings.catch_warnings():  # 3.12+ warns on fork in a threaded process;
            warnings.simplefilter("ignore", DeprecationWarning)  # the child runs no thread code
            pid = os.fork()
    except OSError as exc:
        os.close(r)
        os.close(w)
        err.close()
        log.debug("cannot fork to read the model in isolation: %s", exc)
        return "unavailable", None
    if pid == 0:  # the child: compute, answer on the pipe, and leave without cleanup
        code = 0
        try:
            os.close(r)
            import faulthandler

            faulthandler.disable()
            os.dup2(err.fileno(), 2)
            try:
                blob = json.dumps({"ok": fn()}).encode()
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                blob = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode()
            while blob:
                blob = blob[os.write(w, blob) :]
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    finished = False
    try:
        if meanwhile is not None:
            meanwhile()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([r], [], [], min(deadline - time.monotonic(), 1.0))
            if ready:
                chunk = os.read(r, 1 << 16)
                if not chunk:
                    finished = True
                    break
                chunks.append(chunk)
    finally:
        os.close(r)
        if not finished:  # timed out, or the caller was interrupted
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        err.seek(0, os.SEEK_END)
        err.seek(max(0, err.tell() - 2000))
        tail = err.read().decode("utf-8", "replace").strip().splitlines()
        err.close()
    return _child_outcome(finished, status, chunks, tail)


def ended(returncode: int, tail: Sequence[str]) -> str:
    """How a child that died ended, in words: its signal (a negative ``returncode``, as
    ``subprocess`` gives it) or its exit code, and the last line it wrote (``tail``)."""
    how = f"signal {signal.Signals(-returncode).name}" if returncode < 0 else f"exit code {returncode}"
    return how + (f": {tail[-1][-300:]}" if tail else "")


def _child_outcome(finished: bool, status: int, chunks: list[bytes], tail: list[str]) -> tuple[str, Any]:
    """:func:`in_child`'s answer from how its child ended and what it wrote."""
    if not finished:
        return "timeout", None
    if os.WIFSIGNALED(status) or not chunks:
        return "crashed", ended(os.waitstatus_to_exitcode(status), tail)
    answer = json.loads(b"".join(chunks))
    if "error" in answer:
        return "error", answer["error"]
    return "ok", answer["ok"]
