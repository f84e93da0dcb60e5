from __future__ import annotations

from compliance.actions import AuditAction
from compliance.models import AuditEvent, Signature
from compliance.signatures import content_sha256, signature_apply, signatures_verify
from tests.factories import PASSWORD
from trials import services


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

    services.subject_change_status(actor=coordinator_a, subject=visit, status="completed", reason="follow-up done")
    visit.refresh_from_db()
    [checked] = signatures_verify(visit)

    assert checked.pk == signature.pk and checked.valid is False and checked.invalidated_at is not None
    assert "SUBJECT_STATUS_CHANGED" in checked.invalidation_reason and "follow-up done" in checked.invalidation_reason
    event = AuditEvent.objects.get(action=AuditAction.SIGNATURE_INVALIDATED)
    assert event.changes["signature"] == signature.pk and event.changes["valid"] == [True, False]
    assert event.changes["current_sha256"] != event.changes["signed_sha256"]
    # Checked again: still invalid, audited once.
    signatures_verify(visit)
    assert AuditEvent.objects.filter(action=AuditAction.SIGNATURE_INVALIDATED).count() == 1
    assert Signature.objects.get(pk=signature.pk).valid is False


def test_it_keeps_the_signature_valid_when_nothing_changed(visit, investigator_a, monitor):
    signature_apply(signer=investigator_a, password=PASSWORD, obj=visit, meaning="review")
    services.subject_identity_read(actor=monitor, subject=visit)  # a read changes nothing signed
    assert [s.valid for s in signatures_verify(visit)] == [True]
    assert not AuditEvent.objects.filter(action=AuditAction.SIGNATURE_INVALIDATED).exists()
