"""Configuration: the only place that reads the environment.

Every process (web, workers, archiver, demo bots) builds one frozen
:class:`Settings` with :meth:`Settings.from_env` and passes it down
explicitly; tests build it directly.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from server.domain.errors import ConfigError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_BOT_API_URL = "http://127.0.0.1:9999"
#: in a Redis Cluster every RQ key must share one hash slot
CLUSTER_RQ_PREFIX = "{rq}"
#: a PostgreSQL schema name Longrun may use unquoted (DATABASE_SCHEMA)
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def new_webhook_secret() -> str:
    """A fresh Standard Webhooks secret (``whsec_`` + base64 of 32 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class Settings:
    """Everything a Longrun process needs to know, read once at start-up."""

    secret_key: str
    webhook_secrets: tuple[str, ...]
    redis_url: str = DEFAULT_REDIS_URL
    # REDIS_URL names a node of a Redis Cluster (requires RQ_KEY_PREFIX={rq}, see connections.py)
    redis_cluster: bool = False
    database_url: str | None = None
    # PostgreSQL schema holding the archive (tests use one each); days of history kept
    # (0 keeps everything); seconds between the archiver's retention runs; records the
    # archiver writes per transaction.
    database_schema: str = "public"
    archive_retention_days: int = 365
    archive_retention_interval: float = 3600.0
    archive_batch: int = 2000
    bot_api_url: str = DEFAULT_BOT_API_URL
    bot_api_timeout: float = 180.0
    request_ttl: int = 1800
    host: str = "127.0.0.1"
    port: int = 8080
    dev_mode: bool = False
    # Shown on the progress page: a link to the demo bots' outbox (the stand-in for a phone).
    demo_mode: bool = False
    # Prefix for every Redis key and RQ queue name; empty in production so that the
    # original `local_request:…` layout stays readable by existing bots. Tests set one each.
    key_prefix: str = ""
    # OTP hygiene: submissions per request (below the usual upstream lockout of 5),
    # seconds between resends, resends per request, life of a submitted code.
    otp_max_attempts: int = 3
    otp_resend_interval: int = 30
    otp_max_resends: int = 3
    otp_code_ttl: int = 120
    # Retry intervals (seconds) for a bot that is down or answers 5xx / retryable errors.
    retry_intervals: tuple[int, ...] = (2, 5, 15)
    # Seconds the worker's job heartbeat may lag before RQ's maintenance treats the job
    # as abandoned, and how often workers run that maintenance.
    job_heartbeat_interval: int = 5
    maintenance_interval: int = 5
    web_concurrency: int = 1
    log_format: str = "console"
    log_level: str = "INFO"
    # Alert when a queue's oldest job has waited longer than this (seconds), per queue.
    wait_thresholds: Mapping[str, float] = field(default_factory=lambda: {"high": 10.0, "default": 30.0, "low": 120.0})
    operator_password: str | None = None
    operator_token: str | None = None
    bot_port: int = 9999
    # Multiplies every service's deadline and heartbeat window (tests and demos only:
    # 0.05 turns a 60 s deadline into 3 s).
    time_scale: float = 1.0
    # Seconds between sweeps for silent, overdue and OTP-expired requests.
    sweep_interval: int = 5
    # Demo bots: 1.0 = real speed (about a minute per inquiry); tests use 50-200.
    bot_speed: float = 1.0
    # Where the demo bots report progress: "redis" (SDK straight into Redis) or "http"
    # (signed events to the server at public_url).
    bot_report_mode: str = "redis"
    public_url: str = "http://127.0.0.1:8080"
    # Origins allowed to open sockets and post forms, besides the request's own host.
    allowed_origins: tuple[str, ...] = ()
    # Load balancers / proxies (addresses or CIDR ranges) whose X-Forwarded-For is believed:
    # per-address rate limits then count the client, not the balancer.
    trusted_proxies: tuple[str, ...] = ()
    # Rate limits: (burst, per seconds).
    create_rate: tuple[int, float] = (10, 60.0)
    create_rate_per_address: tuple[int, float] = (30, 60.0)
    poll_rate_per_address: tuple[int, float] = (120, 60.0)
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
        env = {
            "LONGRUN_ENV": "dev" if self.dev_mode else "production",
            "SECRET_KEY": self.secret_key,
            "BOT_WEBHOOK_SECRET": " ".join(self.webhook_secrets),
            "REDIS_URL": self.redis_url,
            "REDIS_CLUSTER": "1" if self.redis_cluster else "0",
            "BOT_API_URL": self.bot_api_url,
            "BOT_API_TIMEOUT": str(self.bot_api_timeout),
            "REQUEST_TTL": str(self.request_ttl),
            "HOST": self.host,
            "PORT": str(self.port),
            "DEMO_MODE": "1" if self.demo_mode else "0",
            "KEY_PREFIX": self.key_prefix,
            "OTP_MAX_ATTEMPTS": str(self.otp_max_attempts),
            "OTP_RESEND_INTERVAL": str(self.otp_resend_interval),
            "RETRY_INTERVALS": " ".join(str(i) for i in self.retry_intervals),
            "JOB_HEARTBEAT_INTERVAL": str(self.job_heartbeat_interval),
            "MAINTENANCE_INTERVAL": str(self.maintenance_interval),
            "WEB_CONCURRENCY": str(self.web_concurrency),
            "LOG_FORMAT": self.log_format,
            "LOG_LEVEL": self.log_level,
            "BOT_SPEED": str(self.bot_speed),
            "BOT_PORT": str(self.bot_port),
            "TIME_SCALE": str(self.time_scale),
            "SWEEP_INTERVAL": str(self.sweep_interval),
            "CREATE_RATE": "{}/{}".format(*self.create_rate),
            "CREATE_RATE_PER_ADDRESS": "{}/{}".format(*self.create_rate_per_address),
            "POLL_RATE_PER_ADDRESS": "{}/{}".format(*self.poll_rate_per_address),
            "BOT_REPORT_MODE": self.bot_report_mode,
            "PUBLIC_URL": self.public_url,
            "ALLOWED_ORIGINS": " ".join(self.allowed_origins),
            "TRUSTED_PROXIES": " ".join(self.trusted_proxies),
            "WAIT_THRESHOLDS": " ".join(f"{q}={s:g}" for q, s in self.wait_thresholds.items()),
        }
        if self.redis_cluster:
            env["RQ_KEY_PREFIX"] = CLUSTER_RQ_PREFIX
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        env["DATABASE_SCHEMA"] = self.database_schema
        env["ARCHIVE_RETENTION_DAYS"] = str(self.archive_retention_days)
        env["ARCHIVE_RETENTION_INTERVAL"] = f"{self.archive_retention_interval:g}"
        env["ARCHIVE_BATCH"] = str(self.archive_batch)
        if self.operator_password:
            env["OPERATOR_PASSWORD"] = self.operator_password
        if self.operator_token:
            env["OPERATOR_TOKEN"] = self.operator_token
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
        dev = env.get("LONGRUN_ENV", "production").strip().lower() in {"dev", "development"}
        notes: list[str] = []

        secret_key = env.get("SECRET_KEY", "").strip()
        if not secret_key:
            if not dev:
                raise ConfigError(
                    "SECRET_KEY is not set. It signs session cookies; set it to a long random "
                    "string (or LONGRUN_ENV=dev to have one generated)."
                )
            secret_key = secrets.token_urlsafe(32)
            notes.append("SECRET_KEY generated for this process (dev mode): sessions end on restart")

        hook = env.get("BOT_WEBHOOK_SECRET", "").split()
        if not hook:
            if not dev:
                raise ConfigError(
                    "BOT_WEBHOOK_SECRET is not set. Bots sign their events with it; set one or "
                    "more space-separated whsec_<base64> secrets (or LONGRUN_ENV=dev to generate)."
                )
            hook = [new_webhook_secret()]
            notes.append("BOT_WEBHOOK_SECRET generated for this process (dev mode)")
        for s in hook:
            _check_webhook_secret(s)

        def num(name: str, default: float) -> float:
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                return default
            try:
                return float(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {raw!r}") from None

        port = int(num("PORT", 8080))
        settings = cls(
            secret_key=secret_key,
            webhook_secrets=tuple(hook),
            redis_url=env.get("REDIS_URL") or DEFAULT_REDIS_URL,
            redis_cluster=_flag(env.get("REDIS_CLUSTER"), default=False),
            database_url=env.get("DATABASE_URL") or None,
            database_schema=(env.get("DATABASE_SCHEMA") or "public").strip(),
            archive_retention_days=int(num("ARCHIVE_RETENTION_DAYS", 365)),
            archive_retention_interval=num("ARCHIVE_RETENTION_INTERVAL", 3600.0),
            archive_batch=int(num("ARCHIVE_BATCH", 2000)),
            bot_api_url=(env.get("BOT_API_URL") or DEFAULT_BOT_API_URL).rstrip("/"),
            bot_api_timeout=num("BOT_API_TIMEOUT", 180.0),
            request_ttl=int(num("REQUEST_TTL", 1800)),
            host=env.get("HOST", "127.0.0.1"),
            port=port,
            dev_mode=dev,
            demo_mode=_flag(env.get("DEMO_MODE"), default=dev),
            key_prefix=env.get("KEY_PREFIX", ""),
            otp_max_attempts=int(num("OTP_MAX_ATTEMPTS", 3)),
            otp_resend_interval=int(num("OTP_RESEND_INTERVAL", 30)),
            retry_intervals=_ints("RETRY_INTERVALS", env.get("RETRY_INTERVALS"), (2, 5, 15)),
            job_heartbeat_interval=int(num("JOB_HEARTBEAT_INTERVAL", 5)),
            maintenance_interval=int(num("MAINTENANCE_INTERVAL", 5)),
            web_concurrency=max(1, int(num("WEB_CONCURRENCY", 1))),
            log_format=env.get("LOG_FORMAT", "console" if dev else "json"),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            operator_password=env.get("OPERATOR_PASSWORD") or None,
            wait_thresholds=_thresholds(env.get("WAIT_THRESHOLDS")),
            operator_token=env.get("OPERATOR_TOKEN") or None,
            bot_speed=num("BOT_SPEED", 1.0),
            bot_port=int(num("BOT_PORT", 9999)),
            time_scale=num("TIME_SCALE", 1.0),
            sweep_interval=max(1, int(num("SWEEP_INTERVAL", 5))),
            create_rate=_rate("CREATE_RATE", env.get("CREATE_RATE"), (10, 60.0)),
            create_rate_per_address=_rate("CREATE_RATE_PER_ADDRESS", env.get("CREATE_RATE_PER_ADDRESS"), (30, 60.0)),
            poll_rate_per_address=_rate("POLL_RATE_PER_ADDRESS", env.get("POLL_RATE_PER_ADDRESS"), (120, 60.0)),
            bot_report_mode=env.get("BOT_REPORT_MODE", "redis"),
            public_url=(env.get("PUBLIC_URL") or f"http://127.0.0.1:{port}").rstrip("/"),
            allowed_origins=tuple(env.get("ALLOWED_ORIGINS", "").split()),
            trusted_proxies=_networks("TRUSTED_PROXIES", env.get("TRUSTED_PROXIES")),
            extra={"notes": tuple(notes)},
        )
        if settings.redis_cluster and "{" not in env.get("RQ_KEY_PREFIX", "rq"):
            raise ConfigError(
                "REDIS_CLUSTER=1 needs RQ_KEY_PREFIX={rq} (RQ keeps all its keys in one hash slot); "
                "set it in the environment of every Longrun process"
            )
        if settings.bot_report_mode not in {"redis", "http"}:
            raise ConfigError("BOT_REPORT_MODE must be 'redis' or 'http'")
        _check_archive(settings)
        return settings


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


def _ints(name: str, raw: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
    if raw is None or raw.strip() == "":
        return default
    try:
        values = tuple(int(x) for x in raw.replace(",", " ").split())
    except ValueError:
        raise ConfigError(f"{name} must be whole seconds separated by spaces, got {raw!r}") from None
    if any(v < 0 for v in values):
        raise ConfigError(f"{name} must not be negative")
    return values


def _rate(name: str, raw: str | None, default: tuple[int, float]) -> tuple[int, float]:
    """``burst/seconds``, e.g. ``10/60``: ten at once, refilled over a minute."""
    if raw is None or raw.strip() == "":
        return default
    burst, _, per = raw.partition("/")
    try:
        value = (int(burst), float(per))
    except ValueError:
        raise ConfigError(f"{name} must look like 10/60 (burst/seconds), got {raw!r}") from None
    if value[0] < 1 or value[1] <= 0:
        raise ConfigError(f"{name} needs a burst of at least 1 over a positive number of seconds")
    return value


def _networks(name: str, raw: str | None) -> tuple[str, ...]:
    out = tuple((raw or "").replace(",", " ").split())
    for item in out:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an address or a CIDR range") from None
    return out


def _thresholds(raw: str | None) -> dict[str, float]:
    """``high=10 default=30 low=120``: seconds of queue wait before an alert."""
    out = {"high": 10.0, "default": 30.0, "low": 120.0}
    for part in (raw or "").split():
        queue, _, seconds = part.partition("=")
        try:
            out[queue] = float(seconds)
        except ValueError:
            raise ConfigError(f"WAIT_THRESHOLDS must look like 'high=10 default=30', got {raw!r}") from None
    return out


def _flag(raw: str | None, *, default: bool) -> bool:
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _check_webhook_secret(secret: str) -> None:
    if not secret.startswith("whsec_"):
        raise ConfigError("BOT_WEBHOOK_SECRET entries must look like whsec_<base64 key>")
    try:
        key = base64.b64decode(secret[len("whsec_") :] + "==", validate=False)
    except ValueError:
        raise ConfigError("BOT_WEBHOOK_SECRET: the part after whsec_ is not base64") from None
    if len(key) < 16:
        raise ConfigError("BOT_WEBHOOK_SECRET: the key must be at least 16 bytes")
