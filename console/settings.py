"""Settings for Instance Console.

Every knob comes from the environment (listed with its default in README.md).
With nothing set the console runs in its embedded mode: SQLite under var/, an
in-process broker, worker and channel layer, and a dev secret kept under var/.
"""

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from console.paths import BASE_DIR, secret_path, var_dir

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    """A yes/no setting; anything else is an error at start, never silently false."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value not in TRUE + FALSE:
        raise ImproperlyConfigured(f"{name} must be true or false (or 1/0, yes/no, on/off), not {value!r}.")
    return value in TRUE


def envint(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}.") from None


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


VAR_DIR = var_dir()


def _secret_key() -> tuple[str, bool]:
    """SECRET_KEY from the environment, else the one kept under var/ (manage.py creates it); else a
    key for this process only, which a system check warns about."""
    if env("SECRET_KEY"):
        return env("SECRET_KEY"), False
    try:
        return secret_path().read_text().strip(), False
    except FileNotFoundError:
        return secrets.token_urlsafe(50), True


SECRET_KEY, SECRET_KEY_EPHEMERAL = _secret_key()
DEBUG = envbool("DEBUG", False)
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

REDIS_URL = env("REDIS_URL")
# "embedded": everything in one process, no Redis needed. "production": Redis
# carries tasks and live events, workers run apart.
CONSOLE_MODE = env("CONSOLE_MODE", "production" if REDIS_URL else "embedded")
if CONSOLE_MODE not in ("embedded", "production"):
    raise ValueError(f"CONSOLE_MODE must be 'embedded' or 'production', not {CONSOLE_MODE!r}")
if CONSOLE_MODE == "production" and not REDIS_URL:
    raise ValueError("CONSOLE_MODE=production needs REDIS_URL")

INSTALLED_APPS = [
    "console.web.apps.ConsoleAdminConfig",  # django.contrib.admin with the console's site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_celery_beat",
    "channels",
    "console.instances",
    "console.audit",
    "console.live",
    "console.alerts",
    "console.accounts",
    "console.host",
    "console.telemetry",
    "console.operations",
    "console.watchdog",
    "console.schedules",
    "console.api",
    "console.embedded",
    "console.web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "console.accounts.middleware.UserLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "console.urls"
ASGI_APPLICATION = "console.asgi.application"

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

_sqlite_default = f"sqlite:///{VAR_DIR / 'console.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(env("DATABASE_URL", _sqlite_default), conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded worker writes from threads while pages read: WAL and an
    # immediate write lock keep them from failing with "database is locked".
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
else:
    # A connection kept across requests and tasks is checked before use: after a database
    # restart the next request or task reconnects instead of failing.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
# Failed sign-ins for one account from one address before a lockout (4x that per address).
LOGIN_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", 5)
# Failed sign-ins for one account from any address before a lockout: no change of address escapes it.
LOGIN_ACCOUNT_FAILURE_LIMIT = envint("LOGIN_ACCOUNT_FAILURE_LIMIT", 20)
LOGIN_LOCKOUT_SECONDS = envint("LOGIN_LOCKOUT_SECONDS", 900)
LOGIN_REDIRECT_URL = "instances:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env("CONSOLE_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env("STATIC_ROOT", str(VAR_DIR / "static")))
# The ASGI app serves /static/ itself unless a reverse proxy does.
CONSOLE_SERVE_STATIC = envbool("CONSOLE_SERVE_STATIC", True)

# Behind HTTPS (a reverse proxy terminating TLS): secure cookies, redirects to https and HSTS.
# `manage.py check --deploy` is clean with CONSOLE_HTTPS=true and a real SECRET_KEY.
CONSOLE_HTTPS = envbool("CONSOLE_HTTPS", False)
SESSION_COOKIE_SECURE = envbool("SECURE_COOKIES", CONSOLE_HTTPS)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
if CONSOLE_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", True)
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie
CSRF_FAILURE_VIEW = "console.web.views.errors.csrf_failure"  # JSON for the API
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# Celery: tasks are acked only once done, so a worker killed mid-restart has
# its task redelivered and the Operation is finished rather than lost.
CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# JSON only: a message planted in Redis can carry data, never code.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "console"
# A task whose worker died is redelivered after the visibility timeout; a live
# worker's operation is protected from a second run by its heartbeat, so the
# timeout can be short and a lost restart resumes within about a minute.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", 60),
    "unacked_restore_interval": 5,
    "unacked_restore_throttle": 1,
}
# An operation whose worker has not written its heartbeat for this long is
# taken over by the next delivery of its task.
CONSOLE_HEARTBEAT_STALE_SECONDS = envint("CONSOLE_HEARTBEAT_STALE_SECONDS", 30)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "console.schedules.beat:Scheduler"
# How often an open WebSocket checks again that its session and role still allow it.
CONSOLE_WS_RECHECK_SECONDS = envint("CONSOLE_WS_RECHECK_SECONDS", 60)
# An engine with work that generates no token this long is checked with a one-token request, which
# must be answered in CONSOLE_STALL_PROBE_SECONDS (vLLM: its /health says 200 while it hangs).
CONSOLE_STALL_SECONDS = envint("CONSOLE_STALL_SECONDS", 30)
CONSOLE_STALL_PROBE_SECONDS = envint("CONSOLE_STALL_PROBE_SECONDS", 10)
# Threads in the embedded worker: enough that one slow restart does not hold
# up the others.
CONSOLE_WORKER_CONCURRENCY = envint("CONSOLE_WORKER_CONCURRENCY", 8)


def channel_layer_hosts(url: str) -> list[dict]:
    """redis-py 8 gives a connection a 5 s read timeout by default; channels-redis's list-based layer
    waited in 5 s blocking pops, so a socket with nothing to send for 5 s died of "Timeout reading".
    A longer read timeout, still bounded so that a Redis gone away is noticed."""
    return [{"address": url, "socket_timeout": 15}]


# Redis pub/sub: an event for a group is published once, and each console process hands it to its
# open pages; the list-based layer pushed one copy per page into Redis and each was popped on its own
# (at 100 instances and 50 dashboards that fan-out was most of a sample's way to the browser:
# docs/BENCHMARKS.md, scale). Nothing is kept for a page that is not reading: live events are best
# effort (the database holds the truth), and a page that reads slowly loses its oldest events from
# its own bounded queue (console/live/consumers.py), never slowing the samplers or other pages.
CHANNEL_LAYER_BACKEND = "channels_redis.pubsub.RedisPubSubChannelLayer"
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": CHANNEL_LAYER_BACKEND, "CONFIG": {"hosts": channel_layer_hosts(REDIS_URL)}}
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 200}}}

# Where the process runtime keeps each instance's pid file and log.
CONSOLE_INSTANCE_DIR = Path(env("CONSOLE_INSTANCE_DIR", str(VAR_DIR / "instances")))
# What containers the console creates may use: host paths they may bind (read-only; never the
# Docker socket) and network modes besides a bridge network ("host", "container", "none").
CONSOLE_BIND_SOURCES = envlist("CONSOLE_BIND_SOURCES", "/srv/models")
CONSOLE_NETWORK_MODES = envlist("CONSOLE_NETWORK_MODES", "")
# Name of the host this process runs on (its worker serves host.<name>).
CONSOLE_HOST_NAME = env("CONSOLE_HOST_NAME", "local")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "celery.worker.strategy": {"level": "WARNING"},
    },
}

# Alert emails go through Django's email backend: SMTP unless set otherwise, its whole exchange within
# EMAIL_TIMEOUT (console/alerts/mail.py), as a webhook's.
EMAIL_BACKEND = env("EMAIL_BACKEND", "console.alerts.mail.DeadlineEmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "instance-console@localhost")

# Telemetry: how often each host samples its instances, and how long samples are kept.
TELEMETRY_SAMPLE_SECONDS = envint("TELEMETRY_SAMPLE_SECONDS", 5)
TELEMETRY_RAW_RETENTION = envint("TELEMETRY_RAW_RETENTION", 24 * 3600)
TELEMETRY_MINUTE_RETENTION = envint("TELEMETRY_MINUTE_RETENTION", 30 * 24 * 3600)
# An operation's effect: its figures over this many seconds before it against as many after it, from
# a settling time on (console/operations/effect.py).
OPERATION_EFFECT_WINDOW_SECONDS = envint("OPERATION_EFFECT_WINDOW_SECONDS", 300)
OPERATION_EFFECT_SETTLE_SECONDS = envint("OPERATION_EFFECT_SETTLE_SECONDS", 30)
# "Only those that need it" (a schedule, a group restart) and only_if_needed: an instance whose p95 is
# this many percent above its baseline is restarted even where Diagnose, which waits for twice, still
# calls it healthy: a nightly restart is cheap next to a day of slower answers.
ONLY_IF_NEEDED_SLOWER_PERCENT = envint("ONLY_IF_NEEDED_SLOWER_PERCENT", 50)

# An instance's log (a local process's file, a container's json-file log): rotated at this size, this
# many older files kept beside it. A log that is never rotated fills the disk (or its inodes) until
# the server blocks on a write. 0: never rotated by the console (a container's log as its daemon says).
INSTANCE_LOG_MAX_BYTES = envint("INSTANCE_LOG_MAX_BYTES", 20 * 2**20)
INSTANCE_LOG_BACKUPS = envint("INSTANCE_LOG_BACKUPS", 3)

# The log follower's recent lines and other small shared state: Redis when
# there is one (the worker writes, the web process reads), else this process.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"serializer": "console.serializers.JSONSerializer"},  # never pickle
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BEAT_SCHEDULE = {
    "recover-operations": {"task": "console.operations.tasks.recover", "schedule": 60.0},
    "sample-instances": {
        "task": "console.telemetry.tasks.sample_all",
        "schedule": float(TELEMETRY_SAMPLE_SECONDS),
        "options": {"expires": TELEMETRY_SAMPLE_SECONDS},
    },
    "rollup-samples": {"task": "console.telemetry.tasks.rollup_and_prune", "schedule": 60.0},
    "settle-effects": {"task": "console.operations.tasks.settle_effects", "schedule": 60.0},
    "schedule-reports": {"task": "console.schedules.tasks.send_reports", "schedule": 60.0},
}
