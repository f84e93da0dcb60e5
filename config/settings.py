"""One settings module, driven by environment variables through typed helpers.

With no variable set, the platform runs on its embedded default: SQLite, a Celery
broker on the local filesystem (no server process) and file storage, all under
``var/``. ``MPI_ENV=production`` switches to the production shape, where the
database, the broker, the secret key and the allowed hosts must all be given.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url
from kombu import Queue

from config.env import ImproperEnvironment, envbool, envfloat, envint, envlist, envstr

BASE_DIR = Path(__file__).resolve().parent.parent

MPI_ENV = envstr("MPI_ENV", "embedded")
if MPI_ENV not in {"embedded", "production"}:
    raise ImproperEnvironment(f"MPI_ENV={MPI_ENV!r} must be 'embedded' or 'production'")
PRODUCTION = MPI_ENV == "production"

VAR_DIR = Path(envstr("MPI_VAR_DIR", str(BASE_DIR / "var")))


def _require(name: str) -> str:
    value = envstr(name)
    if not value:
        raise ImproperEnvironment(f"{name} must be set when MPI_ENV=production")
    return value


def _embedded_secret_key() -> str:
    # A key generated once per checkout and kept under var/, so sessions survive restarts.
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


if PRODUCTION:
    SECRET_KEY = _require("SECRET_KEY")
    if len(SECRET_KEY) < 50:
        raise ImproperEnvironment("SECRET_KEY must be at least 50 characters long")
    DEBUG = envbool("DEBUG", False)
    if DEBUG:
        raise ImproperEnvironment("DEBUG=true is refused when MPI_ENV=production")
    ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", [])
    if not ALLOWED_HOSTS:
        raise ImproperEnvironment("ALLOWED_HOSTS must list the served host names when MPI_ENV=production")
    DATABASE_URL = _require("DATABASE_URL")
    CELERY_BROKER_URL = _require("CELERY_BROKER_URL")
else:
    SECRET_KEY = envstr("SECRET_KEY") or _embedded_secret_key()
    # Off unless a developer switches it on (DEBUG=true, development only): Django's
    # debug page shows settings, the database and broker URLs with their passwords among them.
    DEBUG = envbool("DEBUG", False)
    ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
    DATABASE_URL = envstr("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
    CELERY_BROKER_URL = envstr("CELERY_BROKER_URL", "filesystem://")

if not DATABASE_URL.startswith(("postgres://", "postgresql://", "sqlite://")):
    raise ImproperEnvironment("DATABASE_URL must be a postgresql:// or sqlite:// URL")

# Persistent connections (issue #17): opening one per request cost 17-55 % of a request's time.
# DB_CONN_MAX_AGE seconds (0: close after each request); 60 in production, 0 in the embedded
# default, where SQLite opens in microseconds. Health checks test a kept connection before
# each request reuses it, so a restarted database costs no failed request.
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=envint("DB_CONN_MAX_AGE", 60 if PRODUCTION else 0, minimum=0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # WAL lets the worker and the web server write the same file without "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test_db.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


# Audit chain (audit.chain, audit.checkpoints). Events are chained with
# HMAC-SHA256 under AUDIT_HMAC_KEY, which the database never holds, so whoever holds the
# database cannot rewrite an event and recompute the later links. Earlier keys stay in
# AUDIT_HMAC_RETIRED_KEYS (comma-separated) so what they keyed still verifies after a
# rotation. Signed checkpoints of the head are appended to AUDIT_CHECKPOINT_DIR (an
# append-only store outside the database: WORM bucket mount, chattr +a folder on another
# host) every AUDIT_CHECKPOINT_EVERY_EVENTS events and every AUDIT_CHECKPOINT_INTERVAL_SECONDS
# (Celery beat), so deleting the newest events or rewriting the table shows in verify_audit.
def _embedded_audit_key() -> str:
    # Generated once per checkout under var/, like the embedded SECRET_KEY; never in the database.
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key_file = VAR_DIR / "audit_hmac_key"
    if not key_file.exists():
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
    return key_file.read_text().strip()


if PRODUCTION:
    AUDIT_HMAC_KEY = _require("AUDIT_HMAC_KEY")
    AUDIT_CHECKPOINT_DIR = Path(_require("AUDIT_CHECKPOINT_DIR"))
else:
    AUDIT_HMAC_KEY = envstr("AUDIT_HMAC_KEY") or _embedded_audit_key()
    AUDIT_CHECKPOINT_DIR = Path(envstr("AUDIT_CHECKPOINT_DIR", str(VAR_DIR / "audit-checkpoints")))
AUDIT_HMAC_RETIRED_KEYS = envlist("AUDIT_HMAC_RETIRED_KEYS", [])
for _name, _key in [("AUDIT_HMAC_KEY", AUDIT_HMAC_KEY)] + [
    ("AUDIT_HMAC_RETIRED_KEYS", k) for k in AUDIT_HMAC_RETIRED_KEYS
]:
    if len(_key.encode("utf-8")) < 32:
        raise ImproperEnvironment(
            f"{_name}: an audit chain key must be at least 32 bytes long "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
# How long a form token or an API Idempotency-Key answers a repeat with the first answer
# (idempotency.store): long enough for any retry, short enough to keep the table small.
IDEMPOTENCY_KEY_TTL = envint("IDEMPOTENCY_KEY_TTL", 24 * 3600, minimum=3600)
AUDIT_CHECKPOINT_EVERY_EVENTS = envint("AUDIT_CHECKPOINT_EVERY_EVENTS", 1000, minimum=1)
AUDIT_CHECKPOINT_INTERVAL_SECONDS = envint("AUDIT_CHECKPOINT_INTERVAL_SECONDS", 3600, minimum=60)
CELERY_BEAT_SCHEDULE = {
    "audit-checkpoint": {"task": "compliance.audit_checkpoint", "schedule": AUDIT_CHECKPOINT_INTERVAL_SECONDS},
    # API tokens end (audited) when their time runs out, not only when next presented.
    "expire-api-tokens": {"task": "compliance.expire_api_tokens", "schedule": 300},
}
# Migrations run as the role that owns the tables; the application's DATABASE_URL names a
# role that owns nothing and may not UPDATE, DELETE or TRUNCATE audit events (see
# `manage.py print_db_roles_sql`). With MIGRATION_DATABASE_URL set, run
# `manage.py migrate --database migrations`; give it only to the migration job, never to
# the web or worker processes.
MIGRATION_DATABASE_URL = envstr("MIGRATION_DATABASE_URL")
if MIGRATION_DATABASE_URL:
    DATABASES["migrations"] = {**dj_database_url.parse(MIGRATION_DATABASE_URL), "TEST": {"MIRROR": "default"}}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI assets served by us: no CDN
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    # The project's apps, bottom layer first (imports point down: web -> compliance ->
    # live -> imaging -> trials -> audit -> outbox -> ops; the contracts in pyproject.toml hold it).
    "ops",  # health checks and worker heartbeats: below every app, it imports none
    "outbox",  # tasks written with the change that made them due, relayed to the broker
    "idempotency",  # one-time form tokens and the API's Idempotency-Key: no double submission
    "audit",
    "compliance",
    "trials",
    "imaging",
    "live",
    "web",
]

MIDDLEWARE = [
    # First: /health/ answers before ALLOWED_HOSTS, the HTTPS redirect, sessions and the audit trail.
    "ops.middleware.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "audit.middleware.RequestContextMiddleware",
    # After the request context, so the log-off and 2FA refusals are audited with it.
    "audit.middleware.IdleTimeoutMiddleware",
    "compliance.middleware.TwoFactorRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # After sessions, auth and messages: a second submission of a form token or an
    # Idempotency-Key is answered with the first one's result, without running the view.
    "idempotency.middleware.IdempotencyMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a flagged lockout into the lockout response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(envstr("STATIC_ROOT", str(BASE_DIR / "staticfiles")))  # collected into the image
MEDIA_ROOT = Path(envstr("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "media/"  # never served directly: files go through audited, site-scoped views
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# The embedded runner serves static files through WhiteNoise straight from the apps'
# static folders (no collectstatic), with or without DEBUG; production serves STATIC_ROOT.
WHITENOISE_USE_FINDERS = not PRODUCTION

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

AUTHENTICATION_BACKENDS = [
    # django-axes first: it refuses a locked-out username before the password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes a missing or bad credential a 401.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "compliance.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "compliance.permissions.TokenScopePermission",  # scoped tokens reach only the views that admit them
    ],
    # JSON in (views that take files add multipart): a form encoding cannot say null or a list.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "config.pagination.ApiPagination",
    "PAGE_SIZE": envint("API_PAGE_SIZE", 50, minimum=1, maximum=1000),
    "DEFAULT_FILTER_BACKENDS": [
        "config.filtering.StrictFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "config.schema.ApiAutoSchema",
    "EXCEPTION_HANDLER": "config.api_errors.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "MPI cell-therapy trial platform API",
    "DESCRIPTION": "Site-scoped REST API for trials, subjects, consent, nanoparticle lots, "
    "labelled cell batches, injections and MPI scans.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs map every endpoint and parameter: signed-in users only.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Several models have a "status" field with different choices: name each enum.
    "ENUM_NAME_OVERRIDES": {
        "TrialStatusEnum": "trials.models.TrialStatus",
        "SubjectStatusEnum": "trials.models.SubjectStatus",
        "ScanStatusEnum": "imaging.models.ScanStatus",
        "UploadStatusEnum": "imaging.models.UploadStatus",
        "ExportKindEnum": "compliance.models.ExportKind",
        "ExportStatusEnum": "compliance.models.ExportStatus",
        "RoiKindEnum": "imaging.models.RoiKind",
        "AlertKindEnum": "imaging.models.AlertKind",
        "LiveMarkKindEnum": "live.models.LiveMarkKind",
    },
}

# Celery: the embedded default uses kombu's filesystem transport, so no broker
# process is needed; production points CELERY_BROKER_URL at Redis.
CELERY_BROKER_TRANSPORT_OPTIONS = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = VAR_DIR / "celery" / "queue"
    _processed_dir = VAR_DIR / "celery" / "processed"
    _control_dir = VAR_DIR / "celery" / "control"  # exchange tables; kombu's default is ./control
    for _d in (_queue_dir, _processed_dir, _control_dir):
        _d.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(_processed_dir),
        "control_folder": str(_control_dir),
        "store_processed": False,
    }
# Seconds a delivered but unacknowledged task may stay with a worker before the broker
# hands it to another one (Redis); the imaging claim sweep uses the same lease for the
# filesystem broker, which has no redelivery of its own. Longer than the longest task.
CELERY_VISIBILITY_TIMEOUT = envint("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=1)
CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] = CELERY_VISIBILITY_TIMEOUT
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # kombu sweeps for overdue unacknowledged messages every interval x throttle seconds
    # (100 s by default); tie the sweep to the timeout so redelivery follows it closely.
    CELERY_BROKER_TRANSPORT_OPTIONS["unacked_restore_throttle"] = 1
    CELERY_BROKER_TRANSPORT_OPTIONS["unacked_restore_interval"] = max(1, min(60, CELERY_VISIBILITY_TIMEOUT // 4))
CELERY_RESULT_BACKEND = envstr("CELERY_RESULT_BACKEND")  # task state lives in our own rows
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# One queue per kind of work, so a backlog of one never hides another (issue #17): ingest
# (validation, and the platform's own sweeps), recon (reconstructions, the long tasks),
# quant (quantification: seconds each, so metrics follow a reconstruction at once whatever
# waits in recon), export (file exports, PACS delivery), live (live monitoring). The
# embedded worker consumes them all; production runs a worker per group (docker-compose.yml).
# Live monitoring is not a Celery queue: its workers (``manage.py live_worker``) read the
# scanners' frames from Redis Streams, one session each under a lease (``live.runner``).
TASK_QUEUE_NAMES = ("ingest", "recon", "quant", "export")
CELERY_TASK_QUEUES = tuple(Queue(name) for name in TASK_QUEUE_NAMES)
CELERY_TASK_DEFAULT_QUEUE = "ingest"
CELERY_TASK_ROUTES = {
    "imaging.validate_scan": {"queue": "ingest"},
    "imaging.reconstruct_scan": {"queue": "recon"},
    "imaging.quantify_scan": {"queue": "quant"},
    "imaging.send_dicom": {"queue": "export"},
    "compliance.run_export": {"queue": "export"},
}
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Health checks (ops.health; /health/live/, /health/ready/ = /health/) and worker
# heartbeats (ops.heartbeat): each Celery worker writes its row every
# WORKER_HEARTBEAT_SECONDS; readiness wants, for each of HEALTH_REQUIRED_QUEUES (default:
# every declared queue), a worker whose beat is younger than WORKER_HEARTBEAT_STALE_SECONDS.
WORKER_HEARTBEAT_SECONDS = envint("WORKER_HEARTBEAT_SECONDS", 30, minimum=1)
WORKER_HEARTBEAT_STALE_SECONDS = envint("WORKER_HEARTBEAT_STALE_SECONDS", 3 * WORKER_HEARTBEAT_SECONDS, minimum=2)
HEALTH_REQUIRED_QUEUES = envlist("HEALTH_REQUIRED_QUEUES", [])
HEALTH_CHECK_TIMEOUT_SECONDS = envfloat("HEALTH_CHECK_TIMEOUT_SECONDS", 2.0, minimum=0.1)

# Transactional outbox (outbox.relay): tasks are rows written with the change that made them
# due, sent after the commit and, while the broker is away, by the periodic relay every
# OUTBOX_RELAY_INTERVAL_SECONDS. Sent rows are kept OUTBOX_KEEP_SENT_SECONDS for the sweeps.
OUTBOX_RELAY_INTERVAL_SECONDS = envint("OUTBOX_RELAY_INTERVAL_SECONDS", 10, minimum=1)
OUTBOX_KEEP_SENT_SECONDS = envint("OUTBOX_KEEP_SENT_SECONDS", 86_400, minimum=60)
# Leases (imaging.services.scan_claims): a running scan step renews its claim every
# IMAGING_CLAIM_LEASE_SECONDS / 4 (a heartbeat thread beside the task); a claim not renewed for
# IMAGING_CLAIM_LEASE_SECONDS belongs to a dead worker, and the sweep (every
# IMAGING_SWEEP_INTERVAL_SECONDS) queues its step again: a lost host's scan resumes within
# lease + interval, whatever the broker's visibility timeout.
IMAGING_CLAIM_LEASE_SECONDS = envint("IMAGING_CLAIM_LEASE_SECONDS", 120, minimum=2)
IMAGING_SWEEP_INTERVAL_SECONDS = envint("IMAGING_SWEEP_INTERVAL_SECONDS", 60, minimum=1)
# Unclaimed work (a scan received, validated or reconstructed) quiet this long while its
# queue on the broker is empty lost its message: the sweep queues it again.
IMAGING_LOST_MESSAGE_QUIET_SECONDS = envint("IMAGING_LOST_MESSAGE_QUIET_SECONDS", 60, minimum=1)
# Beat's sweeps; each expires after one interval, so sweeps piled up while no worker ran
# do not all run at once. `celery beat` in production, `worker -B` in the embedded runner.
CELERY_BEAT_SCHEDULE |= {
    "outbox-relay": {
        "task": "outbox.relay",
        "schedule": OUTBOX_RELAY_INTERVAL_SECONDS,
        "options": {"expires": OUTBOX_RELAY_INTERVAL_SECONDS},
    },
    "sweep-stalled-work": {
        "task": "imaging.sweep_stalled_work",
        "schedule": IMAGING_SWEEP_INTERVAL_SECONDS,
        "options": {"expires": IMAGING_SWEEP_INTERVAL_SECONDS},
    },
    "sweep-stalled-exports": {
        "task": "compliance.sweep_stalled_exports",
        "schedule": IMAGING_SWEEP_INTERVAL_SECONDS,
        "options": {"expires": IMAGING_SWEEP_INTERVAL_SECONDS},
    },
}

# Security.
SESSION_COOKIE_HTTPONLY = True
# HIPAA 164.312(a)(2)(iii): audit.middleware.IdleTimeoutMiddleware logs a session off
# (and audits it) after this many idle seconds. The store keeps the session a little
# longer than that only so the middleware sees it go idle and can record the log-off.
SESSION_IDLE_TIMEOUT_SECONDS = envint("SESSION_IDLE_TIMEOUT_SECONDS", 15 * 60, minimum=60)
SESSION_COOKIE_AGE = SESSION_IDLE_TIMEOUT_SECONDS + 3600
SESSION_SAVE_EVERY_REQUEST = True  # the age counts from the last request
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", True)
    # The load balancer's and compose's probes speak plain HTTP inside the network (they are
    # answered first, by ops.middleware; the exemption says so where the redirect is set).
    SECURE_REDIRECT_EXEMPT = [r"^health/"]
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [f"https://{h}" for h in ALLOWED_HOSTS])

# Content Security Policy (django-csp): pages load only our own scripts and styles.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    },
}

# API tokens (compliance.tokens): one per client, only a hash kept. A person's token
# (scope "full", from /api/v1/auth/token/) lives API_TOKEN_TTL_SECONDS at most and ends
# after API_TOKEN_IDLE_SECONDS unused (as a browser session does); scanner and read-only
# tokens for bridges and integrations live the days their issuer gives, at most
# API_SERVICE_TOKEN_MAX_DAYS. A password change ends all of a user's tokens.
API_TOKEN_TTL_SECONDS = envint("API_TOKEN_TTL_SECONDS", 12 * 3600, minimum=60)
API_TOKEN_IDLE_SECONDS = envint("API_TOKEN_IDLE_SECONDS", SESSION_IDLE_TIMEOUT_SECONDS, minimum=60)
API_SERVICE_TOKEN_MAX_DAYS = envint("API_SERVICE_TOKEN_MAX_DAYS", 90, minimum=1, maximum=3650)

# Account lockout (django-axes). Every password check counts: the login form, the API
# token endpoint, e-signatures and an injection verifier's password (audit.credentials).
# Failures are counted per (username, client address): a stranger elsewhere cannot lock a
# user out where the user is, and one user's typos do not lock out colleagues behind the
# same proxy. One address is also throttled across all usernames (password spraying) at
# the higher LOGIN_ADDRESS_FAILURE_LIMIT. Cool-off in minutes; a successful login clears
# that (username, address) count. Administrators see and release lockouts in the admin
# (Axes > Access attempts) or with `manage.py lockout_release USERNAME`.
AXES_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=100)
LOGIN_ADDRESS_FAILURE_LIMIT = envint("LOGIN_ADDRESS_FAILURE_LIMIT", 50, minimum=1, maximum=100_000)
AXES_COOLOFF_TIME = envint("LOGIN_COOLOFF_MINUTES", 30, minimum=1) / 60  # hours, as axes counts
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_HANDLER = "audit.security.LockoutHandler"  # adds the per-address throttle
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "audit.security.lockout_response"
AXES_VERBOSE = False
# The client address, for the lockout and the audit trail alike: REMOTE_ADDR, unless the
# platform is reached only through TRUSTED_PROXY_COUNT reverse proxies that each append
# the address they received from to X-Forwarded-For (nginx: proxy_add_x_forwarded_for).
# Never set it higher than the proxies really there: the client writes the rest of the header.
TRUSTED_PROXY_COUNT = envint("TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=10)
AXES_CLIENT_IP_CALLABLE = "audit.security.client_address"

# Two-factor authentication (TOTP, django-otp) for every role that may read identifiable
# data. On by default in production, where switching it off is refused; off by default
# in the embedded demo, which runs on any laptop without an authenticator app
# (REQUIRE_2FA=true turns it on there; `manage.py totp_enrol USER` creates a device).
REQUIRE_2FA = envbool("REQUIRE_2FA", PRODUCTION)
if PRODUCTION and not REQUIRE_2FA:
    raise ImproperEnvironment("REQUIRE_2FA=false is refused when MPI_ENV=production")
OTP_TOTP_ISSUER = envstr("OTP_TOTP_ISSUER", "MPI trials")

# Exports (compliance): auditor reports, audit-trail extracts, CDISC ODM, sponsor sets.
EXPORT_TASK_SOFT_TIME_LIMIT = envint("EXPORT_TASK_SOFT_TIME_LIMIT", 600, minimum=1)
EXPORT_TASK_TIME_LIMIT = envint("EXPORT_TASK_TIME_LIMIT", 660, minimum=1)
# A running export renews its claim every EXPORT_CLAIM_LEASE_SECONDS / 4; one not renewed for
# that long belongs to a dead worker, and the sweep (with the imaging sweep's interval) builds it again.
EXPORT_CLAIM_LEASE_SECONDS = envint("EXPORT_CLAIM_LEASE_SECONDS", 120, minimum=2)
# PACS delivery (imaging.send_dicom): retries after a transient failure (PACS down, timeout,
# HTTP 5xx/408/429, association rejected transiently), min(2**n * 10, 900) s apart.
IMAGING_SEND_MAX_RETRIES = envint("IMAGING_SEND_MAX_RETRIES", 5, minimum=0)

# Scan pipeline (imaging).
IMAGING_UPLOAD_MAX_BYTES = envint("IMAGING_UPLOAD_MAX_BYTES", 10 * 1024**3, minimum=1)
# Uploads are received, hashed and written (O_DIRECT) in pieces of this size, one at a time.
IMAGING_UPLOAD_PIECE_BYTES = envint("IMAGING_UPLOAD_PIECE_BYTES", 4 * 1024**2, minimum=4096)
if IMAGING_UPLOAD_PIECE_BYTES % 4096:
    raise ImproperEnvironment(
        f"IMAGING_UPLOAD_PIECE_BYTES={IMAGING_UPLOAD_PIECE_BYTES} must be a multiple of 4096 "
        "(O_DIRECT writes whole blocks)"
    )
# The browser upload page's PATCH size: each PATCH costs an fsync and a database commit, and
# a dropped connection resends at most one; the page holds one chunk in memory. Keep it
# under any body-size limit of a proxy in front (e.g. nginx client_max_body_size).
IMAGING_UPLOAD_BROWSER_CHUNK_BYTES = envint("IMAGING_UPLOAD_BROWSER_CHUNK_BYTES", 16 * 1024**2, minimum=65536)
# Hostile HDF5 (issue #12): before any dataset of a file is read, what it declares is checked
# against what the file stores (no fill-value-only data) and these bounds (recon.mdf.ReadLimits):
# the total uncompressed bytes of all datasets, the compression ratio, the objects and the
# attributes walked. ROI label volumes, read in the web request, have a bound of their own.
IMAGING_MAX_DECLARED_BYTES = envint("IMAGING_MAX_DECLARED_BYTES", 32 * 1024**3, minimum=1)
IMAGING_MAX_COMPRESSION_RATIO = envint("IMAGING_MAX_COMPRESSION_RATIO", 1000, minimum=1)
IMAGING_MAX_HDF5_OBJECTS = envint("IMAGING_MAX_HDF5_OBJECTS", 10_000, minimum=100)
IMAGING_LABEL_VOLUME_MAX_BYTES = envint("IMAGING_LABEL_VOLUME_MAX_BYTES", 64 * 1024**2, minimum=1)
IMAGING_SYSTEM_MATRIX_CACHE_BYTES = envint("IMAGING_SYSTEM_MATRIX_CACHE_BYTES", 1024**3, minimum=0)
IMAGING_TASK_SOFT_TIME_LIMIT = envint("IMAGING_TASK_SOFT_TIME_LIMIT", 1800, minimum=1)
IMAGING_TASK_TIME_LIMIT = envint("IMAGING_TASK_TIME_LIMIT", 2100, minimum=1)
IMAGING_TASK_MAX_RETRIES = envint("IMAGING_TASK_MAX_RETRIES", 5, minimum=0)

# Trial-wide platform settings.
OFF_TARGET_ALERT_PERCENT_DEFAULT = envfloat("OFF_TARGET_ALERT_PERCENT_DEFAULT", 20.0, minimum=0.0)

# Live injection monitoring (live/). The transport between the ingest path and the live
# worker: "memory" in one process (the embedded default: the worker is a thread of the web
# server), "redis" (Redis Streams) when web servers and live workers are separate processes.
_LIVE_TRANSPORT_DEFAULT = "redis" if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else "memory"
LIVE_TRANSPORT = envstr("LIVE_TRANSPORT", _LIVE_TRANSPORT_DEFAULT)
if LIVE_TRANSPORT not in ("memory", "redis"):
    raise ImproperEnvironment(f"LIVE_TRANSPORT must be 'memory' or 'redis', got {LIVE_TRANSPORT!r}")
LIVE_REDIS_URL = envstr("LIVE_REDIS_URL", CELERY_BROKER_URL if LIVE_TRANSPORT == "redis" else "")
if LIVE_TRANSPORT == "redis" and not LIVE_REDIS_URL.startswith(("redis://", "rediss://")):
    raise ImproperEnvironment("LIVE_TRANSPORT=redis needs LIVE_REDIS_URL (or CELERY_BROKER_URL) to be a redis:// URL")
# The live worker, its alerts and the event stream.
# Operators the live engine builds (one per calibration and ROI set) are cached here.
LIVE_OPERATOR_CACHE_DIR = Path(envstr("LIVE_OPERATOR_CACHE_DIR", str(VAR_DIR / "live-operators")))
# A condition must hold this many consecutive frame blocks (~0.2 s each) before it is an alert.
# Rows of the live operator (highest calibration SNR first): 2,000 keep a 37^3 grid live on 2 cores.
LIVE_MAX_ROWS = envint("LIVE_MAX_ROWS", 2000, minimum=1)
LIVE_ALERT_SUSTAIN_BLOCKS = envint("LIVE_ALERT_SUSTAIN_BLOCKS", 3, minimum=1)
# Live results later than this (acquired_at to published) for LIVE_ALERT_SUSTAIN_BLOCKS blocks: a lag alert.
LIVE_LAG_BUDGET_MS = envint("LIVE_LAG_BUDGET_MS", 1000, minimum=1)
# Target iron below this share of the injected dose once the injection should be complete: target_low.
LIVE_TARGET_EXPECTED_PERCENT = envfloat("LIVE_TARGET_EXPECTED_PERCENT", 50.0, minimum=0.0)
# The platform default of an injection's planned duration (s), for an injection whose record gives
# none (Injection.planned_duration_s; live.dose.planned_duration): the dose injected so far assumes
# the whole dose over it, and target_low is checked from then on after the first frame (and at
# the end of the stream in any case).
LIVE_INJECTION_EXPECTED_S = envfloat("LIVE_INJECTION_EXPECTED_S", 600.0, minimum=0.0)
# The live_worker command's claim on a session: renewed every LIVE_LEASE_RENEW_S seconds.
LIVE_LEASE_S = envint("LIVE_LEASE_S", 10, minimum=2)
LIVE_LEASE_RENEW_S = envfloat("LIVE_LEASE_RENEW_S", 2.0, minimum=0.1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
}
