"""Load a realistic demo trial, through the services, so the audit trail tells its story.

Idempotent: when the demo trial exists the command says so and changes nothing.
Refused in production: demo users with a published password must never exist there.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from trials.models import CellBatch, Injection, Role, Trial
from trials.services.batches import batch_label, batch_register, batch_set_release_status
from trials.services.consent import consent_document_create, consent_sign, consent_withdraw
from trials.services.identity import subject_identity_set
from trials.services.injections import injection_record
from trials.services.lots import lot_register, lot_set_qc_status
from trials.services.subjects import subject_enrol
from trials.services.trials_sites import membership_grant, site_create, trial_create

PROTOCOL = "MPI-CT-001"
DEMO_PASSWORD = "trial-demo-2026"  # noqa: S105 - the demo accounts' published password

# username -> (role, site code or None for trial-wide)
DEMO_USERS = {
    "coordinator_a": (Role.COORDINATOR, "A"),
    "imaging_a": (Role.IMAGING_STAFF, "A"),
    "investigator_a": (Role.INVESTIGATOR, "A"),
    "coordinator_b": (Role.COORDINATOR, "B"),
    "imaging_b": (Role.IMAGING_STAFF, "B"),
    "monitor": (Role.MONITOR, None),
    "sponsor": (Role.SPONSOR, None),
    "auditor": (Role.AUDITOR, None),
    # Keeps what both sites share: the nanoparticle lots (QC release, rejection) and the
    # consent document versions. A site coordinator cannot change them.
    "trial_manager": (Role.TRIAL_MANAGER, None),
}

# Fictional people: the demo must never look like it holds someone's real record.
DEMO_SUBJECTS = [
    # site, full name, date of birth, MRN, consent scopes
    (
        "A",
        "Demo Person Alpha",
        dt.date(1956, 3, 14),
        "DEMO-A-100231",
        ["imaging", "longitudinal_imaging", "data_sharing"],
    ),
    (
        "A",
        "Demo Person Bravo",
        dt.date(1962, 9, 2),
        "DEMO-A-100457",
        ["imaging", "longitudinal_imaging", "data_sharing"],
    ),
    ("A", "Demo Person Charlie", dt.date(1949, 12, 30), "DEMO-A-100872", ["imaging", "longitudinal_imaging"]),
    ("A", "Demo Person Delta", dt.date(1971, 6, 8), "DEMO-A-101004", ["imaging", "data_sharing"]),
    (
        "B",
        "Demo Person Echo",
        dt.date(1958, 1, 21),
        "DEMO-B-200115",
        ["imaging", "longitudinal_imaging", "data_sharing"],
    ),
    ("B", "Demo Person Foxtrot", dt.date(1966, 11, 11), "DEMO-B-200342", ["imaging"]),
]


def _at(days_ago: int, hour: int = 10) -> dt.datetime:
    day = timezone.now() - dt.timedelta(days=days_ago)
    return day.replace(hour=hour, minute=0, second=0, microsecond=0)


class Command(BaseCommand):
    help = f"Create the demo trial {PROTOCOL} with its sites, users, subjects, consent, lots, batches and injections."

    def handle(self, *args, **options):
        if settings.PRODUCTION:
            raise CommandError(
                "load_demo refuses to run with MPI_ENV=production: it creates users with a published password."
            )
        if Trial.objects.filter(protocol_number=PROTOCOL).exists():
            self.stdout.write(f"The demo trial {PROTOCOL} is already loaded; nothing changed.")
            return
        with transaction.atomic():  # all of it or none of it
            self._load()
        self._print_users()

    def _load(self) -> None:
        trial = trial_create(
            actor=None,
            protocol_number=PROTOCOL,
            phase=Trial.Phase.PHASE_1_2,
            status=Trial.Status.RECRUITING,
            title="Tracking SPION-labelled mesenchymal stromal cells after intramyocardial injection with MPI",
        )
        sites = {
            "A": site_create(
                actor=None, trial=trial, code="A", name="Site A, University Hospital Lübeck", time_zone="Europe/Berlin"
            ),
            "B": site_create(
                actor=None, trial=trial, code="B", name="Site B, Harbor Heart Institute", time_zone="America/New_York"
            ),
        }
        users = self._users(trial, sites)
        coordinator = {"A": users["coordinator_a"], "B": users["coordinator_b"]}

        consent_v1 = consent_document_create(
            actor=users["trial_manager"],
            trial=trial,
            version="1.0",
            irb_approval_date=timezone.localdate() - dt.timedelta(days=200),
            effective_date=timezone.localdate() - dt.timedelta(days=180),
            file=ContentFile(_consent_text(trial).encode(), name="MPI-CT-001-consent-v1.0.txt"),
        )
        vivotrax = self._lots(trial, users["trial_manager"])

        subjects = []
        for index, (code, name, born, mrn, scopes) in enumerate(DEMO_SUBJECTS):
            site = sites[code]
            enrolled = _at(60 - 3 * index)
            subject = subject_enrol(
                actor=coordinator[code], site=site, enrolment_date=enrolled.date(), status="enrolled"
            )
            subject_identity_set(
                actor=coordinator[code], subject=subject, full_name=name, date_of_birth=born, medical_record_number=mrn
            )
            consent = consent_sign(
                actor=coordinator[code], subject=subject, document=consent_v1, scopes=scopes, signed_at=enrolled
            )
            subjects.append((subject, consent))

        self._batches_and_injections(sites, subjects, vivotrax, users)
        # Subject A-3 later withdrew from follow-up imaging (not from the first scan).
        consent_withdraw(
            actor=users["coordinator_a"],
            consent=subjects[2][1],
            scopes=["longitudinal_imaging"],
            reason="Subject declined follow-up scans at visit 3",
            withdrawn_at=_at(5),
        )

    def _users(self, trial, sites) -> dict:
        User = get_user_model()
        users = {}
        for username, (role, site_code) in DEMO_USERS.items():
            user = User.objects.filter(username=username).first() or User(username=username)
            user.set_password(DEMO_PASSWORD)
            user.save()
            membership_grant(
                actor=None, user=user, trial=trial, role=role, site=sites[site_code] if site_code else None
            )
            users[username] = user
        return users

    def _lots(self, trial, manager):
        def coa(product, lot):
            return ContentFile(
                f"Certificate of analysis\nProduct: {product}\nLot: {lot}\nSterility: pass\n"
                f"Endotoxin: < 0.5 EU/mL\n".encode(),
                name=f"CoA-{lot}.txt",
            )

        vivotrax = lot_register(
            actor=manager,
            trial=trial,
            manufacturer="Magnetic Insight",
            product="VivoTrax (ferucarbotran)",
            lot_number="VT-24117",
            expiry_date=timezone.localdate() + dt.timedelta(days=300),
            iron_mg_per_ml=Decimal("5.5"),
            core_size_nm=Decimal("4.2"),
            hydrodynamic_size_nm=Decimal("62"),
            polydispersity_index=Decimal("0.180"),
            coating="carboxydextran",
            certificate_of_analysis=coa("VivoTrax", "VT-24117"),
        )
        vivotrax = lot_set_qc_status(
            actor=manager,
            lot=vivotrax,
            qc_status="released",
            reason="CoA reviewed; sterility and endotoxin within specification",
        )
        lot_register(
            actor=manager,
            trial=trial,
            manufacturer="micromod",
            product="perimag plain",
            lot_number="PM-0925-03",
            expiry_date=timezone.localdate() + dt.timedelta(days=420),
            iron_mg_per_ml=Decimal("8.5"),
            core_size_nm=Decimal("19"),
            hydrodynamic_size_nm=Decimal("130"),
            polydispersity_index=Decimal("0.200"),
            coating="dextran",
            certificate_of_analysis=coa("perimag", "PM-0925-03"),
        )  # stays quarantined: QC review pending
        synomag = lot_register(
            actor=manager,
            trial=trial,
            manufacturer="micromod",
            product="synomag-D",
            lot_number="SD-0424-11",
            # Registration refuses a lot already expired: this one expires soon and fails QC.
            expiry_date=timezone.localdate() + dt.timedelta(days=20),
            iron_mmol_per_l=Decimal("179.0671"),
            core_size_nm=Decimal("30"),
            hydrodynamic_size_nm=Decimal("50"),
            polydispersity_index=Decimal("0.150"),
            coating="dextran",
            certificate_of_analysis=coa("synomag-D", "SD-0424-11"),
        )
        lot_set_qc_status(
            actor=manager,
            lot=synomag,
            qc_status="rejected",
            reason="Failed QC: hydrodynamic size out of specification",
            confirm=True,
        )
        return vivotrax

    def _batches_and_injections(self, sites, subjects, lot, users):
        coordinator_a, investigator_a = users["coordinator_a"], users["investigator_a"]
        plans = [
            # subject index, batch code, autologous?, cells injected (None: not yet injected)
            (0, "MSC-A-001", True, 50_000_000),
            (1, "MSC-A-002", True, 40_000_000),
            (2, "MSC-A-003", True, None),
            (3, "MSC-A-ALLO-01", False, 30_000_000),
        ]
        for serial, (index, code, autologous, cells) in enumerate(plans, start=1):
            subject = subjects[index][0]
            batch = batch_register(
                actor=coordinator_a,
                site=sites["A"],
                batch_code=code,
                product_type=CellBatch.ProductType.MSC,
                chain_of_identity_id=f"W123426{serial:06d}-MSC1",
                donation_id=f"W123426{serial:06d}",
                donor_subject=subject if autologous else None,
                allogeneic=not autologous,
                manufactured_at=_at(30),
                cell_count=100_000_000,
                viability_percent=Decimal("92.4"),
            )
            batch_label(
                actor=coordinator_a,
                batch=batch,
                nanoparticle_lot=lot,
                incubation_concentration_ug_fe_per_ml=Decimal("50"),
                iron_per_cell_pg=Decimal("12.3"),
                labelling_efficiency_percent=Decimal("96.1"),
                labelled_at=_at(29),
                reason="Labelling completed",
            )
            batch_set_release_status(
                actor=coordinator_a,
                batch=batch,
                release_status="released",
                reason="Release testing passed: viability, sterility, iron uptake",
            )
            if cells:
                injection_record(
                    actor=coordinator_a,
                    subject=subject,
                    batch=batch,
                    administered_cells=cells,
                    volume_ml=Decimal("2.5"),
                    route=Injection.Route.INTRAMYOCARDIAL,
                    anatomical_target="left ventricle, peri-infarct anterior wall",
                    administered_at=_at(20 - serial),
                    administered_by=investigator_a,
                    verified_by=coordinator_a,
                    verifier_password=DEMO_PASSWORD,
                )
        # Site B: an autologous batch in manufacture, not yet labelled.
        batch_register(
            actor=users["coordinator_b"],
            site=sites["B"],
            batch_code="MSC-B-001",
            product_type=CellBatch.ProductType.MSC,
            chain_of_identity_id="W567826000001-MSC1",
            donation_id="W567826000001",
            donor_subject=subjects[4][0],
            manufactured_at=_at(2),
            cell_count=80_000_000,
            viability_percent=Decimal("90.8"),
        )

    def _print_users(self) -> None:
        self.stdout.write(self.style.SUCCESS(f"Demo trial {PROTOCOL} loaded."))
        self.stdout.write("Demo users (password for all: " + DEMO_PASSWORD + "):")
        for username, (role, site_code) in DEMO_USERS.items():
            self.stdout.write(
                f"  {username:<16} {role.label}" + (f" at site {site_code}" if site_code else ", trial-wide")
            )


def _consent_text(trial) -> str:
    return (
        f"INFORMED CONSENT FORM, version 1.0\nProtocol {trial.protocol_number}: {trial.title}\n\n"
        "You are invited to take part in a study of cells labelled with iron-oxide nanoparticles and followed with "
        "Magnetic Particle Imaging. You may agree to: (1) imaging, (2) repeated imaging over 12 months, "
        "(3) sharing of de-identified data. You may withdraw any of these at any time.\n"
    )
