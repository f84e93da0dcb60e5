"""The first scan of an injection needs imaging consent; every later time point is
follow-up imaging and needs the longitudinal imaging scope too (DOMAIN §4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.actions import AuditAction
from audit.models import AuditEvent
from config.errors import RuleViolation
from imaging.models import Scan, Upload
from imaging.services.scan_steps import scan_validate
from imaging.services.scan_uploads import assert_imaging_consent, imaging_scopes
from tests.imaging.helpers import uploaded_scan
from trials.services.consent import consent_withdraw


def _withdraw_longitudinal(pipeline, coordinator):
    consent = pipeline.subject.consents.get()
    consent_withdraw(
        actor=coordinator, consent=consent, scopes=["longitudinal_imaging"], reason="declined follow-up scans"
    )


def test_it_needs_only_imaging_consent_for_the_first_scan(pipeline):
    assert imaging_scopes(injection=pipeline.injection, hours_after_injection=24) == ("imaging",)


def test_it_refuses_a_follow_up_scan_after_longitudinal_imaging_was_withdrawn(api, pipeline, coordinator_a, tmp_path):
    first = uploaded_scan(api, pipeline, pipeline.sim["measurement"], hours=0)
    assert imaging_scopes(injection=pipeline.injection, hours_after_injection=24) == (
        "imaging",
        "longitudinal_imaging",
    )
    _withdraw_longitudinal(pipeline, coordinator_a)
    uploads, scans = Upload.objects.count(), Scan.objects.count()

    follow_up = tmp_path / "follow-up.mdf"
    follow_up.write_bytes(Path(pipeline.sim["measurement"]).read_bytes() + b"\0")  # another file
    with pytest.raises(AssertionError, match="consent_withdrawn"):
        uploaded_scan(api, pipeline, follow_up, hours=24)

    assert Upload.objects.count() == uploads and Scan.objects.count() == scans
    refused = AuditEvent.objects.filter(action=AuditAction.UPLOAD_REFUSED).latest("sequence")
    assert refused.subject_id == pipeline.subject.pk and "longitudinal" in refused.reason.lower()
    # The baseline scan itself is untouched and still processes.
    scan_validate(scan_id=first.pk, token="t")
    first.refresh_from_db()
    assert first.status == "validated"


def test_it_stops_processing_a_follow_up_scan_after_the_withdrawal(api, pipeline, coordinator_a, tmp_path):
    uploaded_scan(api, pipeline, pipeline.sim["measurement"], hours=0)
    follow_up = tmp_path / "follow-up.mdf"
    follow_up.write_bytes(Path(pipeline.sim["measurement"]).read_bytes() + b"\0")
    later = uploaded_scan(api, pipeline, follow_up, hours=24)
    _withdraw_longitudinal(pipeline, coordinator_a)

    scan_validate(scan_id=later.pk, token="t")
    later.refresh_from_db()
    assert later.status == "rejected" and "longitudinal" in later.status_reason.lower()
    with pytest.raises(RuleViolation):
        assert_imaging_consent(pipeline.subject, injection=pipeline.injection, hours_after_injection=24, scan=later)


def test_it_refuses_uploads_for_a_subject_who_left_the_trial(api, pipeline, coordinator_a, nothing_changed):
    from trials.services.subjects import subject_change_status

    subject_change_status(
        actor=coordinator_a, subject=pipeline.subject, status="withdrawn", reason="moved abroad", confirm=True
    )
    with nothing_changed():
        response = api(pipeline.user).post(
            "/api/v1/uploads/",
            HTTP_TUS_RESUMABLE="1.0.0",
            HTTP_UPLOAD_LENGTH="100",
            HTTP_UPLOAD_METADATA=services_metadata(pipeline),
        )
    assert response.status_code == 409 and response.json()["error"]["code"] == "subject_withdrawn"


def services_metadata(pipeline) -> str:
    from imaging.uploads import encode_metadata

    return encode_metadata(
        {
            "subject": pipeline.subject.pk,
            "injection": pipeline.injection.pk,
            "hours": 24,
            "scanner": pipeline.scanner.pk,
            "sha256": "0" * 64,
            "filename": "x.mdf",
        }
    )
