"""A local Orthanc for delivery tests: started on free loopback ports with its storage in
a temporary folder, stopped (terminate, wait) whatever happens.

``orthanc`` is a fixture (registered in tests/imaging/conftest.py); ``start_orthanc``
is the context manager behind it, with optional HTTP basic-auth users."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import time

import pydicom
import pytest
import requests

from tests.services import require_executable, require_path

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"  # Debian orthanc-dicomweb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def start_orthanc(tmp_path, users: dict | None = None, *, http_port: int | None = None, dicom_port: int | None = None):
    """Yield {"http": base URL, "dicom_port": int, "auth": (user, password) or None}.

    The ports are free loopback ports unless given (a PACS that comes up on a port a
    test sent to while it was down)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    binary = require_executable("Orthanc", package="orthanc")
    plugin = require_path(DICOMWEB_PLUGIN, package="orthanc-dicomweb")
    http_port, dicom_port = http_port or free_port(), dicom_port or free_port()
    config = {
        "Name": "mpi-test",
        "StorageDirectory": str(tmp_path / "storage"),
        "IndexDirectory": str(tmp_path / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "DicomCheckCalledAet": False,
        "DicomModalities": {},
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": users or {},
        "UnknownSopClassAccepted": True,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    config_path = tmp_path / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log = (tmp_path / "orthanc.log").open("w")
    process = subprocess.Popen([binary, str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    auth = next(iter(users.items())) if users else None
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"{base}/system", auth=auth, timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Orthanc did not start:\n{(tmp_path / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield {"http": base, "dicom_port": dicom_port, "auth": auth}
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def fetch(base: str, sop_instance_uid: str, auth=None) -> pydicom.Dataset:
    found = requests.post(f"{base}/tools/lookup", data=sop_instance_uid, auth=auth, timeout=10).json()
    (instance,) = [f for f in found if f["Type"] == "Instance"]
    data = requests.get(f"{base}/instances/{instance['ID']}/file", auth=auth, timeout=10).content
    return pydicom.dcmread(io.BytesIO(data))


@pytest.fixture
def orthanc(tmp_path):
    with start_orthanc(tmp_path) as server:
        yield server
