"""Dispatch settings: one module, everything read from the environment.

Every variable has an embedded default so that `make run` works on a fresh machine
(SQLite, a broker that needs no server, the local SMTP sink). The README lists them all.
"""

import os
from pathlib import Path

import dj_database_url

from .env import env_bool, env_list, parse_cache_url, parse_email_url, secret_key_from_file

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = os.environ.get("SECRET_KEY") or secret_key_from_file(VAR_DIR / "secret_key")
DEBUG = env_bool("DEBUG", True)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", SITE_URL)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "anymail",
    "accounts",
    "audiences",
    "deliveries",
    "tracking",
    "kpis",
    "ops",
    "api",
    "system",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "accounts.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "accounts.middleware.RejectNulMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "system.middleware.NotFoundPageMiddleware",
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
                "accounts.context_processors.roles",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'dispatch.sqlite3'}",
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets the web server read while a worker writes; writers wait instead of failing.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
    }
    # One file per test run, so that runs side by side never share a test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
WHITENOISE_USE_FINDERS = DEBUG
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
MEDIA_ROOT = VAR_DIR / "media"

# --- email ------------------------------------------------------------------------------
EMAIL_URL = os.environ.get("EMAIL_URL", "smtp://127.0.0.1:1025")
globals().update(parse_email_url(EMAIL_URL))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Dispatch <dispatch@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
MAILBOX_DIR = Path(os.environ.get("MAILBOX_DIR", VAR_DIR / "mailbox"))

# --- celery -----------------------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.rstrip("/") == "filesystem:":
    CELERY_BROKER_URL = "filesystem://localhost//"  # the same transport, named: kombu warns about a URL without a host
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # The transport polls its folder: every 0.1 s (not 1 s) a task starts sooner and Ctrl-C on
        # `make run` stops the worker within a second or two (listing a folder is cheap).
        "polling_interval": 0.1,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_RESULT_BACKEND = None  # progress and state live in our own tables
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE", "dispatch")
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE: dict = {
    "heartbeat": {"task": "system.heartbeat", "schedule": 60.0, "args": ("beat",)},
}

# --- cache (shared by every process: sign-in throttling, health, charts) ----------------------
# Default: the broker's Redis when the broker is Redis, else a file cache under VAR_DIR (every
# process of one machine shares it). Tests clear only their own key prefix, never the whole Redis.
CACHE_URL = os.environ.get("CACHE_URL") or (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else f"file://{VAR_DIR / 'cache'}"
)
CACHES = {"default": {**parse_cache_url(CACHE_URL), "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "dispatch")}}

# --- sign-in throttling (accounts/throttle.py) ------------------------------------------------
TRUSTED_PROXY_COUNT = int(os.environ.get("TRUSTED_PROXY_COUNT", "0"))  # proxies in front that append to X-Forwarded-For
LOGIN_ADDRESS_LIMIT = int(os.environ.get("LOGIN_ADDRESS_LIMIT", "20"))  # failed sign-ins per client address...
LOGIN_WINDOW_SECONDS = int(os.environ.get("LOGIN_WINDOW_SECONDS", "900"))  # ...within this window
LOGIN_USERNAME_FREE_FAILURES = int(os.environ.get("LOGIN_USERNAME_FREE_FAILURES", "5"))  # then a login slows down:
LOGIN_USERNAME_MAX_DELAY = int(os.environ.get("LOGIN_USERNAME_MAX_DELAY", "60"))  # 1 s, 2 s, 4 s… up to this

API_TOKEN_TTL_HOURS = float(os.environ.get("API_TOKEN_TTL_HOURS", "0"))  # 0: API tokens do not expire
MAILGUN_WEBHOOK_MAX_AGE_SECONDS = int(os.environ.get("MAILGUN_WEBHOOK_MAX_AGE_SECONDS", "900"))

# --- REST API ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes DRF answer 401 (not 403) without credentials.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Every view names its action in the access table (accounts.roles.ACCESS); one that does not is refused.
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.TableAccess"],
    "DEFAULT_SCHEMA_CLASS": "api.schema.DispatchAutoSchema",
    # JSON in; the CSV import declares its multipart upload itself.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    # Flood guard on the token endpoint (the only anonymous write), on top of the sign-in throttle;
    # the client address is the one the trusted proxies report, never a client-written header.
    "DEFAULT_THROTTLE_RATES": {"anon": os.environ.get("API_ANON_RATE", "30/minute")},
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Dispatch API",
    # Markdown, shown by Swagger UI, which strips anything looking like an HTML tag: no <placeholders>.
    "DESCRIPTION": "Confirm sends and watch them deploy. Errors always answer "
    '`{"detail": "a sentence saying what to do", "code": "a machine-readable code"}`.',
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- production hardening (DEBUG off) ---------------------------------------------------
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_REDIRECT_EXEMPT = [r"^api/health/$"]
# The header a TLS-terminating proxy sets to say the request came over HTTPS (e.g. X-Forwarded-Proto),
# trusted only when named: otherwise any client could claim HTTPS by sending it.
PROXY_SSL_HEADER = os.environ.get("PROXY_SSL_HEADER", "").strip()
if PROXY_SSL_HEADER:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + PROXY_SSL_HEADER.upper().replace("-", "_"), "https")
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "server": {"()": "django.utils.log.ServerFormatter", "format": "[{server_time}] {message}", "style": "{"},
    },
    "filters": {"one_line_403": {"()": "system.logs.OneLineForbidden"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "server": {"class": "logging.StreamHandler", "formatter": "server"},
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's own console handler would print every django.* line a second time (through the root)
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.request": {"filters": ["one_line_403"]},
        "django.server": {"handlers": ["server"], "level": "INFO", "propagate": False},  # runserver's access log, as Django prints it
        "django.db.backends": {"level": "WARNING"},
        "mail.log": {"level": "WARNING"},
    },
}

