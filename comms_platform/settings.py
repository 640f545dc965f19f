"""Settings for the communications platform: one module, driven by the environment.

Every variable read here is described in ``comms_platform/config.schema.json`` and
listed in ``.env.example``; ``manage.py config_report`` shows their state.
In production mode a missing required variable or a placeholder secret stops the
process before it serves anything: system checks in ``comms_platform.checks``.
"""

from __future__ import annotations

import logging
import sys
from datetime import timedelta
from pathlib import Path

import environ

from comms_platform import logs as comms_logs
from comms_platform import testmode as comms_testmode

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

# A mode other than these two, test mode on Render, and in production a missing or placeholder
# variable stop the process: system checks comms.E001-E003 (comms_platform/checks.py), run by
# `manage.py check` and by every entry point (WSGI, ASGI, Celery) before it serves anything.
COMMS_MODE = env.str("COMMS_MODE", default="test")
TEST_MODE = COMMS_MODE == "test"

# Test mode's secrets, unless set, are random per installation (var/test-mode-secrets.json):
# stable across `make run` sessions, never a published constant. Production sets its own
# (the startup checks refuse a missing or placeholder one).
_LOCAL_SECRETS = comms_testmode.installation_secrets(VAR_DIR) if TEST_MODE else {}
SECRET_KEY = env.str("SECRET_KEY", default=_LOCAL_SECRETS.get("SECRET_KEY", ""))
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
# Test mode serves this machine only (comms_platform/testmode.py) unless this is set.
ALLOW_TEST_MODE_ON_NETWORK = env.bool("ALLOW_TEST_MODE_ON_NETWORK", default=False)
if TEST_MODE and not ALLOW_TEST_MODE_ON_NETWORK and comms_testmode.runserver_problem(sys.argv):
    sys.exit(comms_testmode.runserver_problem(sys.argv))
# Test mode with ALLOWED_HOSTS naming another machine: system check comms.E004.
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
PUBLIC_WS_BASE_URL = env.str("PUBLIC_WS_BASE_URL", default="").rstrip("/")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[PUBLIC_BASE_URL])
# The live console's websockets (served by the realtime service, another hostname) are opened
# with a ticket the page fetches from the web service: signed, bound to the user, the socket's
# path and the page's origin, single use, valid this many seconds (docs/console.md).
CONSOLE_WS_TICKET_TTL_SECONDS = env.int("CONSOLE_WS_TICKET_TTL_SECONDS", default=30)

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
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc as our own static files (no CDN)
    "channels",
    "axes",
    "comms_platform",
    "orchestrator",
    "agents.common.apps.AgentsCommonConfig",
    "dossiers",
    "dashboard",
    "conversations",
    "broadcasts",
    "agents.email.apps.EmailAgentConfig",
    "agents.content.apps.ContentConfig",
    "agents.voice.apps.VoiceConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # After authentication: a 403 to a signed-in person or API key is audited.
    "dossiers.middleware.AuditRefusals",
    # Last, as django-axes asks: turns a locked-out sign-in into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "comms_platform.urls"
WSGI_APPLICATION = "comms_platform.wsgi.application"
ASGI_APPLICATION = "comms_platform.asgi.application"

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

# --- Database -------------------------------------------------------------------------
# Embedded default: SQLite under var/. DATABASE_URL points at PostgreSQL in production.
VAR_DIR.mkdir(exist_ok=True)
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # The same backend, with a health check that polls the socket instead of a SELECT 1.
    DATABASES["default"]["ENGINE"] = "comms_platform.pgbackend"
    # psycopg's own prepared statements: a statement run DB_PREPARE_THRESHOLD times on a
    # connection is prepared server-side and then sent as parameters only. They need
    # server-side parameter binding (Django's default cursors bind on the client and never
    # prepare). Empty (the default): off. Behind PgBouncer in transaction mode keep it off,
    # or run PgBouncer >= 1.21 with max_prepared_statements set (docs/architecture.md).
    DB_PREPARE_THRESHOLD = env.str("DB_PREPARE_THRESHOLD", default="")
    if DB_PREPARE_THRESHOLD.strip():
        DATABASES["default"].setdefault("OPTIONS", {}).update(
            {"server_side_binding": True, "prepare_threshold": int(DB_PREPARE_THRESHOLD)}
        )
