"""GET must never write (issue #18, item 7): opening any page, as any role, changes no
row of any table. The change of a signed record invalidates its signatures where the
change happens (the service, through ``audit.chain.record_change``), never on a read.

The one documented exception is the access log (HIPAA 164.312(b), ``audit/access.py``):
a file handed out (``log_download``: FILE_DOWNLOADED) and a read of identifiable data,
allowed or refused (IDENTITY_READ, IDENTITY_READ_REFUSED), are audit events written on
the request that reads. The session table is the framework's, not data.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import F
from django.urls import URLPattern, get_resolver

from audit.actions import AuditAction
from audit.models import AuditEvent
from compliance.models import Signature
from compliance.signatures import signature_apply
from imaging.models import Measurement
from tests import factories as f
from trials.models import Subject

# Audit events a GET may write: the access log of what it hands out.
ACCESS_LOG = {AuditAction.FILE_DOWNLOADED, AuditAction.IDENTITY_READ, AuditAction.IDENTITY_READ_REFUSED}
AUDIT_TABLES = {AuditEvent._meta.db_table, "audit_chainhead", "audit_auditcheckpoint"}
FRAMEWORK_TABLES = {"django_session"}
WRITE = re.compile(r"^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?([\w.]+)\"?", re.IGNORECASE)

ROLES = [
    "coordinator_a",
    "imaging_a",
    "investigator_a",
    "coordinator_b",
    "monitor",
    "auditor",
    "sponsor",
    "trial_manager",
    "admin",
]


class Writes:
    """Every INSERT, UPDATE or DELETE the connection runs, by table."""

    def __init__(self):
        self.tables: list[str] = []

    def __call__(self, execute, sql, params, many, context):
        match = WRITE.match(sql)
        if match:
            self.tables.append(match.group(2).strip('"'))
        return execute(sql, params, many, context)


def _pages(objects: dict) -> list[str]:
    """Every page of the web app and the compliance pages, each with an object of its kind."""
    resolver = get_resolver()
    urls = []
    for prefix, include in (("/", "web.urls"), ("/compliance/", "compliance.urls_pages")):
        module = __import__(include, fromlist=["urlpatterns"])
        for pattern in module.urlpatterns:
            assert isinstance(pattern, URLPattern)
            route = str(pattern.pattern)
            kind = route.split("/")[0]
            pk = objects.get(kind, 999_999)
            route = route.replace("<int:pk>", str(pk)).replace("<str:plane>", "axial").replace("<int:index>", "1")
            urls.append(prefix + route)
    assert resolver.resolve("/scans/1/")  # the routes are the project's own
    return urls


@pytest.fixture
def admin(db):
    return get_user_model().objects.create_superuser("platform-admin", password=f.PASSWORD)


@pytest.fixture
def demo(quantified, investigator_a, coordinator_a):
    """A quantified scan and its subject, both signed, and both changed afterwards outside
    the services (as a database repair would): a read that re-checked and wrote the
    invalidation would show here."""
    scan = quantified
    subject = scan.subject
    reconstruction = scan.reconstructions.get()
    signature_apply(signer=investigator_a, password=f.PASSWORD, obj=subject, meaning="approval")
    signature_apply(signer=investigator_a, password=f.PASSWORD, obj=reconstruction, meaning="review")
    Measurement.objects.filter(reconstruction=reconstruction).update(iron_ng=F("iron_ng") + 1.0)
    Subject.objects.filter(pk=subject.pk).update(enrolment_date=subject.enrolment_date.replace(day=1))
    injection = scan.injection
    return {
        "subjects": subject.pk,
        "injections": injection.pk,
        "consents": subject.consents.first().pk,
        "lots": injection.batch.nanoparticle_lot_id,
        "batches": injection.batch_id,
        "calibrations": scan.system_matrix_id,
        "scans": scan.pk,
        "live": 999_999,
        "exports": 999_999,
    }


@pytest.mark.parametrize("who", ROLES)
def test_no_page_writes_on_get(request, browser_client, demo, who):
    client = browser_client(request.getfixturevalue(who))
    pages = _pages(demo)
    assert len(pages) > 40
    offenders, statuses = [], {}
    for url in pages:
        writes = Writes()
        last = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0
        with connection.execute_wrapper(writes):
            response = client.get(url)
        statuses[url] = response.status_code
        assert response.status_code < 500, url
        events = list(AuditEvent.objects.filter(sequence__gt=last).values_list("action", flat=True))
        tables = set(writes.tables) - FRAMEWORK_TABLES
        if not events:
            written = tables
        else:
            written = tables - AUDIT_TABLES
            if not set(events) <= {int(a) for a in ACCESS_LOG}:
                written |= {f"audit event {AuditAction(a).name}" for a in events}
        if written:
            offenders.append((url, response.status_code, sorted(written)))
    assert offenders == []
    # The signed records stay as stored: valid, until a service or the report records the change.
    assert list(Signature.objects.values_list("valid", flat=True)) == [True, True]
    # The pages were really opened, not all refused.
    if who in ("coordinator_a", "investigator_a", "monitor"):
        assert statuses[f"/scans/{demo['scans']}/"] == 200 and statuses[f"/subjects/{demo['subjects']}/"] == 200


def test_the_scan_page_shows_a_signature_whose_content_changed_as_invalid(browser_client, demo, monitor):
    html = browser_client(monitor).get(f"/scans/{demo['scans']}/").content.decode()
    assert "the signed content changed after signing" in html
    assert Signature.objects.filter(valid=False).count() == 0  # shown, not written