DEMO_PASSWORD = os.environ.get("DEMO_PASSWORD", "dispatch")

# --- kpis ---
KPI_RECOMPUTE_INTERVAL = int(os.environ.get("KPI_RECOMPUTE_INTERVAL", "3600"))  # seconds between hourly recomputes
KPI_RECOMPUTE_WINDOW_DAYS = int(os.environ.get("KPI_RECOMPUTE_WINDOW_DAYS", "30"))  # messages sent this recently
KPI_COMPUTE_LOCK_TIMEOUT = int(os.environ.get("KPI_COMPUTE_LOCK_TIMEOUT", "600"))  # a lock older than this is stale
KPI_PROGRESS_POLL_SECONDS = int(os.environ.get("KPI_PROGRESS_POLL_SECONDS", "2"))  # Deployment block refresh
CELERY_BEAT_SCHEDULE["kpis-recompute-recent"] = {"task": "kpis.recompute_recent", "schedule": float(KPI_RECOMPUTE_INTERVAL)}

# --- tracking ---
# A "mailto:" alternative in List-Unsubscribe (RFC 2369), e.g. unsubscribe@example.com; empty: URL only.
UNSUBSCRIBE_MAILTO = os.environ.get("UNSUBSCRIBE_MAILTO", "")
# Machine traffic (mail scanners, privacy proxies): flagged, kept in the logs, left out of KPIs.
TRACKING_MACHINE_DELAY_SECONDS = float(os.environ.get("TRACKING_MACHINE_DELAY_SECONDS", "2"))  # hit this soon after delivery
TRACKING_BURST_LINKS = int(os.environ.get("TRACKING_BURST_LINKS", "3"))  # this many links of one message...
TRACKING_BURST_SECONDS = float(os.environ.get("TRACKING_BURST_SECONDS", "1"))  # ...clicked within this many seconds
# PostgreSQL: tracking hits commit without waiting for the WAL flush (a crash may lose the last
# fraction of a second of opens and clicks, nothing else). 0 makes every hit durable first.
TRACKING_ASYNC_COMMIT = env_bool("TRACKING_ASYNC_COMMIT", True)
# PostgreSQL: the pixel and the click redirect answer at once and each web process writes its
# hits in bulk every TRACKING_BUFFER_SECONDS (sooner when TRACKING_BUFFER_ROWS are held); a
# graceful stop writes what is held, a killed process loses at most its last interval. While the
# database is unreachable up to TRACKING_BUFFER_LIMIT hits per process wait. 0 writes each hit
# before answering (README, "Tracking").
TRACKING_BUFFER_SECONDS = float(os.environ.get("TRACKING_BUFFER_SECONDS", "0.2"))
TRACKING_BUFFER_ROWS = int(os.environ.get("TRACKING_BUFFER_ROWS", "1000"))
TRACKING_BUFFER_LIMIT = int(os.environ.get("TRACKING_BUFFER_LIMIT", "200000"))
# Provider webhooks (django-anymail), at /webhooks/<esp>/tracking/. Providers without signed
# webhooks are authenticated by HTTP basic auth "user:password" (ANYMAIL_WEBHOOK_SECRET); until it
# is set they are refused. Mailgun is verified by its webhook signing key instead.
ANYMAIL = {
    "WEBHOOK_SECRET": os.environ.get("ANYMAIL_WEBHOOK_SECRET", ""),
    "MAILGUN_WEBHOOK_SIGNING_KEY": os.environ.get("MAILGUN_WEBHOOK_SIGNING_KEY", ""),
}
PROVIDER_EVENT_RETENTION_DAYS = int(os.environ.get("PROVIDER_EVENT_RETENTION_DAYS", "30"))  # repeats recognized this long
CELERY_BEAT_SCHEDULE["tracking-provider-events-purge"] = {"task": "tracking.provider_events_purge", "schedule": 86400.0}

