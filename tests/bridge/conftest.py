from __future__ import annotations

import json

import pytest

from bridge.cli import main
from tests.bridge.fake_server import TOKEN, FakeLiveServer


@pytest.fixture
def server():
    with FakeLiveServer() as fake:
        yield fake


@pytest.fixture
def run_bridge(capsys):
    """Run ``python -m bridge`` in-process: (exit status, last stdout line as JSON or None, stderr)."""

    def run(command: str, path, url: str, *extra: str, token: str = TOKEN, session: str = "41"):
        capsys.readouterr()
        rc = main([command, str(path), "--url", url, "--token", token, "--session", session, *extra])
        out, err = capsys.readouterr()
        lines = out.strip().splitlines()
        return rc, (json.loads(lines[-1]) if lines else None), err

    return run
