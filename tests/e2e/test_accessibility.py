"""axe-core on every page, as every role, and on every form's error page: 0 violations.

The pages are found in the URLconf (the ``web``, ``compliance`` and ``accounts``
namespaces), so a page added later is visited without touching this file; a page whose
route needs an object this file does not know fails with "add it to OBJECT_FOR". Each
page is checked as the first role that may open it (the pages that differ by role, in
``EVERY_ROLE``, as each role); then every POST form on it that has fields is submitted
empty (browser validation off), and the page that answers, with its errors, is checked too.

axe-core is vendored (tests/e2e/vendor/axe.min.js, MPL-2.0, see its LICENSE) and injected
through the DevTools protocol (``page.evaluate``), which the strict CSP does not block.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from compliance.services.exports import export_request
from live.models import LiveSession
from tests import factories as f
from tests.e2e.conftest import SCREENSHOTS
from tests.imaging.helpers import process, uploaded_scan

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
NAMESPACES = ("web", "compliance", "accounts")
# Routes that are not pages to look at: (name: why).
SKIP = {
    "web:live-demo": "starts a demo stream and redirects",
    "accounts:logout": "a POST that signs out",
    "accounts:otp": "only during a two-factor sign-in",
}
# Pages whose content depends on the role: checked as every role that may open them.
EVERY_ROLE = {"web:dashboard", "web:subjects", "web:subject", "web:scans", "web:scan", "web:exports"}
# The object a route's <pk> names, by url name; the rest go by prefix in _pk().
OBJECT_FOR = {
    "web:injection-correct": lambda r: r.injection.pk,
    "web:consent-correct": lambda r: r.consent.pk,
    "web:consent-withdraw": lambda r: r.consent.pk,
    "web:calibration-retire": lambda r: r.scan.system_matrix_id,
    "web:live-start": lambda r: r.injection.pk,
    "web:live": lambda r: r.live.pk,
    "web:live-token": lambda r: r.live.pk,
    "web:export-retry": lambda r: r.export.pk,
}


def _pk(name: str, record) -> int:
    if name in OBJECT_FOR:
        return OBJECT_FOR[name](record)
    page = name.split(":")[1]
    if page == "subject" or page.startswith(("subject-", "consent-", "injection-", "scan-upload", "roi-")):
        return record.subject.pk
    if page.startswith("lot-"):
        return record.batch.nanoparticle_lot_id
    if page.startswith("batch-"):
        return record.batch.pk
    if page == "scan" or page.startswith("scan-"):
        return record.scan.pk
    raise AssertionError(f"no object for {name}: add it to OBJECT_FOR in {__file__}")


def pages(record) -> list[tuple[str, str]]:
    """(url name, path) of every GET-able page in NAMESPACES."""
    found = []
    for entry in get_resolver().url_patterns:
        if not (isinstance(entry, URLResolver) and entry.namespace in NAMESPACES):
            continue
        for pattern in entry.url_patterns:
            if not isinstance(pattern, URLPattern) or pattern.name is None:
                continue
            name = f"{entry.namespace}:{pattern.name}"
            if name in SKIP:
                continue
            params = set(pattern.pattern.converters)
            kwargs: dict[str, object] = {}
            if "pk" in params:
                kwargs["pk"] = _pk(name, record)
            if "plane" in pattern.pattern.converters:
                kwargs.update(plane="axial", index=0)
            found.append((name, reverse(name, kwargs=kwargs)))
    return found


def axe(page) -> list[dict]:
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    return page.evaluate(
        """async () => {
          const r = await axe.run(document, {resultTypes: ['violations']});
          return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ' :: ' + n.failureSummary)}));
        }"""
    )


CLEAR_AND_SUBMIT = """(i) => {
  const form = document.querySelectorAll('main form[method=post]')[i];
  form.noValidate = true;
  for (const el of form.elements) {
    if (el.type === 'hidden' || el.type === 'submit' || el.type === 'button' || el.disabled) continue;
    if (el.type === 'checkbox' || el.type === 'radio') { el.checked = false; continue; }
    if (el.tagName === 'SELECT') { el.value = ''; if (el.value !== '') el.selectedIndex = -1; continue; }
    el.value = '';
  }
  const submit = form.querySelector('button[type=submit], button:not([type]), input[type=submit]');
  form.requestSubmit(submit || undefined);
}"""
FIELDS = """(i) => Array.from(document.querySelectorAll('main form[method=post]')[i].elements)
  .filter(el => !['hidden', 'submit', 'button'].includes(el.type) && el.tagName !== 'FIELDSET' && !el.disabled).length"""


@pytest.fixture
def record(api, pipeline, auditor):
    scan = process(uploaded_scan(api, pipeline, pipeline.sim["measurement"]))
    assert scan.status == "quantified", scan.status_reason
    subject = pipeline.subject
    injection = scan.injection
    live = LiveSession.objects.create(
        injection=injection, subject=subject, scanner=scan.scanner, created_by=pipeline.user
    )
    export = export_request(actor=auditor, kind="report_pdf", trial=subject.trial)
    # Failed (retry offered), so the exports page does not reload itself while it is checked.
    type(export).objects.filter(pk=export.pk).update(status="failed")
    return type(
        "Record",
        (),
        {
            "subject": subject,
            "consent": subject.consents.get(),
            "injection": injection,
            "batch": injection.batch,
            "scan": scan,
            "live": live,
            "export": export,
        },
    )


def test_every_page_and_every_form_error_has_no_axe_violation(
    browse,
    record,
    coordinator_a,
    imaging_a,
    investigator_a,
    monitor,
    auditor,
    trial_manager,
    sponsor,
):
    root = f.UserFactory(username="root", is_staff=True, is_superuser=True)
    cast = [None, coordinator_a, imaging_a, investigator_a, monitor, auditor, trial_manager, sponsor, root]
    every = pages(record)
    checked: dict[str, list[dict]] = {}  # "role url [form i]" -> violations
    opened: set[str] = set()
    for user in cast:
        session = browse(user)
        role = user.get_username() if user else "anonymous"
        page = session.page
        for name, url in every:
            if url in opened and name not in EVERY_ROLE:
                continue
            # Asked first without the page (cookies shared): a 405 or 404 error page in the tab
            # would interrupt the next navigation.
            probe = page.request.get(session.base + url, max_redirects=0, timeout=60_000)
            if probe.status != 200 or "text/html" not in probe.headers.get("content-type", ""):
                continue
            page.goto(session.base + url, timeout=60_000)
            opened.add(url)
            checked[f"{role} {url}"] = axe(page)
            print(role, url, len(checked[f"{role} {url}"]), flush=True)
            forms = page.locator("main form[method=post]").count()
            for i in range(forms if name not in EVERY_ROLE or role == "coordinator_a" else 0):
                session.go(url)
                if page.evaluate(FIELDS, i) == 0:
                    continue  # a button only (retry, release): submitting it would act, not err
                # A form handled by its script stays on the page (no navigation): that page is checked.
                with contextlib.suppress(PlaywrightTimeout), page.expect_navigation(timeout=5_000):
                    page.evaluate(CLEAR_AND_SUBMIT, i)
                page.wait_for_load_state()
                checked[f"{role} {url} form {i} submitted empty"] = axe(page)
                if role == "coordinator_a" and name == "web:subject" and i == 0:
                    session.shot("a11y-subject-form-errors")
        if user is None:  # the sign-in page with its error
            session.go("/accounts/login/")
            page.get_by_label("Username").fill("nobody")
            page.get_by_label("Password").fill("wrong")
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_load_state()
            checked["anonymous /accounts/login/ wrong password"] = axe(page)
    failures = {key: v for key, v in checked.items() if v}
    report = "\n".join(
        f"{key}: {v['id']} ({v['impact']}) {v['help']}\n    " + "\n    ".join(v["nodes"])
        for key, found in failures.items()
        for v in found
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / "axe-pages.txt").write_text("\n".join(sorted(checked)) + "\n\n" + report, encoding="utf-8")
    names = {name for name, url in every if url in opened}
    assert {"web:dashboard", "web:subject", "web:scan", "web:operations", "compliance:audit-browser"} <= names, names
    assert any("submitted empty" in key for key in checked)
    assert not failures, f"{len(failures)} of {len(checked)} pages with axe violations:\n{report}"