# --- deliveries -----------------------------------------------------------------------------
EXCLUDED_DOMAINS = env_list("EXCLUDED_DOMAINS", "")  # preparation excludes these domains
SEND_CHUNK = int(os.environ.get("SEND_CHUNK", "200"))  # rows claimed per statement (2 x this: most a dead worker leaves unknown)
SEND_BATCH = int(os.environ.get("SEND_BATCH", "5000"))  # rows per batch task
SEND_CONNECTIONS = int(os.environ.get("SEND_CONNECTIONS", "16"))  # relay connections per worker process
SEND_MAX_CONNECTIONS_PER_RELAY = int(os.environ.get("SEND_MAX_CONNECTIONS_PER_RELAY", "50"))  # across every worker
SEND_FLUSH_SECONDS = float(os.environ.get("SEND_FLUSH_SECONDS", "0.2"))  # outcomes written at least this often
SEND_RELAY_DOWN_SECONDS = float(os.environ.get("SEND_RELAY_DOWN_SECONDS", "60"))  # no connection this long: rows handed back
SEND_RELAY_RETRY_SECONDS = float(os.environ.get("SEND_RELAY_RETRY_SECONDS", "60"))  # ...and tried again this much later
SEND_TICK_SECONDS = float(os.environ.get("SEND_TICK_SECONDS", "60"))  # the beat's sending check
PREPARATION_CHUNK = 100_000  # profiles judged per statement (PostgreSQL); the stop flag is read between them
PREPARATION_CONNECTIONS = int(os.environ.get("PREPARATION_CONNECTIONS", "2"))  # PostgreSQL: statements at once
RETRY_BACKOFF_SECONDS = [int(s) for s in env_list("RETRY_BACKOFF_SECONDS", "900,1800,3600,7200,14400")]
CLAIM_TIMEOUT_SECONDS = int(os.environ.get("CLAIM_TIMEOUT_SECONDS", "600"))
RECONCILE_AFTER_SECONDS = int(os.environ.get("RECONCILE_AFTER_SECONDS", "300"))
AUTOPAUSE_BOUNCE_RATE = float(os.environ.get("AUTOPAUSE_BOUNCE_RATE", "0.2"))  # default; Administration can change it
AUTOPAUSE_MIN_PROCESSED = int(os.environ.get("AUTOPAUSE_MIN_PROCESSED", "500"))
CELERY_BEAT_SCHEDULE["deliveries-tick"] = {"task": "deliveries.tick", "schedule": SEND_TICK_SECONDS}
# Personalization (deliveries/sandbox.py): each render of a message has this many seconds and may
# produce at most this many characters; a template past either is refused with a sentence.
PERSONALIZATION_TIME_LIMIT = float(os.environ.get("PERSONALIZATION_TIME_LIMIT", "2"))
PERSONALIZATION_MAX_CHARS = int(os.environ.get("PERSONALIZATION_MAX_CHARS", "1000000"))
PREPARATION_TIME_LIMIT = int(os.environ.get("PREPARATION_TIME_LIMIT", "3600"))  # a preparation fails past it

# --- task time limits -------------------------------------------------------------------------
# Every task has a soft limit (SoftTimeLimitExceeded is raised in it) and a hard one (its worker
# process is replaced) a grace period later; the long tasks have their own.
TASK_SOFT_TIME_LIMIT = int(os.environ.get("TASK_SOFT_TIME_LIMIT", "600"))
TASK_TIME_LIMIT_GRACE = int(os.environ.get("TASK_TIME_LIMIT_GRACE", "60"))
IMPORT_TIME_LIMIT = int(os.environ.get("IMPORT_TIME_LIMIT", "21600"))  # a CSV import (6 h: the import reaper's age)
SEND_BATCH_TIME_LIMIT = int(os.environ.get("SEND_BATCH_TIME_LIMIT", "3600"))  # one batch task of a send
CELERY_TASK_SOFT_TIME_LIMIT = TASK_SOFT_TIME_LIMIT
CELERY_TASK_TIME_LIMIT = TASK_SOFT_TIME_LIMIT + TASK_TIME_LIMIT_GRACE


