"""De-identification of an exported study (DICOM PS3.15 Annex E).

Profile: Basic Application Level Confidentiality Profile with the Retain
Longitudinal Temporal Information with Modified Dates Option; the SR is kept
readable with the Clean Structured Content Option (its Content Sequence would
otherwise be removed, action X).

What it does to every element, nested sequences included:

- private elements are removed (no Retain Safe Private Option);
- elements named in :data:`ACTIONS` get their Annex E action
  (X remove, Z empty, D dummy value);
- every UID that is not a DICOM-registered one (root ``1.2.840.10008``) is
  replaced by ``2.25.<int>`` of HMAC-SHA256(trial secret, UID): the same UID
  always maps to the same new UID, so SR -> SEG, SEG/PM -> source series and
  Frame of Reference references stay intact across objects and exports, and
  without the per-trial secret nobody can test a guessed original UID;
- every DA and the date part of every DT is shifted by ``date_shift_days``
  (times of day are kept, so intervals between scans are exact);
- every PN is emptied (Annex E gives Z or D to every person name it lists);
- Patient ID becomes a keyed pseudonym of the original (or the one given),
  Patient Identity Removed = YES, Longitudinal Temporal Information Modified
  = MODIFIED, De-identification Method and its Code Sequence are added.

The action table covers the attributes this platform writes and the common
identifying ones of Table E.1-1; anything else that is free text and not
listed stays, which is safe for the objects :func:`imaging.dicom.build.build_study`
makes (their free text is platform-generated) but is not a general-purpose
de-identifier for arbitrary incoming DICOM.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import hmac
import uuid
from collections.abc import Sequence

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence as DicomSequence

DICOM_UID_ROOT = "1.2.840.10008."
DUMMY = "DEIDENTIFIED"

# Annex E Table E.1-1 actions (basic profile column) for the attributes that
# matter here. UIDs (U), dates (shifted) and PN (Z) are handled by VR.
ACTIONS: dict[str, str] = {
    # patient
    "PatientName": "Z",
    "PatientBirthDate": "Z",
    "PatientBirthTime": "X",
    "PatientSex": "Z",
    "PatientAge": "X",
    "PatientSize": "X",
    "PatientWeight": "X",
    "PatientAddress": "X",
    "PatientTelephoneNumbers": "X",
    "PatientBirthName": "X",
    "PatientMotherBirthName": "X",
    "OtherPatientIDs": "X",
    "OtherPatientNames": "X",
    "OtherPatientIDsSequence": "X",
    "IssuerOfPatientID": "X",
    "MedicalRecordLocator": "X",
    "EthnicGroup": "X",
    "Occupation": "X",
    "AdditionalPatientHistory": "X",
    "PatientComments": "X",
    "MilitaryRank": "X",
    "BranchOfService": "X",
    "RegionOfResidence": "X",
    "CountryOfResidence": "X",
    "ResponsiblePerson": "X",
    "ReferencedPatientSequence": "X",
    # study / visit / request
    "AccessionNumber": "Z",
    "StudyDescription": "X",
    "SeriesDescription": "X",
    "ProtocolName": "X",
    "AdmissionID": "X",
    "RequestAttributesSequence": "X",
    "RequestedProcedureID": "X",
    "RequestedProcedureDescription": "X",
    "ScheduledProcedureStepID": "X",
    "PerformedProcedureStepID": "X",
    "PerformedProcedureStepDescription": "X",
    "ImageComments": "X",
    "DerivationDescription": "X",
    "AcquisitionComments": "X",
    "TimezoneOffsetFromUTC": "X",
    # people
    "ReferringPhysicianName": "Z",
    "ReferringPhysicianAddress": "X",
    "ReferringPhysicianTelephoneNumbers": "X",
    "PhysiciansOfRecord": "X",
    "PerformingPhysicianName": "X",
    "NameOfPhysiciansReadingStudy": "X",
    "RequestingPhysician": "X",
    "OperatorsName": "X",
    "OperatorIdentificationSequence": "X",
    "ContentCreatorName": "Z",
    "AuthorObserverSequence": "X",
    "ParticipantSequence": "X",
    # places and devices
    "InstitutionName": "X",
    "InstitutionAddress": "X",
    "InstitutionalDepartmentName": "X",
    "InstitutionCodeSequence": "X",
    "StationName": "X",
    # Type 1 in the Enhanced General Equipment module of SEG and PM: a dummy, not removal.
    "DeviceSerialNumber": "D",
    "PlateID": "X",
    "DetectorID": "X",
    "GantryID": "X",
}

METHOD_TEXT = [
    "PS3.15 E Basic Application Confidentiality Profile",
    "Retain Longitudinal Temporal Info Modified Dates",
    "UIDs remapped: HMAC-SHA256 per-trial key, 2.25",
]

BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
MODIFIED_DATES = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
CLEAN_STRUCTURED_CONTENT = ("113104", "Clean Structured Content Option")


class DeidentificationError(ValueError):
    """The input cannot be de-identified as asked (bad secret, zero shift)."""


def remap_uid(uid: str, trial_secret: bytes) -> str:
    """The de-identified UID of ``uid``: ``2.25.`` + the first 128 bits of HMAC-SHA256."""
    digest = hmac.new(trial_secret, uid.strip().encode("ascii"), hashlib.sha256).digest()
    return f"2.25.{uuid.UUID(bytes=digest[:16], version=4).int}"


def pseudonymous_patient_id(patient_id: str, trial_secret: bytes) -> str:
    """A stable pseudonym (16 characters) of a Patient ID under the trial's key."""
    digest = hmac.new(trial_secret, b"patient-id:" + patient_id.encode("utf-8"), hashlib.sha256)
    return "P" + digest.hexdigest()[:15].upper()


