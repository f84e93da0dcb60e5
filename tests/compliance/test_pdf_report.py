from __future__ import annotations

import io

from pypdf import PdfReader

from compliance.models import Export
from compliance.signatures import signature_apply
from tests.compliance.conftest import unzip
from tests.factories import PASSWORD


def test_it_builds_a_pdf_report_that_opens_and_holds_the_record(built, auditor, trial, visit, investigator_a):
    signature_apply(signer=investigator_a, password=PASSWORD, obj=visit, meaning="approval")
    export, content = built(auditor, Export.Kind.REPORT_PDF, trial)

    assert content.startswith(b"%PDF") and export.content_type == "application/pdf"
    reader = PdfReader(io.BytesIO(content))
    text = " ".join(page.extract_text() for page in reader.pages)
    injection = visit.injections.get()
    for expected in (
        "Trial report",
        "MPI-CT-T01",
        visit.code,
        injection.batch.chain_of_identity_id,
        injection.batch.donation_id,
        injection.batch.nanoparticle_lot.lot_number,
        "4 Signatures",
        "investigator_a",
        "Approval",
        "Scans",
    ):
        assert expected in text, expected
    assert "Mustermann" not in text and "MRN0042137" not in text


def test_it_builds_the_same_tables_as_csv(built, coordinator_a, trial, site_a, visit):
    _, content = built(coordinator_a, Export.Kind.REPORT_CSV, trial, site=site_a)
    files = unzip(content)
    assert {
        "subjects.csv",
        "chain_of_identity.csv",
        "injections.csv",
        "nanoparticle_lots.csv",
        "metrics.csv",
        "signatures.csv",
    } <= set(files)
    assert visit.code in files["subjects.csv"]
    assert visit.injections.get().batch.chain_of_identity_id in files["chain_of_identity.csv"]
