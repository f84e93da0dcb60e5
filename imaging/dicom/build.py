"""Build the DICOM objects of one reconstructed MPI scan from plain data.

Plain frozen dataclasses in, :class:`pydicom.Dataset` objects out. Nothing here
imports Django or the imaging models: the caller (a service in ``imaging``)
translates its rows into :class:`StudyInfo`, :class:`VolumeGeometry`,
:class:`RoiSpec` and :class:`RoiMetrics`.

One study holds four series:

1. source   Secondary Capture slices (uint16 + rescale to mol Fe/L), one per z,
            carrying the Frame of Reference and the image plane of the
            reconstruction grid. highdicom needs such a series as the source
            of the derived objects.
2. pm       Parametric Map of the iron concentration, float32 pixels, real
            world value mapping in UCUM ``mol/L``, the original float32 volume
            bit for bit.
3. seg      binary Segmentation, one segment per ROI, no empty frame omitted.
4. sr       TID 1500 measurement report (Comprehensive 3D SR): iron mass,
            its uncertainty, detection limit, cell count, retention % and
            off-target % per ROI, each group referencing its SEG segment.

Geometry assumption: scanner coordinates are used as DICOM patient
coordinates (LPS, mm) unchanged. MPI scanners have no patient positioning
model; the subject's orientation in the bore is not recorded, so anatomical
directions in a viewer are only as right as the positioning at the scanner.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID, ExplicitVRLittleEndian, MultiFrameGrayscaleWordSecondaryCaptureImageStorage
from pydicom.valuerep import format_number_as_ds

# Namespace of the platform's deterministic UIDs (uuid5 -> "2.25.<int>").
# Fixed forever: changing it changes every derived Study Instance UID.
PLATFORM_UID_NAMESPACE = uuid.UUID("6f0c2f8e-4a59-5b7e-9d5c-0c1b2a3e4d5f")

# Private coding scheme for concepts that neither DCM nor SCT defines.
# Declared in the Coding Scheme Identification Sequence of every object that uses it.
PRIVATE_SCHEME = "99MPITRIAL"
PRIVATE_SCHEME_NAME = "MPI cell-tracking trial platform codes"

IRON_CONCENTRATION = hd.sr.CodedConcept("FECONC", PRIVATE_SCHEME, "Iron concentration")
IRON_MASS = hd.sr.CodedConcept("FEMASS", PRIVATE_SCHEME, "Iron mass")
IRON_MASS_UNCERTAINTY = hd.sr.CodedConcept("FEMASSU", PRIVATE_SCHEME, "Iron mass standard uncertainty")
DETECTION_LIMIT = hd.sr.CodedConcept("FELOD", PRIVATE_SCHEME, "Iron detection limit")
CELL_COUNT = hd.sr.CodedConcept("CELLS", PRIVATE_SCHEME, "Labelled cell count")
RETENTION = hd.sr.CodedConcept("RETENTION", PRIVATE_SCHEME, "Retention of injected iron")
OFF_TARGET = hd.sr.CodedConcept("OFFTARGET", PRIVATE_SCHEME, "Off-target fraction of iron")

UCUM_MOL_PER_L = hd.sr.CodedConcept("mol/L", "UCUM", "mole per liter")
UCUM_NG = hd.sr.CodedConcept("ng", "UCUM", "nanogram")
UCUM_CELLS = hd.sr.CodedConcept("{cells}", "UCUM", "cells")
UCUM_PERCENT = hd.sr.CodedConcept("%", "UCUM", "percent")

RoiKind = Literal["target", "lungs", "liver", "spleen", "other"]

# (category, type) of the segmented property, SNOMED CT where a code exists.
_ANATOMY = {
    "lung": (codes.SCT.AnatomicalStructure, codes.SCT.Lung),
    "liver": (codes.SCT.AnatomicalStructure, codes.SCT.Liver),
    "spleen": (codes.SCT.AnatomicalStructure, codes.SCT.Spleen),
    "heart": (codes.SCT.AnatomicalStructure, codes.SCT.Heart),
    "tumour": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm),
    "tissue": (codes.SCT.Tissue, codes.SCT.Tissue),
}
_ANATOMY_OF_KIND = {
    "target": "tissue",
    "lungs": "lung",
    "liver": "liver",
    "spleen": "spleen",
    "other": "tissue",
}

SERIES_NUMBER = {"source": 1, "pm": 2, "seg": 3, "sr": 4}


@dataclass(frozen=True)
class StudyInfo:
    """Identity and descriptors of the study one scan becomes.

    ``study_datetime`` is the scan's acquisition time and must be timezone
    aware; Study Date/Time are written in that datetime's own offset (the
    site's local time, as DICOM expects) with Timezone Offset From UTC.
    When ``study_instance_uid`` is None it is derived from ``scan_id`` and
    ``uid_namespace``, so re-exporting the same scan keeps its study.
    """

    scan_id: str
    patient_id: str
    study_datetime: dt.datetime
    patient_name: str | None = None
    patient_birth_date: dt.date | None = None
    patient_sex: Literal["M", "F", "O"] | None = None
    study_instance_uid: str | None = None
    accession_number: str | None = None
    study_id: str | None = None
    study_description: str = "MPI cell tracking"
    institution_name: str | None = None
    body_part_examined: str = "WHOLEBODY"
    source_series_description: str = "MPI iron concentration (display)"
    pm_series_description: str = "MPI iron concentration"
    seg_series_description: str = "MPI regions of interest"
    sr_series_description: str = "MPI iron quantification"
    manufacturer: str = "MPI trial platform"
    manufacturer_model_name: str = "MPI trial platform DICOM export"
    software_version: str = "0.1.0"
    device_serial_number: str = "0"
    uid_namespace: uuid.UUID = PLATFORM_UID_NAMESPACE

    def __post_init__(self) -> None:
        if self.study_datetime.utcoffset() is None:
            raise ValueError("StudyInfo.study_datetime must be timezone aware")
        if not self.patient_id:
            raise ValueError("StudyInfo.patient_id must not be empty")


@dataclass(frozen=True)
class VolumeGeometry:
    """The reconstruction grid, in scanner coordinates (metres).

    ``size`` is (nx, ny, nz); the volume array is indexed ``[z, y, x]`` (shape
    (nz, ny, nx), x fastest in memory). Voxel centres lie at
    ``center_m + (i - (n - 1) / 2) * field_of_view_m / n`` along each axis.
    """

    size: tuple[int, int, int]
    field_of_view_m: tuple[float, float, float]
    center_m: tuple[float, float, float]
    order: Literal["xyz"] = "xyz"

    def __post_init__(self) -> None:
        if self.order != "xyz":
            raise ValueError(f"only order 'xyz' is supported, got {self.order!r}")
        if len(self.size) != 3 or min(self.size) < 1:
            raise ValueError(f"size must be three positive ints, got {self.size}")
        if len(self.field_of_view_m) != 3 or min(self.field_of_view_m) <= 0:
            raise ValueError(f"field_of_view_m must be three positive lengths, got {self.field_of_view_m}")

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        nx, ny, nz = self.size
        return (nz, ny, nx)

    @property
    def voxel_size_mm(self) -> tuple[float, float, float]:
        return tuple(1e3 * f / n for f, n in zip(self.field_of_view_m, self.size, strict=True))  # type: ignore[return-value]

    def first_voxel_mm(self) -> np.ndarray:
        d = np.asarray(self.voxel_size_mm)
        n = np.asarray(self.size, dtype=float)
        return 1e3 * np.asarray(self.center_m, dtype=float) - (n - 1) / 2 * d


@dataclass(frozen=True)
class RoiSpec:
    """One region of interest: a boolean mask of the volume's shape (nz, ny, nx).

    ``anatomy`` refines the coded property of the SEG segment (one of lung,
    liver, spleen, heart, tumour, tissue); by default it follows ``kind``.
    """

    label: int
    name: str
    kind: RoiKind
    mask: np.ndarray
    anatomy: str | None = None

    def property_codes(self) -> tuple[hd.sr.CodedConcept, hd.sr.CodedConcept]:
        key = self.anatomy or _ANATOMY_OF_KIND[self.kind]
        if key not in _ANATOMY:
            raise ValueError(f"unknown anatomy {key!r} for ROI {self.name!r}; use one of {sorted(_ANATOMY)}")
        category, type_ = _ANATOMY[key]
        return hd.sr.CodedConcept.from_code(category), hd.sr.CodedConcept.from_code(type_)


@dataclass(frozen=True)
class RoiMetrics:
    """Quantification of one ROI (``roi_label`` matches :attr:`RoiSpec.label`)."""

    roi_label: int
    iron_mass_ng: float
    uncertainty_ng: float
    cell_count: float
    detection_limit_ng: float
    retention_percent: float | None = None
    off_target_percent: float | None = None


def uid_from(namespace: uuid.UUID, name: str) -> str:
    """A deterministic UID "2.25.<uuid5 as integer>" (PS3.5 B.2)."""
    return f"2.25.{uuid.uuid5(namespace, name).int}"


def _content_digest(
    volume: np.ndarray, geometry: VolumeGeometry, rois: Sequence[RoiSpec], metrics: Sequence[RoiMetrics]
) -> str:
    # Same inputs -> same UIDs (an export retried by a worker is idempotent);
    # any change of numbers -> new series and instance UIDs.
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(volume, dtype="<f4").tobytes())
    h.update(repr(geometry).encode())
    for roi in rois:
        h.update(repr((roi.label, roi.name, roi.kind, roi.anatomy)).encode())
        h.update(np.packbits(np.asarray(roi.mask, dtype=bool)).tobytes())
    for m in metrics:
        h.update(repr(m).encode())
    return h.hexdigest()


def _validate(
    volume: np.ndarray, geometry: VolumeGeometry, rois: Sequence[RoiSpec], metrics: Sequence[RoiMetrics]
) -> None:
    if volume.dtype != np.float32:
        raise ValueError(f"volume must be float32 (mol Fe/L), got {volume.dtype}")
    if volume.shape != geometry.shape_zyx:
        raise ValueError(
            f"volume shape {volume.shape} does not match geometry size {geometry.size} "
            f"(expected (nz, ny, nx) = {geometry.shape_zyx})"
        )
    if not np.all(np.isfinite(volume)):
        raise ValueError("volume contains NaN or infinite values")
    if not rois:
        raise ValueError("at least one ROI is needed for the SEG and SR")
    labels = [r.label for r in rois]
    if len(set(labels)) != len(labels):
        raise ValueError(f"ROI labels must be unique, got {labels}")
    for roi in rois:
        if roi.mask.shape != volume.shape:
            raise ValueError(f"mask of ROI {roi.name!r} has shape {roi.mask.shape}, volume has {volume.shape}")
        roi.property_codes()
    for m in metrics:
        if m.roi_label not in labels:
            raise ValueError(f"metrics for unknown ROI label {m.roi_label}; ROI labels are {labels}")


def _study_uid(study: StudyInfo) -> str:
    return study.study_instance_uid or uid_from(study.uid_namespace, f"study/{study.scan_id}")


def _coding_scheme_identification() -> list[Dataset]:
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = PRIVATE_SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = "MPI trial platform"
    return [item]


def _rescale(volume: np.ndarray) -> tuple[np.ndarray, float, float]:
    # The slope is rounded to what a DS can hold first, so the stored pixels
    # and the stored slope agree exactly.
    lo = min(float(volume.min()), 0.0)
    hi = float(volume.max())
    span = hi - lo
    slope = float(format_number_as_ds(span / 65535.0)) if span > 0 else 1.0
    intercept = float(format_number_as_ds(lo)) if lo < 0 else 0.0
    pixels = np.clip(np.rint((volume.astype(np.float64) - intercept) / slope), 0, 65535)
    return pixels.astype(np.uint16), slope, intercept


def _source_image(
    volume: np.ndarray,
    geometry: VolumeGeometry,
    study: StudyInfo,
    study_uid: str,
    series_uid: str,
    for_uid: str,
    instance_uid: str,
    created: dt.datetime,
) -> Dataset:
    # One Multi-frame Grayscale Word Secondary Capture image, one frame per z.
    # Unlike single-frame SC, this IOD has the Frame of Reference and the
    # Multi-frame Functional Groups (plane position / orientation, pixel
    # measures), so the grid is carried without extending the IOD.
    pixels, slope, intercept = _rescale(volume)
    dx, dy, dz = geometry.voxel_size_mm
    origin = geometry.first_voxel_mm()
    local = study.study_datetime
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID(instance_uid)
    ds.SOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds.SOPInstanceUID = instance_uid
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstanceCreationDate = created.strftime("%Y%m%d")
    ds.InstanceCreationTime = created.strftime("%H%M%S")
    _patient_study(ds, study, study_uid)
    # General Series / SC Equipment / General Equipment
    ds.Modality = "OT"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = SERIES_NUMBER["source"]
    ds.ConversionType = "WSD"
    ds.Manufacturer = study.manufacturer
    ds.ManufacturerModelName = study.manufacturer_model_name
    ds.SoftwareVersions = study.software_version
    ds.DeviceSerialNumber = study.device_serial_number
    # Frame of Reference
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    # General Image / SC Multi-frame Image
    ds.InstanceNumber = 1
    ds.ContentDate = local.strftime("%Y%m%d")
    ds.ContentTime = local.strftime("%H%M%S")
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"
    ds.DateOfSecondaryCapture = created.strftime("%Y%m%d")
    ds.TimeOfSecondaryCapture = created.strftime("%H%M%S")
    ds.PresentationLUTShape = "IDENTITY"
    # Multi-frame: frames step along z, Slice Location Vector gives z of each frame (mm)
    nz = volume.shape[0]
    positions = [origin + np.array([0.0, 0.0, k * dz]) for k in range(nz)]
    ds.NumberOfFrames = nz
    if nz > 1:  # Type 1C: only with more than one frame (a 2-D reconstruction has one)
        ds.FrameIncrementPointer = [0x00182005]
    ds.SliceLocationVector = [format_number_as_ds(float(p[2])) for p in positions]
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [format_number_as_ds(dy), format_number_as_ds(dx)]
    measures.SliceThickness = format_number_as_ds(dz)
    measures.SpacingBetweenSlices = format_number_as_ds(dz)
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for p in positions:
        frame = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [format_number_as_ds(float(v)) for v in p]
        frame.PlanePositionSequence = [position]
        per_frame.append(frame)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    # Image Pixel + rescale (stored value * slope + intercept = mol Fe/L)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[2]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = format_number_as_ds(slope)
    ds.RescaleIntercept = format_number_as_ds(intercept)
    ds.RescaleType = "US"
    # Concentrations are far below 1: only LINEAR_EXACT allows a window that narrow.
    ds.WindowCenter = format_number_as_ds(intercept + slope * 32767.5)
    ds.WindowWidth = format_number_as_ds(slope * 65535)
    ds.VOILUTFunction = "LINEAR_EXACT"
    ds.PixelData = pixels.tobytes()
    return ds


def _patient_study(ds: Dataset, study: StudyInfo, study_uid: str) -> None:
    local = study.study_datetime
    # A lone pseudonym is a family name: the trailing caret says so (PS3.5 6.2.1.2).
    name = study.patient_name or study.patient_id
    ds.PatientName = name if "^" in name else f"{name}^"
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.patient_birth_date.strftime("%Y%m%d") if study.patient_birth_date else ""
    ds.PatientSex = study.patient_sex or ""
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = local.strftime("%Y%m%d")
    ds.StudyTime = local.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = study.study_id or hashlib.sha256(study.scan_id.encode()).hexdigest()[:12].upper()
    ds.AccessionNumber = study.accession_number or ""
    ds.StudyDescription = study.study_description


def _finish(ds: Dataset, study: StudyInfo, series_description: str, *, image: bool = True) -> Dataset:
    # highdicom copies patient/study from the source; keep the series and
    # equipment descriptors uniform across the four series.
    local = study.study_datetime
    ds.SeriesDescription = series_description
    ds.SeriesDate = local.strftime("%Y%m%d")
    ds.SeriesTime = local.strftime("%H%M%S")
    ds.TimezoneOffsetFromUTC = local.strftime("%z")
    if image:
        # Without it the validators raise a Type 2C Laterality error; the SR IOD has no such attribute.
        ds.BodyPartExamined = study.body_part_examined
    if study.institution_name:
        ds.InstitutionName = study.institution_name
    ds.CodingSchemeIdentificationSequence = _coding_scheme_identification()
    return ds


def build_study(
    volume: np.ndarray,
    geometry: VolumeGeometry,
    rois: Sequence[RoiSpec],
    metrics: Sequence[RoiMetrics],
    study: StudyInfo,
) -> list[Dataset]:
    """Build the source series, Parametric Map, Segmentation and SR of one scan.

    Parameters
    ----------
    volume : ndarray, shape (nz, ny, nx), float32
        Iron concentration in mol Fe/L, indexed ``[z, y, x]``.
    geometry : VolumeGeometry
        The reconstruction grid (metres, scanner coordinates = patient coordinates).
    rois : sequence of RoiSpec
        One SEG segment each, numbered 1..N in the given order.
    metrics : sequence of RoiMetrics
        At most one per ROI label; an ROI without metrics gets no SR group.
    study : StudyInfo

    Returns
    -------
    list of pydicom.Dataset
        nz Secondary Capture slices, then the Parametric Map, the
        Segmentation and the Comprehensive 3D SR, in that order.
    """
    volume = np.asarray(volume)
    _validate(volume, geometry, rois, metrics)
    study_uid = _study_uid(study)
    ns = uuid.UUID(
        bytes=hashlib.sha256(f"{study_uid}/{_content_digest(volume, geometry, rois, metrics)}".encode()).digest()[:16]
    )
    uid = lambda name: uid_from(ns, name)  # noqa: E731
    created = dt.datetime.now(study.study_datetime.tzinfo)
    source = [
        _source_image(
            volume,
            geometry,
            study,
            study_uid,
            series_uid=uid("series/source"),
            for_uid=uid_from(study.uid_namespace, f"frame-of-reference/{study.scan_id}"),
            instance_uid=uid("instance/source"),
            created=created,
        )
    ]
    _finish(source[0], study, study.source_series_description)

    lo, hi = float(volume.min()), float(volume.max())
    width = max(hi - lo, float(np.finfo(np.float32).tiny))
    pm = hd.pm.ParametricMap(
        source_images=source,
        pixel_array=volume,
        series_instance_uid=uid("series/pm"),
        series_number=SERIES_NUMBER["pm"],
        sop_instance_uid=uid("instance/pm"),
        instance_number=1,
        manufacturer=study.manufacturer,
        manufacturer_model_name=study.manufacturer_model_name,
        software_versions=study.software_version,
        device_serial_number=study.device_serial_number,
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[
            hd.pm.RealWorldValueMapping(
                lut_label="FECONC",
                lut_explanation="Iron concentration",
                unit=UCUM_MOL_PER_L,
                value_range=(lo, hi),
                slope=1,
                intercept=0,
                quantity_definition=IRON_CONCENTRATION,
            )
        ],
        # Concentrations are far below 1: LINEAR would clip the window.
        voi_lut_transformations=[
            hd.VOILUTTransformation(window_center=(lo + hi) / 2, window_width=width, voi_lut_function="LINEAR_EXACT")
        ],
        content_label="FECONC",
        content_description="Iron concentration (mol Fe/L)",
    )
    _finish(pm, study, study.pm_series_description)

    masks = np.stack([np.asarray(r.mask, dtype=bool) for r in rois], axis=-1)
    descriptions = []
    for number, roi in enumerate(rois, start=1):
        category, type_ = roi.property_codes()
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=roi.name[:64],
                segmented_property_category=category,
                segmented_property_type=type_,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
                tracking_uid=uid(f"tracking/roi/{roi.label}"),
                tracking_id=f"ROI {roi.label} {roi.name}"[:64],
            )
        )
    seg = hd.seg.Segmentation(
        source_images=source,
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=uid("series/seg"),
        series_number=SERIES_NUMBER["seg"],
        sop_instance_uid=uid("instance/seg"),
        instance_number=1,
        manufacturer=study.manufacturer,
        manufacturer_model_name=study.manufacturer_model_name,
        software_versions=study.software_version,
        device_serial_number=study.device_serial_number,
        omit_empty_frames=False,
        content_label="ROIS",
        content_description="Regions of interest of the MPI quantification",
    )
    _finish(seg, study, study.seg_series_description)

    sr = _measurement_report(rois, metrics, study, seg, source, pm, uid)
    _finish(sr, study, study.sr_series_description, image=False)
    return [*source, pm, seg, sr]


def _measurement_report(
    rois: Sequence[RoiSpec],
    metrics: Sequence[RoiMetrics],
    study: StudyInfo,
    seg: Dataset,
    source: list[Dataset],
    pm: Dataset,
    uid,
) -> Dataset:
    by_label = {m.roi_label: m for m in metrics}
    groups = []
    for number, roi in enumerate(rois, start=1):
        m = by_label.get(roi.label)
        if m is None:
            continue
        values = [
            (IRON_MASS, m.iron_mass_ng, UCUM_NG),
            (IRON_MASS_UNCERTAINTY, m.uncertainty_ng, UCUM_NG),
            (DETECTION_LIMIT, m.detection_limit_ng, UCUM_NG),
            (CELL_COUNT, m.cell_count, UCUM_CELLS),
            (RETENTION, m.retention_percent, UCUM_PERCENT),
            (OFF_TARGET, m.off_target_percent, UCUM_PERCENT),
        ]
        _, type_ = roi.property_codes()
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=uid(f"tracking/roi/{roi.label}"),
                    identifier=f"ROI {roi.label} {roi.name}"[:64],
                ),
                referenced_segment=hd.sr.ReferencedSegment.from_segmentation(seg, number),
                finding_type=type_,
                measurements=[
                    hd.sr.Measurement(name=name, value=float(value), unit=unit)
                    for name, value, unit in values
                    if value is not None
                ],
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=uid_from(study.uid_namespace, "device/quantification"),
            name=study.manufacturer,
            manufacturer_name=study.manufacturer,
            model_name=study.manufacturer_model_name,
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[seg, pm, *source],
        content=report,
        series_instance_uid=uid("series/sr"),
        series_number=SERIES_NUMBER["sr"],
        sop_instance_uid=uid("instance/sr"),
        instance_number=1,
        manufacturer=study.manufacturer,
        institution_name=study.institution_name,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )


def file_name(ds: Dataset) -> str:
    """A stable, identity-free file name: series number, modality, instance number."""
    return f"{int(ds.SeriesNumber):02d}_{ds.Modality}_{int(ds.InstanceNumber):04d}.dcm"


def write_study(datasets: Sequence[Dataset], directory: str | Path) -> list[Path]:
    """Write every dataset as a DICOM Part 10 file into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = directory / file_name(ds)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def encode(ds: Dataset) -> bytes:
    """The Part 10 file bytes of one dataset."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def zip_study(datasets: Sequence[Dataset]) -> bytes:
    """A zip archive of the study's Part 10 files (stored, not deflated: float pixels barely compress)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for ds in datasets:
            archive.writestr(file_name(ds), encode(ds))
    return buffer.getvalue()


def parametric_map_volume(ds: Dataset) -> np.ndarray:
    """The float volume (nz, ny, nx) of a Parametric Map, frames in ascending z.

    highdicom stores the frames in its own order (descending along the slice
    normal here); each frame's Plane Position says where it is, so sort by it.
    """
    frames = ds.pixel_array
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in ds.PerFrameFunctionalGroupsSequence]
    return frames[np.argsort(z, kind="stable")]
