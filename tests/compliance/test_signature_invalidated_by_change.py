from __future__ import annotations

from audit.actions import AuditAction
from audit.models import AuditEvent
from compliance.models import Signature
from compliance.signatures import content_sha256, signature_apply, signatures_verify
from tests.factories import PASSWORD
from trials.services.identity import subject_identity_read
from trials.services.injections import injection_record
from trials.services.subjects import subject_change_status


def test_it_signs_the_exact_content(visit, investigator_a):
    signature = signature_apply(signer=investigator_a, password=PASSWORD, obj=visit, meaning="approval")
    assert signature.valid and signature.content_sha256 == content_sha256(visit)
    assert signature.printed_name == "investigator_a" and signature.signed_at.utcoffset().total_seconds() == 0
    assert "Meaning: Approval" in signature.manifest and visit.code in signature.manifest
    event = AuditEvent.objects.get(action=AuditAction.SIGNATURE_APPLIED)
    assert event.subject_id == visit.pk and event.changes["content_sha256"] == signature.content_sha256


def test_it_invalidates_the_signature_when_signed_data_changes(visit, investigator_a, coordinator_a):
    signature = signature_apply(signer=investigator_a, password=PASSWORD, obj=visit, meaning="approval")
    assert [s.valid for s in signatures_verify(visit)] == [True]

    subject_change_status(actor=coordinator_a, subject=visit, status="completed", reason="follow-up done", confirm=True)

    # Invalidated by the edit itself, in its transaction: no read needed to notice.
    stored = Signature.objects.get(pk=signature.pk)
    assert stored.valid is False and stored.invalidated_at is not None
    assert (
        "status changed to completed" in stored.invalidation_reason and "follow-up done" in stored.invalidation_reason
    )
    event = AuditEvent.objects.get(action=AuditAction.SIGNATURE_INVALIDATED)
    assert event.actor == coordinator_a and event.reason == stored.invalidation_reason
    status_event = AuditEvent.objects.get(action=AuditAction.SUBJECT_STATUS_CHANGED)
    assert event.sequence == status_event.sequence + 1  # same transaction, right after the change

    visit.refresh_from_db()
    [checked] = signatures_verify(visit)
    assert checked.pk == signature.pk and checked.valid is False
    assert event.changes["signature"] == signature.pk and event.changes["valid"] == [True, False]
    assert event.changes["current_sha256"] != event.changes["signed_sha256"]
    # Checked again: still invalid, audited once.
    signatures_verify(visit)
    assert AuditEvent.objects.filter(action=AuditAction.SIGNATURE_INVALIDATED).count() == 1
    assert Signature.objects.get(pk=signature.pk).valid is False


def test_it_keeps_the_signature_valid_when_nothing_changed(visit, investigator_a, monitor):
    signature_apply(signer=investigator_a, password=PASSWORD, obj=visit, meaning="review")
    subject_identity_read(actor=monitor, subject=visit)  # a read changes nothing signed
    assert [s.valid for s in signatures_verify(visit)] == [True]
    assert not AuditEvent.objects.filter(action=AuditAction.SIGNATURE_INVALIDATED).exists()


def test_it_invalidates_the_visit_signature_when_an_injection_is_added(visit, ready, investigator_a, coordinator_a):
    import datetime as dt
    from decimal import Decimal

    from django.utils import timezone

    signature = signature_apply(signer=investigator_a, password=PASSWORD, obj=visit, meaning="approval")
    _, _, batch = ready
    injection = injection_record(
        actor=coordinator_a,
        subject=visit,
        batch=batch,
        administered_cells=1_000_000,
        volume_ml=Decimal("1.0"),
        route="intravenous",
        anatomical_target="tail vein",
        administered_at=timezone.now() - dt.timedelta(hours=1),
        administered_by=investigator_a,
        verified_by=coordinator_a,
        verifier_password=PASSWORD,
    )
    stored = Signature.objects.get(pk=signature.pk)
    assert stored.valid is False
    assert stored.invalidation_reason == f"injection #{injection.pk} recorded after sign-off"
    assert AuditEvent.objects.filter(action=AuditAction.SIGNATURE_INVALIDATED, actor=coordinator_a).count() == 1


def test_it_shows_the_signature_on_the_subject_detail_and_its_invalidation(visit, investigator_a, coordinator_a, api):
    signature_apply(signer=investigator_a, password=PASSWORD, obj=visit, meaning="approval")
    body = api(coordinator_a).get(f"/api/v1/subjects/{visit.pk}/").json()
    [shown] = body["signatures"]
    assert shown["meaning"] == "approval" and shown["valid"] is True and shown["printed_name"] == "investigator_a"

    subject_change_status(actor=coordinator_a, subject=visit, status="completed", reason="follow-up done", confirm=True)
    [shown] = api(coordinator_a).get(f"/api/v1/subjects/{visit.pk}/").json()["signatures"]
    assert shown["valid"] is False and "follow-up done" in shown["invalidation_reason"]
