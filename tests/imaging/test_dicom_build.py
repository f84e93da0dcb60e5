"""build_study: every object reads back with pydicom and highdicom with the values put in."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import highdicom as hd
import numpy as np
import pydicom
import pytest

from imaging.dicom import RoiMetrics, RoiSpec, StudyInfo, VolumeGeometry, build_study, write_study, zip_study
from imaging.dicom.build import IRON_MASS, parametric_map_volume

BERLIN_SUMMER = dt.timezone(dt.timedelta(hours=2))
SHAPE_ZYX = (8, 10, 12)
PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"


def make_case(**study_overrides):
    """A small analytic phantom: two hot spheres in a noisy background, three ROIs (one empty)."""
    nz, ny, nx = SHAPE_ZYX
    geometry = VolumeGeometry(size=(nx, ny, nz), field_of_view_m=(0.024, 0.020, 0.016), center_m=(0.0, 0.001, -0.002))
    zz, yy, xx = np.indices(SHAPE_ZYX)
    heart = (xx - 3) ** 2 + (yy - 5) ** 2 + (zz - 4) ** 2 <= 6
    lungs = (xx - 9) ** 2 + (yy - 4) ** 2 + (zz - 3) ** 2 <= 4
    rng = np.random.default_rng(7)
    volume = (rng.random(SHAPE_ZYX) * 1e-5 + 2e-3 * heart + 7e-4 * lungs).astype(np.float32)
    rois = [
        RoiSpec(label=1, name="myocardium", kind="target", mask=heart, anatomy="heart"),
        RoiSpec(label=2, name="lungs", kind="lungs", mask=lungs),
        RoiSpec(label=5, name="spleen", kind="spleen", mask=np.zeros(SHAPE_ZYX, dtype=bool)),
    ]
    metrics = [
        RoiMetrics(
            roi_label=1,
            iron_mass_ng=123.456,
            uncertainty_ng=4.25,
            cell_count=15432.0,
            detection_limit_ng=5.0,
            retention_percent=61.7,
            off_target_percent=None,
        ),
        RoiMetrics(
            roi_label=2,
            iron_mass_ng=33.0,
            uncertainty_ng=2.5,
            cell_count=4125.0,
            detection_limit_ng=5.0,
            retention_percent=None,
            off_target_percent=12.5,
        ),
    ]
    fields = dict(
        scan_id="scan-0042",
        patient_id="MPI-T01-A-007",
        study_datetime=dt.datetime(2024, 5, 6, 14, 30, 5, tzinfo=BERLIN_SUMMER),
        institution_name="Charité Berlin",
        body_part_examined="CHEST",
    )
    fields.update(study_overrides)
    return volume, geometry, rois, metrics, StudyInfo(**fields)


@pytest.fixture
def case():
    return make_case()


@pytest.fixture
def study_files(case, tmp_path):
    datasets = build_study(*case)
    return case, write_study(datasets, tmp_path / "study")


def by_modality(paths):
    read = [pydicom.dcmread(p) for p in paths]
    return {
        "source": next(d for d in read if d.SeriesNumber == 1),
        "pm": next(d for d in read if d.SOPClassUID == PARAMETRIC_MAP_STORAGE),
        "seg": next(d for d in read if d.Modality == "SEG"),
        "sr": next(d for d in read if d.Modality == "SR"),
    }


def test_it_keeps_the_float_volume_bit_exact_in_the_parametric_map(study_files):
    (volume, *_), paths = study_files
    pm = hd.pm.ParametricMap.from_dataset(by_modality(paths)["pm"])
    assert pm.pixel_array.dtype == np.float32
    assert np.array_equal(parametric_map_volume(pm), volume)
    mapping = (
        pm.RealWorldValueMappingSequence[0]
        if "RealWorldValueMappingSequence" in pm
        else pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    )
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "mol/L"
    assert mapping.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
    assert mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0].CodeMeaning == "Iron concentration"
    voi = pm.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
    assert voi.VOILUTFunction == "LINEAR_EXACT"


def test_it_places_every_frame_on_the_reconstruction_grid(study_files):
    (volume, geometry, *_), paths = study_files
    objects = by_modality(paths)
    source = objects["source"]
    measures = source.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == pytest.approx([2.0, 2.0])  # rows: y, columns: x (mm)
    assert float(measures.SliceThickness) == pytest.approx(2.0)
    z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in source.PerFrameFunctionalGroupsSequence]
    # centre -2 mm, 8 slices of 2 mm: first voxel centre at -2 - 3.5 * 2 = -9 mm
    assert z == pytest.approx([-9, -7, -5, -3, -1, 1, 3, 5])
    first = source.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient
    assert [float(v) for v in first] == pytest.approx([-11.0, -8.0, -9.0])
    pm_positions = sorted(
        tuple(map(float, f.PlanePositionSequence[0].ImagePositionPatient))
        for f in objects["pm"].PerFrameFunctionalGroupsSequence
    )
    src_positions = sorted(
        tuple(map(float, f.PlanePositionSequence[0].ImagePositionPatient))
        for f in source.PerFrameFunctionalGroupsSequence
    )
    assert pm_positions == src_positions
    assert len({d.FrameOfReferenceUID for d in (source, objects["pm"], objects["seg"])}) == 1
    rescaled = source.pixel_array * float(source.RescaleSlope) + float(source.RescaleIntercept)
    assert np.max(np.abs(rescaled - volume)) <= float(source.RescaleSlope) / 2 + 1e-12


def test_it_keeps_every_segment_mask_and_empty_frames(study_files):
    (_, _, rois, *_), paths = study_files
    objects = by_modality(paths)
    seg = hd.seg.Segmentation.from_dataset(objects["seg"])
    assert seg.NumberOfFrames == SHAPE_ZYX[0] * len(rois)  # the empty spleen keeps its frames
    masks = seg.get_pixels_by_source_frame(
        objects["source"].SOPInstanceUID,
        source_frame_numbers=list(range(1, SHAPE_ZYX[0] + 1)),
        segment_numbers=[1, 2, 3],
    )
    assert np.array_equal(masks.astype(bool), np.stack([r.mask for r in rois], axis=-1))
    described = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert described[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "80891009"  # heart
    assert described[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"  # lung
    assert described[3].SegmentedPropertyTypeCodeSequence[0].CodeValue == "78961009"  # spleen
    assert described[2].SegmentedPropertyCategoryCodeSequence[0].CodingSchemeDesignator == "SCT"


def test_it_reports_every_number_and_references_the_segments(study_files):
    (_, _, rois, metrics, _), paths = study_files
    objects = by_modality(paths)
    sr = hd.sr.Comprehensive3DSR.from_dataset(objects["sr"])
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2  # the spleen has no metrics, so no group
    expected = {
        1: {
            "Iron mass": (123.456, "ng"),
            "Iron mass standard uncertainty": (4.25, "ng"),
            "Iron detection limit": (5.0, "ng"),
            "Labelled cell count": (15432.0, "{cells}"),
            "Retention of injected iron": (61.7, "%"),
        },
        2: {
            "Iron mass": (33.0, "ng"),
            "Iron mass standard uncertainty": (2.5, "ng"),
            "Iron detection limit": (5.0, "ng"),
            "Labelled cell count": (4125.0, "{cells}"),
            "Off-target fraction of iron": (12.5, "%"),
        },
    }
    for segment_number, group in zip((1, 2), groups, strict=True):
        got = {m.name.meaning: (m.value, m.unit.value) for m in group.get_measurements()}
        assert got == expected[segment_number]
        assert group.referenced_segment.referenced_sop_instance_uid == objects["seg"].SOPInstanceUID
        assert group.referenced_segment.referenced_segment_numbers == [segment_number]
    assert groups[0].get_measurements(name=IRON_MASS)[0].value == 123.456


def test_it_keeps_one_study_and_the_scan_time_across_objects(study_files):
    (*_, study), paths = study_files
    objects = list(by_modality(paths).values())
    assert len({d.StudyInstanceUID for d in objects}) == 1
    assert len({d.SeriesInstanceUID for d in objects}) == 4
    for d in objects:
        assert (d.PatientID, d.StudyDate, d.StudyTime) == ("MPI-T01-A-007", "20240506", "143005")
        assert d.TimezoneOffsetFromUTC == "+0200"
    assert [d.Modality for d in objects] == ["OT", "OT", "SEG", "SR"]
    assert all(d.BodyPartExamined == "CHEST" for d in objects[:3])


def test_it_derives_the_same_uids_from_the_same_scan(case):
    first, again = build_study(*case), build_study(*case)
    assert [d.SOPInstanceUID for d in first] == [d.SOPInstanceUID for d in again]
    volume, *rest = case
    changed = build_study(volume * np.float32(2), *rest)
    assert changed[0].StudyInstanceUID == first[0].StudyInstanceUID
    assert not {d.SOPInstanceUID for d in changed} & {d.SOPInstanceUID for d in first}


def test_it_rejects_a_volume_that_does_not_match_the_grid(case):
    volume, geometry, rois, metrics, study = case
    with pytest.raises(ValueError, match=r"volume shape \(10, 12, 8\) does not match geometry size \(12, 10, 8\)"):
        build_study(np.zeros((10, 12, 8), np.float32), geometry, rois, metrics, study)
    with pytest.raises(ValueError, match="must be float32"):
        build_study(volume.astype(np.float64), geometry, rois, metrics, study)
    with pytest.raises(ValueError, match="metrics for unknown ROI label 9"):
        build_study(volume, geometry, rois, [RoiMetrics(9, 1, 1, 1, 1)], study)


def test_it_refuses_a_naive_study_datetime():
    with pytest.raises(ValueError, match="timezone aware"):
        StudyInfo(scan_id="s", patient_id="p", study_datetime=dt.datetime(2024, 5, 6, 14, 30))  # noqa: DTZ001 - naive on purpose


def test_it_zips_the_same_files_it_writes(case, tmp_path):
    datasets = build_study(*case)
    written = {p.name: p.read_bytes() for p in write_study(datasets, tmp_path)}
    with zipfile.ZipFile(io.BytesIO(zip_study(datasets))) as archive:
        assert sorted(archive.namelist()) == sorted(written)
        assert all(archive.read(name) == data for name, data in written.items())