else:
    # SQLite: wait for the writer lock instead of failing at once, and use WAL so
    # readers never block the writer (several threads write in the embedded default).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, Celery and Channels -------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")

CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
# Not losing work: acknowledge after the task ran, give a task back when its worker
# process dies, take one message at a time. The attempt counter on the Task row stops
# a task that keeps killing workers (TASK_MAX_ATTEMPTS).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=240)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
# Above the longest task (and any countdown we use), so Redis never hands a running
# task to a second worker.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
}
# Intake must not hang when Redis is down: the row is the outbox and the sweeper
# re-sends, so fail the publish fast instead of retrying inside the request.
CELERY_TASK_PUBLISH_RETRY = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_TASK_DEFAULT_QUEUE = "orchestrator"
AGENT_QUEUES = ["orchestrator", "voice", "messaging", "email", "content", "remote"]
TASK_SWEEP_INTERVAL_SECONDS = env.int("TASK_SWEEP_INTERVAL_SECONDS", default=15)
CELERY_BEAT_SCHEDULE = {
    "sweep-stale-tasks": {
        "task": "orchestrator.sweep_tasks",
        "schedule": float(TASK_SWEEP_INTERVAL_SECONDS),
        "options": {"queue": "orchestrator"},
    },
}
# Celery closes Django's DB connection around every task unless told otherwise
# (celery PR #9824); keeping it is ~4x faster for short tasks.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 reads with a 5 s socket_timeout by default, and channels_redis blocks
            # in BZPOPMIN for 5 s (brpop_timeout) waiting for a consumer's next message: an
            # idle socket's read timed out (redis TimeoutError) and uvicorn dropped every console
            # websocket after ~5 s (close 1006). Reads may now block longer than the BZPOPMIN;
            # keepalive and the health check still find a dead connection.
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": 15,
                        "socket_connect_timeout": 5,
                        "socket_keepalive": True,
                        "health_check_interval": 30,
                    }
                ],
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Orchestrator ---------------------------------------------------------------------
# With a broker, committed tasks are sent by a background thread in batches so intake never
# waits for Redis; the embedded default (in-process execution) dispatches inline.
DISPATCH_IN_BACKGROUND = (
    env.bool("DISPATCH_IN_BACKGROUND") if env.str("DISPATCH_IN_BACKGROUND", default="") else bool(REDIS_URL)
)
TASK_SWEEP_AGE_SECONDS = env.int("TASK_SWEEP_AGE_SECONDS", default=60)
# A claimed task's lease: short, and renewed while the task runs (orchestrator/leases.py), so a
# dead worker's task is retaken within a lease and a sweep, not after the longest task.
TASK_LEASE_SECONDS = env.int("TASK_LEASE_SECONDS", default=20)
TASK_LEASE_RENEW_SECONDS = env.float("TASK_LEASE_RENEW_SECONDS", default=max(0.5, TASK_LEASE_SECONDS / 4))
# A worker whose database is away retries the message this much later (not counted as an attempt).
TASK_DATABASE_RETRY_SECONDS = env.float("TASK_DATABASE_RETRY_SECONDS", default=3.0)
# A task still in_progress this long after its last change (per channel) has lost its final
# callback: the sweeper asks the provider (the agent's status check). Format: "sms=900,whatsapp=900".
STATUS_CHECK_AGE_SECONDS = {
    channel: int(seconds)
    for channel, seconds in env.dict(
        "STATUS_CHECK_AGE_SECONDS", default={"sms": "900", "whatsapp": "900"}
    ).items()
}
# After this long without a final status from the provider either, the task fails (no_final_status).
STATUS_CHECK_GIVE_UP_SECONDS = env.int("STATUS_CHECK_GIVE_UP_SECONDS", default=24 * 3600)
TASK_MAX_ATTEMPTS = env.int("TASK_MAX_ATTEMPTS", default=5)
TASK_RETRY_BACKOFF_SECONDS = env.float("TASK_RETRY_BACKOFF_SECONDS", default=2.0)
TASK_RETRY_BACKOFF_MAX_SECONDS = env.float("TASK_RETRY_BACKOFF_MAX_SECONDS", default=300.0)
TASK_PAYLOAD_MAX_BYTES = env.int("TASK_PAYLOAD_MAX_BYTES", default=64 * 1024)
API_KEY_CACHE_SECONDS = env.float("API_KEY_CACHE_SECONDS", default=10.0)
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=256 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(API_MAX_BODY_BYTES, 2_621_440)
ROUTING_CHANNEL_TIMEOUT_SECONDS = env.int("ROUTING_CHANNEL_TIMEOUT_SECONDS", default=900)
ROUTING_DEFAULT_EMAIL_SUBJECT = env.str("ROUTING_DEFAULT_EMAIL_SUBJECT", default="A message for you")
# The task type a routed channel becomes (the agents register these types).
ROUTING_CHANNEL_TASK_TYPES = {
    "sms": "sms.send",
    "whatsapp": "whatsapp.send",
    "email": "email.send",
    "voice": "call.outbound",
}
REMOTE_AGENT_SECRETS = [
    s for s in env.list("REMOTE_AGENT_SECRET", default=[_LOCAL_SECRETS.get("REMOTE_AGENT_SECRET", "")]) if s
]
REMOTE_AGENT_TIMEOUT_SECONDS = env.float("REMOTE_AGENT_TIMEOUT_SECONDS", default=10.0)
# Outbound requests to URLs we did not write (remote agents, media and recording URLs):
# never to private, loopback or link-local addresses in production (comms_platform/outbound.py),
# except the hosts listed (e.g. an agent on the deployment's private network).
_outbound_block = env.str("OUTBOUND_BLOCK_PRIVATE", default="").strip().lower()
# Empty (as in .env.example) means the mode's default, never "off".
OUTBOUND_BLOCK_PRIVATE = (
    (not TEST_MODE) if not _outbound_block else _outbound_block in ("true", "1", "yes", "on")
)
OUTBOUND_ALLOW_PRIVATE_HOSTS = env.list("OUTBOUND_ALLOW_PRIVATE_HOSTS", default=[])
REMOTE_AGENT_URLS = {
    "voice": env.str("VOICE_AGENT_URL", default=""),
    "messaging": env.str("MESSAGING_AGENT_URL", default=""),
    "email": env.str("EMAIL_AGENT_URL", default=""),
    "content": env.str("CONTENT_AGENT_URL", default=""),
}

