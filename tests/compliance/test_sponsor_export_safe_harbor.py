from __future__ import annotations

import datetime as dt
import re

import pytest

from compliance import deidentify
from compliance.models import SCAN_EXPORT_KINDS, Export
from config.errors import RuleViolation
from tests import factories as f
from tests.compliance.conftest import unzip
from trials.models import SubjectIdentity


@pytest.fixture
def cohort(visit, site_a, site_b, coordinator_a, investigator_a):
    """Three subjects with identity: one over 89, one without data-sharing consent."""
    old = f.SubjectFactory(site=site_b, code="MPI-CT-T01-B-0001")
    f.SubjectIdentityFactory(
        subject=old,
        full_name="Wilhelmine Altmann",
        date_of_birth=dt.date(1921, 2, 3),
        medical_record_number="MRN7788990",
    )
    f.ConsentFactory(subject=old)
    private = f.SubjectFactory(site=site_a, code="MPI-CT-T01-A-0002")
    f.SubjectIdentityFactory(subject=private, full_name="Hans Verschwiegen", medical_record_number="MRN5550001")
    f.ConsentFactory(subject=private, scope_data_sharing=False)
    return [visit, old, private]


def _date_forms(value: dt.date) -> set[str]:
    return {value.isoformat(), value.strftime("%d.%m.%Y"), value.strftime("%m/%d/%Y"), value.strftime("%Y%m%d")}


def test_it_contains_none_of_the_safe_harbor_identifiers(built, sponsor, trial, cohort):
    export, content = built(sponsor, Export.Kind.SPONSOR_DEIDENTIFIED, trial)
    files = unzip(content)
    everything = "\n".join(files.values())

    # Every identity value in the database, in the forms a date is usually written.
    for identity in SubjectIdentity.objects.all():
        assert identity.full_name not in everything
        for part in identity.full_name.split():
            assert not re.search(rf"\b{re.escape(part)}\b", everything), part
        assert identity.medical_record_number not in everything
        for form in _date_forms(identity.date_of_birth):
            assert form not in everything
    for subject in cohort:
        assert subject.code not in everything  # the site's code maps back to the patient
    for batch in trial.cell_batches.all():
        assert batch.chain_of_identity_id not in everything and batch.donation_id not in everything
    assert "Charité" not in everything and "Berlin" not in everything and "MGH" not in everything

    # Real dates of each subject never appear in that subject's rows.
    subject_rows = files["subjects.csv"].splitlines()[1:]
    for subject in cohort[:2]:
        pseudonym = deidentify.subject_pseudonym(trial, subject)
        rows = [r for r in "\n".join(files.values()).splitlines() if r.startswith(f'"{pseudonym}"')]
        assert rows
        real = _date_forms(subject.enrolment_date) | {c.signed_at.date().isoformat() for c in subject.consents.all()}
        real |= {i.administered_at.date().isoformat() for i in subject.injections.all()}
        assert not any(d in row for row in rows for d in real)
    assert len(subject_rows) == 2  # the subject without data-sharing consent is left out
    assert deidentify.subject_pseudonym(trial, cohort[2]) not in everything
    assert any(row.endswith(',"90+"') for row in subject_rows)  # every cell quoted (compliance.csvsafe)


def test_it_shifts_every_date_of_a_subject_by_the_same_stable_offset(built, sponsor, trial, cohort):
    visit = cohort[0]
    days = deidentify.date_shift_days(trial, visit)
    assert -deidentify.DATE_SHIFT_MAX_DAYS <= days <= -1
    assert deidentify.date_shift_days(trial, visit) == days  # stable
    _, first = built(sponsor, Export.Kind.SPONSOR_DEIDENTIFIED, trial)
    _, second = built(sponsor, Export.Kind.SPONSOR_DEIDENTIFIED, trial)
    assert unzip(first)["subjects.csv"] == unzip(second)["subjects.csv"]
    pseudonym = deidentify.subject_pseudonym(trial, visit)
    [row] = [r for r in unzip(first)["subjects.csv"].splitlines() if r.startswith(f'"{pseudonym}"')]
    assert (visit.enrolment_date + dt.timedelta(days=days)).isoformat() in row


def test_it_gives_another_trial_other_pseudonyms_and_offsets(trial, visit):
    other = f.TrialFactory()
    assert deidentify.subject_pseudonym(other, visit) != deidentify.subject_pseudonym(trial, visit)
    offsets = {deidentify.date_shift_days(trial, f.SubjectFactory.build(code=f"X-{n}")) for n in range(50)}
    assert len(offsets) > 30 and max(offsets) <= -1 and min(offsets) >= -365


# Trial-scoped kinds; a sponsor and the scan-scoped DICOM kinds: tests/imaging/test_dicom_export_api.py.
@pytest.mark.parametrize(
    "kind", [k for k in Export.Kind.values if k != Export.Kind.SPONSOR_DEIDENTIFIED and k not in SCAN_EXPORT_KINDS]
)
def test_it_lets_a_sponsor_request_only_the_deidentified_set(sponsor, trial, kind, nothing_written):
    from compliance.services.exports import export_request

    with nothing_written(), pytest.raises(RuleViolation) as refused:
        export_request(actor=sponsor, kind=kind, trial=trial)
    assert refused.value.code == "forbidden"
    assert Export.objects.count() == 0


def test_it_reports_ages_over_89_as_90_plus():
    assert deidentify.safe_harbor_age(dt.date(1930, 6, 1), dt.date(2020, 5, 31)) == "89"
    assert deidentify.safe_harbor_age(dt.date(1930, 6, 1), dt.date(2020, 6, 1)) == "90+"
    assert deidentify.safe_harbor_age(None, dt.date(2020, 6, 1)) == ""
