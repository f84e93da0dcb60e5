"""The trial report as a document a monitor files (issue #18 item 6).

``render(data)`` turns one ``compliance.reports.ReportData`` into PDF bytes: a cover page
(trial, sites, period, who generated it and when, the audit chain's head and whether it
verifies), a table of contents, a summary, the products given (lots, batches), one
section per subject (enrolment, consent history, injections with batch and lot, scans by
time point with the iron quantified per region in ng Fe and as % of the injected dose,
alerts, signatures) and every signature in one list. Each page but the cover has a
header; every page a footer with "Page n of N".

Identity (PHI) is never part of it: subjects appear by code. Every value enters the PDF
as literal text (``_text``): Paragraph reads markup, so free text is escaped first.
"""

from __future__ import annotations

import datetime as dt
import io
from collections import defaultdict
from collections.abc import Collection
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.pdfgen import canvas as pdf_canvas
from reportlab.platypus import (
    CondPageBreak,
    Image,
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)
from reportlab.platypus.tableofcontents import TableOfContents

from audit.chain import verify_chain

# compliance.reports.ReportData: not imported, because reports (the export builders) imports
# this module; ``render`` receives the data and the retention plot it drew.
ReportData = Any

PAGE = A4
MARGIN = 1.8 * cm
WIDTH = PAGE[0] - 2 * MARGIN
NONE = "—"
PRODUCER = "MPI cell-therapy trial platform"


# --------------------------------------------------------------------------- values as people read them


def utc(value) -> str:
    if value is None:
        return NONE
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def day(value) -> str:
    if value is None:
        return NONE
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC).date()
    return value.isoformat()


def integer(value) -> str:
    """Whole numbers with thousands separators: 12,500,000."""
    return NONE if value is None else f"{int(value):,}"


def number(value, digits: int = 1) -> str:
    """Decimals with thousands separators: 12,345.7."""
    return NONE if value is None else f"{float(value):,.{digits}f}"


def ng_fe(value) -> str:
    return NONE if value is None else f"{number(value)} ng Fe"


def percent(value, digits: int = 1) -> str:
    return NONE if value is None else f"{float(value):.{digits}f} %"


def hours(value) -> str:
    return NONE if value is None else f"{float(value):g} h"


def words(value: str) -> str:
    """A stored code in people's words: ``off_target`` -> ``off target``."""
    return str(value).replace("_", " ") if value not in (None, "") else NONE


def plain(value) -> str:
    if value is None or value == "":
        return NONE
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    return str(value)


# --------------------------------------------------------------------------- styles


def _styles() -> dict[str, ParagraphStyle]:
    base = getSampleStyleSheet()
    body = base["BodyText"].clone("body", fontName="Helvetica", fontSize=9, leading=11.5)
    return {
        "title": base["Title"].clone("title", fontSize=24, leading=29, spaceAfter=6, alignment=0),
        "subtitle": body.clone("subtitle", fontSize=13, leading=17, textColor=colors.HexColor("#333333")),
        "h1": base["Heading1"].clone("h1", fontSize=15, leading=19, spaceBefore=4, spaceAfter=6),
        "h2": base["Heading2"].clone("h2", fontSize=12, leading=15, spaceBefore=10, spaceAfter=4),
        "h3": base["Heading3"].clone("h3", fontSize=10, leading=13, spaceBefore=8, spaceAfter=3),
        "body": body,
        "muted": body.clone("muted", fontSize=8, leading=10, textColor=colors.HexColor("#555555")),
        "cell": body.clone("cell", fontSize=8, leading=9.8),
        "cell_num": body.clone("cell_num", fontSize=8, leading=9.8, alignment=TA_RIGHT),
        "cell_head": body.clone("cell_head", fontName="Helvetica-Bold", fontSize=8, leading=9.8),
        "cell_head_num": body.clone(
            "cell_head_num", fontName="Helvetica-Bold", fontSize=8, leading=9.8, alignment=TA_RIGHT
        ),
        # Digests have no spaces: let them break anywhere rather than run out of the cell.
        "digest": body.clone("digest", fontName="Courier", fontSize=6.5, leading=8, wordWrap="CJK"),
        "toc0": body.clone("toc0", fontSize=10, leading=14, fontName="Helvetica-Bold"),
        "toc1": body.clone("toc1", fontSize=9, leading=12, leftIndent=14),
    }


