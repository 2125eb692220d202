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
import time
from collections.abc import MutableMapping
from typing import Any

import orjson

from server.infra.deferred import DeferredCall
from server.settings import Settings

# structlog imports rich, where it is installed (here only as a test and lint tool's dependency),
# for colourful tracebacks: 0.15 s of CPU at every process start, a fifth of the web app's
# imports, for a renderer configured below with plain tracebacks (as in a production install,
# where rich is absent). Hidden from that one import only; whoever imports rich later gets it.
_HIDE_RICH = "rich" not in sys.modules
if _HIDE_RICH:
    sys.modules["rich"] = None  # type: ignore[assignment]
try:
    import structlog
finally:
    if _HIDE_RICH:
        del sys.modules["rich"]

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
        renderer = structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
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
    ACCESS.json_lines = settings.log_format == "json"
    ACCESS.enabled = logging.getLevelName(settings.log_level) <= logging.INFO
    structlog.get_logger(name).debug("logging configured", format=settings.log_format)


_MS = "\x00ms\x00"


class AccessLine:
    """One kind of answer's access line as a bytes format with the time, the timestamp's second
    and its microseconds left open (the same bytes as ``orjson.dumps`` of the line's fields,
    and the console renderer's layout)."""

    __slots__ = ("json", "text")

    def __init__(self, method: str, route: str, status: int):
        fields = {
            "event": f"{method} {route} {status} {_MS}ms",
            "method": method,
            "route": route,
            "status": status,
            "ms": _MS,
            "logger": "longrun.access",
            "level": "info",
            "timestamp": "",
        }
        marker = orjson.dumps(_MS)[1:-1]
        head, middle, tail = (part.replace(b"%", b"%%") for part in orjson.dumps(fields).split(marker))
        # "ms" is a number: its placeholder's quotes go; the timestamp closes the line
        self.json = head + b"%b" + middle[:-1] + b"%b" + tail[1:].removesuffix(b'"}') + b'%b.%06dZ"}\n'
        text = f" [info     ] {method} {route} {status} ".encode().replace(b"%", b"%%")
        self.text = b"%b.%06dZ" + text + b"%bms [longrun.access]\n"


class AccessLog:
    """The one line per HTTP request, written without the logging machinery.

    At thousands of requests a second, formatting each line through ``logging`` and
    structlog costs more than answering the request. Lines are built directly (same
    fields and format as the other log lines) from a template per kind of answer, buffered,
    and flushed to stdout by the event loop a moment later, or when the buffer fills.
    """

    FLUSH_AFTER = 0.2
    MAX_BUFFER = 64 * 1024

    def __init__(self, *, json_lines: bool, enabled: bool = True):
        self.json_lines = json_lines
        self.enabled = enabled
        self.buffer = bytearray()
        self._deferred = DeferredCall(self.flush, self.FLUSH_AFTER)
        self._stamp_second = -1
        self._stamp_prefix = b""

    def template(self, method: str, route: str, status: int) -> AccessLine:
        """The line of one kind of answer, made once: only the time and the timestamp change
        from one request to the next."""
        return AccessLine(method, route, status)

    def write_line(self, line: AccessLine, seconds: float) -> None:
        if not self.enabled:
            return
        now = time.time()
        second = int(now)
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        # "%.1f" is repr(round(ms, 1)), what the line always showed (both round the exact value)
        ms = b"%.1f" % (seconds * 1000)
        micro = int((now - second) * 1_000_000)
        if self.json_lines:
            self.buffer += line.json % (ms, ms, self._stamp_prefix, micro)
        else:
            self.buffer += line.text % (self._stamp_prefix, micro, ms)
        if len(self.buffer) >= self.MAX_BUFFER:
            self.flush()
        else:
            self._deferred.schedule()

    def flush(self) -> None:
        self._deferred.done()
        if self.buffer:
            data, self.buffer = bytes(self.buffer), bytearray()
            try:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            except (OSError, ValueError, AttributeError):
                pass  # stdout gone (the process is stopping): nothing to do


ACCESS = AccessLog(json_lines=True)
