"""Settings for chatsite, all read from the environment (and `.env` when present).

Every variable is listed in `.env.example`. The embedded defaults run the whole site
on one machine with nothing else installed: SQLite, the in-memory channel layer,
local media and the offline demo model.
"""

from datetime import timedelta
from pathlib import Path

import environ

from chatsite import secretkey

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# An operator's environment wins over the file; the file is a convenience for dev.
# `.env` is optional: without one nothing is read and nothing is logged about it.
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# No usable default: without DJANGO_SECRET_KEY only DEBUG runs (on a public key);
# otherwise the server refuses to start (chatsite/secretkey.py).
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or secretkey.DEV_SECRET_KEY
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list(
    "DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"]
)
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
# The JSON API answers a failed CSRF check in JSON (conversations/api_views.py).
CSRF_FAILURE_VIEW = "conversations.api_views.csrf_failure"

INSTALLED_APPS = [
    "daphne",  # must precede staticfiles so `runserver` is the ASGI one
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "storages",
    "axes",  # failed log-in throttling and lock-outs
    "chatsite.apps.ChatsiteConfig",  # the project's system checks
    "conversations",
    "imaging",
    "attachments",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "chatsite.middleware.ContentSecurityPolicyMiddleware",
    # Last: turns a locked-out log-in into the lock-out page (django-axes).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

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
                "django.template.context_processors.i18n",
            ],
        },
    },
]

DATABASES = {
    # An empty DATABASE_URL (as in a copied .env.example) means the SQLite default too.
    "default": environ.Env.db_url_config(
        env.str("DATABASE_URL", default="") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
    ),
}
# Reuse connections between requests; the reply stream's few writes benefit too.
DATABASES["default"].setdefault(
    "CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60)
)
# A reused connection is checked (`SELECT 1`) before use, so one that broke while the
# database restarted is replaced instead of failing a websocket handshake.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool(
    "DATABASE_HEALTH_CHECKS", default=True
)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several writers (generation tasks, requests) share one file: wait, don't fail.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL;",
        }
    )
    # A file, not memory, so end-to-end tests can share it with a daphne subprocess.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test_db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
# Namespace of the chat's keys and channels in Redis (sites sharing one Redis need
# distinct ones).
CHAT_LIVE_PREFIX = env.str("CHAT_LIVE_PREFIX", default="cs")
# Dialogue events, reply.stop and the live text of replies in flight all go through
# the project's channel layer (conversations/realtime/): Redis with REDIS_URL, this
# process's memory without (one process).
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "conversations.realtime.layer.ChatLayer",
        "CONFIG": {
            "url": REDIS_URL or None,
            "prefix": CHAT_LIVE_PREFIX,
            # Messages a socket may have waiting before new ones are dropped.
            "capacity": 1000,
        },
    }
}
# Counters every process must share (the sign-up throttle) live in Redis when it is set.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CHAT_LIVE_PREFIX,
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# --- Authentication throttling --------------------------------------------------------
# django-axes counts failed log-ins per account and per address, each on its own
# (the client address is REMOTE_ADDR: run daphne with --proxy-headers behind a proxy).
# A lock lasts LOGIN_LOCKOUT_MINUTES (0: until staff lift it in the admin's "Access
# attempts" or with `manage.py axes_reset`).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
_lockout_minutes = env.float("LOGIN_LOCKOUT_MINUTES", default=15.0)
AXES_COOLOFF_TIME = timedelta(minutes=_lockout_minutes) if _lockout_minutes else None
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
# Off: "invite only", staff create accounts in the admin (Users > Add).
SIGNUP_ENABLED = env.bool("SIGNUP_ENABLED", default=True)
# Accounts created per client address per hour (0: no limit).
SIGNUP_RATE_PER_HOUR = env.int("SIGNUP_RATE_PER_HOUR", default=10)
# Open sockets re-check their session at least this often (a session deleted in the
# admin or by clearsessions sends no event; log-out, password change and
# deactivation close them within seconds).
SESSION_RECHECK_SECONDS = env.float("SESSION_RECHECK_SECONDS", default=60.0)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"  # Django's default is America/Chicago
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "media")

