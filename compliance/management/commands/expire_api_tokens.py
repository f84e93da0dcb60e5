from django.core.management.base import BaseCommand

from compliance.tokens import tokens_expire_due


class Command(BaseCommand):
    help = (
        "End (and audit) every API token whose lifetime or idle time has run out or whose owner changed "
        "the password. Tokens are also ended when next presented; run this (e.g. hourly) so the audit "
        "trail and the token lists show each end when it happens."
    )

    def handle(self, *args, **options):
        self.stdout.write(f"{tokens_expire_due()} token(s) ended")