def _text(value: str, style: ParagraphStyle) -> Paragraph:
    # The one way text enters the PDF: Paragraph reads its text as markup, so a value
    # such as "<b>" or "x <script>...</script>" would change the print or fail the build.
    return Paragraph(xml_escape(value), style)


# --------------------------------------------------------------------------- document frame


class _Document(SimpleDocTemplate):
    """Headings marked ``toc_level`` go into the contents and the PDF outline."""

    def afterFlowable(self, flowable):
        level = getattr(flowable, "toc_level", None)
        if level is None:
            return
        text = flowable.getPlainText()
        key = f"h{id(flowable)}"
        self.canv.bookmarkPage(key)
        self.canv.addOutlineEntry(text, key, level=level, closed=level > 0)
        self.notify("TOCEntry", (level, text, self.page, key))


def _canvas_maker(header_left: str, header_right: str, footer_left: str):
    """A canvas that draws the header and footer once it knows the page count."""

    class NumberedCanvas(pdf_canvas.Canvas):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._pages: list[dict] = []

        def showPage(self):
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self):
            total = len(self._pages)
            for state in self._pages:
                self.__dict__.update(state)
                self._frame(total)
                super().showPage()
            super().save()

        def _frame(self, total: int) -> None:
            width, height = PAGE
            page = self._pageNumber
            self.saveState()
            self.setStrokeColor(colors.HexColor("#9aa5b1"))
            self.setLineWidth(0.5)
            self.setFillColor(colors.HexColor("#444444"))
            if page > 1:
                self.setFont("Helvetica-Bold", 8)
                self.drawString(MARGIN, height - 1.1 * cm, header_left)
                self.setFont("Helvetica", 8)
                self.drawRightString(width - MARGIN, height - 1.1 * cm, header_right)
                self.line(MARGIN, height - 1.25 * cm, width - MARGIN, height - 1.25 * cm)
            self.line(MARGIN, 1.35 * cm, width - MARGIN, 1.35 * cm)
            self.setFont("Helvetica", 7.5)
            self.drawString(MARGIN, 1.0 * cm, footer_left)
            self.drawRightString(width - MARGIN, 1.0 * cm, f"Page {page} of {total}")
            self.restoreState()

    return NumberedCanvas


def _heading(text: str, style: ParagraphStyle, level: int | None) -> Paragraph:
    paragraph = _text(text, style)
    paragraph.toc_level = level  # read by _Document.afterFlowable
    return paragraph


def _table(styles, header: list[str], rows: list[list[str]], widths: list[float], numeric: Collection[int] = ()):
    """A table of text cells; columns in ``numeric`` are right-aligned. ``widths`` are
    fractions of the text width."""
    cells = [
        [_text(h, styles["cell_head_num" if i in numeric else "cell_head"]) for i, h in enumerate(header)],
        *[
            [
                v if isinstance(v, Paragraph) else _text(v, styles["cell_num" if i in numeric else "cell"])
                for i, v in enumerate(row)
            ]
            for row in rows
        ],
    ]
    table = Table(cells, colWidths=[w * WIDTH for w in widths], repeatRows=1, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("LINEBELOW", (0, 0), (-1, 0), 0.75, colors.HexColor("#6b7785")),
                ("LINEBELOW", (0, 1), (-1, -1), 0.25, colors.HexColor("#d0d6dd")),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8edf3")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 2.5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5),
            ]
        )
    )
    return table


def _facts(styles, pairs: list[tuple[str, str]], key_width: float = 0.28):
    """Label / value lines, as on a form."""
    table = Table(
        [[_text(k, styles["cell_head"]), _text(v, styles["cell"])] for k, v in pairs],
        colWidths=[key_width * WIDTH, (1 - key_width) * WIDTH],
        hAlign="LEFT",
    )
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
                ("LEFTPADDING", (0, 0), (0, -1), 0),
            ]
        )
    )
    return table


