from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from audit.actions import AuditAction
from config.errors import RuleViolation
from tests import factories as f
from tests.conftest import last_event
from trials.models import Consent
from trials.services.consent import consent_document_create, consent_sign


def _utc(*args):
    return dt.datetime(*args, tzinfo=dt.UTC)


@pytest.fixture
def subject(site_a):
    return f.SubjectFactory(site=site_a)


@pytest.fixture
def v1(trial):
    return f.ConsentDocumentFactory(
        trial=trial, version="1", irb_approval_date=dt.date(2025, 1, 10), effective_date=dt.date(2025, 2, 1)
    )


def test_it_adds_a_consent_document_with_its_sha256(trial, trial_manager):
    content = b"%PDF-1.4 informed consent v2"
    document = consent_document_create(
        actor=trial_manager,
        trial=trial,
        version="2",
        irb_approval_date=dt.date(2025, 6, 1),
        effective_date=dt.date(2025, 6, 15),
        file=ContentFile(content, name="consent-v2.pdf"),
    )
    assert document.sha256 == hashlib.sha256(content).hexdigest()
    assert document.file.read() == content
    event = last_event()
    assert (event.action, event.actor, event.trial_id) == (
        AuditAction.CONSENT_DOCUMENT_CREATED,
        trial_manager,
        trial.pk,
    )
    assert event.changes["sha256"] == [None, document.sha256]


def test_it_records_a_signature_on_the_version_in_force(subject, v1, coordinator_a):
    consent = consent_sign(
        actor=coordinator_a,
        subject=subject,
        document=v1,
        scopes=["imaging", "data_sharing"],
        signed_at=_utc(2025, 3, 1, 9),
    )
    assert consent.scopes == ["imaging", "data_sharing"]
    assert consent.obtained_by == coordinator_a
    event = last_event()
    assert (event.action, event.actor, event.subject_id, event.site_id) == (
        AuditAction.CONSENT_SIGNED,
        coordinator_a,
        subject.pk,
        subject.site_id,
    )
    assert event.changes["scope_imaging"] == [None, True]
    assert event.changes["scope_longitudinal_imaging"] == [None, False]


def test_it_refuses_a_version_not_yet_effective(subject, v1, coordinator_a, nothing_written):
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        consent_sign(
            actor=coordinator_a, subject=subject, document=v1, scopes=["imaging"], signed_at=_utc(2025, 1, 20, 9)
        )
    assert (caught.value.code, caught.value.field) == ("consent_document_not_effective", "document")


def test_it_reads_the_signature_date_in_the_site_time_zone(subject, v1, coordinator_a):
    # 23:30 UTC on 31 January is already 1 February in Berlin, the day v1 takes effect.
    consent = consent_sign(
        actor=coordinator_a, subject=subject, document=v1, scopes=["imaging"], signed_at=_utc(2025, 1, 31, 23, 30)
    )
    assert consent.pk


def test_it_refuses_a_superseded_version(subject, v1, trial, coordinator_a, nothing_written):
    f.ConsentDocumentFactory(
        trial=trial, version="2", irb_approval_date=dt.date(2025, 5, 1), effective_date=dt.date(2025, 5, 15)
    )
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        consent_sign(
            actor=coordinator_a, subject=subject, document=v1, scopes=["imaging"], signed_at=_utc(2025, 6, 1, 9)
        )
    assert caught.value.code == "consent_document_superseded"
    assert "superseded by v2" in caught.value.message


def test_it_refuses_a_document_of_another_trial(subject, coordinator_a, nothing_written):
    other = f.ConsentDocumentFactory(effective_date=dt.date(2025, 1, 1), irb_approval_date=dt.date(2024, 12, 1))
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        consent_sign(
            actor=coordinator_a, subject=subject, document=other, scopes=["imaging"], signed_at=_utc(2025, 3, 1, 9)
        )
    assert caught.value.code == "consent_document_wrong_trial"


@pytest.mark.parametrize("scopes", [[], ["imaging", "telepathy"]])
def test_it_refuses_unknown_or_no_scopes(subject, v1, coordinator_a, nothing_written, scopes):
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        consent_sign(actor=coordinator_a, subject=subject, document=v1, scopes=scopes, signed_at=_utc(2025, 3, 1, 9))
    assert caught.value.code == "invalid_scope"


def test_it_refuses_a_future_signature(subject, v1, coordinator_a, nothing_written):
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        consent_sign(
            actor=coordinator_a,
            subject=subject,
            document=v1,
            scopes=["imaging"],
            signed_at=timezone.now() + dt.timedelta(days=2),
        )
    assert caught.value.code == "signed_at_in_future"


@pytest.mark.parametrize("who", ["imaging_a", "investigator_a", "coordinator_b", "monitor", "sponsor"])
def test_it_refuses_anyone_but_the_site_coordinator(request, subject, v1, nothing_written, who):
    actor = request.getfixturevalue(who)
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        consent_sign(actor=actor, subject=subject, document=v1, scopes=["imaging"], signed_at=_utc(2025, 3, 1, 9))
    assert caught.value.code == "forbidden"
    assert Consent.objects.count() == 0


def test_it_refuses_consent_documents_from_non_coordinators(trial, imaging_a, nothing_written):
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        consent_document_create(
            actor=imaging_a,
            trial=trial,
            version="9",
            irb_approval_date=dt.date(2025, 1, 1),
            effective_date=dt.date(2025, 1, 2),
            file=ContentFile(b"x", name="x.txt"),
        )
    assert caught.value.code == "forbidden"
