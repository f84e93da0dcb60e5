"""Print the PostgreSQL statements that separate the owner role (migrations) from the
application role, which owns nothing and may only read and append audit events.

Why: a role that owns ``compliance_auditevent`` can drop its append-only trigger (or the
table); the web and worker processes must never hold one. Run migrations with the owner
role (``MIGRATION_DATABASE_URL``, ``manage.py migrate --database migrations``) and give
the processes a ``DATABASE_URL`` naming the application role.

    python manage.py print_db_roles_sql --create-roles | psql -v ON_ERROR_STOP=1 "$SUPERUSER_URL"
    python manage.py print_db_roles_sql | psql -v ON_ERROR_STOP=1 "$MIGRATION_DATABASE_URL"   # after each migrate

Every statement is idempotent. Passwords are set apart (psql ``\\password``), never printed.
"""

import re

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from audit.models import AUDIT_TABLE

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def roles_sql(*, owner: str, app: str, database: str, create_roles: bool) -> str:
    for name in (owner, app):
        if not _IDENTIFIER.fullmatch(name):
            raise CommandError(f"role name {name!r} must be lower-case letters, digits and _ (at most 63)")
    if owner == app:
        raise CommandError("the owner role and the application role must differ")
    database = database.replace('"', '""')
    statements = []
    if create_roles:
        statements.append(f"""DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{owner}') THEN
        CREATE ROLE "{owner}" LOGIN NOSUPERUSER NOCREATEROLE;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{app}') THEN
        CREATE ROLE "{app}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
END $$;""")  # noqa: S608 - the names passed _IDENTIFIER above; DDL takes no bound parameters
        statements.append(f'GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO "{app}";')
    statements += [
        # The application may use the schema but create nothing in it.
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
        f'GRANT USAGE ON SCHEMA public TO "{app}";',
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{app}";',
        f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{app}";',
        # The audit trail: read and append only. No ownership, so no DROP/ALTER of the trigger.
        f'REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {AUDIT_TABLE} FROM "{app}";',
        f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {AUDIT_TABLE} FROM PUBLIC;",
        # ...and fill in a pending event's chain fields (chained after its commit; the
        # append-only trigger refuses any other UPDATE, and any of a chained event).
        f'GRANT UPDATE (sequence, prev_hash, hash, key_id) ON {AUDIT_TABLE} TO "{app}";',
        # Tables the owner creates in later migrations are usable at once.
        f'ALTER DEFAULT PRIVILEGES FOR ROLE "{owner}" IN SCHEMA public '
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "{app}";',
        f'ALTER DEFAULT PRIVILEGES FOR ROLE "{owner}" IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO "{app}";',
    ]
    return "\n".join(statements) + "\n"


class Command(BaseCommand):
    help = (
        "Print idempotent SQL that gives the application a PostgreSQL role which owns nothing and may only "
        "SELECT and INSERT audit events (migrations run as the owner role)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--owner-role", default="mpi_owner", help="role that owns the tables; runs migrate")
        parser.add_argument("--app-role", default="mpi_app", help="role of the web and worker processes")
        parser.add_argument("--database", default=None, help="database name (default: the configured one)")
        parser.add_argument(
            "--create-roles", action="store_true", help="also create both roles (needs a superuser or CREATEROLE)"
        )

    def handle(self, *args, **options):
        self.stdout.write(
            roles_sql(
                owner=options["owner_role"],
                app=options["app_role"],
                database=options["database"] or connection.settings_dict["NAME"],
                create_roles=options["create_roles"],
            ),
            ending="",
        )
