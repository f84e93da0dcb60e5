"""Register a calibration (system-matrix MDF) in a scanner's library, audited.

    python manage.py register_system_matrix CALIBRATION.mdf --scanner ID --name NAME --tracer PRODUCT
        [--lot ID] [--user USERNAME]

The file is copied into the library, validated with recon and summarised
(``imaging.services.scanners.system_matrix_register``). Prints the registered calibration
as one line of JSON (the API's ``SystemMatrixOutput``: ``id``, ``name``, ``scanner``,
``sha256``, ``grid_size``, ``frequencies_count``, ...). Without ``--user`` the system is
the actor (the audit event carries no user); with it, that user must be imaging staff of
the scanner's site, as for the API. A refusal prints one line on stderr and exits 1; nothing
is stored (no row, no file).
"""

from __future__ import annotations

import json
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from config.errors import RuleViolation
from imaging.models import Scanner
from imaging.serializers import SystemMatrixOutput
from imaging.services.scanners import system_matrix_register
from trials.models import NanoparticleLot


class Command(BaseCommand):
    help = "Validate a calibration MDF and register it in a scanner's system-matrix library (prints JSON)."

    def add_arguments(self, parser):
        parser.add_argument("calibration", help="the calibration MDF file")
        parser.add_argument("--scanner", type=int, required=True, help="id of the scanner whose library gets it")
        parser.add_argument("--name", required=True, help="a name for the calibration")
        parser.add_argument(
            "--tracer", required=True, help="the tracer product it was measured with (as on the nanoparticle lots)"
        )
        parser.add_argument("--lot", type=int, help="id of the one nanoparticle lot it is valid for (optional)")
        parser.add_argument("--user", help="username to act (and be audited) as; default: the system")

    def handle(self, *args, calibration: str, scanner: int, name: str, tracer: str, lot, user, **options):
        path = Path(calibration)
        if not path.is_file():
            raise CommandError(f"No calibration file at {calibration}.")
        target = Scanner.objects.select_related("site").filter(pk=scanner).first()
        if target is None:
            raise CommandError(f"No scanner #{scanner}.")
        nanoparticle_lot = None
        if lot is not None:
            nanoparticle_lot = NanoparticleLot.objects.filter(pk=lot).first()
            if nanoparticle_lot is None:
                raise CommandError(f"No nanoparticle lot #{lot}.")
        actor = None
        if user:
            actor = get_user_model().objects.filter(username=user, is_active=True).first()
            if actor is None:
                raise CommandError(f"No active user {user!r}.")
        try:
            sm = system_matrix_register(
                actor=actor,
                scanner=target,
                name=name,
                tracer_product=tracer,
                source_path=path,
                nanoparticle_lot=nanoparticle_lot,
            )
        except RuleViolation as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from exc
        self.stdout.write(json.dumps(SystemMatrixOutput(sm).data, default=str))
