"""Original and reconstruction files download only at the scan's site, and every download is audited."""

from __future__ import annotations

from pathlib import Path

from audit.actions import AuditAction
from audit.models import AuditEvent
from tests.conftest import last_event
from tests.imaging.helpers import process, uploaded_scan


def _content(response) -> bytes:
    return b"".join(response.streaming_content)


def test_it_serves_both_files_and_audits_each_download(api, pipeline, investigator_a, settings):
    scan = process(uploaded_scan(api, pipeline, pipeline.sim["measurement"]))
    client = api(investigator_a)
    original = client.get(f"/api/v1/scans/{scan.pk}/original/")
    assert original.status_code == 200
    assert _content(original) == Path(pipeline.sim["measurement"]).read_bytes()
    event = last_event()
    assert event.action == AuditAction.FILE_DOWNLOADED and event.actor_username == "investigator_a"
    assert event.changes["file"] == [None, "original"]
    reconstruction = client.get(f"/api/v1/scans/{scan.pk}/reconstruction-file/")
    assert reconstruction.status_code == 200
    assert _content(reconstruction)[:8] == b"\x89HDF\r\n\x1a\n"
    assert AuditEvent.objects.filter(action=AuditAction.FILE_DOWNLOADED).count() == 2


def test_it_hides_files_from_another_site_and_refuses_sponsors(api, pipeline, coordinator_b, sponsor):
    scan = process(uploaded_scan(api, pipeline, pipeline.sim["measurement"]))
    events = AuditEvent.objects.count()
    for path in ("original/", "reconstruction-file/", "metrics/", ""):
        assert api(coordinator_b).get(f"/api/v1/scans/{scan.pk}/{path}").status_code == 404
    assert api(sponsor).get(f"/api/v1/scans/{scan.pk}/original/").status_code == 403
    assert AuditEvent.objects.count() == events
