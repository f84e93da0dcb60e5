from django.core.management.base import BaseCommand, CommandError

from audit.chain import AuditError, checkpoint_dir, write_checkpoint


class Command(BaseCommand):
    help = (
        "Sign the audit chain's head with the chain key and append the checkpoint to AUDIT_CHECKPOINT_DIR "
        "(Celery beat does this every AUDIT_CHECKPOINT_INTERVAL_SECONDS)."
    )

    def handle(self, *args, **options):
        try:
            body = write_checkpoint()
        except AuditError as exc:
            raise CommandError(str(exc)) from exc
        if body is None:
            self.stdout.write("The audit trail is empty: nothing to checkpoint.")
        else:
            self.stdout.write(f"Checkpoint of event #{body['sequence']} {body['hash']} appended to {checkpoint_dir()}")