# --- Providers (used by the agents; listed in config.schema.json) ---------------------
TWILIO_ACCOUNT_SID = env.str("TWILIO_ACCOUNT_SID", default="")
TWILIO_AUTH_TOKEN = env.str("TWILIO_AUTH_TOKEN", default="")
TWILIO_PREVIOUS_AUTH_TOKENS = env.list("TWILIO_PREVIOUS_AUTH_TOKENS", default=[])
TWILIO_MESSAGING_SERVICE_SID = env.str("TWILIO_MESSAGING_SERVICE_SID", default="")
TWILIO_SMS_FROM = env.str("TWILIO_SMS_FROM", default="")
TWILIO_WHATSAPP_FROM = env.str("TWILIO_WHATSAPP_FROM", default="")
TWILIO_VOICE_CALLER_ID = env.str("TWILIO_VOICE_CALLER_ID", default="")
TWILIO_API_BASE_URL = env.str("TWILIO_API_BASE_URL", default="")
SENDGRID_API_KEY = env.str("SENDGRID_API_KEY", default="")
SENDGRID_EVENT_PUBLIC_KEY = env.str("SENDGRID_EVENT_PUBLIC_KEY", default="")
SENDGRID_API_BASE_URL = env.str("SENDGRID_API_BASE_URL", default="")
EMAIL_PROVIDER = env.str("EMAIL_PROVIDER", default="sendgrid")
EMAIL_FALLBACK_PROVIDER = env.str("EMAIL_FALLBACK_PROVIDER", default="")
DEFAULT_FROM_EMAIL = env.str("EMAIL_FROM", default="Comms Platform <no-reply@example.com>")
EMAIL_HOST = env.str("SMTP_HOST", default="localhost")
EMAIL_PORT = env.int("SMTP_PORT", default=25)
EMAIL_HOST_USER = env.str("SMTP_USER", default="")
EMAIL_HOST_PASSWORD = env.str("SMTP_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("SMTP_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("SMTP_TIMEOUT_SECONDS", default=10)
# Emails per second per From address (agents/email/sending.py pace_sender); 0: no limit.
EMAIL_RATE_PER_SECOND = env.float("EMAIL_RATE_PER_SECOND", default=0)
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="")
OPENAI_MODEL = env.str("OPENAI_MODEL", default="gpt-4o-mini")
OPENAI_TIMEOUT_SECONDS = env.float("OPENAI_TIMEOUT_SECONDS", default=20.0)

