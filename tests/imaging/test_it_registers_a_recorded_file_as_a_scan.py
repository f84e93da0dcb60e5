"""imaging.services.scan_uploads.scan_from_recording: a file already in storage (a live
session's recording) becomes a scan of the injection as a completed upload does: size
and SHA-256 of the bytes, status received, audited; the upload's rules refuse it (the
role, a withdrawn subject, a time point before the injection, another site's scanner, a
missing file, withdrawn consent, the same bytes twice) and then nothing is written."""

from __future__ import annotations

import hashlib
import shutil

import pytest
from django.conf import settings

from audit.actions import AuditAction
from config.errors import RuleViolation
from imaging.models import Scan
from imaging.services.scan_uploads import scan_from_recording
from tests.conftest import last_event
from tests.imaging.factories import ScannerFactory
from trials.models import Subject
from trials.services.consent import consent_withdraw

PATH = "live/recordings/test/live-1.mdf"


@pytest.fixture
def stored(pipeline):
    target = settings.MEDIA_ROOT / PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pipeline.sim["measurement"], target)
    return target


def _register(pipeline, **overrides):
    kwargs = dict(
        actor=pipeline.user,
        injection=pipeline.injection,
        scanner=pipeline.scanner,
        path=PATH,
        filename="live-1.mdf",
        hours_after_injection=0.5,
    )
    kwargs.update(overrides)
    return scan_from_recording(**kwargs)


def test_it_registers_the_stored_bytes_as_a_received_scan(pipeline, stored):
    scan = _register(pipeline)
    assert scan.status == Scan.Status.RECEIVED and scan.upload is None and scan.file == PATH
    assert scan.sha256 == hashlib.sha256(stored.read_bytes()).hexdigest() and scan.size_bytes == stored.stat().st_size
    assert (scan.hours_after_injection, scan.filename, scan.created_by) == (0.5, "live-1.mdf", pipeline.user)
    event = last_event()
    assert event.action == AuditAction.SCAN_STATUS_CHANGED and event.object_id == str(scan.pk)
    assert event.changes["sha256"] == [None, scan.sha256]


def _withdraw(pipeline, coordinator):
    consent_withdraw(actor=coordinator, consent=pipeline.consent, scopes=["imaging"], reason="no more imaging")


@pytest.mark.parametrize(
    "code, change",
    [
        ("forbidden", lambda p, c: {"actor": c}),
        ("invalid_time_point", lambda p, c: {"hours_after_injection": -0.1}),
        ("scanner_not_found", lambda p, c: {"scanner": ScannerFactory()}),
        ("recording_missing", lambda p, c: {"path": "live/recordings/none.mdf"}),
    ],
)
def test_it_refuses_what_an_upload_would_refuse(pipeline, stored, investigator_a, code, change, nothing_changed):
    other = change(pipeline, investigator_a)  # rows made before the count
    with nothing_changed(), pytest.raises(RuleViolation) as refused:
        _register(pipeline, **other)
    assert refused.value.code == code


def test_it_refuses_a_withdrawn_subject_a_withdrawn_consent_and_the_same_bytes_twice(
    pipeline, stored, coordinator_a, nothing_changed
):
    _register(pipeline)
    with nothing_changed(), pytest.raises(RuleViolation) as refused:
        _register(pipeline, filename="again.mdf")
    assert refused.value.code == "duplicate_scan"
    Scan.objects.all().delete()
    _withdraw(pipeline, coordinator_a)
    with nothing_changed(), pytest.raises(RuleViolation) as refused:
        _register(pipeline)
    assert refused.value.code == "consent_withdrawn"
    Subject.objects.filter(pk=pipeline.subject.pk).update(status=Subject.Status.WITHDRAWN)
    pipeline.injection.subject.refresh_from_db()
    with nothing_changed(), pytest.raises(RuleViolation) as refused:
        _register(pipeline)
    assert refused.value.code == "subject_withdrawn"
