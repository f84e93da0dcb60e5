"""The de-identified study of a real quantified scan: no identity value, no original UID
or date, the subject's sponsor date shift, the same remapped UIDs on every export."""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom import Dataset

from compliance.deidentify import date_shift_days, subject_pseudonym
from config.api_errors import status_for
from config.errors import RuleViolation
from imaging import dicom_export
from imaging.dicom.build import encode
from imaging.models import Scan
from tests.imaging.dicom_cases import quantified  # noqa: F401
from tests.imaging.helpers import uploaded_scan
from trials.models import SubjectIdentity


def _values(datasets, vr: set[str]) -> set[str]:
    found: set[str] = set()

    def walk(ds: Dataset):
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif elem.VR in vr and elem.value not in (None, ""):
                values = elem.value if elem.VM > 1 else [elem.value]
                found.update(str(v) for v in values)

    for ds in datasets:
        walk(ds)
    return found


def test_it_leaves_no_identity_uid_or_original_date(quantified):  # noqa: F811
    original = dicom_export.study_for_scan(quantified)
    deidentified = dicom_export.deidentified_study_for_scan(quantified)
    identity = SubjectIdentity.objects.get(subject=quantified.subject)
    blob = b"".join(encode(ds) for ds in deidentified)
    for secret in (
        identity.full_name,
        identity.medical_record_number,
        identity.date_of_birth.strftime("%Y%m%d"),
        identity.date_of_birth.isoformat(),
        quantified.subject.code,
        quantified.subject.site.name,
    ):
        assert secret.encode() not in blob, secret
    original_uids = {u for u in _values(original, {"UI"}) if not u.startswith("1.2.840.10008.")}
    assert original_uids and not original_uids & _values(deidentified, {"UI"})
    original_dates = {v[:8] for v in _values(original, {"DA", "DT"})}
    assert original_dates and not original_dates & {v[:8] for v in _values(deidentified, {"DA", "DT"})}
    assert {ds.PatientID for ds in deidentified} == {subject_pseudonym(quantified.subject.trial, quantified.subject)}
    assert {ds.PatientIdentityRemoved for ds in deidentified} == {"YES"}


def test_it_shifts_dates_by_the_subjects_sponsor_shift(quantified):  # noqa: F811
    original = dicom_export.study_for_scan(quantified)
    deidentified = dicom_export.deidentified_study_for_scan(quantified)
    shift = date_shift_days(quantified.subject.trial, quantified.subject)
    taken = dicom_export.acquired_at(quantified)
    assert original[0].StudyDate == taken.strftime("%Y%m%d")
    for before, after in zip(original, deidentified, strict=True):
        moved = dt.date.fromisoformat(after.StudyDate) - dt.date.fromisoformat(before.StudyDate)
        assert moved.days == shift
        assert after.StudyTime == before.StudyTime


def test_it_gives_the_same_remapped_uids_on_every_export(quantified):  # noqa: F811
    first = dicom_export.deidentified_study_for_scan(quantified)
    second = dicom_export.deidentified_study_for_scan(quantified)
    for a, b in zip(first, second, strict=True):
        assert (
            a.StudyInstanceUID,
            a.SeriesInstanceUID,
            a.SOPInstanceUID,
            a.FrameOfReferenceUID if "FrameOfReferenceUID" in a else None,
        ) == (
            b.StudyInstanceUID,
            b.SeriesInstanceUID,
            b.SOPInstanceUID,
            b.FrameOfReferenceUID if "FrameOfReferenceUID" in b else None,
        )


def test_it_puts_the_scan_facts_into_the_identified_study(quantified):  # noqa: F811
    source, pm, seg, sr = dicom_export.study_for_scan(quantified)
    assert {ds.PatientID for ds in (source, pm, seg, sr)} == {quantified.subject.code}
    assert source.InstitutionName == quantified.subject.site.name
    # The name slot holds the subject's trial code: identity never goes into DICOM.
    assert str(source.PatientName) == f"{quantified.subject.code}^"
    assert len(seg.SegmentSequence) == quantified.measurements.count()


def test_it_refuses_a_scan_that_is_not_quantified(api, pipeline):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    assert scan.status == Scan.Status.RECEIVED
    for build in (dicom_export.study_for_scan, dicom_export.deidentified_study_for_scan):
        with pytest.raises(RuleViolation) as refused:
            build(scan)
        assert refused.value.code == "scan_not_quantified" and status_for(refused.value.code) == 409