# --- Retention (days) -----------------------------------------------------------------
RETENTION_DAYS = {
    "messages": env.int("RETENTION_MESSAGES_DAYS", default=365),
    "calls": env.int("RETENTION_CALLS_DAYS", default=365),
    "recordings": env.int("RETENTION_RECORDINGS_DAYS", default=90),
    "emails": env.int("RETENTION_EMAILS_DAYS", default=365),
    "artifacts": env.int("RETENTION_ARTIFACTS_DAYS", default=180),
    "webhook_events": env.int("RETENTION_WEBHOOK_EVENTS_DAYS", default=30),
    "tasks": env.int("RETENTION_TASKS_DAYS", default=730),
    "audit": env.int("RETENTION_AUDIT_DAYS", default=2190),
}

# --- REST API -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "orchestrator.api.auth.ApiKeyAuthentication",
        "orchestrator.api.auth.StaffSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["orchestrator.api.parsers.BoundedJSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "orchestrator.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_CLASSES": ["orchestrator.api.throttling.ApiKeyRateThrottle"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Comms Platform API",
    "DESCRIPTION": "Tasks, contacts and dossiers of the multi-channel communications platform.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The docs pages load Swagger UI / ReDoc from our static files (drf-spectacular-sidecar,
    # pinned in requirements.txt), so /api/docs/ and /api/redoc/ work without internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "TaskStatusEnum": "orchestrator.states.TaskStatus",
        "BroadcastChannelEnum": "broadcasts.models.Channel",
        "BroadcastStatusEnum": "broadcasts.models.BroadcastStatus",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "orchestrator.api.schema.add_error_responses",
        "orchestrator.api.schema.drop_invalid_defaults",
        "orchestrator.api.schema.add_task_examples",
    ],
}

# --- Auth, i18n, static ---------------------------------------------------------------
# Admin sign-in brute force (django-axes): ADMIN_LOGIN_FAILURE_LIMIT failures for one user name
# from one address lock both out for ADMIN_LOGIN_LOCKOUT_MINUTES (429, even with the right
# password); `manage.py axes_reset` lifts lockouts. Successful sign-ins are not recorded.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("ADMIN_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("ADMIN_LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True
AXES_CLIENT_IP_CALLABLE = "comms_platform.clientip.client_ip"
AXES_VERBOSE = False
# How many proxies in front of the web service append to X-Forwarded-For (Render: 1). The
# client address (throttles, lockouts) is read that many entries from the right; 0: REMOTE_ADDR.
TRUSTED_PROXY_HOPS = env.int("TRUSTED_PROXY_HOPS", default=0)
REST_FRAMEWORK["NUM_PROXIES"] = TRUSTED_PROXY_HOPS  # DRF's throttles read the same address
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "admin:login"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if TEST_MODE
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = TEST_MODE

# --- Security (production) ------------------------------------------------------------
if not TEST_MODE:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Logging --------------------------------------------------------------------------
# structlog renders every line (ours, Django's, Celery's) with the fixed taxonomy and
# masks phone numbers, emails and secret values (comms_platform/logs.py).
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
LOGGING = comms_logs.logging_config(level=LOG_LEVEL, fmt=LOG_FORMAT)
comms_logs.configure_structlog()

