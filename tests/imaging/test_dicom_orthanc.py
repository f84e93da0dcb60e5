"""Delivery to a real PACS: a local Orthanc receives one study by C-STORE and one by STOW-RS.

The Orthanc is started by the fixture on free loopback ports with its storage
in tmp_path, and stopped (terminate, wait) whatever happens.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import time

import highdicom as hd
import numpy as np
import pydicom
import pytest
import requests

from imaging.dicom import DicomSendError, build_study, deidentify, send_cstore, send_stowrs
from imaging.dicom.build import parametric_map_volume
from tests.imaging.test_dicom_build import make_case
from tests.services import require_executable, require_path

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"  # Debian orthanc-dicomweb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def orthanc(tmp_path):
    binary = require_executable("Orthanc", package="orthanc")
    plugin = require_path(DICOMWEB_PLUGIN, package="orthanc-dicomweb")
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "mpi-test",
        "StorageDirectory": str(tmp_path / "storage"),
        "IndexDirectory": str(tmp_path / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "DicomCheckCalledAet": False,
        "DicomModalities": {},
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "UnknownSopClassAccepted": True,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    config_path = tmp_path / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log = (tmp_path / "orthanc.log").open("w")
    process = subprocess.Popen([binary, str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"{base}/system", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Orthanc did not start:\n{(tmp_path / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield {"http": base, "dicom_port": dicom_port}
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def fetch(base: str, sop_instance_uid: str) -> pydicom.Dataset:
    found = requests.post(f"{base}/tools/lookup", data=sop_instance_uid, timeout=10).json()
    (instance,) = [f for f in found if f["Type"] == "Instance"]
    data = requests.get(f"{base}/instances/{instance['ID']}/file", timeout=10).content
    return pydicom.dcmread(io.BytesIO(data))


def sr_values(ds: pydicom.Dataset):
    groups = hd.sr.Comprehensive3DSR.from_dataset(ds).content.get_volumetric_roi_measurement_groups()
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