# --------------------------------------------------------------------------- what each part says


def _sites(data: ReportData) -> list:
    if data.export.site is not None:
        return [data.export.site]
    seen = {s.site_id: s.site for s in data.subjects}
    if not seen and data.export.subject is None:
        return list(data.trial.sites.order_by("code"))
    return [seen[k] for k in sorted(seen, key=lambda k: seen[k].code)]


def _period(data: ReportData) -> str:
    days = [s.enrolment_date for s in data.subjects]
    days += [c.signed_at.astimezone(dt.UTC).date() for c in data.consents]
    days += [i.administered_at.astimezone(dt.UTC).date() for i in data.injections]
    days += [s.created_at.astimezone(dt.UTC).date() for s in data.scans]
    if not days:
        return "no data recorded"
    return f"{min(days).isoformat()} to {max(days).isoformat()}"


def _person(user) -> str:
    if user is None:
        return NONE
    name = (user.get_full_name() or "").strip()
    return f"{name} ({user.get_username()})" if name else user.get_username()


def _record_label(signature, data: ReportData) -> str:
    model = signature.content_type.model
    if model == "subject":
        code = next((s.code for s in data.subjects if str(s.pk) == signature.object_id), signature.object_id)
        return f"Visit record of subject {code}"
    if model == "reconstruction":
        scan = data.scan_of_reconstruction.get(int(signature.object_id))
        return f"Results of scan #{scan}" if scan else f"Reconstruction #{signature.object_id}"
    return f"{signature.content_type.app_label}.{model} #{signature.object_id}"


def _signature_status(signature) -> str:
    if signature.valid:
        return "valid"
    return f"INVALIDATED {utc(signature.invalidated_at)}: {signature.invalidation_reason or 'content changed'}"


def _cover(styles, data: ReportData, verification) -> list:
    trial = data.trial
    export = data.export
    sites = _sites(data)
    chain = (
        f"verified: {integer(verification.events_checked)} events checked, no break"
        if verification.ok
        else f"NOT VERIFIED: {verification.problem or 'broken'}"
        + (f" (first broken event #{verification.first_broken_sequence})" if verification.first_broken_sequence else "")
    )
    invalid = sum(1 for s in data.signatures if not s.valid)
    return [
        Spacer(1, 2.5 * cm),
        _text("Trial report", styles["title"]),
        _text(f"{trial.protocol_number}: {trial.title}", styles["subtitle"]),
        Spacer(1, 0.8 * cm),
        _facts(
            styles,
            [
                ("Protocol", trial.protocol_number),
                ("Trial", f"{trial.title} ({trial.get_phase_display()}, {trial.get_status_display().lower()})"),
                ("Scope of this report", export.scope_label),
                ("Sites", "; ".join(f"{s.code}: {s.name}" for s in sites) or NONE),
                ("Period covered", _period(data)),
                (
                    "Contents",
                    f"{integer(len(data.subjects))} subjects, {integer(len(data.injections))} injections, "
                    f"{integer(len(data.scans))} scans, {integer(len(data.signatures))} signatures "
                    f"({integer(invalid)} invalidated), {integer(len(data.alerts))} alerts",
                ),
                ("Generated", utc(data.generated_at)),
                ("Generated by", _person(export.requested_by)),
                ("Export", f"#{export.pk}"),
                ("Audit trail head", f"event #{plain(verification.head_sequence)}"),
                ("Audit trail head hash", verification.head_hash),
                ("Audit trail", chain),
            ],
        ),
        Spacer(1, 1.2 * cm),
        _text(
            "Times are Coordinated Universal Time (UTC). Iron is given in nanograms of iron (ng Fe); "
            "the share of the injected dose refers to the iron given with the scan's own injection. "
            "Quantities are those of the latest reconstruction of each scan. Signatures are shown as they "
            "stand when the report was generated: a signature whose record changed after signing is "
            "marked invalidated. Subjects appear by code only: this report holds no identifying data.",
            styles["muted"],
        ),
        PageBreak(),
    ]