# --- Dossiers, retention, heartbeats, audit ---------------------------------------------
PHONE_DEFAULT_REGION = env.str("PHONE_DEFAULT_REGION", default="US")
# Request log context (request_id, correlation_id, user_id) and one http.request line per
# request: django-structlog, with our field names (comms_platform/logs.py). No client IPs.
MIDDLEWARE.insert(0, "django_structlog.middlewares.RequestMiddleware")
DJANGO_STRUCTLOG_IP_LOGGING_ENABLED = False
DJANGO_STRUCTLOG_TRUST_UPSTREAM_REQUEST_ID = True
DJANGO_STRUCTLOG_TRUST_UPSTREAM_CORRELATION_ID = True
DJANGO_STRUCTLOG_STATUS_START_LOG_LEVEL = logging.DEBUG  # the finished line says it all
DJANGO_STRUCTLOG_STATUS_4XX_LOG_LEVEL = logging.INFO
DJANGO_STRUCTLOG_STATUS_5XX_LOG_LEVEL = logging.ERROR
if TEST_MODE and not ALLOW_TEST_MODE_ON_NETWORK:
    MIDDLEWARE.insert(0, "comms_platform.testmode.LoopbackOnlyMiddleware")
HEARTBEAT_INTERVAL_SECONDS = env.int("HEARTBEAT_INTERVAL_SECONDS", default=5)
HEARTBEAT_STALE_SECONDS = env.int("HEARTBEAT_STALE_SECONDS", default=30)
RETENTION_INTERVAL_SECONDS = env.int("RETENTION_INTERVAL_SECONDS", default=3600)
CELERY_BEAT_SCHEDULE["apply-retention"] = {
    "task": "dossiers.apply_retention",
    "schedule": float(RETENTION_INTERVAL_SECONDS),
    "options": {"queue": "orchestrator"},
}

# --- Email agent ----------------------------------------------------------------------
# SendGrid retries a failed event webhook for up to 24 h: older signed batches are refused.
SENDGRID_EVENT_MAX_AGE_SECONDS = env.int("SENDGRID_EVENT_MAX_AGE_SECONDS", default=86400)
# Test mode sends through the simulated provider (events signed with a key derived from
# SECRET_KEY) unless SENDGRID_API_BASE_URL points the real providers at a local fake (as
# TWILIO_API_BASE_URL does for messaging); tests of the real providers turn this off too.
EMAIL_SIMULATED = TEST_MODE and not SENDGRID_API_BASE_URL

# --- Content agent --------------------------------------------------------------------
ARTIFACT_URL_TTL_SECONDS = env.int("ARTIFACT_URL_TTL_SECONDS", default=3600)
# Test mode writes content with the deterministic generator (offline, repeatable).
CONTENT_SIMULATED = TEST_MODE

# --- Operator console ----------------------------------------------------------------
# Conversations (issue 17): first / next response SLAs, round-robin auto-assignment, the sweep.
CONVERSATION_FIRST_RESPONSE_SECONDS = env.int("CONVERSATION_FIRST_RESPONSE_SECONDS", default=900)
CONVERSATION_NEXT_RESPONSE_SECONDS = env.int("CONVERSATION_NEXT_RESPONSE_SECONDS", default=3600)
CONVERSATION_AUTO_ASSIGN = env.bool("CONVERSATION_AUTO_ASSIGN", default=False)
CONVERSATION_SWEEP_INTERVAL_SECONDS = env.int("CONVERSATION_SWEEP_INTERVAL_SECONDS", default=30)
CELERY_BEAT_SCHEDULE["conversations-sweep"] = {
    "task": "conversations.sweep",
    "schedule": float(CONVERSATION_SWEEP_INTERVAL_SECONDS),
    "options": {"queue": "orchestrator"},
}

