from __future__ import annotations

import io
import zipfile

import pytest

from compliance.models import Export
from compliance.services.exports import export_download, export_request, export_run
from tests import factories as f


@pytest.fixture
def visit(ready, coordinator_a, investigator_a):
    """The ready subject at site A with one injection recorded: a visit to sign."""
    subject, consent, batch = ready
    f.InjectionFactory(subject=subject, batch=batch, administered_by=coordinator_a, verified_by=investigator_a)
    return subject


@pytest.fixture
def built():
    """``built(actor, kind, trial, site=None, subject=None)`` -> (export, bytes): requested
    through the service and built the way the worker builds it."""

    def make(actor, kind, trial, site=None, subject=None):
        export = export_request(actor=actor, kind=kind, trial=trial, site=site, subject=subject)
        export = export_run(export.pk)
        assert export.status == Export.Status.READY, export.error
        handle = export_download(actor=actor, export=export)
        with handle:
            return export, handle.read()

    return make


def unzip(content: bytes) -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return {name: archive.read(name).decode("utf-8") for name in archive.namelist()}