def _contents(styles) -> list:
    toc = TableOfContents()
    toc.levelStyles = [styles["toc0"], styles["toc1"]]
    toc.dotsMinLevel = 0
    return [_text("Contents", styles["h1"]), toc, PageBreak()]


def _summary(styles, data: ReportData, plot: bytes | None) -> list:
    story: list = [_heading("1 Summary", styles["h1"], 0)]
    scans_of: dict[int, int] = defaultdict(int)
    for scan in data.scans:
        scans_of[scan.subject_id] += 1
    signed = {s.subject_id for s in data.signatures if s.valid and s.content_type.model == "subject"}
    rows = [
        [
            s.code,
            s.site.code,
            s.get_status_display(),
            day(s.enrolment_date),
            integer(sum(1 for i in data.injections if i.subject_id == s.pk)),
            integer(scans_of[s.pk]),
            integer(sum(1 for a in data.alerts if a.subject_id == s.pk)),
            "signed" if s.pk in signed else "not signed",
        ]
        for s in data.subjects
    ]
    story.append(
        _table(
            styles,
            ["Subject", "Site", "Status", "Enrolled", "Injections", "Scans", "Alerts", "Visit sign-off"],
            rows,
            [0.21, 0.08, 0.12, 0.12, 0.11, 0.08, 0.08, 0.2],
            numeric={4, 5, 6},
        )
        if rows
        else _text("No subjects in this scope.", styles["body"])
    )
    if plot is not None:
        story += [
            _text("Retention in the target region over time", styles["h2"]),
            Image(io.BytesIO(plot), width=WIDTH, height=WIDTH * 3.2 / 6.5),
            _text(
                "Share of the injected iron found in the target region (% of injected dose, ± 1 standard "
                "deviation), by hours after injection, one line per subject.",
                styles["muted"],
            ),
        ]
    return story


def _products(styles, data: ReportData) -> list:
    story: list = [CondPageBreak(6 * cm), _heading("2 Products given", styles["h1"], 0)]
    story.append(_text("Nanoparticle lots", styles["h2"]))
    if data.lots:
        story.append(
            _table(
                styles,
                ["Manufacturer", "Product", "Lot", "Expiry", "Iron", "Core / hydrodynamic size", "QC status"],
                [
                    [
                        lot.manufacturer,
                        lot.product,
                        lot.lot_number,
                        day(lot.expiry_date),
                        f"{number(lot.iron_mg_per_ml, 2)} mg Fe/mL ({number(lot.iron_mmol_per_l, 1)} mmol/L)",
                        f"{number(lot.core_size_nm)} nm / {number(lot.hydrodynamic_size_nm)} nm",
                        lot.get_qc_status_display(),
                    ]
                    for lot in data.lots
                ],
                [0.15, 0.15, 0.14, 0.11, 0.18, 0.15, 0.12],
            )
        )
    else:
        story.append(_text("None recorded.", styles["body"]))
    story.append(_text("Cell batches", styles["h2"]))
    if data.batches:
        story.append(
            _table(
                styles,
                ["Batch", "Donation id", "Chain of identity", "Donor", "Cells", "Lot", "Iron per cell"],
                [
                    [
                        b.batch_code,
                        b.donation_id,
                        b.chain_of_identity_id,
                        b.donor_subject.code if b.donor_subject else "allogeneic",
                        integer(b.cell_count),
                        b.nanoparticle_lot.lot_number if b.nanoparticle_lot else NONE,
                        f"{number(b.iron_per_cell_pg, 2)} pg Fe" if b.iron_per_cell_pg is not None else NONE,
                    ]
                    for b in data.batches
                ],
                [0.1, 0.17, 0.2, 0.18, 0.12, 0.1, 0.13],
                numeric={4, 6},
            )
        )
    else:
        story.append(_text("None recorded.", styles["body"]))
    return story


