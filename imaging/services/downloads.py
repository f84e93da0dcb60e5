"""File downloads of a scan, each audited."""

from __future__ import annotations

from django.db import transaction

from audit.actions import AuditAction
from imaging.models import (
    Scan,
)
from imaging.services._common import _audit_scan
from trials.models import Role
from trials.permissions import access

# Raw files may carry identifying acquisition metadata: not for sponsors (they get de-identified exports).
DOWNLOAD_ROLES = frozenset({Role.COORDINATOR, Role.IMAGING_STAFF, Role.INVESTIGATOR, Role.MONITOR, Role.AUDITOR})


def file_download_record(*, actor, scan: Scan, which: str, path: str) -> None:
    access.require_role(actor, site=scan.subject.site, roles=DOWNLOAD_ROLES, action="download scan files")
    with transaction.atomic():
        _audit_scan(
            actor=actor,
            action=AuditAction.FILE_DOWNLOADED,
            scan=scan,
            changes={"file": [None, which], "path": [None, path]},
        )
