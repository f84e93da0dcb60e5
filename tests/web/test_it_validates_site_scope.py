"""A user of site B reaches none of site A's pages: 404 (never 403, which would confirm
the object exists), for reads and writes alike."""

from __future__ import annotations

import pytest

from tests import factories as f


def site_a_urls(scan, consent, batch, lot) -> list[str]:
    subject = scan.subject_id
    return [
        f"/subjects/{subject}/",
        f"/subjects/{subject}/consent/",
        f"/subjects/{subject}/injection/",
        f"/subjects/{subject}/upload/",
        f"/consents/{consent.pk}/withdraw/",
        f"/batches/{batch.pk}/label/",
        f"/batches/{batch.pk}/release/",
        f"/scans/{scan.pk}/",
        f"/scans/{scan.pk}/image/axial/0.png",
        f"/scans/{scan.pk}/image/mip.png",
        f"/scans/{scan.pk}/dicom.zip",
    ]


@pytest.fixture
def site_a_objects(quantified):
    return dict(
        scan=quantified,
        consent=quantified.subject.consents.get(),
        batch=quantified.injection.batch,
        lot=quantified.injection.batch.nanoparticle_lot,
    )


def test_it_answers_404_on_every_page_of_another_site(browser_client, coordinator_b, site_a_objects):
    client = browser_client(coordinator_b)
    for url in site_a_urls(**site_a_objects):
        assert client.get(url).status_code == 404, url


def test_it_answers_404_to_writes_on_another_site(
    browser_client, coordinator_b, investigator_b, site_a_objects, nothing_written
):
    scan = site_a_objects["scan"]
    client = browser_client(investigator_b)
    with nothing_written():
        for url in (
            f"/subjects/{scan.subject_id}/consent/",
            f"/subjects/{scan.subject_id}/sign/",
            f"/scans/{scan.pk}/sign/",
            f"/consents/{site_a_objects['consent'].pk}/withdraw/",
        ):
            assert client.post(url, {"meaning": "approval", "password": f.PASSWORD}).status_code == 404, url


def test_it_hides_site_a_from_site_b_lists(browser_client, coordinator_b, site_a_objects):
    client = browser_client(coordinator_b)
    code = site_a_objects["scan"].subject.code
    for url in ("/", "/subjects/", "/products/"):
        assert code.encode() not in client.get(url).content, url
    assert site_a_objects["batch"].batch_code.encode() not in client.get("/products/").content


def test_it_redirects_anonymous_visitors_to_the_login_page(client, site_a_objects):
    response = client.get(f"/scans/{site_a_objects['scan'].pk}/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