# --- messaging agent ------------------------------------------------------------------
INSTALLED_APPS += ["agents.messaging.apps.MessagingConfig"]
# Test mode signs and verifies simulated Twilio callbacks with this installation's generated
# token, so `make run` works offline; production requires real credentials (config.schema.json).
if TEST_MODE and not TWILIO_ACCOUNT_SID:
    TWILIO_ACCOUNT_SID = "AC" + "0" * 31 + "1"
if TEST_MODE and not TWILIO_AUTH_TOKEN:  # this installation's own (comms_platform/testmode.py)
    TWILIO_AUTH_TOKEN = _LOCAL_SECRETS["TWILIO_AUTH_TOKEN"]
if TEST_MODE and not (TWILIO_SMS_FROM or TWILIO_MESSAGING_SERVICE_SID):
    TWILIO_SMS_FROM = "+15005550006"
if TEST_MODE and not TWILIO_WHATSAPP_FROM:
    TWILIO_WHATSAPP_FROM = "whatsapp:+14155238886"
TWILIO_STATUS_CALLBACK_OVERRIDE = env.str("TWILIO_STATUS_CALLBACK_OVERRIDE", default="#rc=3&rp=all")
SMS_MAX_SEGMENTS = env.int("SMS_MAX_SEGMENTS", default=10)
MESSAGING_RATE_PER_SECOND = env.float("MESSAGING_RATE_PER_SECOND", default=1)
MESSAGING_MAX_RETRIES = env.int("MESSAGING_MAX_RETRIES", default=5)
# The SMS provider: "twilio" (the simulator in test mode) or "gateway" (a generic HTTP gateway,
# agents/messaging/providers/gateway.py: the worked example of docs/architecture.md).
MESSAGING_PROVIDER = env.str("MESSAGING_PROVIDER", default="twilio")
SMS_GATEWAY_URL = env.str("SMS_GATEWAY_URL", default="")
SMS_GATEWAY_API_KEY = env.str("SMS_GATEWAY_API_KEY", default="")
SMS_GATEWAY_WEBHOOK_SECRET = env.str("SMS_GATEWAY_WEBHOOK_SECRET", default="")
MESSAGING_HELP_REPLY = env.str(
    "MESSAGING_HELP_REPLY", default="Comms Platform: reply STOP to unsubscribe. Msg and data rates may apply."
)
# Seconds the simulated provider waits between the status callbacks it sends (test mode).
MESSAGING_SIMULATED_CALLBACK_DELAY = env.float("MESSAGING_SIMULATED_CALLBACK_DELAY", default=0.05)
WHATSAPP_MAX_BODY_CHARS = 4096
MESSAGING_SIMULATED_CALLBACKS = True
# The outbox path of webhooks: a status callback is stored before anything else, so when its
# drain request is lost (Redis away) this periodic drain applies it; inbound media and call
# recordings whose download was never queued, or kept failing, are picked up the same way.
STATUS_DRAIN_INTERVAL_SECONDS = env.int("STATUS_DRAIN_INTERVAL_SECONDS", default=15)
MEDIA_PICKUP_INTERVAL_SECONDS = env.int("MEDIA_PICKUP_INTERVAL_SECONDS", default=60)
CELERY_BEAT_SCHEDULE["messaging-drain-status-events"] = {
    "task": "messaging.drain_status_events",
    "schedule": float(STATUS_DRAIN_INTERVAL_SECONDS),
    "options": {"queue": "messaging"},
}
CELERY_BEAT_SCHEDULE["messaging-fetch-pending-media"] = {
    "task": "messaging.fetch_pending_media",
    "schedule": float(MEDIA_PICKUP_INTERVAL_SECONDS),
    "options": {"queue": "messaging"},
}
CELERY_BEAT_SCHEDULE["messaging-close-open-attempts"] = {
    "task": "messaging.close_open_attempts",
    "schedule": 60.0,
    "options": {"queue": "messaging"},
}
# Broadcasts (docs/broadcasts.md): batches of recipients on the messaging queue.
BROADCAST_BATCH_SIZE = env.int("BROADCAST_BATCH_SIZE", default=200)
BROADCAST_PARALLEL_BATCHES = env.int("BROADCAST_PARALLEL_BATCHES", default=2)
BROADCAST_LEASE_SECONDS = env.int("BROADCAST_LEASE_SECONDS", default=120)
BROADCAST_MAX_BODY_BYTES = 32 * 1024 * 1024  # POST /api/broadcasts/: 100,000 inline recipients
# An inline list longer than this is checked in the request and inserted by the import task
# (broadcasts.import_recipients): the 201 comes after one compressed row, not 100,000.
BROADCAST_INLINE_INTAKE_MAX = env.int("BROADCAST_INLINE_INTAKE_MAX", default=5_000)
BROADCAST_PACED_BATCH_SECONDS = 2.0  # a paced batch (rate_per_second set) lasts about this long
# Provider calls a batch has under way at once (threads of the worker process, HTTP I/O).
BROADCAST_SEND_CONCURRENCY = env.int("BROADCAST_SEND_CONCURRENCY", default=8)
# After a 429 / 5xx without Retry-After: 1 s, 2 s, 4 s … (half of it random), at most this.
BROADCAST_BACKOFF_BASE_SECONDS = 1.0
BROADCAST_BACKOFF_MAX_SECONDS = 60.0
CELERY_BEAT_SCHEDULE["broadcasts-tick"] = {
    "task": "broadcasts.tick",
    "schedule": 30.0,
    "options": {"queue": "messaging"},
}
CELERY_BEAT_SCHEDULE["voice-fetch-pending-recordings"] = {
    "task": "voice.fetch_pending_recordings",
    "schedule": float(MEDIA_PICKUP_INTERVAL_SECONDS),
    "options": {"queue": "voice"},
}

