"""compliance.services.exports.export_request refuses a scope that does not hold together,
and a role that may not have the export, with a specific code; nothing is written (no
Export row, no audit event)."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from compliance.models import Export
from compliance.services.exports import export_request
from config.errors import RuleViolation
from tests import factories as f
from tests.imaging.factories import ScanFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def cast(trial, site_a, site_b, coordinator_a, sponsor):
    subject_a = f.SubjectFactory(site=site_a)
    subject_b = f.SubjectFactory(site=site_b)
    other_trial_site = f.SiteFactory()
    return {
        "trial": trial,
        "site_a": site_a,
        "subject_a": subject_a,
        "subject_b": subject_b,
        "other_trial_site": other_trial_site,
        "scan_a": ScanFactory(subject=subject_a),
        "coordinator_a": coordinator_a,
        "sponsor": sponsor,
    }


CASES = {
    "unknown kind": ("coordinator_a", {"kind": "spreadsheet", "site": "site_a"}, "invalid_kind", "kind"),
    "a scan on a trial-wide kind": (
        "coordinator_a",
        {"kind": "report_pdf", "site": "site_a", "scan": "scan_a"},
        "invalid_scope",
        "scan",
    ),
    "a DICOM study without its scan": ("coordinator_a", {"kind": "dicom_study"}, "scan_required", "scan"),
    "a scan outside the subject given": (
        "coordinator_a",
        {"kind": "dicom_study", "scan": "scan_a", "subject": "subject_b"},
        "scope_mismatch",
        "subject",
    ),
    "a site of another trial": (
        "coordinator_a",
        {"kind": "report_pdf", "site": "other_trial_site"},
        "scope_mismatch",
        "site",
    ),
    "a subject outside the site given": (
        "coordinator_a",
        {"kind": "report_pdf", "site": "site_a", "subject": "subject_b"},
        "scope_mismatch",
        "subject",
    ),
    "a coordinator asking for the whole trial": ("coordinator_a", {"kind": "report_pdf"}, "forbidden", None),
    "a sponsor asking for identified data": ("sponsor", {"kind": "report_csv"}, "forbidden", "kind"),
    "a sponsor asking for one subject": (
        "sponsor",
        {"kind": "sponsor_deidentified", "subject": "subject_a"},
        "forbidden",
        "subject",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_it_refuses_and_writes_nothing(cast, case):
    who, scope, code, field = CASES[case]
    arguments = {name: (value if name == "kind" else cast[value]) for name, value in scope.items()}
    arguments.setdefault("trial", cast["trial"])
    exports, events = Export.objects.count(), AuditEvent.objects.count()

    with pytest.raises(RuleViolation) as refused:
        export_request(actor=cast[who], **arguments)

    assert (refused.value.code, refused.value.field) == (code, field)
    assert (Export.objects.count(), AuditEvent.objects.count()) == (exports, events)


def test_the_same_scope_is_accepted_for_a_role_that_may_have_it(cast):
    export = export_request(actor=cast["coordinator_a"], kind="report_pdf", trial=cast["trial"], site=cast["site_a"])

    assert Export.objects.get(pk=export.pk).status == Export.Status.QUEUED
