"""Logging for every Longrun process: structured (JSON lines in production, readable in dev).

structlog renders both its own events and the standard library's (RQ, aiohttp,
our ``logging.getLogger`` calls), so one process writes one format. Request
hashes are logged shortened; fields that could carry a code, a token or a
person's data are replaced before anything is written.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from server.settings import Settings

#: event fields that must never reach a log line
SECRET_FIELDS = frozenset(
    {"otp", "code", "token", "access_token", "authorization", "password", "secret", "national_id", "mobile"}
)


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in SECRET_FIELDS:
            event[key] = "[redacted]"
    return event


_HASH = re.compile(r"(req_[A-Za-z0-9_-]{8})[A-Za-z0-9_-]{8,}")


def shorten_hashes(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Full request hashes are capabilities of a sort: logs keep the first 12 characters."""
    for key, value in event.items():
        if isinstance(value, str) and "req_" in value:
            event[key] = _HASH.sub(r"\1…", value)
    return event


def short(request_hash: str) -> str:
    """How a request hash appears in logs: enough to find it, not enough to open it."""
    return request_hash[:12]


def configure(settings: Settings, *, name: str = "longrun") -> None:
    """Route all logging of this process through structlog."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
        shorten_hashes,
    ]
    renderer: Any
    if settings.log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # aiohttp's access log is replaced by our own line per request (route, not raw path).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    structlog.get_logger(name).debug("logging configured", format=settings.log_format)
