"""Issue #18 item 8: a quantified scan's results await the investigator's signature
until signed, and come back when the signature is invalidated."""

from __future__ import annotations

from django.urls import reverse

from compliance.selectors import awaiting_signature
from compliance.signatures import signature_apply
from tests.factories import PASSWORD


def test_a_quantified_scans_results_await_signature_until_signed(
    browser_client,
    investigator_a,
    investigator_b,
    quantified,
):
    reconstruction = quantified.reconstructions.order_by("-attempt").first()
    waiting = {(i.subject_id, i.scan_id) for i in awaiting_signature(investigator_a)}
    assert waiting == {(quantified.subject_id, None), (quantified.subject_id, quantified.pk)}
    html = browser_client(investigator_a).get(reverse("web:awaiting-signature")).content.decode()
    assert f"Results of scan #{quantified.pk}" in html
    assert reverse("web:scan", args=[quantified.pk]) + "#h-sign" in html
    assert awaiting_signature(investigator_b) == []  # another site's scan

    signature_apply(signer=investigator_a, password=PASSWORD, obj=reconstruction, meaning="review")
    assert {(i.subject_id, i.scan_id) for i in awaiting_signature(investigator_a)} == {(quantified.subject_id, None)}
