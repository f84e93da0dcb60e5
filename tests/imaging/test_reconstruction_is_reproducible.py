"""Each reconstruction records how it was made, and running it again gives the same image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import recon
from imaging import processing
from imaging.models import Reconstruction
from recon.mdf import MDFFile
from recon.params import ReconParams
from tests.imaging.helpers import process, uploaded_scan

FLOAT_TOLERANCE = 1e-5  # relative to the image maximum (float32 solver)


def test_it_records_parameters_checksums_and_versions_and_reproduces_the_image(api, pipeline, settings, tmp_path):
    scan = process(uploaded_scan(api, pipeline, pipeline.sim["measurement"]))
    reconstruction = Reconstruction.objects.get(scan=scan)
    assert reconstruction.input_sha256 == scan.sha256
    assert reconstruction.system_matrix_sha256 == pipeline.system_matrix.sha256
    assert reconstruction.software_version["recon"] == recon.__version__
    assert "platform" in reconstruction.software_version
    params = ReconParams.from_dict(reconstruction.params)
    media = Path(settings.MEDIA_ROOT)
    assert processing.sha256_file(media / reconstruction.file) == reconstruction.sha256

    again = tmp_path / "again.mdf"
    processing.reconstruct(
        processing.load_system_matrix(media / pipeline.system_matrix.file),
        media / scan.file,
        again,
        params,
        progress=lambda *_: None,
        provenance={},
    )
    with MDFFile(media / reconstruction.file) as f:
        first, meta = f.reconstruction()
    with MDFFile(again) as f:
        second, _ = f.reconstruction()
    assert meta["parameters"]["params"] == reconstruction.params
    assert meta["parameters"]["system_matrix_sha256"] == pipeline.system_matrix.sha256
    np.testing.assert_allclose(second, first, rtol=0, atol=FLOAT_TOLERANCE * float(np.abs(first).max()))
