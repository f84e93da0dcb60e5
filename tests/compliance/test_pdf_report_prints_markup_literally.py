"""Issue #12 item 9: free text is printed as written in the PDF report; markup in it
neither breaks the build nor changes what is printed."""

from __future__ import annotations

import io

from pypdf import PdfReader

from compliance.models import Export
from trials.models import Injection, NanoparticleLot, Trial


def _text(content: bytes) -> str:
    """The PDF's text without whitespace: table cells wrap long values over lines."""
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)
    return "".join(text.split())


def _squeezed(value: str) -> str:
    return "".join(value.split())


def test_it_prints_markup_in_free_text_literally(built, auditor, trial, visit):
    injection = visit.injections.get()
    NanoparticleLot.objects.filter(pk=injection.batch.nanoparticle_lot_id).update(
        lot_number="x <script>alert(3)</script>", manufacturer="<b>", product="<img src=x>"
    )
    Injection.objects.filter(pk=injection.pk).update(anatomical_target="R&D a < b &amp; c > d <unbalanced")
    Trial.objects.filter(pk=trial.pk).update(title="Tracking <i>MSC</i> & friends </para>")

    export, content = built(auditor, Export.Kind.REPORT_PDF, trial)

    assert content.startswith(b"%PDF") and export.status == Export.Status.READY
    text = _text(content)
    for literal in (
        "x <script>alert(3)</script>",
        "<b>",
        "<img src=x>",
        "R&D a < b &amp; c > d <unbalanced",
        "Tracking <i>MSC</i> & friends </para>",
    ):
        assert _squeezed(literal) in text, literal