def _shift_date(value: str, days: int) -> str:
    if len(value) < 8:
        # A year-only (or year-month) DT/DA cannot be shifted by days; the
        # platform never writes one, and a bare year is not an identifier.
        return value
    shifted = dt.datetime.strptime(value[:8], "%Y%m%d").date() + dt.timedelta(days=days)  # noqa: DTZ007 - DA has no zone
    return shifted.strftime("%Y%m%d") + value[8:]


def _shift(value, days: int):
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_shift_date(str(v), days) for v in value]
    return _shift_date(str(value), days)


def _is_registered(uid: str) -> bool:
    return uid.startswith(DICOM_UID_ROOT)


def _remap_value(value, secret: bytes):
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v) if _is_registered(str(v)) else remap_uid(str(v), secret) for v in value]
    value = str(value)
    if not value or _is_registered(value):
        return value
    return remap_uid(value, secret)


def _clean(ds: Dataset, secret: bytes, days: int, seen: set[int]) -> None:
    # highdicom shares item objects between sequences (and deepcopy keeps the
    # sharing): an item cleaned twice would have its UIDs remapped twice.
    if id(ds) in seen:
        return
    seen.add(id(ds))
    ds.remove_private_tags()
    for elem in list(ds):
        _clean_element(ds, elem, secret, days, seen)


def _clean_element(ds: Dataset, elem: DataElement, secret: bytes, days: int, seen: set[int]) -> None:
    action = ACTIONS.get(elem.keyword)
    if action == "X":
        del ds[elem.tag]
        return
    if action == "Z":
        elem.value = None if elem.VR != "SQ" else DicomSequence()
        return
    if action == "D":
        elem.value = DUMMY
        return
    if elem.VR == "SQ":
        for item in elem.value:
            _clean(item, secret, days, seen)
    elif elem.VR == "UI" and elem.value:
        elem.value = _remap_value(elem.value, secret)
    elif elem.VR in ("DA", "DT") and elem.value:
        elem.value = _shift(elem.value, days)
    elif elem.VR == "PN":
        elem.value = None


def _method_codes() -> list[Dataset]:
    # The sequence belongs to the Patient IE, so it must be identical on every
    # object of the study (dcentvfy checks): the options name what was done to
    # the set; objects without structured content satisfy the SR option trivially.
    items = []
    for value, meaning in (BASIC_PROFILE, MODIFIED_DATES, CLEAN_STRUCTURED_CONTENT):
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    return items


def deidentify(
    datasets: Sequence[Dataset], *, trial_secret: bytes, date_shift_days: int, patient_id: str | None = None
) -> list[Dataset]:
    """De-identified copies of ``datasets`` (the inputs are not modified).

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset
        One study, e.g. the output of :func:`imaging.dicom.build.build_study`.
    trial_secret : bytes
        The per-trial key of the UID remapping and patient pseudonym, at least
        16 bytes. Keep it out of the export: with it, original UIDs can be
        confirmed by recomputing.
    date_shift_days : int
        Days added to every date; non-zero (a zero shift would not be the
        Modified Dates Option). Use one offset per subject so intervals
        between that subject's scans are preserved.
    patient_id : str, optional
        The pseudonymous Patient ID to write; default
        :func:`pseudonymous_patient_id` of the original.
    """
    if len(trial_secret) < 16:
        raise DeidentificationError("trial_secret must be at least 16 bytes")
    if date_shift_days == 0:
        raise DeidentificationError("date_shift_days must not be 0 for the Modified Dates Option")
    out = []
    for original in datasets:
        ds = copy.deepcopy(original)
        new_patient_id = patient_id or pseudonymous_patient_id(str(original.get("PatientID", "")), trial_secret)
        _clean(ds, trial_secret, date_shift_days, seen=set())
        ds.PatientID = new_patient_id
        # Study ID: Z allows a dummy; a keyed one stays the same across the study's objects.
        if "StudyID" in ds:
            ds.StudyID = (
                "S"
                + hmac.new(trial_secret, str(original.StudyInstanceUID).encode(), hashlib.sha256)
                .hexdigest()[:12]
                .upper()
            )
        ds.PatientIdentityRemoved = "YES"
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
        ds.DeidentificationMethod = METHOD_TEXT
        ds.DeidentificationMethodCodeSequence = _method_codes()
        if getattr(ds, "file_meta", None) is not None:
            ds.file_meta = copy.deepcopy(ds.file_meta)
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out
