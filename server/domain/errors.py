"""Longrun's exceptions, one tree, mapped to HTTP answers at the edge (``server.web.edge``).

    LongrunError
    ├── ConfigError            bad or missing configuration (start-up only)
    ├── ProtocolError          a malformed WebSocket frame or bot event
    ├── ArchiveError           a terminal record the archive cannot store
    └── ApiError               anything a caller can be told about
        ├── BadRequest         400 malformed JSON or body
        ├── Unauthorized       401 bad or stale bot signature
        ├── Forbidden          403 missing CSRF token, foreign origin
        ├── NotFound           404 unknown, expired or not yours
        ├── Conflict           409 not allowed in the request's current state
        ├── PayloadTooLarge    413 body over the limit
        ├── ValidationFailed   422 invalid fields (per-field messages)
        ├── RateLimited        429 with Retry-After
        └── Unavailable        503 Redis (or another dependency) is down

The module imports nothing from aiohttp: jobs and the bot SDK raise these too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class LongrunError(Exception):
    """Base of every exception Longrun raises on purpose."""


class ConfigError(LongrunError):
    """The process cannot start: the message names the setting to fix."""


class ProtocolError(LongrunError):
    """A frame or event that does not follow the contract in DESIGN.md."""


class ArchiveError(LongrunError):
    """A terminal record that cannot become a history row (the message says which field)."""


class ApiError(LongrunError):
    status = 500
    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, fields: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.fields = dict(fields or {})

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            err["fields"] = self.fields
        return {"error": err}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"

    def __init__(self, message: str = "No such request (it may have expired).", **kw: Any):
        super().__init__(message, **kw)


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class ValidationFailed(ApiError):
    status = 422
    code = "invalid"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, **kw: Any):
        super().__init__(message, **kw)
        # Retry-After must be an integer; never tell a client to retry in 0 s.
        self.retry_after = max(1, int(-(-retry_after // 1)))


class Unavailable(ApiError):
    status = 503
    code = "unavailable"
