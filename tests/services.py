"""Guards for tests that need the real PostgreSQL or Redis.

Locally such a test is skipped when the service is absent; in CI (``CI_REQUIRE_SERVICES=1``)
a missing service fails the test instead, so a green CI run proves the test ran.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest
from django.db import connection


def _missing(what: str) -> NoReturn:
    message = f"needs {what}"
    if os.environ.get("CI_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message}, and CI_REQUIRE_SERVICES=1 forbids skipping", pytrace=False)
    pytest.skip(message)


def require_postgres() -> None:
    if connection.vendor != "postgresql":
        _missing("PostgreSQL (set DATABASE_URL=postgresql://...)")


def redis_url() -> str:
    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith("redis://"):
        _missing("Redis (set CELERY_BROKER_URL=redis://...)")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.exceptions.RedisError as exc:
        _missing(f"a reachable Redis at {url} ({exc})")
    return url


def require_executable(name: str, *, package: str) -> str:
    """The path of a command-line tool, or skip (fail under CI) naming its Debian package."""
    import shutil

    # Daemons such as Orthanc live in /usr/sbin, which a CI user's PATH may lack.
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        _missing(f"the {name!r} executable (Debian package {package})")
    return path


def require_path(path: str, *, package: str) -> str:
    """An installed file (e.g. a plugin), or skip (fail under CI) naming its Debian package."""
    if not os.path.exists(path):
        _missing(f"{path} (Debian package {package})")
    return path


def require_chromium() -> str:
    """Debian's Chromium for the browser end-to-end tests (and the PyPI ``playwright``
    package that drives it), or skip (fail under CI) naming what to install."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the Python package playwright (pip install playwright; no browser download needed)")
    path = os.environ.get("CHROMIUM_PATH") or shutil_which("chromium") or shutil_which("chromium-browser")
    if path is None:
        _missing("the 'chromium' executable (Debian package chromium)")
    return path


def shutil_which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


def browser_unavailable(reason: str) -> None:
    """Chromium is installed but does not start: skip locally, fail under CI."""
    _missing(f"a Chromium that starts ({reason})")
