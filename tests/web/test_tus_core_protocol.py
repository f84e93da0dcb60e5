"""tus-core.js (window.MpiTus.upload), the browser's one tus client, run under node with a
scripted server: a resumed upload the server already holds complete finds its scan by
sha256 when asked to (findScan), a damaged chunk is sent again from the server's offset,
and the page is told what each message and progress call is (detail codes)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

CORE = Path(settings.BASE_DIR) / "web" / "static" / "web" / "tus-core.js"
HARNESS = Path(__file__).with_name("tus_core_harness.js")
NODE = shutil.which("node") or ""
DIGEST = "ab" * 32

pytestmark = pytest.mark.skipif(not NODE, reason="node is not installed")


def _run(**scenario) -> dict:
    done = subprocess.run(
        [NODE, str(HARNESS), str(CORE), json.dumps(scenario)], capture_output=True, text=True, timeout=30, check=True
    )
    return json.loads(done.stdout)


def test_an_upload_found_complete_resolves_to_the_scan_of_the_same_sha256():
    ran = _run(
        stored={"k": "/api/v1/uploads/3/"},
        size=8,
        findScan=True,
        answers=[
            {"method": "HEAD", "status": 200, "headers": {"Upload-Offset": 8}},
            {
                "method": "GET",
                "status": 200,
                "body": {"results": [{"id": 6, "sha256": "cd" * 32}, {"id": 7, "sha256": DIGEST}]},
            },
        ],
    )
    assert ran["outcome"] == {"scanId": "7"}
    assert [r["method"] for r in ran["requests"]] == ["HEAD", "GET"]  # no POST, no PATCH
    assert ran["requests"][1]["url"].startswith("/api/v1/scans/?subject=5&")
    assert ran["stored"] == {}  # the finished upload is forgotten
    assert "resuming" in ran["messages"]


def test_without_find_scan_an_upload_found_complete_is_reported_as_such():
    ran = _run(
        stored={"k": "/api/v1/uploads/3/"},
        size=8,
        findScan=False,
        answers=[{"method": "HEAD", "status": 200, "headers": {"Upload-Offset": 8}}],
    )
    assert ran["outcome"]["code"] == "complete" and "upload history" in ran["outcome"]["error"]
    assert ran["stored"] == {}


def test_a_damaged_chunk_is_sent_again_from_the_servers_offset():
    ran = _run(
        size=8,
        answers=[
            {"method": "POST", "status": 201, "headers": {"Location": "/api/v1/uploads/4/"}},
            {"method": "PATCH", "status": 204, "headers": {"Upload-Offset": 4}},
            {"method": "PATCH", "status": 460},
            {"method": "HEAD", "status": 200, "headers": {"Upload-Offset": 4}},
            {"method": "PATCH", "status": 204, "headers": {"Upload-Offset": 8, "Scan-Id": 9}},
        ],
    )
    assert ran["outcome"] == {"scanId": "9"}
    assert [(r["method"], r["offset"]) for r in ran["requests"]] == [
        ("POST", None),
        ("PATCH", "0"),
        ("PATCH", "4"),
        ("HEAD", None),
        ("PATCH", "4"),
    ]
    assert ran["progress"] == [[0, False], [4, True], [8, True]]
    assert set(ran["messages"]) == {"hashing"}
    assert ran["stored"] == {}


def test_a_refusal_keeps_the_servers_message_fields_and_status():
    body = {"error": {"message": "No imaging consent in force.", "fields": {"hours": ["Too late."]}}}
    ran = _run(size=8, answers=[{"method": "POST", "status": 409, "body": body}])
    assert ran["outcome"] == {
        "error": "No imaging consent in force.",
        "fields": {"hours": ["Too late."]},
        "code": "refused",
        "status": 409,
    }
    assert ran["stored"] == {}
