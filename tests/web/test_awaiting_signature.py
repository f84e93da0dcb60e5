"""Issue #18 item 8: an investigator's "awaiting my signature" list: the records at their
sites whose signature is required (a visit record once a dose is given, a quantified
scan's results) and missing or invalidated, linked from the dashboard with a count,
each linked to its sign form; another site's records never listed; a GET writes nothing."""

from __future__ import annotations

from django.urls import reverse

from compliance.selectors import awaiting_signature
from compliance.signatures import signature_apply, signature_invalidate_if_changed
from tests import factories as f
from tests.factories import PASSWORD
from trials.models import Injection

URL = reverse("web:awaiting-signature")


def _visit(site, **kwargs):
    subject = f.SubjectFactory(site=site, **kwargs)
    f.InjectionFactory(subject=subject)
    return subject


def test_it_lists_unsigned_visits_at_the_investigators_sites_only(
    browser_client, investigator_a, site_a, site_b, nothing_written
):
    mine = _visit(site_a)
    f.SubjectFactory(site=site_a)  # screening, no dose yet: nothing to sign
    theirs = _visit(site_b)

    client = browser_client(investigator_a)  # signing in is audited: before the count
    with nothing_written():
        response = client.get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert mine.code in html and "not signed" in html
    assert theirs.code not in html
    assert reverse("web:subject", args=[mine.pk]) + "#h-sign" in html
    assert [(i.subject_id, i.scan_id) for i in awaiting_signature(investigator_a)] == [(mine.pk, None)]


def test_a_signed_visit_leaves_the_list_and_an_invalidated_one_comes_back(browser_client, investigator_a, site_a):
    subject = _visit(site_a)
    signature = signature_apply(signer=investigator_a, password=PASSWORD, obj=subject, meaning="approval")

    assert awaiting_signature(investigator_a) == []
    assert subject.code not in browser_client(investigator_a).get(URL).content.decode()

    # the record changes after signing: the change's service invalidates the signature
    Injection.objects.filter(subject=subject).update(anatomical_target="left ventricle, corrected")
    assert signature_invalidate_if_changed(subject, reason="injection corrected") == [signature]
    html = browser_client(investigator_a).get(URL).content.decode()
    assert subject.code in html and "signature invalidated" in html and "injection corrected" in html


def test_the_dashboard_links_the_list_with_its_count(browser_client, investigator_a, coordinator_a, site_a):
    _visit(site_a)
    _visit(site_a)

    html = browser_client(investigator_a).get(reverse("web:dashboard")).content.decode()
    assert f'href="{URL}"' in html and "Awaiting my signature (2)" in html

    # a coordinator signs nothing: no link
    assert "Awaiting my signature" not in browser_client(coordinator_a).get(reverse("web:dashboard")).content.decode()


def test_who_signs_nothing_is_told_so_and_a_sponsor_gets_404(browser_client, coordinator_a, sponsor, site_a):
    _visit(site_a)
    response = browser_client(coordinator_a).get(URL)
    assert response.status_code == 200
    assert "Only an investigator signs records" in response.content.decode()
    assert awaiting_signature(coordinator_a) == []

    assert browser_client(sponsor).get(URL).status_code == 404
