"""Delivery to a real PACS: a local Orthanc receives one study by C-STORE and one by STOW-RS.

The Orthanc is started by the fixture on free loopback ports with its storage
in tmp_path, and stopped (terminate, wait) whatever happens.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
import requests

from imaging.dicom import DicomSendError, build_study, deidentify, send_cstore, send_stowrs
from imaging.dicom.build import parametric_map_volume
from tests.imaging.orthanc import fetch, free_port
from tests.imaging.test_dicom_build import make_case


def sr_values(ds: pydicom.Dataset):
    # highdicom types .content as a ContentSequence; from_dataset gives the MeasurementReport.
    groups = hd.sr.Comprehensive3DSR.from_dataset(ds).content.get_volumetric_roi_measurement_groups()  # type: ignore[attr-defined]
    return [[(m.name.value, m.value, m.unit.value) for m in g.get_measurements()] for g in groups]


def assert_round_trip(base, sent, volume):
    source, pm, seg, sr = (fetch(base, ds.SOPInstanceUID) for ds in sent)
    assert np.array_equal(parametric_map_volume(pm), volume)
    assert np.array_equal(seg.pixel_array, sent[2].pixel_array)
    assert np.array_equal(source.pixel_array, sent[0].pixel_array)
    assert sr_values(sr) == sr_values(sent[3])
    assert sr_values(sr)[0][0] == ("FEMASS", 123.456, "ng")


def test_it_stores_a_study_by_cstore_and_reads_it_back(orthanc):
    volume, *rest = make_case()
    sent = build_study(volume, *rest)
    result = send_cstore(sent, "127.0.0.1", orthanc["dicom_port"], called_ae="ORTHANC", calling_ae="MPITRIALS")
    assert result.ok and [o.status for o in result.objects] == [0x0000] * 4
    assert {o.sop_instance_uid for o in result.objects} == {d.SOPInstanceUID for d in sent}
    assert_round_trip(orthanc["http"], sent, volume)


def test_it_stores_a_deidentified_study_by_stowrs_and_reads_it_back(orthanc):
    volume, *rest = make_case(patient_name="Doe^Jane", institution_name="Charité Berlin")
    sent = deidentify(build_study(volume, *rest), trial_secret=b"orthanc test trial key", date_shift_days=-40)
    result = send_stowrs(sent, f"{orthanc['http']}/dicom-web")
    assert result.ok and len(result.objects) == 4
    assert_round_trip(orthanc["http"], sent, volume)
    studies = requests.get(f"{orthanc['http']}/studies?expand", timeout=10).json()
    assert [s["PatientMainDicomTags"]["PatientID"] for s in studies] == [sent[0].PatientID]


def test_it_raises_when_stowrs_is_refused(orthanc):
    sent = build_study(*make_case())
    with pytest.raises(DicomSendError, match="HTTP 404") as raised:
        send_stowrs(sent, f"{orthanc['http']}/no-such-dicom-web")
    assert not raised.value.result.ok and len(raised.value.result.failed) == 4


def test_it_raises_when_no_association_is_possible():
    sent = build_study(*make_case())
    with pytest.raises(DicomSendError, match="association with ORTHANC@127.0.0.1"):
        send_cstore(sent, "127.0.0.1", free_port(), called_ae="ORTHANC", calling_ae="MPITRIALS", timeout_s=2)


def test_it_raises_when_the_http_server_is_unreachable():
    sent = build_study(*make_case())
    with pytest.raises(DicomSendError, match="STOW-RS to http://127.0.0.1"):
        send_stowrs(sent, f"http://127.0.0.1:{free_port()}/dicom-web", timeout_s=2)
