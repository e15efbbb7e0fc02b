"""Small helpers every layer may use; imports nothing of autoinfer."""

from __future__ import annotations

import json
from typing import Any


def stable_json(obj: Any) -> str:
    """Canonical JSON used for keys and hashes: sorted keys, no spaces, ``str`` of the rest."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
