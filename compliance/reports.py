"""Auditor reports and exports, built from one scoped collection of the trial data.

``collect(export)`` gathers the rows once; each ``build_*`` turns them into one file's
bytes. Nothing here writes to the database except the signature re-check, which marks
(and audits) a signature whose record changed, so every report shows signatures as
they stand now. Identity (PHI) is never part of a report: subjects appear by code, and
in the sponsor set by pseudonym only.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from django.apps import apps
from django.db import connection
from django.utils import timezone

from audit.chain import head, read_checkpoints, to_jsonable, verify_chain
from audit.models import AuditEvent
from compliance import csvsafe
from compliance.models import Export, Signature
from compliance.signatures import signature_invalidate_if_changed
from trials import deidentify

if TYPE_CHECKING:
    from trials.models import Trial

ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"


# --------------------------------------------------------------------------- collection


def imaging_model(name: str):
    """An imaging model once it exists and is migrated; None while the pipeline is being built."""
    try:
        model = apps.get_model("imaging", name)
    except LookupError:
        return None
    return model if model._meta.db_table in connection.introspection.table_names() else None


@dataclass
class ReportData:
    export: Export
    generated_at: dt.datetime
    trial: Trial
    subjects: list = field(default_factory=list)
    consents: list = field(default_factory=list)
    injections: list = field(default_factory=list)
    batches: list = field(default_factory=list)
    lots: list = field(default_factory=list)
    scans: list = field(default_factory=list)
    measurements: list = field(default_factory=list)
    signatures: list = field(default_factory=list)
    alerts: list = field(default_factory=list)
    # Reconstruction id -> scan id, for naming what a results signature signs.
    scan_of_reconstruction: dict = field(default_factory=dict)

    @property
    def scope_label(self) -> str:
        return self.export.scope_label


def _subjects_in_scope(export: Export):
    from trials.models import Subject

    subjects = Subject.objects.filter(trial_id=export.trial_id).select_related("site", "trial")
    if export.site_id:
        subjects = subjects.filter(site_id=export.site_id)
    if export.subject_id:
        subjects = subjects.filter(pk=export.subject_id)
    return list(subjects.order_by("code"))


def _latest_measurements(subject_ids):
    Measurement = imaging_model("Measurement")
    Scan = imaging_model("Scan")
    if Measurement is None or Scan is None:
        return [], []
    scans = list(
        Scan.objects.filter(subject_id__in=subject_ids)
        .select_related("subject")
        .order_by("subject_id", "hours_after_injection")
    )
    rows = list(
        Measurement.objects.filter(scan__subject_id__in=subject_ids)
        .select_related("reconstruction", "scan", "scan__subject")
        .order_by("scan_id", "-reconstruction__attempt", "roi_kind", "roi_name")
    )
    latest_attempt: dict[int, int] = {}
    for m in rows:
        latest_attempt.setdefault(m.scan_id, m.reconstruction.attempt)
    return scans, [m for m in rows if m.reconstruction.attempt == latest_attempt[m.scan_id]]


def _recheck_signatures(subject_ids) -> list:
    signatures = Signature.objects.filter(subject_id__in=subject_ids)
    for ct_id, object_id in set(signatures.filter(valid=True).values_list("content_type_id", "object_id")):
        from django.contrib.contenttypes.models import ContentType

        model = ContentType.objects.get_for_id(ct_id).model_class()
        obj = model._default_manager.filter(pk=object_id).first() if model is not None else None
        if obj is not None:
            signature_invalidate_if_changed(obj)
    return list(signatures.select_related("content_type").order_by("signed_at", "id"))


def _alerts(subject_ids) -> list:
    Alert = imaging_model("Alert")
    if Alert is None:
        return []
    return list(Alert.objects.filter(subject_id__in=subject_ids).order_by("scan_id", "kind"))


def _scan_of_reconstruction(signatures) -> dict[int, int]:
    Reconstruction = imaging_model("Reconstruction")
    ids = [int(s.object_id) for s in signatures if s.content_type.model == "reconstruction"]
    if Reconstruction is None or not ids:
        return {}
    return dict(Reconstruction.objects.filter(pk__in=ids).values_list("pk", "scan_id"))


def collect(export: Export) -> ReportData:
    from trials.models import CellBatch, Consent, Injection, NanoparticleLot

    subjects = _subjects_in_scope(export)
    ids = [s.pk for s in subjects]
    injections = list(
        Injection.objects.filter(subject_id__in=ids)
        .select_related("subject", "batch", "batch__donor_subject", "batch__nanoparticle_lot")
        .order_by("subject__code", "administered_at")
    )
    batch_ids = {i.batch_id for i in injections}
    batch_rows = CellBatch.objects.filter(trial_id=export.trial_id).select_related(
        "nanoparticle_lot", "donor_subject", "site"
    )
    if export.site_id or export.subject_id:
        batch_rows = batch_rows.filter(pk__in=batch_ids) | batch_rows.filter(donor_subject_id__in=ids)
    batches = list(batch_rows.order_by("batch_code").distinct())
    lot_ids = {b.nanoparticle_lot_id for b in batches if b.nanoparticle_lot_id}
    lots = NanoparticleLot.objects.filter(trial_id=export.trial_id)
    if export.site_id or export.subject_id:
        lots = lots.filter(pk__in=lot_ids)
    scans, measurements = _latest_measurements(ids)
    signatures = _recheck_signatures(ids)
    return ReportData(
        export=export,
        generated_at=timezone.now(),
        trial=export.trial,
        subjects=subjects,
        consents=list(
            Consent.objects.filter(subject_id__in=ids)
            .select_related("subject", "document")
            .order_by("subject__code", "signed_at")
        ),
        injections=injections,
        batches=batches,
        lots=list(lots.order_by("manufacturer", "lot_number")),
        scans=scans,
        measurements=measurements,
        signatures=signatures,
        alerts=_alerts(ids),
        scan_of_reconstruction=_scan_of_reconstruction(signatures),
    )


# --------------------------------------------------------------------------- tables (shared by PDF and CSV)


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def _scans_by_injection(data: ReportData) -> dict:
    by_injection: dict[int, list] = {}
    for scan in data.scans:
        by_injection.setdefault(scan.injection_id, []).append(scan)
    return by_injection


def tables(data: ReportData) -> dict[str, tuple[list[str], list[list]]]:
    scans_of = _scans_by_injection(data)
    return {
        "subjects": (
            ["subject", "site", "status", "enrolment_date"],
            [[s.code, s.site.code, s.status, s.enrolment_date] for s in data.subjects],
        ),
        "consents": (
            ["subject", "document_version", "scopes", "signed_at", "withdrawn_scopes"],
            [
                [c.subject.code, c.document.version, c.scopes, c.signed_at, " ".join(sorted(c.withdrawn_scopes))]
                for c in data.consents
            ],
        ),
        "chain_of_identity": (
            [
                "donation_id",
                "chain_of_identity_id",
                "batch",
                "donor",
                "nanoparticle_lot",
                "injection",
                "subject",
                "administered_at",
                "administered_cells",
                "scans",
            ],
            [
                [
                    i.batch.donation_id,
                    i.batch.chain_of_identity_id,
                    i.batch.batch_code,
                    i.batch.donor_subject.code if i.batch.donor_subject else "allogeneic",
                    i.batch.nanoparticle_lot.lot_number if i.batch.nanoparticle_lot else "",
                    f"#{i.pk}",
                    i.subject.code,
                    i.administered_at,
                    i.administered_cells,
                    [f"#{s.pk}@{s.hours_after_injection:g}h" for s in scans_of.get(i.pk, [])],
                ]
                for i in data.injections
            ],
        ),
        "injections": (
            [
                "injection",
                "subject",
                "batch",
                "route",
                "anatomical_target",
                "administered_cells",
                "volume_ml",
                "planned_duration_s",
                "administered_at",
            ],
            [
                [
                    i.pk,
                    i.subject.code,
                    i.batch.batch_code,
                    i.route,
                    i.anatomical_target,
                    i.administered_cells,
                    i.volume_ml,
                    i.planned_duration_s,
                    i.administered_at,
                ]
                for i in data.injections
            ],
        ),
        "nanoparticle_lots": (
            [
                "manufacturer",
                "product",
                "lot_number",
                "expiry_date",
                "iron_mg_per_ml",
                "iron_mmol_per_l",
                "core_size_nm",
                "hydrodynamic_size_nm",
                "qc_status",
                "certificate_sha256",
            ],
            [
                [
                    lot.manufacturer,
                    lot.product,
                    lot.lot_number,
                    lot.expiry_date,
                    lot.iron_mg_per_ml,
                    lot.iron_mmol_per_l,
                    lot.core_size_nm,
                    lot.hydrodynamic_size_nm,
                    lot.qc_status,
                    lot.certificate_sha256,
                ]
                for lot in data.lots
            ],
        ),
        "metrics": (
            [
                "subject",
                "scan",
                "hours_after_injection",
                "roi",
                "roi_kind",
                "iron_ng",
                "uncertainty_ng",
                "cell_count",
                "retention_percent",
                "retention_uncertainty_percent",
                "off_target_percent",
                "detected",
            ],
            [
                [
                    m.scan.subject.code,
                    m.scan_id,
                    m.scan.hours_after_injection,
                    m.roi_name,
                    m.roi_kind,
                    m.iron_ng,
                    m.uncertainty_ng,
                    m.cell_count,
                    m.retention_percent,
                    m.retention_uncertainty_percent,
                    m.off_target_percent,
                    m.detected,
                ]
                for m in data.measurements
            ],
        ),
        "signatures": (
            [
                "record",
                "kind",
                "printed_name",
                "meaning",
                "signed_at",
                "valid",
                "invalidated_at",
                "invalidation_reason",
                "content_sha256",
            ],
            [
                [
                    f"{s.content_type.app_label}.{s.content_type.model}:{s.object_id}",
                    s.kind,
                    s.printed_name,
                    s.meaning,
                    s.signed_at,
                    "yes" if s.valid else "NO (invalidated)",
                    s.invalidated_at,
                    s.invalidation_reason,
                    s.content_sha256,
                ]
                for s in data.signatures
            ],
        ),
    }


def _csv_bytes(header: list[str], rows: list[list], preamble: Sequence[str] = ()) -> bytes:
    # The one CSV writer (compliance.csvsafe): formula-like free text is written as text.
    return csvsafe.csv_bytes(header, rows, preamble=preamble, fmt=_fmt)


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def build_report_csv(data: ReportData) -> bytes:
    files = {f"{name}.csv": _csv_bytes(header, rows) for name, (header, rows) in tables(data).items()}
    files["README.txt"] = (
        f"Trial {data.trial.protocol_number}, {data.scope_label}; generated "
        f"{_fmt(data.generated_at)} by export #{data.export.pk}.\n"
    ).encode()
    return _zip(files)


# --------------------------------------------------------------------------- PDF


def retention_plot_png(data: ReportData) -> bytes | None:
    """Retention (% of injected iron in the target ROI, ± 1 SD) over hours after
    injection, one line per subject, as stored in the Measurement rows; None when no
    metrics exist yet."""
    points: dict[str, list] = {}
    for m in data.measurements:
        if m.roi_kind == "target":
            points.setdefault(m.scan.subject.code, []).append(
                (m.scan.hours_after_injection, m.retention_percent, m.retention_uncertainty_percent or 0.0)
            )
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 3.2), dpi=150)
    axes = figure.add_subplot()
    for code, values in sorted(points.items()):
        values.sort()
        axes.errorbar(
            [h for h, _, _ in values],
            [r for _, r, _ in values],
            yerr=[sd for _, _, sd in values],
            marker="o",
            capsize=3,
            label=code,
        )
    axes.set_xlabel("hours after injection")
    axes.set_ylabel("retention (% of injected iron)")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def build_report_pdf(data: ReportData) -> bytes:
    """The report a monitor files (compliance.report_pdf): cover, contents, a section per subject."""
    from compliance import report_pdf

    return report_pdf.render(data, retention_plot=retention_plot_png(data))


# --------------------------------------------------------------------------- audit-trail extract


_AUDIT_COLUMNS = [
    "sequence",
    "occurred_at",
    "actor_username",
    "action",
    "action_name",
    "object_type",
    "object_id",
    "trial_id",
    "site_id",
    "subject_id",
    "changes",
    "reason",
    "request_id",
    "client_address",
    "prev_hash",
    "hash",
]


def audit_events_in_scope(export: Export):
    events = AuditEvent.objects.filter(trial_id=export.trial_id)
    if export.site_id:
        events = events.filter(site_id=export.site_id)
    if export.subject_id:
        events = events.filter(subject_id=export.subject_id)
    # Chained events only: one committed a moment ago may still wait for its place in the chain.
    return events.exclude(sequence=None).order_by("sequence")


def _audit_row(event: AuditEvent) -> dict:
    return {
        "sequence": event.sequence,
        "occurred_at": event.occurred_at,
        "actor_username": event.actor_username,
        "action": event.action,
        "action_name": event.action_name,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "trial_id": event.trial_id,
        "site_id": event.site_id,
        "subject_id": event.subject_id,
        "changes": event.changes,
        "reason": event.reason,
        "request_id": event.request_id,
        "client_address": event.client_address,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def _audit_header(export: Export) -> dict:
    verification = verify_chain().as_dict()
    head_sequence, head_hash = head()
    # The signed checkpoints anchor the head outside the database; a copy travels with the extract.
    checkpoints = [c.as_dict() for c in read_checkpoints()[0]]
    return {
        "trial": export.trial.protocol_number,
        "scope": export.scope_label,
        "generated_at": timezone.now(),
        "chain_verification": verification,
        "head_sequence": head_sequence,
        "head_hash": head_hash,
        "checkpoints": checkpoints,
    }


def build_audit_json(export: Export) -> bytes:
    body = _audit_header(export)
    body["events"] = [_audit_row(e) for e in audit_events_in_scope(export).iterator()]
    return json.dumps(to_jsonable(body), indent=1, ensure_ascii=False).encode("utf-8")


def build_audit_csv(export: Export) -> bytes:
    header = _audit_header(export)
    verification = header["chain_verification"]
    preamble = [
        f"audit-trail extract of trial {header['trial']}, {header['scope']}",
        f"generated_at: {_fmt(header['generated_at'])}",
        f"chain_ok: {str(verification['ok']).lower()}; events_checked: {verification['events_checked']}; "
        f"problem: {verification['problem'] or 'none'}",
        f"head_sequence: {header['head_sequence']}; head_hash: {header['head_hash']}",
        *(
            f"checkpoint: sequence: {c['sequence']}; hash: {c['hash']}; written_at: {c['written_at']}; "
            f"key_id: {c['key_id']}; source: {c['source']}"
            for c in header["checkpoints"]
        ),
    ]
    rows = []
    for event in audit_events_in_scope(export).iterator():
        row = _audit_row(event)
        row["changes"] = json.dumps(to_jsonable(row["changes"]), sort_keys=True, ensure_ascii=False)
        row["occurred_at"] = event.occurred_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        rows.append([row[c] for c in _AUDIT_COLUMNS])
    return _csv_bytes(_AUDIT_COLUMNS, rows, preamble)


# --------------------------------------------------------------------------- CDISC ODM 1.3


# (form OID, name, repeating, [(item OID, name, ODM DataType)])
ODM_FORMS = [
    (
        "F.ENROL",
        "Enrolment",
        "No",
        [
            ("IT.SITE", "Site code", "text"),
            ("IT.ENRDT", "Enrolment date", "date"),
            ("IT.STATUS", "Subject status", "text"),
        ],
    ),
    (
        "F.CONSENT",
        "Informed consent",
        "Yes",
        [
            ("IT.CNSVER", "Consent document version", "text"),
            ("IT.CNSSCOPE", "Scopes granted", "text"),
            ("IT.CNSDTC", "Signed at", "datetime"),
            ("IT.CNSWDSCOPE", "Scopes withdrawn", "text"),
        ],
    ),
    (
        "F.INJ",
        "Cell injection",
        "Yes",
        [
            ("IT.COI", "Chain-of-identity id", "text"),
            ("IT.BATCH", "Batch code", "text"),
            ("IT.LOT", "Nanoparticle lot", "text"),
            ("IT.CELLS", "Administered cells", "integer"),
            ("IT.VOLML", "Volume (mL)", "float"),
            ("IT.ROUTE", "Route", "text"),
            ("IT.TARGET", "Anatomical target", "text"),
            ("IT.INJDTC", "Administered at", "datetime"),
        ],
    ),
    (
        "F.MPI",
        "MPI scan metrics",
        "Yes",
        [
            ("IT.HOURS", "Hours after injection", "float"),
            ("IT.ROI", "ROI", "text"),
            ("IT.ROIKIND", "ROI kind", "text"),
            ("IT.IRONNG", "Iron (ng)", "float"),
            ("IT.RETPCT", "Retention (%)", "float"),
            ("IT.OFFPCT", "Off-target (%)", "float"),
        ],
    ),
]


def _odm_datetime(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def build_odm(data: ReportData) -> bytes:
    ET.register_namespace("", ODM_NS)

    def el(parent, tag, **attrs):
        return ET.SubElement(parent, f"{{{ODM_NS}}}{tag}", {k: str(v) for k, v in attrs.items()})

    trial = data.trial
    study_oid = f"ST.{trial.protocol_number}"
    odm = ET.Element(
        f"{{{ODM_NS}}}ODM",
        {
            "FileOID": f"EXPORT.{data.export.pk}",
            "FileType": "Snapshot",
            "ODMVersion": "1.3.2",
            "CreationDateTime": _odm_datetime(data.generated_at),
            "Originator": "MPI cell-therapy trial platform",
        },
    )
    study = el(odm, "Study", OID=study_oid)
    globals_ = el(study, "GlobalVariables")
    el(globals_, "StudyName").text = trial.protocol_number
    el(globals_, "StudyDescription").text = trial.title
    el(globals_, "ProtocolName").text = trial.protocol_number
    mdv = el(study, "MetaDataVersion", OID="MDV.1", Name="MPI trial data, version 1")
    protocol = el(mdv, "Protocol")
    el(protocol, "StudyEventRef", StudyEventOID="SE.TRIAL", OrderNumber=1, Mandatory="Yes")
    event_def = el(mdv, "StudyEventDef", OID="SE.TRIAL", Name="Trial participation", Repeating="No", Type="Common")
    for n, (form_oid, _name, _rep, _items) in enumerate(ODM_FORMS, 1):
        el(event_def, "FormRef", FormOID=form_oid, OrderNumber=n, Mandatory="No")
    for form_oid, name, repeating, _items in ODM_FORMS:
        form = el(mdv, "FormDef", OID=form_oid, Name=name, Repeating=repeating)
        el(form, "ItemGroupRef", ItemGroupOID="IG." + form_oid[2:], Mandatory="Yes")
    for form_oid, name, repeating, items in ODM_FORMS:
        group_def = el(mdv, "ItemGroupDef", OID="IG." + form_oid[2:], Name=name, Repeating=repeating)
        for n, (item_oid, _n, _t) in enumerate(items, 1):
            el(group_def, "ItemRef", ItemOID=item_oid, OrderNumber=n, Mandatory="No")
    for _f, _n, _r, items in ODM_FORMS:
        for item_oid, name, data_type in items:
            item = el(mdv, "ItemDef", OID=item_oid, Name=name, DataType=data_type)
            question = el(item, "Question")
            el(question, "TranslatedText", **{"{http://www.w3.org/XML/1998/namespace}lang": "en"}).text = name

    clinical = el(odm, "ClinicalData", StudyOID=study_oid, MetaDataVersionOID="MDV.1")
    consents: dict[int, list] = {}
    injections: dict[int, list] = {}
    metrics: dict[int, list] = {}
    for c in data.consents:
        consents.setdefault(c.subject_id, []).append(c)
    for i in data.injections:
        injections.setdefault(i.subject_id, []).append(i)
    for m in data.measurements:
        metrics.setdefault(m.scan.subject_id, []).append(m)

    def group(form_parent, form_oid, repeat_key, values):
        attrs = {"ItemGroupOID": "IG." + form_oid[2:]}
        if repeat_key is not None:
            attrs["ItemGroupRepeatKey"] = repeat_key
        item_group = el(form_parent, "ItemGroupData", **attrs)
        for item_oid, value in values:
            if value not in (None, ""):
                el(item_group, "ItemData", ItemOID=item_oid, Value=value)

    for subject in data.subjects:
        subject_data = el(clinical, "SubjectData", SubjectKey=subject.code)
        event = el(subject_data, "StudyEventData", StudyEventOID="SE.TRIAL")
        form = el(event, "FormData", FormOID="F.ENROL")
        group(
            form,
            "F.ENROL",
            None,
            [
                ("IT.SITE", subject.site.code),
                ("IT.ENRDT", subject.enrolment_date.isoformat()),
                ("IT.STATUS", subject.status),
            ],
        )
        for n, c in enumerate(consents.get(subject.pk, []), 1):
            form = el(event, "FormData", FormOID="F.CONSENT", FormRepeatKey=n)
            group(
                form,
                "F.CONSENT",
                1,
                [
                    ("IT.CNSVER", c.document.version),
                    ("IT.CNSSCOPE", " ".join(c.scopes)),
                    ("IT.CNSDTC", _odm_datetime(c.signed_at)),
                    ("IT.CNSWDSCOPE", " ".join(sorted(c.withdrawn_scopes))),
                ],
            )
        for n, i in enumerate(injections.get(subject.pk, []), 1):
            form = el(event, "FormData", FormOID="F.INJ", FormRepeatKey=n)
            group(
                form,
                "F.INJ",
                1,
                [
                    ("IT.COI", i.batch.chain_of_identity_id),
                    ("IT.BATCH", i.batch.batch_code),
                    ("IT.LOT", i.batch.nanoparticle_lot.lot_number if i.batch.nanoparticle_lot else ""),
                    ("IT.CELLS", i.administered_cells),
                    ("IT.VOLML", i.volume_ml),
                    ("IT.ROUTE", i.route),
                    ("IT.TARGET", i.anatomical_target),
                    ("IT.INJDTC", _odm_datetime(i.administered_at)),
                ],
            )
        for n, m in enumerate(metrics.get(subject.pk, []), 1):
            form = el(event, "FormData", FormOID="F.MPI", FormRepeatKey=n)
            group(
                form,
                "F.MPI",
                1,
                [
                    ("IT.HOURS", m.scan.hours_after_injection),
                    ("IT.ROI", m.roi_name),
                    ("IT.ROIKIND", m.roi_kind),
                    ("IT.IRONNG", m.iron_ng),
                    ("IT.RETPCT", m.retention_percent),
                    ("IT.OFFPCT", m.off_target_percent),
                ],
            )
    return ET.tostring(odm, encoding="utf-8", xml_declaration=True)


# --------------------------------------------------------------------------- sponsor (de-identified)


def build_sponsor_deidentified(data: ReportData) -> bytes:
    """HIPAA Safe Harbor data set: pseudonyms, per-subject shifted dates, age bands, no
    names, record numbers, real dates, site names or chain-of-identity numbers. Only
    subjects whose data-sharing consent is in force are included. The rule is
    ``compliance.sponsor``'s, shared with the sponsor's API and pages."""
    from compliance.sponsor import Keys
    from trials.models import SubjectIdentity
    from trials.selectors import subjects_sharing_data

    trial = data.trial
    keys = Keys([trial])
    sharing = set(subjects_sharing_data().filter(id__in=[s.pk for s in data.subjects]).values_list("id", flat=True))
    shared = [s for s in data.subjects if s.pk in sharing]
    subject_of = {s.pk: s for s in shared}
    pseudonym = {s.pk: keys.pseudonym(s) for s in shared}
    births = dict(
        SubjectIdentity.objects.filter(subject_id__in=list(subject_of)).values_list("subject_id", "date_of_birth")
    )

    def day(subject_id, value):
        return keys.day(subject_of[subject_id], value)

    subjects = [
        [
            pseudonym[s.pk],
            keys.site(s.site),
            s.status,
            day(s.pk, s.enrolment_date),
            deidentify.safe_harbor_age(births.get(s.pk), s.enrolment_date),
        ]
        for s in shared
    ]
    consents = [
        [
            pseudonym[c.subject_id],
            c.document.version,
            c.scopes,
            day(c.subject_id, c.signed_at),
            " ".join(sorted(c.withdrawn_scopes)),
        ]
        for c in data.consents
        if c.subject_id in subject_of
    ]
    injections = [
        [
            pseudonym[i.subject_id],
            keys.product(i.batch),
            i.batch.product_type,
            i.route,
            i.administered_cells,
            i.volume_ml,
            i.planned_duration_s,
            day(i.subject_id, i.administered_at),
            i.batch.nanoparticle_lot.product if i.batch.nanoparticle_lot else "",
            i.batch.iron_per_cell_pg,
        ]
        for i in data.injections
        if i.subject_id in subject_of
    ]
    metrics = [
        [
            pseudonym[m.scan.subject_id],
            m.scan.hours_after_injection,
            m.roi_kind,
            m.iron_ng,
            m.uncertainty_ng,
            m.cell_count,
            m.retention_percent,
            m.off_target_percent,
            m.detected,
        ]
        for m in data.measurements
        if m.scan.subject_id in subject_of
    ]
    readme = (
        f"De-identified data set of trial {trial.protocol_number} (HIPAA Safe Harbor, 45 CFR 164.514(b)(2)).\n"
        "Subjects appear by pseudonym only. Every date of a subject is shifted back by the same number of days "
        f"(1 to {deidentify.DATE_SHIFT_MAX_DAYS}, fixed per subject), so intervals are exact and calendar dates are "
        "not. Ages above 89 are given as 90+. Subjects without data-sharing consent in force are left out.\n"
        f"Subjects included: {len(shared)}.\n"
    ).encode()
    return _zip(
        {
            "README.txt": readme,
            "subjects.csv": _csv_bytes(
                ["pseudonym", "site", "status", "enrolment_date_shifted", "age_at_enrolment"], subjects
            ),
            "consents.csv": _csv_bytes(
                ["pseudonym", "document_version", "scopes", "signed_on_shifted", "withdrawn_scopes"], consents
            ),
            "injections.csv": _csv_bytes(
                [
                    "pseudonym",
                    "product_id",
                    "product_type",
                    "route",
                    "administered_cells",
                    "volume_ml",
                    "planned_duration_s",
                    "administered_on_shifted",
                    "tracer",
                    "iron_per_cell_pg",
                ],
                injections,
            ),
            "metrics.csv": _csv_bytes(
                [
                    "pseudonym",
                    "hours_after_injection",
                    "roi_kind",
                    "iron_ng",
                    "uncertainty_ng",
                    "cell_count",
                    "retention_percent",
                    "off_target_percent",
                    "detected",
                ],
                metrics,
            ),
        }
    )


# --------------------------------------------------------------------------- dispatch


BUILDERS: dict[str, tuple[Callable[[Export], bytes], str, str]] = {
    Export.Kind.REPORT_PDF: (lambda e: build_report_pdf(collect(e)), "pdf", "application/pdf"),
    Export.Kind.REPORT_CSV: (lambda e: build_report_csv(collect(e)), "zip", "application/zip"),
    Export.Kind.AUDIT_CSV: (build_audit_csv, "csv", "text/csv"),
    Export.Kind.AUDIT_JSON: (build_audit_json, "json", "application/json"),
    Export.Kind.ODM_XML: (lambda e: build_odm(collect(e)), "xml", "application/xml"),
    Export.Kind.SPONSOR_DEIDENTIFIED: (lambda e: build_sponsor_deidentified(collect(e)), "zip", "application/zip"),
}


def build_dicom_study(export: Export, progress=None) -> bytes:
    """The scan's DICOM study as a zip (imaging.dicom_export), de-identified for that kind."""
    from imaging import dicom_export

    if export.scan is None:
        raise ValueError(f"export #{export.pk} of kind {export.kind} names no scan")
    return dicom_export.study_zip(
        export.scan,
        deidentified=export.kind == Export.Kind.DICOM_STUDY_DEIDENTIFIED,
        progress=progress or dicom_export.no_progress,
    )


# Builders that report progress themselves (``progress(stage, fraction)``).
PROGRESS_BUILDERS: dict[str, tuple[Callable[[Export, Any], bytes], str, str]] = {
    Export.Kind.DICOM_STUDY: (build_dicom_study, "zip", "application/zip"),
    Export.Kind.DICOM_STUDY_DEIDENTIFIED: (build_dicom_study, "zip", "application/zip"),
}


def build(export: Export, progress=None) -> tuple[bytes, str, str]:
    """``(content, file extension, content type)`` of ``export``."""
    if export.kind in PROGRESS_BUILDERS:
        progress_builder, extension, content_type = PROGRESS_BUILDERS[export.kind]
        return progress_builder(export, progress), extension, content_type
    builder, extension, content_type = BUILDERS[export.kind]
    if progress is not None:
        progress("building", 0.1)
    return builder(export), extension, content_type
