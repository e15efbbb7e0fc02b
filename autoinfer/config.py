"""Settings, resolved in one place: defaults, then environment, then arguments.

Environment variables:
  AUTOINFER_CACHE_DIR      where decisions and compiled artifacts live
  AUTOINFER_CACHE_MAX_MB   size cap of the compiled artifacts (default 2048)
  AUTOINFER_BUDGET_S       time budget of a measured selection (default 8)
  AUTOINFER_NO_CACHE=1     select every time, write nothing
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache import Cache
from .errors import ConfigError
from .objectives import OBJECTIVES

DEFAULT_BUDGET_S = 8.0
DEFAULT_CACHE_MAX_MB = 2048


def default_cache_dir() -> Path:
    env = os.environ.get("AUTOINFER_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("autoinfer", appauthor=False))


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, received {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name}: expected a positive number, received {raw!r}")
    return value


def check_objective(objective: Any) -> str:
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective: expected one of {', '.join(OBJECTIVES)}, received {objective!r}")
    return str(objective)


@dataclass(frozen=True)
class Settings:
    cache_dir: Path
    cache_enabled: bool
    cache_max_bytes: int
    budget_s: float

    @classmethod
    def resolve(
        cls, *, cache_dir: str | os.PathLike[str] | None = None, budget_s: float | None = None
    ) -> Settings:
        if budget_s is not None and (not isinstance(budget_s, (int, float)) or budget_s <= 0):
            raise ConfigError(f"budget_s: expected a positive number of seconds, received {budget_s!r}")
        return cls(
            cache_dir=Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(),
            cache_enabled=os.environ.get("AUTOINFER_NO_CACHE", "") not in ("1", "true", "yes"),
            cache_max_bytes=int(_env_float("AUTOINFER_CACHE_MAX_MB", DEFAULT_CACHE_MAX_MB) * 2**20),
            budget_s=float(budget_s)
            if budget_s is not None
            else _env_float("AUTOINFER_BUDGET_S", DEFAULT_BUDGET_S),
        )


def open_cache(
    cache_dir: str | os.PathLike[str] | None = None,
    budget_s: float | None = None,
    *,
    enabled: bool | None = None,
) -> tuple[Settings, Cache]:
    """The resolved settings and the cache they name: the one way to open both.

    ``enabled`` None follows the settings (``AUTOINFER_NO_CACHE``); True opens the cache
    whatever they say, for the ``cache`` command, which lists and clears what is on disk
    even when the cache is switched off for selections.
    """
    settings = Settings.resolve(cache_dir=cache_dir, budget_s=budget_s)
    on = settings.cache_enabled if enabled is None else enabled
    return settings, Cache(settings.cache_dir, enabled=on, max_bytes=settings.cache_max_bytes)
