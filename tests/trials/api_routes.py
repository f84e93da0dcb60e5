"""The API's routes, read from the URL configuration, and for each router basename a
factory of an object the test needs. A new endpoint without an entry makes the
cross-site, identity and query-count tests fail, so none can escape them.

Entries for trials' routes are below. Another app adds its own in
``tests/<app>/api_objects.py``, with dicts of the same names (``HIDDEN_FROM_SITE_B``,
``VISIBLE_TO_MONITOR``); they are merged in at import.
"""

from __future__ import annotations

import importlib
import pkgutil

from django.urls import URLResolver, get_resolver

import tests
from tests import factories as f
from trials.models import Membership, Role


def api_patterns():
    def walk(patterns, prefix):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern).lstrip("^"), pattern

    return [(route, p) for route, p in walk(get_resolver().url_patterns, "") if route.startswith("api/v1/")]


def _router_view(pattern):
    initkwargs = getattr(pattern.callback, "initkwargs", {})
    return initkwargs.get("basename"), getattr(pattern.callback, "actions", None)


def detail_routes():
    """(url name, basename, HTTP methods) for every route that takes a pk. Format-suffix
    twins (``.json``) are the same views and are left out."""
    routes = []
    for _route, pattern in api_patterns():
        groups = pattern.pattern.regex.groupindex
        if "pk" in groups and "format" not in groups:
            basename, actions = _router_view(pattern)
            # HEAD mirrors GET (DRF even adds it to ``actions`` after the first request).
            routes.append((pattern.name, basename, sorted(set(actions or {"get": None}) - {"head"})))
    return routes


def list_routes():
    routes = []
    for _route, pattern in api_patterns():
        basename, actions = _router_view(pattern)
        groups = pattern.pattern.regex.groupindex
        if basename and "pk" not in groups and "format" not in groups and (actions or {}).get("get") == "list":
            routes.append((pattern.name, basename))
    return routes


# --- objects that coordinator_b (site B) must never see


def _subject_a(cast):
    subject = f.SubjectFactory(site=cast.site_a)
    f.SubjectIdentityFactory(subject=subject, full_name="Ada Geheim", medical_record_number="MRN-SECRET-1")
    # Data-sharing consent in force, so a sponsor reads this subject (de-identified).
    f.ConsentFactory(subject=subject)
    return subject


def _batch_a(cast):
    return f.CellBatchFactory(donor_subject=_subject_a(cast))


def _injection_a(cast):
    return f.InjectionFactory(batch=_batch_a(cast))


def _consent_a(cast):
    return f.ConsentFactory(subject=_subject_a(cast))


HIDDEN_FROM_SITE_B = {
    # Site-scoped records: one at site A of the shared trial.
    "site": lambda cast: cast.site_a,
    "subject": _subject_a,
    "consent": _consent_a,
    "cell-batch": _batch_a,
    "injection": _injection_a,
    # Trial-scoped records: site B reads its own trial's, so the hidden one belongs to
    # another trial in which site B's coordinator holds no role.
    "trial": lambda cast: f.TrialFactory(),
    "consent-document": lambda cast: f.ConsentDocumentFactory(),
    "nanoparticle-lot": lambda cast: f.NanoparticleLotFactory(),
}


# --- one more row visible to the monitor (for query counting)


def _visible_trial(cast):
    trial = f.TrialFactory()
    Membership.objects.create(user=cast.monitor, trial=trial, role=Role.MONITOR)
    return trial


VISIBLE_TO_MONITOR = {
    "trial": _visible_trial,
    "site": lambda cast: f.SiteFactory(trial=cast.trial),
    "subject": _subject_a,
    "consent": _consent_a,
    "cell-batch": _batch_a,
    "injection": _injection_a,
    "consent-document": lambda cast: f.ConsentDocumentFactory(trial=cast.trial),
    "nanoparticle-lot": lambda cast: f.NanoparticleLotFactory(trial=cast.trial),
}


# List routes whose rows a sponsor never sees, by design (e.g. the audit trail, which
# names users and sites). The sponsor test asserts these lists are empty instead.
HIDDEN_FROM_SPONSOR: set[str] = set()
# Detail routes (by URL name) where a sponsor gets another answer than 200, by design,
# with the reason next to each entry in the app's api_objects.py.
SPONSOR_DETAIL_STATUS: dict[str, int] = {}
# Basenames of records that belong to one user, not to a trial (API tokens): no monitor
# of a trial sees them, so the monitor's positive control leaves them out; their
# owner-only rule is tested beside them (test_it_validates_ownership).
OWN_RECORDS: set[str] = set()


def _merge_app_entries() -> None:
    for module in pkgutil.iter_modules(tests.__path__):
        if not module.ispkg or module.name == "trials":
            continue
        try:
            entries = importlib.import_module(f"tests.{module.name}.api_objects")
        except ModuleNotFoundError as exc:
            if exc.name != f"tests.{module.name}.api_objects":
                raise
            continue
        HIDDEN_FROM_SITE_B.update(getattr(entries, "HIDDEN_FROM_SITE_B", {}))
        VISIBLE_TO_MONITOR.update(getattr(entries, "VISIBLE_TO_MONITOR", {}))
        HIDDEN_FROM_SPONSOR.update(getattr(entries, "HIDDEN_FROM_SPONSOR", set()))
        SPONSOR_DETAIL_STATUS.update(getattr(entries, "SPONSOR_DETAIL_STATUS", {}))
        OWN_RECORDS.update(getattr(entries, "OWN_RECORDS", set()))


_merge_app_entries()
