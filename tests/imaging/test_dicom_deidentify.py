"""deidentify: no identity value survives anywhere; dates shift together; references still resolve."""

from __future__ import annotations

import datetime as dt

import highdicom as hd
import numpy as np
import pydicom
import pytest

from imaging.dicom import DeidentificationError, build_study, deidentify
from imaging.dicom.build import encode, parametric_map_volume
from imaging.dicom.deidentify import pseudonymous_patient_id, remap_uid
from tests.imaging.test_dicom_build import make_case

SECRET = b"trial MPI-CT-T01 export key 0001"
SHIFT_DAYS = -137

IDENTITY = dict(
    patient_id="MRN-20394857",
    patient_name="Müller-Lüdenscheidt^Hildegard^Maria",
    patient_birth_date=dt.date(1957, 11, 23),
    patient_sex="F",
    accession_number="ACC-77810293",
    study_id="ST-5512",
    institution_name="Charité Universitätsmedizin Berlin",
    study_description="Cardiac MPI Müller follow-up",
    device_serial_number="SN-BRK-44817",
)


@pytest.fixture
def identified():
    return build_study(*make_case(**IDENTITY))


@pytest.fixture
def deidentified(identified):
    return deidentify(identified, trial_secret=SECRET, date_shift_days=SHIFT_DAYS)


def walk(ds):
    """Every data element of a dataset, nested sequences included."""
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from walk(item)


def identity_strings(identified):
    values = {
        IDENTITY["patient_id"],
        "Müller-Lüdenscheidt",
        "Hildegard",
        "19571123",
        IDENTITY["accession_number"],
        IDENTITY["study_id"],
        IDENTITY["institution_name"],
        "Charité",
        IDENTITY["device_serial_number"],
        "Müller",
    }
    for ds in identified:
        for elem in walk(ds):
            if elem.VR == "UI" and elem.value and not str(elem.value).startswith("1.2.840.10008."):
                values.add(str(elem.value))
            if elem.VR in ("DA", "DT") and elem.value:
                values.add(str(elem.value)[:8])
    return values


def test_it_leaves_no_identity_value_in_any_element_or_byte(identified, deidentified):
    forbidden = identity_strings(identified)
    assert "20240506" in forbidden and len(forbidden) > 15  # the scan date and every original UID
    for ds in deidentified:
        for elem in walk(ds):
            if elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
                continue  # pixel data: searched below as encoded bytes
            text = str(elem.value)
            leaked = [v for v in forbidden if v in text]
            assert not leaked, f"{elem.keyword or elem.tag} of {ds.Modality} still holds {leaked}"
        for elem in walk(ds.file_meta):
            assert not [v for v in forbidden if v in str(elem.value)], elem.keyword
        encoded = encode(ds)
        for value in forbidden:
            for encoding in ("utf-8", "latin-1"):
                try:
                    needle = value.encode(encoding)
                except UnicodeEncodeError:
                    continue
                assert needle not in encoded, f"{value!r} ({encoding}) in the encoded {ds.Modality}"


def test_it_marks_every_object_with_the_profile_and_options(deidentified):
    for ds in deidentified:
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        assert ds.DeidentificationMethod
        codes = {(c.CodeValue, c.CodingSchemeDesignator) for c in ds.DeidentificationMethodCodeSequence}
        assert {("113100", "DCM"), ("113107", "DCM")} <= codes
        assert ds.PatientID == pseudonymous_patient_id(IDENTITY["patient_id"], SECRET)
        assert not ds.PatientName and not ds.PatientBirthDate and not ds.PatientSex
        assert "InstitutionName" not in ds and "StudyDescription" not in ds
        assert not ds.AccessionNumber
        assert not any(elem.tag.is_private for elem in walk(ds))
    assert {ds.DeviceSerialNumber for ds in deidentified if "DeviceSerialNumber" in ds} == {"DEIDENTIFIED"}


def test_it_shifts_every_date_by_the_same_offset(identified, deidentified):
    for before, after in zip(identified, deidentified, strict=True):
        old = {e.keyword: str(e.value) for e in walk(before) if e.VR == "DA" and e.value}
        new = {e.keyword: str(e.value) for e in walk(after) if e.VR == "DA" and e.value}
        old.pop("PatientBirthDate")
        assert old.keys() == new.keys()
        for keyword, value in old.items():
            shifted = dt.date.fromisoformat(value) + dt.timedelta(days=SHIFT_DAYS)
            assert new[keyword] == shifted.strftime("%Y%m%d"), keyword
        assert (after.StudyDate, after.StudyTime) == ("20231221", "143005")  # 2024-05-06 - 137 days, time kept


def test_it_remaps_uids_so_every_reference_still_resolves(identified, deidentified):
    source, pm, seg, sr = deidentified
    assert source.SOPInstanceUID == remap_uid(identified[0].SOPInstanceUID, SECRET)
    assert len({d.StudyInstanceUID for d in deidentified}) == 1
    assert len({d.FrameOfReferenceUID for d in (source, pm, seg)}) == 1
    for derived in (pm, seg):
        referenced = derived.ReferencedSeriesSequence[0]
        assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
        assert referenced.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    groups = hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_volumetric_roi_measurement_groups()
    assert {g.referenced_segment.referenced_sop_instance_uid for g in groups} == {seg.SOPInstanceUID}
    tracking = {str(s.TrackingUID) for s in seg.SegmentSequence}
    assert {str(g.tracking_uid) for g in groups} <= tracking
    known = {d.SOPInstanceUID for d in deidentified}
    for elem in walk(sr):
        if elem.keyword == "ReferencedSOPInstanceUID":
            assert elem.value in known
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    for ds in deidentified:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_it_keeps_pixels_masks_and_numbers(identified, deidentified):
    volume = make_case()[0]
    assert np.array_equal(parametric_map_volume(hd.pm.ParametricMap.from_dataset(deidentified[1])), volume)
    assert np.array_equal(deidentified[2].pixel_array, identified[2].pixel_array)
    before = hd.sr.Comprehensive3DSR.from_dataset(identified[3]).content.get_volumetric_roi_measurement_groups()
    after = hd.sr.Comprehensive3DSR.from_dataset(deidentified[3]).content.get_volumetric_roi_measurement_groups()
    assert [[(m.name.value, m.value) for m in g.get_measurements()] for g in before] == [
        [(m.name.value, m.value) for m in g.get_measurements()] for g in after
    ]


def test_it_does_not_touch_its_input(identified):
    before = [encode(ds) for ds in identified]
    deidentify(identified, trial_secret=SECRET, date_shift_days=SHIFT_DAYS)
    assert [encode(ds) for ds in identified] == before


def test_it_maps_the_same_uid_the_same_way_per_trial_only():
    uid = "1.2.3.4.5"
    assert remap_uid(uid, SECRET) == remap_uid(uid, SECRET)
    assert remap_uid(uid, SECRET) != remap_uid(uid, b"another trial's key material")
    assert remap_uid(uid, SECRET).startswith("2.25.") and len(remap_uid(uid, SECRET)) <= 64
    assert pydicom.uid.UID(remap_uid(uid, SECRET)).is_valid


@pytest.mark.parametrize(
    "secret, days, message",
    [
        (b"short", 10, "at least 16 bytes"),
        (SECRET, 0, "must not be 0"),
    ],
)
def test_it_refuses_a_weak_key_or_no_shift(identified, secret, days, message):
    with pytest.raises(DeidentificationError, match=message):
        deidentify(identified, trial_secret=secret, date_shift_days=days)