def _limits(soft: int) -> dict:
    return {"soft_time_limit": soft, "time_limit": soft + TASK_TIME_LIMIT_GRACE}


CELERY_TASK_ANNOTATIONS = {
    # the preparation stops itself at PREPARATION_TIME_LIMIT (and says so); the task's limits are a backstop
    "deliveries.prepare": _limits(PREPARATION_TIME_LIMIT + 30),
    "deliveries.send_batch": _limits(SEND_BATCH_TIME_LIMIT),
    "audiences.import_run": _limits(IMPORT_TIME_LIMIT),
}

# --- audiences ---
from celery.schedules import crontab  # noqa: E402

IMPORT_MAX_BYTES = int(os.environ.get("IMPORT_MAX_BYTES", str(1024 * 1024 * 1024)))  # largest CSV accepted (1 GB)
IMPORT_MERGE_CONNECTIONS = int(os.environ.get("IMPORT_MERGE_CONNECTIONS", "2"))  # PostgreSQL: parallel merge
SPECTACULAR_SETTINGS.setdefault("ENUM_NAME_OVERRIDES", {}).update(
    {
        "QuarantineStatusEnum": "audiences.models.Quarantine.Status",
        "ImportStatusEnum": "audiences.models.ImportJob.Status",
        "SendingStatusEnum": "deliveries.models.SendingStatus",  # several "status" enums now coexist
        "ExclusionCauseEnum": "deliveries.models.ExclusionCause",  # exclusion logs and skipped sending logs
    }
)
CELERY_BEAT_SCHEDULE["audiences-import-reap"] = {"task": "audiences.import_reap", "schedule": 3600.0}
CELERY_BEAT_SCHEDULE["audiences-quarantine-cleanup"] = {
    "task": "audiences.quarantine_cleanup",
    "schedule": crontab(hour=3, minute=15),  # daily (DOMAIN.md §5)
}

# --- ops ---
# Alert thresholds: defaults for the row Administration edits on /deployments/thresholds/.
ALERT_BOUNCE_RATE = float(os.environ.get("ALERT_BOUNCE_RATE", "0.05"))  # bounces + errors / processed
ALERT_BOUNCE_MIN_PROCESSED = int(os.environ.get("ALERT_BOUNCE_MIN_PROCESSED", "100"))
ALERT_START_PENDING_MINUTES = int(os.environ.get("ALERT_START_PENDING_MINUTES", "30"))
ALERT_MIN_THROUGHPUT_PER_MINUTE = int(os.environ.get("ALERT_MIN_THROUGHPUT_PER_MINUTE", "10"))
ALERT_THROUGHPUT_WINDOW_MINUTES = int(os.environ.get("ALERT_THROUGHPUT_WINDOW_MINUTES", "10"))
ALERT_LOOKBACK_HOURS = 24  # messages sent or sending this recently are checked
# A worker records its heartbeat every third of this; health counts workers heard from within it (no ping).
HEALTH_WORKER_MAX_AGE = float(os.environ.get("HEALTH_WORKER_MAX_AGE", "30"))
HEALTH_BEAT_MAX_AGE = int(os.environ.get("HEALTH_BEAT_MAX_AGE", "180"))  # seconds since the last beat heartbeat
HEALTH_CACHE_SECONDS = int(os.environ.get("HEALTH_CACHE_SECONDS", "5"))  # /api/health/ answers from a cache this long
HEALTH_RELAY_TIMEOUT = float(os.environ.get("HEALTH_RELAY_TIMEOUT", "2"))  # seconds to connect to the SMTP relay and get its NOOP reply
OPS_DASHBOARD_POLL_SECONDS = int(os.environ.get("OPS_DASHBOARD_POLL_SECONDS", "5"))
CELERY_BEAT_SCHEDULE["ops-alerts-check"] = {"task": "ops.alerts_check", "schedule": 600.0}
# Every minute: the hourly counter of messages processed, and the alert for a send that paused itself.
CELERY_BEAT_SCHEDULE["ops-minute"] = {"task": "ops.minute", "schedule": 60.0}