def _signature_rows(signatures, data: ReportData) -> list[list[str]]:
    return [
        [
            s.printed_name if s.printed_name == s.signer_username else f"{s.printed_name} ({s.signer_username})",
            s.get_meaning_display(),
            utc(s.signed_at),
            _record_label(s, data),
            _signature_status(s),
        ]
        for s in signatures
    ]


SIGNATURE_HEADER = ["Signed by", "Meaning", "Signed at", "Record", "Status"]
SIGNATURE_WIDTHS = [0.22, 0.12, 0.18, 0.2, 0.28]


def _subject_section(styles, data: ReportData, subject, number_: str, parts: dict) -> list:
    story: list = [
        CondPageBreak(8 * cm),
        _heading(f"{number_} Subject {subject.code}", styles["h2"], 1),
        _facts(
            styles,
            [
                ("Site", f"{subject.site.code}: {subject.site.name}"),
                ("Enrolment date", day(subject.enrolment_date)),
                ("Status", subject.get_status_display()),
            ],
            key_width=0.2,
        ),
    ]

    story.append(_text("Consent history", styles["h3"]))
    consents = parts["consents"].get(subject.pk, [])
    story.append(
        _table(
            styles,
            ["Document version", "Scopes granted", "Signed at", "Withdrawn"],
            [
                [
                    f"version {c.document.version}",
                    ", ".join(words(x) for x in c.scopes),
                    utc(c.signed_at),
                    (
                        f"{', '.join(words(x) for x in sorted(c.withdrawn_scopes))} on {utc(c.withdrawn_at)}"
                        + (f": {c.withdrawal_reason}" if c.withdrawal_reason else "")
                    )
                    if c.withdrawn_at
                    else "not withdrawn",
                ]
                for c in consents
            ],
            [0.16, 0.3, 0.2, 0.34],
        )
        if consents
        else _text("No consent recorded.", styles["body"])
    )

    story.append(_text("Injections", styles["h3"]))
    injections = parts["injections"].get(subject.pk, [])
    story.append(
        _table(
            styles,
            ["Given at", "Batch", "Donation id", "Chain of identity", "Lot", "Cells", "Volume", "Route and target"],
            [
                [
                    utc(i.administered_at),
                    i.batch.batch_code,
                    i.batch.donation_id,
                    i.batch.chain_of_identity_id,
                    i.batch.nanoparticle_lot.lot_number if i.batch.nanoparticle_lot else NONE,
                    integer(i.administered_cells),
                    f"{number(i.volume_ml, 2)} mL",
                    f"{i.get_route_display()}: {i.anatomical_target}",
                ]
                for i in injections
            ],
            [0.11, 0.08, 0.16, 0.21, 0.1, 0.11, 0.09, 0.14],
            numeric={5, 6},
        )
        if injections
        else _text("No injection recorded.", styles["body"])
    )

    story.append(_text("Scans", styles["h3"]))
    scans = parts["scans"].get(subject.pk, [])
    if not scans:
        story.append(_text("No scan recorded.", styles["body"]))
    for scan in scans:
        measurements = parts["measurements"].get(scan.pk, [])
        block: list = [
            _text(
                f"Scan #{scan.pk} at {hours(scan.hours_after_injection)} after injection "
                f"(received {utc(scan.created_at)}; {scan.get_status_display().lower()})",
                styles["body"],
            )
        ]
        if measurements:
            block.append(
                _table(
                    styles,
                    ["Region", "Kind", "Iron", "Uncertainty (1 SD)", "% of injected dose", "Cells", "Detected"],
                    [
                        [
                            m.roi_name,
                            m.get_roi_kind_display(),
                            ng_fe(m.iron_ng),
                            f"± {ng_fe(m.uncertainty_ng)}",
                            percent(m.retention_percent, 2),
                            integer(round(m.cell_count)),
                            "yes" if m.detected else "no (below the detection limit)",
                        ]
                        for m in measurements
                    ],
                    [0.17, 0.1, 0.15, 0.15, 0.13, 0.12, 0.18],
                    numeric={2, 3, 4, 5},
                )
            )
        else:
            block.append(_text("Not quantified.", styles["muted"]))
        for alert in parts["alerts"].get(scan.pk, []):
            block.append(
                _text(
                    f"Alert: {alert.get_kind_display()}: {percent(alert.value_percent)} of the detected iron "
                    f"off target, above the trial's threshold of {percent(alert.threshold_percent)}.",
                    styles["body"],
                )
            )
        block.append(Spacer(1, 0.15 * cm))
        story.append(KeepTogether(block))

    alerts = [a for scan in scans for a in parts["alerts"].get(scan.pk, [])]
    story.append(_text("Alerts", styles["h3"]))
    story.append(
        _text(f"{integer(len(alerts))} alert(s) on this subject's scans (listed with each scan).", styles["body"])
        if alerts
        else _text("No alerts.", styles["body"])
    )

    story.append(_text("Signatures", styles["h3"]))
    signatures = parts["signatures"].get(subject.pk, [])
    story.append(
        _table(styles, SIGNATURE_HEADER, _signature_rows(signatures, data), SIGNATURE_WIDTHS)
        if signatures
        else _text("Nothing signed.", styles["body"])
    )
    return story


