from axes.models import AccessAttempt
from django.core.management.base import BaseCommand, CommandError

from audit.security import lockout_release


class Command(BaseCommand):
    help = (
        "Release a sign-in lockout of USERNAME (at every address, or only at --address), audited. "
        "Prefer it to axes_reset_username, which leaves no audit event."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--address", help="only the lockout at this client address")
        parser.add_argument("--reason", required=True, help="why, for the audit trail")

    def handle(self, *args, username, address, reason, **options):
        if not reason.strip():
            raise CommandError("--reason must say why the lockout is released")
        attempts = AccessAttempt.objects.filter(username=username)
        if address:
            attempts = attempts.filter(ip_address=address)
        released = lockout_release(actor=None, attempts=attempts, reason=reason.strip())
        if not released:
            raise CommandError(f"no failed sign-ins recorded for {username!r}" + (f" at {address}" if address else ""))
        self.stdout.write(f"Released {released} lockout(s) of {username}.")
