"""Configuration: the only place that reads the environment.

Every process (web, workers, archiver, demo bots) builds one frozen
:class:`Settings` with :meth:`Settings.from_env` and passes it down
explicitly; tests build it directly.

Each setting is declared once, as a dataclass field whose ``metadata`` holds an
:class:`Env`: the variable's name, how to parse and write it back, and what it means.
:meth:`Settings.from_env` and :meth:`Settings.to_env` are one loop each over
``dataclasses.fields``, so a new setting is one line here (and one row in README's
Configuration table, which ``tests/test_settings.py`` checks).

Why not pydantic-settings: it is not a dependency of ours and would be one more for a
job that is one small loop; the frozen dataclass is what every process and test
already builds, compares and ``replace``-s; and the error messages (which name the
variable and say how to fix it) are ours to word.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import sys
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from server.domain.errors import ConfigError
from server.settings.env import (
    DEFAULT_WAIT_THRESHOLDS,
    UNSET,
    Env,
    Reading,
    app_keys,
    app_keys_text,
    at_least_one,
    boolean,
    dev_env,
    flag,
    ints,
    joined,
    networks,
    number,
    optional,
    or_leave_out,
    origins,
    rate,
    rate_text,
    routes,
    routes_text,
    setting,
    short_float,
    stripped,
    text_or_default,
    thresholds,
    upper,
    url,
    whole,
    whsec_list,
    words,
)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_BOT_API_URL = "http://127.0.0.1:9999"
#: services whose bot API is not BOT_API_URL: the Node.js demo bot (bots/js/demo) serves one
DEFAULT_BOT_API_URLS: Mapping[str, str] = {"parcel-tracking": "http://127.0.0.1:9998"}
#: seconds a record lives after its last change (REQUEST_TTL); RecordStore's default too
REQUEST_TTL = 1800
#: in a Redis Cluster every RQ key must share one hash slot
CLUSTER_RQ_PREFIX = "{rq}"
#: a PostgreSQL schema name Longrun may use unquoted (DATABASE_SCHEMA)
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def new_webhook_secret() -> str:
    """A fresh Standard Webhooks secret (``whsec_`` + base64 of 32 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_app_key() -> str:
    """A fresh application API key (``lrk_`` + 256 random bits) for ``APP_API_KEYS``."""
    return "lrk_" + secrets.token_urlsafe(32)


# Fallbacks: defaults that depend on dev mode or on another setting.


def _generated_secret_key(r: Reading) -> str:
    if not r.dev:
        raise ConfigError(
            "SECRET_KEY is not set. It signs session cookies; set it to a long random "
            "string (or LONGRUN_ENV=dev to have one generated)."
        )
    r.notes.append("SECRET_KEY generated for this process (dev mode): sessions end on restart")
    return secrets.token_urlsafe(32)


def _generated_webhook_secrets(r: Reading) -> tuple[str, ...]:
    if not r.dev:
        raise ConfigError(
            "BOT_WEBHOOK_SECRET is not set. Bots sign their events with it; set one or "
            "more space-separated whsec_<base64> secrets (or LONGRUN_ENV=dev to generate)."
        )
    r.notes.append("BOT_WEBHOOK_SECRET generated for this process (dev mode)")
    return (new_webhook_secret(),)


@dataclass(frozen=True)
class Settings:
    """Everything a Longrun process needs to know, read once at start-up."""

    secret_key: str = setting("SECRET_KEY", parse=stripped, fallback=_generated_secret_key, doc="signs session cookies")
    webhook_secrets: tuple[str, ...] = setting(
        "BOT_WEBHOOK_SECRET",
        parse=whsec_list,
        unparse=joined,
        fallback=_generated_webhook_secrets,
        doc="whsec_… secrets bots sign their events with; several space-separated to rotate",
    )
    redis_url: str = setting("REDIS_URL", DEFAULT_REDIS_URL, parse=text_or_default)
    redis_cluster: bool = setting(
        "REDIS_CLUSTER", False, parse=flag, unparse=boolean,
        doc="REDIS_URL names a node of a Redis Cluster (requires RQ_KEY_PREFIX={rq}, see connections.py)",
    )  # fmt: skip
    database_url: str | None = setting(
        "DATABASE_URL", None, parse=optional, unparse=or_leave_out, doc="PostgreSQL for the archive"
    )
    database_schema: str = setting(
        "DATABASE_SCHEMA", "public", parse=lambda n, raw: raw.strip() if raw else UNSET,
        doc="PostgreSQL schema holding the archive (tests use one each)",
    )  # fmt: skip
    archive_retention_days: int = setting(
        "ARCHIVE_RETENTION_DAYS", 365, parse=whole, doc="days of history kept (0 keeps everything)"
    )
    archive_retention_interval: float = setting(
        "ARCHIVE_RETENTION_INTERVAL", 3600.0, parse=number, unparse=short_float,
        doc="seconds between the archiver's retention runs",
    )  # fmt: skip
    archive_batch: int = setting("ARCHIVE_BATCH", 2000, parse=whole, doc="records the archiver writes per transaction")
    bot_api_url: str = setting("BOT_API_URL", DEFAULT_BOT_API_URL, parse=url)
    bot_api_urls: Mapping[str, str] = setting(
        "BOT_API_URLS", parse=routes, unparse=routes_text, default_factory=lambda: dict(DEFAULT_BOT_API_URLS),
        doc="bot APIs of single services (`slug=url`, space-separated), instead of BOT_API_URL; "
        "blank: every service at BOT_API_URL",
    )  # fmt: skip
    bot_api_timeout: float = setting("BOT_API_TIMEOUT", 180.0, parse=number)
    request_ttl: int = setting(
        "REQUEST_TTL", REQUEST_TTL, parse=whole, doc="seconds a record lives after its last change"
    )
    host: str = setting("HOST", "127.0.0.1")
    port: int = setting("PORT", 8080, parse=whole)
    dev_mode: bool = setting(
        "LONGRUN_ENV", False, parse=dev_env, unparse=lambda dev: "dev" if dev else "production",
        doc="dev generates missing secrets",
    )  # fmt: skip
    demo_mode: bool = setting(
        "DEMO_MODE", False, parse=flag, unparse=boolean, fallback=lambda r: r.dev,
        doc="the progress page links to the demo bots' outbox (the stand-in for a phone)",
    )  # fmt: skip
    key_prefix: str = setting(
        "KEY_PREFIX", "",
        doc="prefix for every Redis key and RQ queue name; empty in production so that the original "
        "`local_request:…` layout stays readable by existing bots. Tests set one each.",
    )  # fmt: skip
    # OTP hygiene: submissions per request (below the usual upstream lockout of 5),
    # seconds between resends, resends per request, life of a submitted code.
    otp_max_attempts: int = setting("OTP_MAX_ATTEMPTS", 3, parse=whole, doc="code submissions per request")
    otp_resend_interval: int = setting("OTP_RESEND_INTERVAL", 30, parse=whole, doc="seconds between resends")
    otp_max_resends: int = setting("OTP_MAX_RESENDS", 3, parse=whole, doc="resends per request")
    otp_code_ttl: int = setting("OTP_CODE_TTL", 120, parse=whole, doc="seconds a submitted code lives")
    retry_intervals: tuple[int, ...] = setting(
        "RETRY_INTERVALS", (2, 5, 15), parse=ints, unparse=joined,
        doc="seconds between attempts for a bot that is down or answers 5xx / retryable errors",
    )  # fmt: skip
    job_heartbeat_interval: int = setting(
        "JOB_HEARTBEAT_INTERVAL", 5, parse=whole,
        doc="seconds the worker's job heartbeat may lag before RQ's maintenance treats the job as abandoned",
    )  # fmt: skip
    maintenance_interval: int = setting(
        "MAINTENANCE_INTERVAL", 5, parse=whole, doc="how often workers run RQ's maintenance (s)"
    )
    web_concurrency: int = setting("WEB_CONCURRENCY", 1, parse=at_least_one, doc="web processes sharing the port")
    socket_heartbeat: float = setting(
        "SOCKET_HEARTBEAT", 12.5, parse=number, unparse=short_float,
        doc="seconds between the web process's visits to its open sockets and event streams: a socket "
        "quiet for two visits is pinged, for three dropped; a stream gets a keepalive comment",
    )  # fmt: skip
    log_format: str = setting(
        "LOG_FORMAT", "console", fallback=lambda r: "console" if r.dev else "json", doc="json (console in dev)"
    )
    log_level: str = setting("LOG_LEVEL", "INFO", parse=upper)
    wait_thresholds: Mapping[str, float] = setting(
        "WAIT_THRESHOLDS", parse=thresholds,
        unparse=lambda t: " ".join(f"{q}={s:g}" for q, s in t.items()),
        default_factory=lambda: dict(DEFAULT_WAIT_THRESHOLDS),
        doc="alert when a queue's oldest job has waited longer than this (seconds), per queue",
    )  # fmt: skip
    operator_password: str | None = setting(
        "OPERATOR_PASSWORD", None, parse=optional, unparse=or_leave_out, doc="the dashboard's login"
    )
    operator_token: str | None = setting(
        "OPERATOR_TOKEN", None, parse=optional, unparse=or_leave_out, doc="the dashboard's API token"
    )
    bot_port: int = setting("BOT_PORT", 9999, parse=whole, doc="the demo bots' port")
    time_scale: float = setting(
        "TIME_SCALE", 1.0, parse=number,
        doc="multiplies every service's deadline and heartbeat window (tests and demos only: "
        "0.05 turns a 60 s deadline into 3 s)",
    )  # fmt: skip
    sweep_interval: int = setting(
        "SWEEP_INTERVAL", 5, parse=at_least_one,
        doc="seconds between sweeps for silent, overdue and OTP-expired requests",
    )  # fmt: skip
    bot_speed: float = setting(
        "BOT_SPEED", 1.0, parse=number, doc="demo bots: 1.0 = real speed (about a minute per inquiry); tests use 50-200"
    )
    demo_prompts: bool = setting(
        "DEMO_PROMPTS", False, parse=flag, unparse=boolean, fallback=lambda r: r.dev,
        doc="demo bots ask more than the code: credit-score-rating a captcha first, vehicle-fines "
        "which vehicle when the national id has two",
    )  # fmt: skip
    bot_report_mode: str = setting(
        "BOT_REPORT_MODE", "redis",
        doc="where the demo bots report progress: redis (SDK straight into Redis) "
        "or http (signed events to public_url)",
    )  # fmt: skip
    public_url: str = setting(
        "PUBLIC_URL", "http://127.0.0.1:8080", parse=url, fallback=lambda r: f"http://127.0.0.1:{r.values['port']}"
    )
    allowed_origins: tuple[str, ...] = setting(
        "ALLOWED_ORIGINS", (), parse=words, unparse=joined,
        doc="origins allowed to open sockets and post forms, besides the request's own host",
    )  # fmt: skip
    trusted_proxies: tuple[str, ...] = setting(
        "TRUSTED_PROXIES", (), parse=networks, unparse=joined,
        doc="load balancers / proxies (addresses or CIDR ranges) whose X-Forwarded-For is believed: "
        "per-address rate limits then count the client, not the balancer",
    )  # fmt: skip
    create_rate: tuple[int, float] = setting("CREATE_RATE", (10, 60.0), parse=rate, unparse=rate_text)
    create_rate_per_address: tuple[int, float] = setting(
        "CREATE_RATE_PER_ADDRESS", (30, 60.0), parse=rate, unparse=rate_text
    )
    poll_rate_per_address: tuple[int, float] = setting(
        "POLL_RATE_PER_ADDRESS", (120, 60.0), parse=rate, unparse=rate_text
    )
    app_api_keys: tuple[tuple[str, str], ...] = setting(
        "APP_API_KEYS", (), parse=app_keys, unparse=app_keys_text,
        doc="applications' API keys, 'app:lrk_… app:sha256:<hex> …' (several per app to rotate); "
        "kept as SHA-256 digests",
    )  # fmt: skip
    embed_origins: tuple[str, ...] = setting(
        "EMBED_ORIGINS", (), parse=origins, unparse=joined,
        doc="origins whose pages may embed <longrun-progress> (CORS and socket Origin checks)",
    )  # fmt: skip
    viewer_token_ttl: int = setting(
        "VIEWER_TOKEN_TTL", 900, parse=whole, doc="seconds a viewer token (read and answer one request) lives"
    )
    app_create_rate: tuple[int, float] = setting(
        "APP_CREATE_RATE", (60, 60.0), parse=rate, unparse=rate_text, doc="requests created per API key"
    )
    app_read_rate: tuple[int, float] = setting(
        "APP_READ_RATE", (600, 60.0), parse=rate, unparse=rate_text, doc="reads and lists per API key"
    )
    # Not from the environment: what from_env noticed (``notes``), and whatever tests attach.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def signing_secret(self) -> str:
        """The secret new bot events are signed with (the first one)."""
        return self.webhook_secrets[0]

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The environment that makes :meth:`from_env` rebuild these settings in another
        process (workers, demo bots, a second web process)."""
        env: dict[str, str] = {}
        for f, spec in _env_fields():
            text = spec.unparse(getattr(self, f.name))
            if text is not None:
                env[spec.name] = text
        if self.redis_cluster:
            env["RQ_KEY_PREFIX"] = CLUSTER_RQ_PREFIX
        return env

    @classmethod
    def from_env_or_exit(cls, program: str) -> Settings:
        """For entry points: the settings, or exit 2 with the message that names what to fix."""
        try:
            return cls.from_env()
        except ConfigError as exc:
            print(f"{program}: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment; raises :class:`ConfigError` naming what is missing."""
        env = os.environ if environ is None else environ
        dev_spec = _ENV_BY_FIELD["dev_mode"]
        reading = Reading(dev=bool(dev_spec.parse(dev_spec.name, env.get(dev_spec.name, ""))), values={}, notes=[])
        for f, spec in _env_fields():
            raw = env.get(spec.name)
            value = UNSET if raw is None else spec.parse(spec.name, raw)
            if value is UNSET:
                value = spec.fallback(reading) if spec.fallback else _default(f)
            reading.values[f.name] = value
        settings = cls(**reading.values, extra={"notes": tuple(reading.notes)})
        if settings.redis_cluster and "{" not in env.get("RQ_KEY_PREFIX", "rq"):
            raise ConfigError(
                "REDIS_CLUSTER=1 needs RQ_KEY_PREFIX={rq} (RQ keeps all its keys in one hash slot); "
                "set it in the environment of every Longrun process"
            )
        if settings.bot_report_mode not in {"redis", "http"}:
            raise ConfigError("BOT_REPORT_MODE must be 'redis' or 'http'")
        _check_archive(settings)
        if not 60 <= settings.viewer_token_ttl <= 86_400:
            raise ConfigError("VIEWER_TOKEN_TTL must be between 60 and 86400 seconds")
        if not 0 < settings.socket_heartbeat <= 3600:
            raise ConfigError("SOCKET_HEARTBEAT must be more than 0 and at most 3600 seconds")
        return settings


def _env_fields() -> list[tuple[Any, Env]]:
    """Every setting read from the environment, in declaration order, with its :class:`Env`."""
    return [(f, f.metadata["env"]) for f in fields(Settings) if "env" in f.metadata]


_ENV_BY_FIELD: dict[str, Env] = {f.name: spec for f, spec in _env_fields()}
#: every variable :meth:`Settings.from_env` reads (README's Configuration table names each)
ENV_NAMES: tuple[str, ...] = (*(spec.name for spec in _ENV_BY_FIELD.values()), "RQ_KEY_PREFIX")


def _default(f: Any) -> Any:
    if f.default_factory is not MISSING:
        return f.default_factory()
    if f.default is MISSING:  # pragma: no cover - every field without a default has a fallback
        raise ConfigError(f"{f.metadata['env'].name} is not set")
    return f.default


def _check_archive(settings: Settings) -> None:
    if not SCHEMA_NAME.fullmatch(settings.database_schema):
        raise ConfigError(
            "DATABASE_SCHEMA must be a plain lower-case identifier (letters, digits, _; "
            f"at most 63), got {settings.database_schema!r}"
        )
    if settings.archive_retention_days < 0:
        raise ConfigError("ARCHIVE_RETENTION_DAYS must be 0 (keep everything) or a number of days")
    if not 0 < settings.archive_retention_interval <= 86_400:
        raise ConfigError("ARCHIVE_RETENTION_INTERVAL must be between 0 and 86400 seconds")
    if not 1 <= settings.archive_batch <= 10_000:
        raise ConfigError("ARCHIVE_BATCH must be between 1 and 10000")
