"""Access logging (HIPAA 164.312(b)): every download of a file and every read of
identifiable data leaves an audit event saying who, what, when and from where (the
request context gives the client address and request id).

Other apps call ``log_download`` when they hand out a file (scan MDF, DICOM, consent
document, certificate); identity reads, and refused attempts at them, are audited by
``trials.services.subject_identity_read``.
"""

from __future__ import annotations

from django.db import transaction

from audit.actions import AuditAction
from audit.chain import record_event


def _scope_of(obj) -> dict:
    subject = getattr(obj, "subject", None)
    site_id = getattr(obj, "site_id", None) or getattr(subject, "site_id", None)
    trial_id = getattr(obj, "trial_id", None) or getattr(subject, "trial_id", None)
    if trial_id is None and site_id is not None:
        site = getattr(obj, "site", None) or getattr(subject, "site", None)
        trial_id = getattr(site, "trial_id", None)
    subject_id = getattr(obj, "subject_id", None)
    if obj._meta.label_lower == "trials.subject":
        subject_id = obj.pk
    return {"trial_id": trial_id, "site_id": site_id, "subject_id": subject_id}


def log_download(actor, obj, what: str, *, action: AuditAction = AuditAction.FILE_DOWNLOADED, **details):
    """Record that ``actor`` downloaded ``what`` (e.g. "scan MDF", "DICOM series") of ``obj``.

    Call it in the view right before the file is streamed. The event commits on its own:
    the download happens whatever the response does afterwards."""
    with transaction.atomic():
        return record_event(
            actor=actor,
            action=action,
            object_type=obj._meta.label_lower,
            object_id=obj.pk,
            changes={"what": what, **details},
            **_scope_of(obj),
        )
