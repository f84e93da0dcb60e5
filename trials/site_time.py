"""Times as a site's staff read and enter them: in the site's own time zone, stored in UTC.

The one home of the conversion. A form takes the wall-clock time typed at the site
(``to_utc``); a record page shows the stored UTC time at the site, with UTC beside it
(``at_site``). A wall-clock time that does not exist at the site (the hour skipped when
summer time starts) is refused with words that say so; one that happens twice (the hour
repeated when it ends) is refused unless the person said which occurrence they mean
(``occurrence``: 0 the first, 1 the second), never guessed."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from functools import lru_cache

from django.core.exceptions import ValidationError


@lru_cache(maxsize=64)
def zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name or "UTC")


def place(name: str) -> str:
    """'Europe/Berlin' -> 'Berlin', 'America/New_York' -> 'New York'."""
    return (name or "UTC").rsplit("/", 1)[-1].replace("_", " ")


def zone_names(name: str, year: int | None = None) -> dict[int, str]:
    """The zone's abbreviations by UTC offset in minutes, winter first: {60: 'CET', 120:
    'CEST'} for Berlin, {0: 'UTC'} for UTC (a page's script names the zone with them)."""
    year = year or dt.datetime.now(dt.UTC).year
    tz = zone(name)
    names: dict[int, str] = {}
    for month in (1, 7):
        moment = dt.datetime(year, month, 1, 12, tzinfo=tz)
        offset = moment.utcoffset() or dt.timedelta(0)
        names.setdefault(int(offset.total_seconds() // 60), moment.tzname() or "")
    return names


def abbreviations(name: str, year: int | None = None) -> str:
    """'CET/CEST' for Berlin, 'EST/EDT' for New York, 'UTC' for UTC."""
    return "/".join(dict.fromkeys(zone_names(name, year).values()))


def label(name: str) -> str:
    """'Berlin (CET/CEST)', as the forms say which clock a time is read on."""
    abbr = abbreviations(name)
    return abbr if place(name) == abbr else f"{place(name)} ({abbr})"


def _instants(wall: dt.datetime, name: str) -> tuple[dt.datetime, dt.datetime]:
    """The two UTC readings of a naive wall-clock time (fold 0 and 1): equal unless the
    clocks skipped or repeated it."""
    tz = zone(name)
    return (
        wall.replace(tzinfo=tz, fold=0).astimezone(dt.UTC),
        wall.replace(tzinfo=tz, fold=1).astimezone(dt.UTC),
    )


def occurrences(wall: dt.datetime, name: str) -> list[tuple[int, str]]:
    """For a wall-clock time the site's clock shows twice: (occurrence, words) for each,
    in order, to choose from; empty for any other time."""
    if wall.tzinfo is not None:
        return []
    wall = wall.replace(fold=0)
    early, late = _instants(wall, name)
    if early == late or early.astimezone(zone(name)).replace(tzinfo=None) != wall:
        return []
    tz = zone(name)
    return [
        (
            0,
            f"the first, {wall:%H:%M} {early.astimezone(tz).tzname()} ({early:%H:%M} UTC), before the clocks went back",
        ),
        (1, f"the second, {wall:%H:%M} {late.astimezone(tz).tzname()} ({late:%H:%M} UTC), after the clocks went back"),
    ]


def to_utc(wall: dt.datetime, name: str, occurrence: int | None = None) -> dt.datetime:
    """The UTC instant of a wall-clock time at the site. ``ValidationError`` (code
    ``time_skipped`` or ``time_ambiguous``) when the clocks skipped it, or repeated it and
    ``occurrence`` (0: the first, 1: the second) does not say which is meant."""
    if wall.tzinfo is not None:
        return wall.astimezone(dt.UTC)
    tz = zone(name)
    wall = wall.replace(fold=0)
    early, late = _instants(wall, name)
    if early == late:
        return early
    when = f"{wall:%Y-%m-%d %H:%M}"
    if early.astimezone(tz).replace(tzinfo=None) != wall:
        # The same instant as the typed time on the clock before the change, read after it
        # (02:30 CET is 03:30 CEST): the later of the two readings.
        after = max(early, late).astimezone(tz)
        raise ValidationError(
            f"{when} does not exist in {place(name)}: the clocks were put forward at that hour "
            f"(summer time began). Check the time; the hour after the change is "
            f"{after:%H:%M} {after.tzname()}.",
            code="time_skipped",
        )
    if occurrence in (0, 1):
        return late if occurrence else early
    first, second = early.astimezone(tz), late.astimezone(tz)
    raise ValidationError(
        f"{when} happened twice in {place(name)}: the clocks were put back at that hour (summer time "
        f"ended), first as {first.tzname()} ({early:%H:%M} UTC), then as {second.tzname()} "
        f"({late:%H:%M} UTC). Choose which one you mean under the time.",
        code="time_ambiguous",
    )


def at_site(value: dt.datetime, name: str) -> dt.datetime:
    """A stored (aware) time on the site's clock."""
    return value.astimezone(zone(name))


def stamp(value: dt.datetime, name: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored time as text on the site's clock, the zone's abbreviation after it:
    '2026-10-25 02:30 CET'."""
    local = at_site(value, name)
    return f"{local:{fmt}} {local.tzname()}"


def today(name: str) -> dt.date:
    """The date on the site's clock now."""
    return dt.datetime.now(dt.UTC).astimezone(zone(name)).date()