# --- Storage: local media by default; Aliyun OSS (or any S3-compatible store) -----
# Friendly OSS_* names map onto django-storages' AWS_* ones; AWS_* win when both are set.
OSS_BUCKET = env.str("OSS_BUCKET", default="")
# Accept "cn-hangzhou" as well as the "oss-cn-hangzhou" spelling of the OSS console.
_oss_region = env.str("OSS_REGION", default="").removeprefix("oss-")
_oss_endpoint = env.str("OSS_ENDPOINT", default="")
if _oss_endpoint and "://" not in _oss_endpoint:
    _oss_endpoint = f"https://{_oss_endpoint}"
if not _oss_endpoint and OSS_BUCKET and _oss_region:
    # OSS's S3-compatible endpoint (docs/stack-notes.md).
    _oss_endpoint = f"https://s3.oss-{_oss_region}.aliyuncs.com"
# `or`, not default=: an empty AWS_* line copied from .env.example must not hide OSS_*.
AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="") or OSS_BUCKET
AWS_S3_REGION_NAME = env.str("AWS_S3_REGION_NAME", default="") or _oss_region or None
AWS_S3_ENDPOINT_URL = (
    env.str("AWS_S3_ENDPOINT_URL", default="") or _oss_endpoint or None
)
AWS_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", default="") or env.str(
    "OSS_ACCESS_KEY_ID", default=""
)
AWS_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", default="") or env.str(
    "OSS_ACCESS_KEY_SECRET", default=""
)
# Lifetime of the presigned link the image view redirects to (private by default).
IMAGE_URL_EXPIRE_SECONDS = env.int("IMAGE_URL_EXPIRE_SECONDS", default=300)
_static_storage = {
    "BACKEND": env.str(
        "STATICFILES_BACKEND",
        default="whitenoise.storage.CompressedManifestStaticFilesStorage",
    )
}
if AWS_STORAGE_BUCKET_NAME:
    from botocore.config import Config as _BotoConfig

    STORAGES = {
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": AWS_STORAGE_BUCKET_NAME,
                "endpoint_url": AWS_S3_ENDPOINT_URL,
                "region_name": AWS_S3_REGION_NAME,
                "access_key": AWS_ACCESS_KEY_ID,
                "secret_key": AWS_SECRET_ACCESS_KEY,
                "location": env.str("AWS_LOCATION", default=""),
                # Private objects; the image view hands out short-lived signed links.
                "default_acl": None,
                "querystring_auth": True,
                "querystring_expire": IMAGE_URL_EXPIRE_SECONDS,
                "file_overwrite": False,
                # A client_config replaces django-storages' addressing_style and
                # signature_version options, so both live here. OSS rejects the
                # aws-chunked uploads boto3 sends by default: checksums only when
                # required (docs/stack-notes.md). With an IP endpoint (moto in tests)
                # boto3 falls back to path style by itself.
                "client_config": _BotoConfig(
                    s3={
                        "addressing_style": env.str(
                            "AWS_S3_ADDRESSING_STYLE", default="virtual"
                        )
                    },
                    signature_version="s3v4",
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    connect_timeout=env.float("AWS_S3_CONNECT_TIMEOUT", default=5.0),
                    read_timeout=env.float("AWS_S3_READ_TIMEOUT", default=30.0),
                    retries={"max_attempts": 3, "mode": "standard"},
                ),
            },
        },
        "staticfiles": _static_storage,
    }
else:
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": _static_storage,
    }

# --- Images -----------------------------------------------------------------------
# Largest picture accepted from a provider (base64 or downloaded), in bytes.
IMAGE_MAX_BYTES = env.int("IMAGE_MAX_BYTES", default=20 * 1024 * 1024)
# Provider URLs expire, so they are downloaded at once, within this time.
IMAGE_DOWNLOAD_TIMEOUT = env.float("IMAGE_DOWNLOAD_TIMEOUT", default=30.0)
# Provider URLs may only lead to public addresses (imaging/download.py). Optionally
# only these hosts (`img.example.com`, `*.example.com`); and networks allowed although
# private, for a provider on the operator's own network (e.g. 10.0.0.0/8).
IMAGE_DOWNLOAD_HOSTS = env.list("IMAGE_DOWNLOAD_HOSTS", default=[])
IMAGE_DOWNLOAD_ALLOWED_NETWORKS = env.list(
    "IMAGE_DOWNLOAD_ALLOWED_NETWORKS", default=[]
)
# SDK retries on 429/5xx/timeouts; each try may take IMAGE_TIMEOUT, so keep it low.
IMAGE_MAX_RETRIES = env.int("IMAGE_MAX_RETRIES", default=1)
IMAGE_PROMPT_MAX_CHARS = env.int("IMAGE_PROMPT_MAX_CHARS", default=4000)

