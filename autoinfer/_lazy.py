"""Optional heavy libraries, imported where they are used and failing with the fix.

:func:`import_optional` is the one way autoinfer imports a runtime or another
optional package: on first use, under a lock, with an optional ``guard`` (a
context manager entered around the import, for a runtime that needs something
done before or after its import, such as a telemetry opt-out). A failed import
becomes :class:`~autoinfer.errors.BackendUnavailable` whose ``fix`` says what to
install; the library's own exception never reaches the caller. A successful
import is remembered, so the guard runs once per module, while a module that
someone else replaced in ``sys.modules`` since (a test's fake) is imported again.

Nothing here names a runtime; each backend passes its own names and guard.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from types import ModuleType

from .errors import BackendUnavailable

Guard = Callable[[], AbstractContextManager[object]]

_lock = threading.RLock()
_imported: dict[str, ModuleType] = {}


def install_fix(package: str, extra: str | None = None) -> str:
    """The pip command that makes ``package`` importable: autoinfer's extra when it has one."""
    return f"pip install 'autoinfer[{extra}]'" if extra else f"pip install {package}"


def present(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (its parent packages may be)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def import_errors(what: str, fix: str, missing: str | None = None) -> Iterator[None]:
    """Turn an import's failure inside the block into BackendUnavailable with ``fix``.

    ``what`` names the package in the message; ``missing`` replaces the default
    "<what> cannot be imported" when the package is absent. An exception other than
    ImportError (a shared library that fails to load) asks to reinstall.
    """
    try:
        yield
    except ImportError as exc:
        raise BackendUnavailable(f"{missing or what + ' cannot be imported'} ({exc})", fix=fix) from None
    except Exception as exc:  # noqa: BLE001 - its native libraries fail to load
        raise BackendUnavailable(
            f"{what} fails on import ({type(exc).__name__}: {exc})", fix="reinstall it: " + fix
        ) from None


def import_optional(
    module: str,
    *,
    package: str | None = None,
    extra: str | None = None,
    guard: Guard | None = None,
    fix: str | None = None,
    missing: str | None = None,
) -> ModuleType:
    """``import module``, once per process and thread-safe, or BackendUnavailable with the fix.

    package: the pip distribution that provides ``module`` (default: ``module``'s top level).
    extra:   autoinfer's extra that installs it; the fix names it when given.
    guard:   a context-manager factory entered around the first import (a pre-import
             step, and a post-import step after its ``yield``); it also runs when the
             application imported the module before autoinfer, so it can notice that.
    fix:     the fix to report instead of the pip command built from package and extra.
    missing: the message when the package is absent (default "<package> cannot be imported").
    """
    mod = _imported.get(module)
    if mod is not None and sys.modules.get(module) is mod:
        return mod
    pkg = package or module.split(".")[0]
    with _lock:
        mod = _imported.get(module)
        if mod is not None and sys.modules.get(module) is mod:
            return mod
        with import_errors(pkg, fix or install_fix(pkg, extra), missing):
            with guard() if guard is not None else contextlib.nullcontext():
                mod = importlib.import_module(module)
        _imported[module] = mod
        return mod