# --- Monitoring (issue 8) -------------------------------------------------------------
# /metrics answers only to "Authorization: Bearer <METRICS_TOKEN>" when it is set.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- Dossier artifacts: storage backend (ARTIFACT_URL_TTL_SECONDS is read above) ------
ARTIFACT_STORAGE = env.str("ARTIFACT_STORAGE", default="filesystem")
if ARTIFACT_STORAGE == "s3":
    # django-storages' S3 backend: AWS S3 or any S3-compatible service (MinIO, R2…);
    # private objects, served through presigned URLs that expire.
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env.str("AWS_STORAGE_BUCKET_NAME", default=None),
            "endpoint_url": env.str("AWS_S3_ENDPOINT_URL", default="") or None,
            "access_key": env.str("AWS_ACCESS_KEY_ID", default=None),
            "secret_key": env.str("AWS_SECRET_ACCESS_KEY", default=None),
            "default_acl": None,
            "querystring_auth": True,
            "signature_version": "s3v4",  # what S3-compatible services (MinIO, R2) require
            "querystring_expire": ARTIFACT_URL_TTL_SECONDS,
            "file_overwrite": False,
        },
    }
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["ConsentChannelEnum"] = "dossiers.models.ConsentChannel"
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["ChannelEnum"] = "orchestrator.models.Channel"

# --- Voice agent ----------------------------------------------------------------------
VOICE_MODE = env.str("VOICE_MODE", default="conversationrelay")  # anything else: check comms.E005
VOICE_DEFAULT_LANGUAGE = env.str("VOICE_DEFAULT_LANGUAGE", default="en-US")
VOICE_DEFAULT_VOICE = env.str("VOICE_DEFAULT_VOICE", default="en-US-Journey-O")
VOICE_MAX_DURATION_SECONDS = env.int("VOICE_MAX_DURATION_SECONDS", default=600)
# A hand-off rings the available operator's phone this long before the caller hears the
# callback message (and the conversation waits for a callback).
VOICE_HANDOFF_DIAL_SECONDS = env.int("VOICE_HANDOFF_DIAL_SECONDS", default=20)
# How a hand-off reaches the operator: "phone" dials their phone number when they have one
# (else the console queue); "console" always puts the caller in a Twilio queue that the
# operator takes from the conversation page ("Take call").
VOICE_HANDOFF_TRANSFER = env.str("VOICE_HANDOFF_TRANSFER", default="phone")
# Test mode: the simulated callee stays silent this long after its first answer, so that an
# operator (or a browser test) can watch the live call and hang it up. 0: no pause.
VOICE_SIMULATED_HOLD_SECONDS = env.float("VOICE_SIMULATED_HOLD_SECONDS", default=0)
# How long the ConversationRelay URL in a call's TwiML may be used (once) to open the websocket.
VOICE_RELAY_URL_TTL_SECONDS = env.int("VOICE_RELAY_URL_TTL_SECONDS", default=120)
# The simulated Twilio signs its voice callbacks and websocket handshakes with the test-mode
# account SID and token set in the messaging block above; calls come from this number.
if TEST_MODE and not TWILIO_VOICE_CALLER_ID:
    TWILIO_VOICE_CALLER_ID = "+15005550006"

