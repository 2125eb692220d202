"""Configuration: the only place that reads the environment.

Every process (web, workers, archiver, demo bots) builds one frozen
:class:`Settings` with :meth:`Settings.from_env` and passes it down
explicitly; tests build it directly.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from server.errors import ConfigError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_BOT_API_URL = "http://127.0.0.1:9999"


def new_webhook_secret() -> str:
    """A fresh Standard Webhooks secret (``whsec_`` + base64 of 32 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class Settings:
    """Everything a Longrun process needs to know, read once at start-up."""

    secret_key: str
    webhook_secrets: tuple[str, ...]
    redis_url: str = DEFAULT_REDIS_URL
    database_url: str | None = None
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
    operator_password: str | None = None
    operator_token: str | None = None
    bot_port: int = 9999
    # Demo bots: 1.0 = real speed (about a minute per inquiry); tests use 50-200.
    bot_speed: float = 1.0
    # Where the demo bots report progress: "redis" (SDK straight into Redis) or "http"
    # (signed events to the server at public_url).
    bot_report_mode: str = "redis"
    public_url: str = "http://127.0.0.1:8080"
    # Origins allowed to open sockets and post forms, besides the request's own host.
    allowed_origins: tuple[str, ...] = ()
    # Rate limits: (burst, per seconds).
    create_rate: tuple[int, float] = (10, 60.0)
    create_rate_per_address: tuple[int, float] = (30, 60.0)
    poll_rate_per_address: tuple[int, float] = (120, 60.0)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def signing_secret(self) -> str:
        """The secret new bot events are signed with (the first one)."""
        return self.webhook_secrets[0]

    @property
    def queue_prefix(self) -> str:
        return self.key_prefix

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
            "BOT_REPORT_MODE": self.bot_report_mode,
            "PUBLIC_URL": self.public_url,
            "ALLOWED_ORIGINS": " ".join(self.allowed_origins),
        }
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        if self.operator_password:
            env["OPERATOR_PASSWORD"] = self.operator_password
        if self.operator_token:
            env["OPERATOR_TOKEN"] = self.operator_token
        return env

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
            database_url=env.get("DATABASE_URL") or None,
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
            operator_token=env.get("OPERATOR_TOKEN") or None,
            bot_speed=num("BOT_SPEED", 1.0),
            bot_port=int(num("BOT_PORT", 9999)),
            bot_report_mode=env.get("BOT_REPORT_MODE", "redis"),
            public_url=(env.get("PUBLIC_URL") or f"http://127.0.0.1:{port}").rstrip("/"),
            allowed_origins=tuple(env.get("ALLOWED_ORIGINS", "").split()),
            extra={"notes": tuple(notes)},
        )
        if settings.bot_report_mode not in {"redis", "http"}:
            raise ConfigError("BOT_REPORT_MODE must be 'redis' or 'http'")
        return settings


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
