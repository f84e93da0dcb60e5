"""Typed helpers that read settings from the environment and refuse bad values.

Each helper also reads ``<NAME>_FILE`` (a path whose contents are the value), so
secrets can come from Docker or Kubernetes secret files instead of plain variables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import overload


class ImproperEnvironment(ValueError):
    """An environment variable holds a value its setting cannot use."""


def _raw(name: str) -> str | None:
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text().strip()
        except OSError as exc:
            raise ImproperEnvironment(f"{name}_FILE={file_path!r} cannot be read: {exc.strerror}") from exc
    return os.environ.get(name)


@overload
def envstr(name: str, default: str) -> str: ...
@overload
def envstr(name: str, default: None = None) -> str | None: ...
def envstr(name: str, default: str | None = None) -> str | None:
    value = _raw(name)
    return default if value is None or value == "" else value


def envbool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperEnvironment(f"{name}={value!r} is not a boolean (use true/false, yes/no, on/off or 1/0)")


def envint(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperEnvironment(f"{name}={value!r} is not an integer") from None
    if minimum is not None and number < minimum:
        raise ImproperEnvironment(f"{name}={number} is below the minimum {minimum}")
    if maximum is not None and number > maximum:
        raise ImproperEnvironment(f"{name}={number} is above the maximum {maximum}")
    return number


def envfloat(name: str, default: float, *, minimum: float | None = None) -> float:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperEnvironment(f"{name}={value!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ImproperEnvironment(f"{name}={value!r} is not a finite number")
    if minimum is not None and number < minimum:
        raise ImproperEnvironment(f"{name}={number} is below the minimum {minimum}")
    return number


def envlist(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None or value.strip() == "":
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]
