"""Run a function where a crash of native code cannot reach the caller."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import tempfile
import time
import warnings
from typing import Any

log = logging.getLogger("autoinfer.model")


def in_child(fn: Any, timeout_s: float) -> tuple[str, Any]:
    """``fn()`` in a forked child process, so that native code that aborts or
    segfaults on a malformed model takes down the child, not the caller.

    Returns ("ok", value), ("crashed", how), ("error", message) when ``fn``
    raised, ("timeout", None), or ("unavailable", None) where fork is not safe
    or possible (not Linux, or the system refused): the caller then runs ``fn``
    itself.
    """
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return "unavailable", None
    import json

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
    if not finished:
        return "timeout", None
    if os.WIFSIGNALED(status) or not chunks:
        how = (
            f"signal {signal.Signals(os.WTERMSIG(status)).name}"
            if os.WIFSIGNALED(status)
            else f"exit code {os.WEXITSTATUS(status)}"
        )
        return "crashed", how + (f": {tail[-1][-300:]}" if tail else "")
    answer = json.loads(b"".join(chunks))
    if "error" in answer:
        return "error", answer["error"]
    return "ok", answer["ok"]
