"""Issue #18 item 8 in the browser: an investigator opens "Awaiting my signature" from the
dashboard, signs a visit record from the list, and it leaves the list; another site's
records are never listed."""

from __future__ import annotations

import pytest

from compliance.models import Signature
from tests import factories as f

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _visit(site):
    subject = f.SubjectFactory(site=site)
    f.InjectionFactory(subject=subject)
    return subject


def test_an_investigator_signs_from_the_awaiting_list_and_the_item_leaves_it(browse, investigator_a, site_a, site_b):
    first, second = _visit(site_a), _visit(site_a)
    other_site = _visit(site_b)
    s = browse(investigator_a)
    page = s.page

    page.get_by_role("link", name="Awaiting my signature (2)").click()
    page.wait_for_url("**/signatures/awaiting/")
    body = page.locator("main").inner_text()
    assert first.code in body and second.code in body
    assert other_site.code not in body
    s.shot("awaiting-signature-list")

    page.get_by_role("link", name=f"Sign Visit record of subject {first.code}").click()
    page.wait_for_url(f"**/subjects/{first.pk}/#h-sign")
    page.get_by_label("Password").fill(f.PASSWORD)
    page.get_by_role("button", name="Sign the visit record").click()
    page.wait_for_url(f"**/subjects/{first.pk}/")
    assert Signature.objects.filter(object_id=str(first.pk), valid=True).count() == 1

    s.go("/signatures/awaiting/")
    body = page.locator("main").inner_text()
    assert first.code not in body and second.code in body and other_site.code not in body
    assert "1 record to sign" in body
    s.shot("awaiting-signature-after-signing")
    s.go("/")
    assert page.get_by_role("link", name="Awaiting my signature (1)").is_visible()
    s.shot("awaiting-signature-dashboard")
