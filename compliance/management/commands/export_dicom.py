"""Write one scan's DICOM study (4 objects) into a folder, audited as an export.

    python manage.py export_dicom SCAN_ID --output DIR [--deidentify] [--user USERNAME]

Prints one line per file: its path and SOP class. Without ``--user`` the system is the
actor (the audit events carry no user); with it, that user's export rights are checked
as for the API (``imaging.dicom_export.check_may_export``). The study is built by
``imaging.dicom_export``; writing it out is an export (``compliance.dicom_exports``).
"""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from compliance.dicom_exports import study_write
from config.errors import RuleViolation
from imaging.models import Scan


class Command(BaseCommand):
    help = "Write a quantified scan's DICOM study (source SC, Parametric Map, SEG, SR) into a folder."

    def add_arguments(self, parser):
        parser.add_argument("scan_id", type=int)
        parser.add_argument("--output", required=True, help="folder to write the .dcm files into (created)")
        parser.add_argument(
            "--deidentify",
            action="store_true",
            help="de-identify (PS3.15 Annex E, the trial's key and the subject's date shift)",
        )
        parser.add_argument("--user", help="username to act (and be audited) as; default: the system")

    def handle(self, *args, scan_id: int, output: str, deidentify: bool, user: str | None, **options):
        scan = Scan.objects.filter(pk=scan_id).first()
        if scan is None:
            raise CommandError(f"No scan #{scan_id}.")
        actor = None
        if user:
            actor = get_user_model().objects.filter(username=user, is_active=True).first()
            if actor is None:
                raise CommandError(f"No active user {user!r}.")
        try:
            paths = study_write(actor=actor, scan=scan, directory=Path(output), deidentified=deidentify)
        except RuleViolation as exc:
            raise CommandError(exc.message) from exc
        import pydicom

        for path in paths:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            self.stdout.write(f"{path}\t{ds.SOPClassUID}\t{ds.SOPClassUID.name}")
        self.stdout.write(
            self.style.SUCCESS(
                f"{len(paths)} objects written for scan #{scan.pk}{' (de-identified)' if deidentify else ''}."
            )
        )