# --- Reliability and security (issue 9) -----------------------------------------------
# Requests per API key (token bucket shared through Redis; "0" turns throttling off).
API_THROTTLE_RATE = env.str("API_THROTTLE_RATE", default="200/s")
# Requests with an invalid API key per client address, as count/period; then 429 until the
# period ends (orchestrator/api/badkeys.py). "0" turns it off.
API_INVALID_KEY_LIMIT = env.str("API_INVALID_KEY_LIMIT", default="20/m")
# Seconds the Twilio SDK waits for an answer; a send without one is retried after asking
# Twilio whether the message arrived (agents/messaging/sending.py _reconcile).
TWILIO_TIMEOUT_SECONDS = env.float("TWILIO_TIMEOUT_SECONDS", default=10.0)

# --- Outbound event webhooks (event_webhooks/, docs/webhooks.md) --------------------------
INSTALLED_APPS += ["event_webhooks.apps.EventWebhooksConfig"]
WEBHOOK_QUEUE = "webhooks"
AGENT_QUEUES = [*AGENT_QUEUES, WEBHOOK_QUEUE]
# Seconds between attempts: after the 1st failure, the 2nd, … (Standard Webhooks' own
# schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h — about 27.6 h of retries in all).
WEBHOOK_RETRY_SCHEDULE = [
    float(s)
    for s in env.list(
        "WEBHOOK_RETRY_SCHEDULE", default=["5", "300", "1800", "7200", "18000", "36000", "36000"]
    )
]
WEBHOOK_RETRY_JITTER = env.float("WEBHOOK_RETRY_JITTER", default=0.1)  # ± this fraction of each delay
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10)
WEBHOOK_LEASE_MARGIN_SECONDS = env.float("WEBHOOK_LEASE_MARGIN_SECONDS", default=20)
# An endpoint failing without a single success for this long is disabled (5 days by default).
WEBHOOK_DISABLE_AFTER_SECONDS = env.int("WEBHOOK_DISABLE_AFTER_SECONDS", default=5 * 86400)
# Each process keeps the list of enabled endpoints this long (no query per published event).
WEBHOOK_ENDPOINT_CACHE_SECONDS = env.float("WEBHOOK_ENDPOINT_CACHE_SECONDS", default=5)
WEBHOOK_SECRET_OVERLAP_SECONDS = env.int("WEBHOOK_SECRET_OVERLAP_SECONDS", default=86400)
# Retries further ahead than this wait in the database for the sweep, not in the broker.
WEBHOOK_MAX_COUNTDOWN_SECONDS = env.float("WEBHOOK_MAX_COUNTDOWN_SECONDS", default=600)
WEBHOOK_SWEEP_INTERVAL_SECONDS = env.int("WEBHOOK_SWEEP_INTERVAL_SECONDS", default=30)
WEBHOOK_SWEEP_GRACE_SECONDS = env.float("WEBHOOK_SWEEP_GRACE_SECONDS", default=30)
CELERY_BEAT_SCHEDULE["webhooks-sweep"] = {
    "task": "event_webhooks.sweep",
    "schedule": float(WEBHOOK_SWEEP_INTERVAL_SECONDS),
    "options": {"queue": WEBHOOK_QUEUE},
}