def _by(rows, key) -> dict:
    grouped: dict = defaultdict(list)
    for row in rows:
        grouped[key(row)].append(row)
    return grouped


def render(data: ReportData, *, retention_plot: bytes | None) -> bytes:
    """The PDF of ``data``, with ``retention_plot`` (a PNG, or None) in its summary."""
    styles = _styles()
    trial = data.trial
    verification = verify_chain()
    parts = {
        "consents": _by(data.consents, lambda c: c.subject_id),
        "injections": _by(data.injections, lambda i: i.subject_id),
        "scans": _by(data.scans, lambda s: s.subject_id),
        "measurements": _by(data.measurements, lambda m: m.scan_id),
        "alerts": _by(data.alerts, lambda a: a.scan_id),
        "signatures": _by(data.signatures, lambda s: s.subject_id),
    }
    for scans in parts["scans"].values():
        scans.sort(key=lambda s: (s.hours_after_injection, s.pk))
    for rows in parts["measurements"].values():
        rows.sort(key=lambda m: (m.roi_kind != "target", m.roi_name))

    story: list = [*_cover(styles, data, verification), *_contents(styles)]
    story += _summary(styles, data, retention_plot)
    story += _products(styles, data)
    story += [PageBreak(), _heading("3 Subjects", styles["h1"], 0)]
    if not data.subjects:
        story.append(_text("No subjects in this scope.", styles["body"]))
    for n, subject in enumerate(data.subjects, 1):
        story += _subject_section(styles, data, subject, f"3.{n}", parts)
    story += [CondPageBreak(6 * cm), _heading("4 Signatures", styles["h1"], 0)]
    story.append(
        _table(styles, SIGNATURE_HEADER, _signature_rows(data.signatures, data), SIGNATURE_WIDTHS)
        if data.signatures
        else _text("Nothing signed in this scope.", styles["body"])
    )
    if data.signatures:
        story += [
            Spacer(1, 0.2 * cm),
            _text("Content SHA-256 of each signed record, as signed:", styles["muted"]),
            _table(
                styles,
                ["Record", "Signed at", "Content SHA-256"],
                [
                    [_record_label(s, data), utc(s.signed_at), _text(s.content_sha256, styles["digest"])]
                    for s in data.signatures
                ],
                [0.3, 0.2, 0.5],
            ),
        ]

    buffer = io.BytesIO()
    doc = _Document(
        buffer,
        pagesize=PAGE,
        title=f"Trial report {trial.protocol_number}, {data.scope_label}",
        author=PRODUCER,
        subject=f"Export #{data.export.pk}",
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=1.8 * cm,
        bottomMargin=1.9 * cm,
    )
    doc.multiBuild(
        story,
        canvasmaker=_canvas_maker(
            f"Trial report {trial.protocol_number} · {data.scope_label}",
            f"Generated {utc(data.generated_at)}",
            f"Export #{data.export.pk} · {PRODUCER} · no identifying data: subjects by code",
        ),
    )
    return buffer.getvalue()
