from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from compliance.twofactor import enrol_device


class Command(BaseCommand):
    help = "Enrol a TOTP authenticator for a user and print its otpauth:// URI (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--key", help="hex secret to use (demo only); random when left out")

    def handle(self, *args, username, key, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        device = enrol_device(user=user, key=key)
        self.stdout.write(f"TOTP device #{device.pk} enrolled for {username}.")
        self.stdout.write("Add it to an authenticator app (this URI is not shown again):")
        self.stdout.write(device.config_url)
