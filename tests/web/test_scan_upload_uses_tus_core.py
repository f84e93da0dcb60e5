"""The single-scan upload page speaks tus through tus-core.js (window.MpiTus.upload), the
same client as the batch page: the page loads it before its own script, and its own script
keeps no second copy of the protocol."""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings

STATIC = Path(settings.BASE_DIR) / "web" / "static" / "web"


def test_the_upload_page_loads_tus_core_before_its_own_script(browser_client, imaging_a, pipeline):
    html = browser_client(imaging_a).get(f"/subjects/{pipeline.subject.pk}/upload/").content.decode()
    order = [html.find(name) for name in ("js-sha256-1.0.0.min.js", "tus-core.js", "tus-upload.js")]
    assert -1 not in order and order == sorted(order), order


def test_the_upload_page_script_leaves_the_protocol_to_tus_core():
    page_script = re.sub(r"/\*.*?\*/|//[^\n]*", "", (STATIC / "tus-upload.js").read_text(), flags=re.S)
    assert "MpiTus.upload(" in page_script
    for protocol in ("PATCH", "Upload-Checksum", "Upload-Offset", "crypto.subtle", "sha256.create", "Tus-Resumable"):
        assert protocol not in page_script, protocol
