"""Bounded child processes: the one way autoinfer runs a converter or a check in a child.

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
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

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
        proc = subprocess.Popen(
            list(args),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else child_env(),
        )
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


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc``'s process group (it leads one: started in its own session) and reap it."""
    with contextlib.suppress(OSError):
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        elif proc.returncode is None:  # pragma: no cover - Windows
            proc.kill()
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


def _limit_memory(pid: int, nbytes: int) -> None:
    try:
        import resource

        resource.prlimit(pid, resource.RLIMIT_AS, (nbytes, nbytes))
    except (ImportError, AttributeError, OSError, ValueError) as exc:  # not Linux, or gone
        log.debug("cannot limit the memory of child %d: %s", pid, exc)
