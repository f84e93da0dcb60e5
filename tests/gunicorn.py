"""A real gunicorn for the tests that need the production web server in front of the code."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.imaging.orthanc import free_port

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def running_gunicorn(app: str, *options: str, env: dict, log: Path, start_timeout: float = 60) -> Iterator[int]:
    """gunicorn serving ``app`` (one worker) on a free loopback port, its output in ``log``;
    yields the port once it accepts connections, and stops it afterwards."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        app,
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--timeout",
        "60",
        *options,
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not start:\n{log.read_text()}")
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=20)
