"""DICOM export of reconstructed MPI scans: plain data in, DICOM objects out.

No Django here: :mod:`imaging.dicom` takes frozen dataclasses and numpy arrays
and returns :class:`pydicom.Dataset` objects or files, so the scan models can be
wired to it from a service without this package knowing them.

Public API
----------
build.py
    StudyInfo, VolumeGeometry, RoiSpec, RoiMetrics (inputs);
    build_study(volume, geometry, rois, metrics, study) -> [source MF SC, PM, SEG, SR];
    write_study(datasets, directory) -> [Path]; zip_study(datasets) -> bytes; encode(ds) -> bytes.
deidentify.py
    deidentify(datasets, *, trial_secret, date_shift_days, patient_id=None) -> [Dataset];
    remap_uid, pseudonymous_patient_id.
send.py
    send_cstore(datasets, host, port, called_ae, calling_ae) -> SendResult;
    send_stowrs(datasets, base_url, auth=None) -> SendResult; DicomSendError.

Objects and conventions
-----------------------
- Source: one Multi-frame Grayscale Word Secondary Capture image (uint16,
  Rescale Slope/Intercept to mol Fe/L, VOI LUT Function LINEAR_EXACT), with
  Frame of Reference and per-frame Plane Position / shared Plane Orientation
  and Pixel Measures from the reconstruction grid (metres -> mm). Scanner
  coordinates are used as patient coordinates (LPS) unchanged: the subject's
  orientation in the bore is not recorded by MPI scanners.
- Parametric Map: the float32 volume bit for bit, Real World Value Mapping
  slope 1 / intercept 0 in UCUM ``mol/L``, quantity ``(FECONC, 99MPITRIAL,
  "Iron concentration")``, VOI LUT Function LINEAR_EXACT (concentrations < 1).
- Segmentation: BINARY, one segment per ROI in the given order (segment
  number = position + 1; Tracking ID carries the ROI label), SNOMED CT
  categories/types for lung, liver, spleen, heart, neoplasm, tissue; empty
  frames kept.
- SR: TID 1500, one Volumetric ROI group (TID 1411) per ROI with metrics,
  referencing its SEG segment and the source series. Measurement names are
  private codes of scheme ``99MPITRIAL`` (declared in the Coding Scheme
  Identification Sequence): FEMASS, FEMASSU (standard uncertainty), FELOD
  (detection limit), CELLS, RETENTION, OFFTARGET; units UCUM ng, {cells}, %.
- Modality OT for source and PM (SEG and SR by their IODs), Body Part
  Examined on the image objects, one study, four series (numbers 1-4).
- UIDs: Study Instance UID given or uuid5(namespace, scan id); Frame of
  Reference from the scan id; series/instance UIDs from the study UID and a
  digest of the content, so the same input gives the same objects' identity.

Validator results (dicom3tools, checked by tests/imaging/test_dicom_validate.py)
-------------------------------------------------------------------------------
``dciodvfy``: 0 errors on all four objects, identified and de-identified.
``dcentvfy``: 0 errors across each set. Remaining warnings, all understood:

- ``Unrecognized defined term <99MPITRIAL> ... Coding Scheme Designator``:
  our private coding scheme; dciodvfy only knows registered schemes. Private
  schemes are allowed (PS3.16 8.2, "99" prefix) and ours is declared in
  the Coding Scheme Identification Sequence.
- ``Unrecognized defined term <QUANTITY> for value 4 of Image Type / Frame
  Type`` (Parametric Map): written by highdicom from the PM IOD's own defined
  terms (PS3.3 C.8.32.x); dicom3tools' term list lags the standard here.
- dcentvfy ``Different information entities for attribute AccessionNumber IE
  <Series> versus <Study>``: dcentvfy's internal module table places
  Accession Number differently for the SR IOD and the image IODs; the value
  is the same in every object (Study level), nothing to fix in the data.
"""

from imaging.dicom.build import (
    RoiMetrics,
    RoiSpec,
    StudyInfo,
    VolumeGeometry,
    build_study,
    write_study,
    zip_study,
)
from imaging.dicom.deidentify import DeidentificationError, deidentify
from imaging.dicom.send import DicomSendError, SendResult, send_cstore, send_stowrs

__all__ = [
    "DeidentificationError",
    "DicomSendError",
    "RoiMetrics",
    "RoiSpec",
    "SendResult",
    "StudyInfo",
    "VolumeGeometry",
    "build_study",
    "deidentify",
    "send_cstore",
    "send_stowrs",
    "write_study",
    "zip_study",
]
