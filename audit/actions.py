"""Audit event types: a stable integer enum.

The numbers are stored in the audit trail and in exports; never renumber or reuse
one (``RETIRED_NUMBERS`` lists those no action may take again). Add new actions at
the end of their block.
"""

from __future__ import annotations

from enum import IntEnum, unique

# Numbers that once named an action no code ever wrote (TRIAL_UPDATED 101, SITE_UPDATED 111,
# MEMBERSHIP_REVOKED 121): removed, so that no one believes those changes are audited, and
# never given to another action, so that a number keeps one meaning in every trail and
# export. record_event has always refused a number outside the enum, so no row holds them.
RETIRED_NUMBERS = frozenset({101, 111, 121})


@unique
class AuditAction(IntEnum):
    # Trial set-up and access (100s)
    TRIAL_CREATED = 100
    SITE_CREATED = 110
    MEMBERSHIP_GRANTED = 120
    # Subjects and identity (200s)
    SUBJECT_ENROLLED = 200
    SUBJECT_UPDATED = 201
    SUBJECT_STATUS_CHANGED = 202
    IDENTITY_CREATED = 210
    IDENTITY_UPDATED = 211
    IDENTITY_READ = 212
    IDENTITY_READ_REFUSED = 213
    # Consent (300s)
    CONSENT_DOCUMENT_CREATED = 300
    CONSENT_SIGNED = 310
    CONSENT_WITHDRAWN = 311
    CONSENT_UPDATED = 312
    # Nanoparticle lots and cell batches (400s)
    LOT_REGISTERED = 400
    LOT_UPDATED = 401
    LOT_QC_STATUS_CHANGED = 402
    BATCH_REGISTERED = 410
    BATCH_UPDATED = 411
    BATCH_LABELLED = 412
    BATCH_RELEASE_STATUS_CHANGED = 413
    # Injections (500s)
    INJECTION_RECORDED = 500
    INJECTION_UPDATED = 501
    INJECTION_VERIFICATION_REFUSED = 502  # the verifier's password was wrong or locked out
    # Scans and reconstructions (600s)
    SCANNER_REGISTERED = 600
    SYSTEM_MATRIX_REGISTERED = 610
    SYSTEM_MATRIX_RETIRED = 611
    UPLOAD_STARTED = 620
    UPLOAD_COMPLETED = 621
    UPLOAD_REFUSED = 622
    SCAN_STATUS_CHANGED = 630
    RECONSTRUCTION_COMPLETED = 640
    METRICS_RECORDED = 650
    ROI_DEFINED = 660
    OFF_TARGET_ALERT_RAISED = 670
    SCAN_REFILED = 680  # a scan moved to the subject / time point it belongs to, with a reason
    # Exports, downloads and reads (700s)
    FILE_DOWNLOADED = 700
    EXPORT_REQUESTED = 710
    EXPORT_COMPLETED = 711
    EXPORT_DOWNLOADED = 712
    EXPORT_RETRIED = 713
    AUDIT_TRAIL_VERIFIED = 720
    PACS_DESTINATION_REGISTERED = 730
    DICOM_SEND_REQUESTED = 731
    DICOM_SENT = 732
    DICOM_SEND_FAILED = 733
    # Accounts and signatures (800s)
    LOGIN_SUCCEEDED = 800
    LOGIN_FAILED = 801
    LOGOUT = 802
    ACCOUNT_LOCKED = 803
    ACCOUNT_UNLOCKED = 804  # an administrator released a lockout
    TOKEN_ISSUED = 810
    TOKEN_REVOKED = 811
    TOKEN_EXPIRED = 812
    TOKEN_REFUSED = 813  # a presented token that was unknown, ended, or outside its scope
    SIGNATURE_APPLIED = 820
    SIGNATURE_INVALIDATED = 821
    SIGNATURE_REFUSED = 822
    TWO_FACTOR_FAILED = 830
    TWO_FACTOR_DEVICE_ENROLLED = 831
    # Live injection monitoring (900s)
    LIVE_SESSION_CREATED = 900
    LIVE_SESSION_STARTED = 901  # the stream header was accepted
    LIVE_SESSION_ENDED = 902  # the recording became a scan
    LIVE_SESSION_ABORTED = 903
    LIVE_MARK_ENTERED = 904  # injection start / pause / resume / stop, entered by a clinician
    LIVE_FRAMES_RECORDED = 910  # one event per chunk of recorded frames: its chained SHA-256
    LIVE_ALERT_RAISED = 920
    LIVE_ALERT_ACKNOWLEDGED = 921
