from __future__ import annotations

from tests import factories as f


def test_it_opens_the_admin_to_superusers_only(client, site_a, coordinator_a):
    staff = f.UserFactory(username="staffer", is_staff=True)
    superuser = f.UserFactory(username="root", is_staff=True, is_superuser=True)

    client.force_login(staff)
    assert client.get("/admin/").status_code == 302  # sent to the login page
    client.force_login(superuser)
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/trials/subject/").status_code == 200


def test_it_shows_records_read_only_and_never_identity(client, site_a):
    superuser = f.UserFactory(username="root", is_staff=True, is_superuser=True)
    subject = f.SubjectFactory(site=site_a)
    f.SubjectIdentityFactory(subject=subject, full_name="Nie Sichtbar")
    client.force_login(superuser)

    assert client.get("/admin/trials/subject/add/").status_code == 403
    assert client.get("/admin/trials/subjectidentity/").status_code == 404
    page = client.get(f"/admin/trials/subject/{subject.pk}/change/")
    assert page.status_code == 200 and b"Nie Sichtbar" not in page.content
    assert (
        site_a.trial.deidentification_secret.encode()
        not in client.get(f"/admin/trials/trial/{site_a.trial.pk}/change/").content
    )