# --- Attachments (pictures for vision models, documents) -----------------------------
# Limits in bytes; 0 for the daily quota means none. Uploads go to temporary files,
# never whole into memory, then to the default storage (the same as images).
ATTACHMENT_MAX_FILE_BYTES = env.int("ATTACHMENT_MAX_FILE_BYTES", default=20 * 1024**2)
ATTACHMENT_MAX_MESSAGE_BYTES = env.int(
    "ATTACHMENT_MAX_MESSAGE_BYTES", default=50 * 1024**2
)
ATTACHMENT_MAX_PER_MESSAGE = env.int("ATTACHMENT_MAX_PER_MESSAGE", default=10)
ATTACHMENT_DAILY_BYTES = env.int("ATTACHMENT_DAILY_BYTES", default=200 * 1024**2)
# Pictures are re-encoded no larger than this on their longer side (vision models
# scale down to about 2048 anyway); more pixels than the cap is refused unread
# (a decompression bomb).
ATTACHMENT_IMAGE_MAX_SIDE = env.int("ATTACHMENT_IMAGE_MAX_SIDE", default=2048)
ATTACHMENT_IMAGE_MAX_PIXELS = env.int("ATTACHMENT_IMAGE_MAX_PIXELS", default=50_000_000)
# Text kept from one document (more than any context window holds), PDF pages read.
ATTACHMENT_MAX_TEXT_CHARS = env.int("ATTACHMENT_MAX_TEXT_CHARS", default=400_000)
ATTACHMENT_PDF_MAX_PAGES = env.int("ATTACHMENT_PDF_MAX_PAGES", default=500)
# With OSS/S3 storage: hand the model provider a presigned URL of a picture instead
# of a data URL. Only when the provider can reach the bucket (not a local model).
ATTACHMENT_PROVIDER_FETCHES_URLS = env.bool(
    "ATTACHMENT_PROVIDER_FETCHES_URLS", default=False
)
ATTACHMENT_PROVIDER_URL_SECONDS = env.int(
    "ATTACHMENT_PROVIDER_URL_SECONDS", default=900
)

# --- Models --------------------------------------------------------------------------
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="")
# "name", "name:context_tokens" or either with ":vision" (the model sees pictures),
# comma separated.
CHAT_MODELS = env.str("CHAT_MODELS", default="")
DEFAULT_CHAT_MODEL = env.str("DEFAULT_CHAT_MODEL", default="")
# The images provider, when it is not the chat one (chat on llama.cpp or Ollama,
# which have no images API, and drawing at OpenAI). Empty: the chat provider's.
IMAGE_BASE_URL = env.str("IMAGE_BASE_URL", default="")
IMAGE_API_KEY = env.str("IMAGE_API_KEY", default="")
IMAGE_MODEL = env.str("IMAGE_MODEL", default="gpt-image-1")
IMAGE_SIZES = env.list("IMAGE_SIZES", default=["1024x1024", "1024x1536", "1536x1024"])
IMAGE_TOOL_ENABLED = env.bool("IMAGE_TOOL_ENABLED", default=True)
LLM_CONNECT_TIMEOUT = env.float("LLM_CONNECT_TIMEOUT", default=10.0)
# Longest silence between two chunks before the reply is failed (not the SDK's 600 s).
LLM_INACTIVITY_TIMEOUT = env.float("LLM_INACTIVITY_TIMEOUT", default=60.0)
LLM_MAX_RETRIES = env.int("LLM_MAX_RETRIES", default=2)
LLM_DEFAULT_CONTEXT_TOKENS = env.int("LLM_DEFAULT_CONTEXT_TOKENS", default=8192)
LLM_OUTPUT_RESERVE_TOKENS = env.int("LLM_OUTPUT_RESERVE_TOKENS", default=1024)
IMAGE_TIMEOUT = env.float("IMAGE_TIMEOUT", default=120.0)
# Offline demo pace, tokens per second.
DEMO_TOKENS_PER_SECOND = env.float("DEMO_TOKENS_PER_SECOND", default=40.0)

