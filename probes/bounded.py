"""Run a query that may hang (a driver, a plugin load) in a daemon thread.

The caller waits at most its deadline; a query still running after that is
left behind in its daemon thread, which never keeps the interpreter alive.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


def start(fn: Callable[[], T], name: str) -> Future[T]:
    """Start ``fn`` in a daemon thread; its result or exception lands in the returned future."""
    future: Future[T] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except Exception as exc:  # handed to the caller, who classifies it
            future.set_exception(exc)

    threading.Thread(target=run, name=f"probes-{name}", daemon=True).start()
    return future
