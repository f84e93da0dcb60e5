"""Times are typed on the site's clock and stored in UTC (issue #18, item 1): Berlin's
"now" is accepted and stored an hour (winter) or two (summer) earlier in UTC; an hour the
clocks skipped or repeated is refused next to the field with words that say which."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

from trials import site_time
from trials.models import Consent

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def test_a_berlin_wall_time_is_stored_in_utc():
    assert site_time.to_utc(dt.datetime.fromisoformat("2026-01-15T10:00"), "Europe/Berlin") == dt.datetime(
        2026, 1, 15, 9, 0, tzinfo=dt.UTC
    )
    assert site_time.to_utc(dt.datetime.fromisoformat("2026-07-15T10:00"), "Europe/Berlin") == dt.datetime(
        2026, 7, 15, 8, 0, tzinfo=dt.UTC
    )
    assert site_time.to_utc(dt.datetime.fromisoformat("2026-01-15T10:00"), "America/New_York") == dt.datetime(
        2026, 1, 15, 15, 0, tzinfo=dt.UTC
    )


def test_the_skipped_hour_is_refused():
    with pytest.raises(ValidationError) as refused:
        site_time.to_utc(dt.datetime.fromisoformat("2026-03-29T02:30"), "Europe/Berlin")
    assert refused.value.code == "time_skipped" and "does not exist in Berlin" in refused.value.message
    # The clock went from 01:59 CET to 03:00 CEST: the same instant as 02:30 CET reads 03:30 CEST.
    assert "the hour after the change is 03:30 CEST" in refused.value.message


def test_the_repeated_hour_is_refused():
    with pytest.raises(ValidationError) as refused:
        site_time.to_utc(dt.datetime.fromisoformat("2026-10-25T02:30"), "Europe/Berlin")
    assert refused.value.code == "time_ambiguous" and "happened twice in Berlin" in refused.value.message
    assert "00:30 UTC" in refused.value.message and "01:30 UTC" in refused.value.message


def test_the_label_names_the_clock():
    assert site_time.label("Europe/Berlin") == "Berlin (CET/CEST)"
    assert site_time.label("America/New_York") == "New York (EST/EDT)"
    assert site_time.label("UTC") == "UTC"


@pytest.fixture
def berlin_site(site_a):
    site_a.time_zone = "Europe/Berlin"
    site_a.save()
    return site_a


def _sign_consent(client, subject, document, signed_at: str):
    return client.post(
        f"/subjects/{subject.pk}/consent/",
        {"document": document.pk, "scopes": ["imaging"], "signed_at": signed_at},
    )


def test_berlins_now_is_accepted_and_stored_in_utc(berlin_site, ready, coordinator_a):
    subject, consent, _batch = ready
    client = Client()
    client.force_login(coordinator_a)
    form = client.get(f"/subjects/{subject.pk}/consent/").content.decode()
    assert "Time in Berlin (CET/CEST)" in form
    now_in_berlin = timezone.now().astimezone(BERLIN).replace(second=0, microsecond=0)
    response = _sign_consent(client, subject, consent.document, f"{now_in_berlin:%Y-%m-%dT%H:%M}")
    assert response.status_code == 302, response.content.decode()[:2000]
    stored = Consent.objects.exclude(pk=consent.pk).get().signed_at
    assert stored == now_in_berlin.astimezone(dt.UTC)  # the same instant, to the minute
    page = client.get(f"/subjects/{subject.pk}/").content.decode()
    assert f"{now_in_berlin:%Y-%m-%d %H:%M} {now_in_berlin.tzname()}" in page
    assert f"({stored:%H:%M} UTC)" in page


def test_a_skipped_hour_is_refused_next_to_the_field(berlin_site, ready, coordinator_a, nothing_written):
    subject, consent, _batch = ready
    client = Client()
    client.force_login(coordinator_a)
    with nothing_written():
        response = _sign_consent(client, subject, consent.document, "2026-03-29T02:30")
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="id_signed_at_error"' in html and "does not exist in Berlin" in html


# ---------------------------------------------------------------- the repeated hour, chosen

REPEATED = "2026-10-25T02:30"  # Berlin: 00:30 UTC (CEST), then 01:30 UTC (CET)


def test_the_occurrence_chosen_gives_the_instant():
    wall = dt.datetime.fromisoformat(REPEATED)
    assert site_time.to_utc(wall, "Europe/Berlin", 0) == dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC)
    assert site_time.to_utc(wall, "Europe/Berlin", 1) == dt.datetime(2026, 10, 25, 1, 30, tzinfo=dt.UTC)
    # An occurrence for a time that happened once changes nothing; a skipped time stays refused.
    assert site_time.to_utc(dt.datetime.fromisoformat("2026-01-15T10:00"), "Europe/Berlin", 1) == dt.datetime(
        2026, 1, 15, 9, tzinfo=dt.UTC
    )
    with pytest.raises(ValidationError):
        site_time.to_utc(dt.datetime.fromisoformat("2026-03-29T02:30"), "Europe/Berlin", 1)


def test_only_a_repeated_time_has_occurrences():
    first, second = site_time.occurrences(dt.datetime.fromisoformat(REPEATED), "Europe/Berlin")
    assert first == (0, "the first, 02:30 CEST (00:30 UTC), before the clocks went back")
    assert second == (1, "the second, 02:30 CET (01:30 UTC), after the clocks went back")
    assert site_time.occurrences(dt.datetime.fromisoformat("2026-10-25T03:30"), "Europe/Berlin") == []
    assert site_time.occurrences(dt.datetime.fromisoformat("2026-03-29T02:30"), "Europe/Berlin") == []
    assert site_time.occurrences(dt.datetime.fromisoformat(REPEATED), "UTC") == []


def _occurrence_radios(html: str) -> list[str]:
    return [part.split('"')[0] for part in html.split('name="signed_at-occurrence" id="id_signed_at-occurrence-')[1:]]


def test_a_repeated_hour_is_refused_with_the_choice_next_to_the_field(
    berlin_site, ready, coordinator_a, nothing_written
):
    subject, consent, _batch = ready
    client = Client()
    client.force_login(coordinator_a)
    assert "signed_at-occurrence" not in client.get(f"/subjects/{subject.pk}/consent/").content.decode()
    with nothing_written():
        response = _sign_consent(client, subject, consent.document, REPEATED)
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="id_signed_at_error"' in html and "happened twice in Berlin" in html and "Choose which" in html
    assert "2026-10-25 02:30 happened twice on the site's clock: which one?" in html
    assert _occurrence_radios(html) == ["0", "1"]
    assert "02:30 CEST (00:30 UTC)" in html and "02:30 CET (01:30 UTC)" in html
    assert " checked" not in html.split('id="id_signed_at-occurrence"')[1].split("</fieldset>")[0]


@pytest.mark.parametrize("occurrence,utc_hour", [("0", 0), ("1", 1)])
def test_the_chosen_occurrence_is_stored(berlin_site, ready, coordinator_a, occurrence, utc_hour):
    subject, consent, _batch = ready
    client = Client()
    client.force_login(coordinator_a)
    response = client.post(
        f"/subjects/{subject.pk}/consent/",
        {
            "document": consent.document.pk,
            "scopes": ["imaging"],
            "signed_at": REPEATED,
            "signed_at-occurrence": occurrence,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    stored = Consent.objects.exclude(pk=consent.pk).get().signed_at
    assert stored == dt.datetime(2026, 10, 25, utc_hour, 30, tzinfo=dt.UTC)
    page = client.get(f"/subjects/{subject.pk}/").content.decode()
    assert f"2026-10-25 02:30 {'CET' if utc_hour else 'CEST'}" in page and f"(0{utc_hour}:30 UTC)" in page


def test_a_stored_time_in_the_repeated_hour_opens_with_its_own_occurrence_chosen(berlin_site, ready, coordinator_a):
    subject, consent, _batch = ready
    Consent.objects.filter(pk=consent.pk).update(signed_at=dt.datetime(2026, 10, 25, 1, 30, tzinfo=dt.UTC))
    client = Client()
    client.force_login(coordinator_a)
    html = client.get(f"/consents/{consent.pk}/edit/").content.decode()
    assert 'value="2026-10-25T02:30"' in html
    assert 'id="id_signed_at-occurrence-1" value="1" checked>' in html
    assert 'id="id_signed_at-occurrence-0" value="0">' in html