# --- Chat limits -----------------------------------------------------------------------
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=32000)
CHAT_RATE_LIMIT_PER_MINUTE = env.int("CHAT_RATE_LIMIT_PER_MINUTE", default=20)
# Frames above this close the socket (4009); daphne itself refuses frames over 1 MiB.
CHAT_MAX_FRAME_BYTES = env.int("CHAT_MAX_FRAME_BYTES", default=256 * 1024)
CHAT_DELTA_WINDOW_MS = env.int("CHAT_DELTA_WINDOW_MS", default=40)
CHAT_CHECKPOINT_SECONDS = env.float("CHAT_CHECKPOINT_SECONDS", default=1.0)
# How long the final save of a reply is retried while the database is unreachable.
CHAT_FINAL_SAVE_RETRY_SECONDS = env.float("CHAT_FINAL_SAVE_RETRY_SECONDS", default=30.0)
# Threads (each with its own connection) for database calls from async code. Few:
# their ORM work holds the GIL, and more threads only delay the streams' frames.
CHAT_DB_THREADS = env.int("CHAT_DB_THREADS", default=4)
# Sends being set up at once per process (storing, context, the model request);
# more wait their turn, so a burst of sends delays first deltas, not running streams.
CHAT_SEND_CONCURRENCY = env.int("CHAT_SEND_CONCURRENCY", default=2)
CHAT_PAGE_SIZE = env.int("CHAT_PAGE_SIZE", default=50)
# --- Import (issue 18): the largest file a user may import, zip contents included.
# Matches nginx's client_max_body_size (deploy/); the file is parsed in memory.
CHAT_IMPORT_MAX_BYTES = env.int("CHAT_IMPORT_MAX_BYTES", default=20_000_000)
# Daily quotas per user; 0 means unlimited. Overridable per user in the admin.
QUOTA_DAILY_TOKENS = env.int("QUOTA_DAILY_TOKENS", default=0)
QUOTA_DAILY_MESSAGES = env.int("QUOTA_DAILY_MESSAGES", default=0)
# Pictures per user per day (image.generate, /image and the model's image tool).
QUOTA_DAILY_IMAGES = env.int("QUOTA_DAILY_IMAGES", default=0)
# --- Per-user bounds (issue 14; README "Limits"). Sliding windows: at most N in any
# hour, whatever the clock says. 0 = unlimited.
CHAT_REPORTS_PER_HOUR = env.int("CHAT_REPORTS_PER_HOUR", default=30)
CHAT_DIALOGUES_PER_HOUR = env.int("CHAT_DIALOGUES_PER_HOUR", default=120)
# Every reply ends by these, whatever the provider does: tokens written (all tool
# rounds together; also the `max_tokens` asked for), seconds in all, and tool calls
# run (the model's further calls are answered as refused).
CHAT_MAX_REPLY_TOKENS = env.int("CHAT_MAX_REPLY_TOKENS", default=8192)
CHAT_MAX_REPLY_SECONDS = env.float("CHAT_MAX_REPLY_SECONDS", default=300.0)
CHAT_MAX_TOOL_CALLS = env.int("CHAT_MAX_TOOL_CALLS", default=3)
# Open sockets per user on all processes; one more is closed with 4429.
CHAT_MAX_SOCKETS_PER_USER = env.int("CHAT_MAX_SOCKETS_PER_USER", default=30)
# Socket reads (dialogue.open, dialogue.history) of one user running at once per
# process: a flood of them waits behind its own work, not everyone's.
CHAT_USER_READS = env.int("CHAT_USER_READS", default=2)

# --- Production hardening (all off by default so `make run` works over plain http) --
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https")
    if env.bool("DJANGO_BEHIND_TLS_PROXY", default=False)
    else None
)
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
# Load balancers probe backends over plain http.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# Preload is a commitment to browsers that is slow to undo; ask for it explicitly.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Fail fast when PostgreSQL is unreachable instead of waiting on TCP (libpq: none).
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5)
    )
# /healthz bounds each probe; `?detail=1` (pid, RSS, tasks) only when this is on.
HEALTHZ_TIMEOUT_SECONDS = env.float("HEALTHZ_TIMEOUT_SECONDS", default=2.0)
HEALTHZ_DETAIL = env.bool("HEALTHZ_DETAIL", default=False)
# On SIGTERM, in-flight replies get this long to finish before being interrupted.
CHAT_SHUTDOWN_GRACE_SECONDS = env.float("CHAT_SHUTDOWN_GRACE_SECONDS", default=20.0)

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="text")  # "json" for structured logs
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "chatsite.logging.JsonFormatter"},
    },
    # The same record over and over (one client failing every frame) is dropped
    # after 5 a minute per message template, with a count (chatsite/logging.py).
    "filters": {"repeats": {"()": "chatsite.logging.RepeatFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["repeats"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
