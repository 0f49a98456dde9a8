"""Settings, read from the environment.

With no variables set this is the embedded default: SQLite, django-q2's ORM
broker, a channel layer that needs no server, and files under ./var. Setting
DATABASE_URL and REDIS_URL switches to PostgreSQL, the Redis broker and
channels-redis for several web and worker processes.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from aiserver.env import (
    env_bool,
    env_int,
    env_list,
    env_str,
    env_url,
    env_urls,
    stored_secret,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "var"))).resolve()

SECRET_KEY = env_str("SECRET_KEY") or stored_secret(DATA_DIR / "secret_key")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

DATABASE_URL = env_url("DATABASE_URL", {"postgres", "postgresql", "sqlite"})
REDIS_URL = env_url("REDIS_URL", {"redis", "rediss", "unix"})

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_q",
    "django_htmx",
    "aiserver",
    "agents",
    "imagetotext",
]

# Django's own middleware, as subclasses that run their hooks in place in an async request
# (aiserver/middleware.py): the same behaviour, without a thread hop per hook.
MIDDLEWARE = [
    "aiserver.metrics.RequestCountMiddleware",  # first, so it counts every answer (/metrics)
    "aiserver.middleware.SecurityMiddleware",
    "aiserver.middleware.StaticFilesMiddleware",  # WhiteNoise, kept out of the async path
    "aiserver.middleware.SessionMiddleware",
    "aiserver.middleware.CommonMiddleware",
    "aiserver.middleware.CsrfViewMiddleware",
    "aiserver.middleware.AuthenticationMiddleware",
    "aiserver.middleware.MessageMiddleware",
    "aiserver.middleware.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "aiserver.urls"
ASGI_APPLICATION = "aiserver.asgi.application"

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

# Database -------------------------------------------------------------------

SQLITE_OPTIONS = {
    # WAL lets the web process read while the worker writes; IMMEDIATE
    # transactions and a busy timeout turn "database is locked" into waiting.
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}

# Any, not dj_database_url's TypedDict: the SQLite branch gives NAME as a Path.
DATABASES: dict[str, Any]
if DATABASE_URL and not DATABASE_URL.startswith("sqlite"):
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    sqlite_path = DATABASE_URL.removeprefix("sqlite:///") if DATABASE_URL else ""
    DATABASES = {
        "default": {
            # Django's SQLite backend; write transactions queue on a file lock (aiserver/sqlite).
            "ENGINE": "aiserver.sqlite",
            "NAME": Path(sqlite_path) if sqlite_path else DATA_DIR / "db.sqlite3",
            "OPTIONS": SQLITE_OPTIONS,
            # A file, not memory, so that a worker or server started by a test
            # in another process can be pointed at the same test database; one
            # per test run, so that runs side by side do not share it.
            "TEST": {"NAME": DATA_DIR / f"test-db-{os.getpid()}.sqlite3"},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Background work (django-q2) ------------------------------------------------

TASK_TIMEOUT = env_int("TASK_TIMEOUT", 1800, minimum=10)
# Worker processes; the built-in OCR agent runs one job per worker at a time.
WORKERS = env_int("WORKERS", 2, minimum=1)
# daphne processes `manage.py serve` starts on one listening socket: a web process runs its
# Python on one core at a time, and taking uploads costs CPU.
WEB_PROCESSES = env_int("WEB_PROCESSES", 2, minimum=1)
# Behind a reverse proxy: `manage.py serve` runs daphne with --proxy-headers, so the client's
# address and scheme (statusUrl's https://) come from X-Forwarded-For and X-Forwarded-Proto.
# Only when nothing but the proxy can reach the web port: any client could send them.
PROXY_HEADERS = env_bool("PROXY_HEADERS", False)
# Jobs one worker process keeps in flight on remote agents (each waits on its own thread).
JOBS_PER_WORKER = env_int("JOBS_PER_WORKER", 64, minimum=1)
Q_CLUSTER: dict[str, object] = {
    "name": "aiserver",
    "workers": WORKERS,
    # Delivery is at most once: a failed or timed-out task is not handed out
    # again by the broker. Retries and failover are the job's own business.
    "timeout": TASK_TIMEOUT,
    "retry": TASK_TIMEOUT + 60,
    "ack_failures": True,
    "max_attempts": 1,
    "catch_up": False,
    # A job is its own record: storing each successful run_job task too was two more writes per
    # job for the one writer SQLite allows. Failed tasks are still stored.
    "save_limit": -1,
    # The pusher claims up to this many tasks in one transaction (aiserver.broker).
    "bulk": 16,
    # Jobs outlive the task that starts them (they run on the worker's threads), so a worker
    # is not recycled after a number of tasks: it would wait for its jobs to end.
    "recycle": 10**9,
    "poll": 0.2,
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    # The ORM broker, woken by a new task instead of finding it at the next poll.
    Q_CLUSTER["broker_class"] = "aiserver.broker.DoorbellORM"

# Live updates (Channels) ----------------------------------------------------

# --- channel layer: begin
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    # Workers and the web process meet in a small SQLite file of their own:
    # no server, no migrations, and no waiting behind the app database's writes.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "aiserver.channel_layer.SQLiteChannelLayer",
            "CONFIG": {"path": env_str("CHANNELS_DB", str(DATA_DIR / "channels.sqlite3"))},
        }
    }
# --- channel layer: end

# Auth, i18n, static and media -----------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "image-to-text"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
# daphne serves no static files itself; WhiteNoise does, straight from the
# app and project folders, so no collectstatic step is needed to get going.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing root
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(DATA_DIR / "media"))).resolve()

# Agents ---------------------------------------------------------------------

OLLAMA_URLS = env_urls("OLLAMA_URLS", {"http", "https"})
COMFYUI_URLS = env_urls("COMFYUI_URLS", {"http", "https"})
AGENT_CHECK_TIMEOUT = env_int("AGENT_CHECK_TIMEOUT", 10, minimum=1)
# The built-in OCR agent runs in the workers; LOCAL_AGENT=0 switches it off.
LOCAL_AGENT = env_bool("LOCAL_AGENT", True)

# Image to Text (imagetotext/conf.py reads these).
IMAGE_MAX_BYTES = env_int("IMAGE_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
IMAGE_MAX_PIXELS = env_int("IMAGE_MAX_PIXELS", 50_000_000, minimum=10_000)
# Request bodies: aiserver/asgi.py refuses one larger than its route can need from its
# Content-Length, before reading it (and stops reading a chunked one there). A route needs one
# image as a file part, or in base64 in JSON (4/3 of it), plus room for the other fields.
REQUEST_FIELDS_MAX_BYTES = 1024 * 1024
UPLOAD_BODY_MAX_BYTES = IMAGE_MAX_BYTES + REQUEST_FIELDS_MAX_BYTES
JSON_BODY_MAX_BYTES = (IMAGE_MAX_BYTES + 2) // 3 * 4 + REQUEST_FIELDS_MAX_BYTES
# Batches (a ZIP, or many image parts): the most items, and bytes of images, one may hold.
BATCH_MAX_ITEMS = env_int("BATCH_MAX_ITEMS", 1000, minimum=1)
BATCH_MAX_BYTES = env_int("BATCH_MAX_BYTES", 2 * 1024**3, minimum=1024 * 1024)
BATCH_BODY_MAX_BYTES = BATCH_MAX_BYTES + REQUEST_FIELDS_MAX_BYTES
# A page submit is one image or a batch; a batch of many files sends each one's folder path
# beside it (a "paths" field), so Django's default of 100 files and 1,000 fields would cut it.
DATA_UPLOAD_MAX_NUMBER_FILES = BATCH_MAX_ITEMS
DATA_UPLOAD_MAX_NUMBER_FIELDS = BATCH_MAX_ITEMS + 100
PAGE_BODY_MAX_BYTES = max(BATCH_BODY_MAX_BYTES, UPLOAD_BODY_MAX_BYTES)
# What Django reads into memory (a JSON body, form fields): a JSON body with a base64 image fits.
DATA_UPLOAD_MAX_MEMORY_SIZE = JSON_BODY_MAX_BYTES
SYNC_WAIT_SECONDS = env_int("SYNC_WAIT_SECONDS", 300, minimum=1)
QUEUE_WAIT_SECONDS = env_int("QUEUE_WAIT_SECONDS", 900, minimum=60)
# A running job's process renews its lease every third of this; a job whose lease ran out
# (its process died) is taken up again.
JOB_LEASE_SECONDS = env_int("JOB_LEASE_SECONDS", 30, minimum=1)
# The most text a job keeps of a backend's answer; the rest is cut, and the result says so.
OUTPUT_MAX_CHARS = env_int("OUTPUT_MAX_CHARS", 1_000_000, minimum=1000)
API_RATE_LIMIT_PER_MINUTE = env_int("API_RATE_LIMIT_PER_MINUTE", 600, minimum=0)
CALLBACK_ALLOW_PRIVATE = env_bool("CALLBACK_ALLOW_PRIVATE", False)
# /v1/chat/completions may fetch http(s) image URLs (guarded like callbacks: no private
# addresses unless CALLBACK_ALLOW_PRIVATE); off by default, as Ollama refuses them.
OPENAI_IMAGE_URLS = env_bool("OPENAI_IMAGE_URLS", False)
CALLBACK_SECRET = env_str("CALLBACK_SECRET") or SECRET_KEY

# Finished jobs (and the images only they used) are deleted this many days after they ended,
# by a daily task (imagetotext/retention.py); 0 keeps everything.
RETENTION_DAYS = env_int("RETENTION_DAYS", 0, minimum=0)

# Metrics --------------------------------------------------------------------

# With a token set, /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`.
METRICS_TOKEN = env_str("METRICS_TOKEN")
# Each process counts its HTTP requests in files here, which /metrics sums (prometheus-client's
# multiprocess mode reads the variable as it is imported). One folder per host, as DATA_DIR may
# be shared and the files are named by process id; always set from DATA_DIR, so that a process
# started with another DATA_DIR does not count into its parent's. `serve` empties it at start.
PROMETHEUS_MULTIPROC_DIR = DATA_DIR / "prometheus" / socket.gethostname()
PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(PROMETHEUS_MULTIPROC_DIR)

# Logs -----------------------------------------------------------------------

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
# text: one readable line per record; json: one JSON object per line, for log shippers.
LOG_FORMAT = env_str("LOG_FORMAT", "text").lower()
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}")
# httpx logs every request at INFO ("HTTP Request: GET ..."), a line per agent check each
# minute; they show only when LOG_LEVEL=DEBUG asks for everything.
HTTP_CLIENT_LOG_LEVEL = "DEBUG" if LOG_LEVEL == "DEBUG" else "WARNING"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "aiserver.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "httpx": {"level": HTTP_CLIENT_LOG_LEVEL},
        "httpcore": {"level": HTTP_CLIENT_LOG_LEVEL},
    },
}
