"""Which backends the tests run: the registry's, asked, never named.

``usable_backends()`` (in conftest.py) lists those usable here; ``reference_backend()``
is the one whose capabilities say it is the accuracy reference.
"""

from __future__ import annotations

from conftest import backend_report, usable_backends

from autoinfer import backends


def reference_backend() -> str:
    """The usable backend whose capabilities say ``reference``; fails the test if none."""
    for name in usable_backends():
        if backends.get(name).capabilities.reference:
            return name
    raise AssertionError(f"no usable reference backend here: {backend_report()}")
