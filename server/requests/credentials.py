"""What embedding applications hold: API keys for their backends and viewer tokens for their
people's browsers (DESIGN.md, "Apps that embed Longrun").

- An **API key** (``lrk_…``) names an application. Only SHA-256 digests of the keys are kept
  (``Settings.app_api_keys``); a presented key is hashed and compared with every digest in
  constant time, so neither timing nor an early exit tells how close a guess came.
- A **viewer token** (``lrv_<payload>.<mac>``) lets one browser read and answer one request
  for a short while. It is stateless: the payload (request hash, expiry, whether it may
  cancel) is signed with HMAC-SHA256 under a key derived from ``SECRET_KEY``, so every web
  process checks it without Redis and nothing needs cleaning up. It is not secret from its
  holder (the element reads its own expiry and rights); it cannot be forged or moved to
  another request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

import orjson

from server.domain.errors import Unauthorized

APP_KEY_PREFIX = "lrk_"
VIEWER_PREFIX = "lrv_"
#: viewer tokens are short; anything longer is not one of ours
MAX_VIEWER_TOKEN = 300


@dataclass(frozen=True, slots=True)
class AppKey:
    """The application a presented API key belongs to, and which of its keys it was."""

    app: str
    #: the first 16 hex digits of the key's digest: names the key (rate limits, logs) without it
    key_id: str


#: what a viewer token's holder is told once it has run out (an answer, a socket's last frame)
TOKEN_EXPIRED = "The viewer token has expired; ask the application for a new one."


@dataclass(frozen=True, slots=True)
class ViewerGrant:
    """What a valid viewer token allows."""

    request_hash: str
    expires_at: float
    may_cancel: bool


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def match_app_key(presented: str, keys: tuple[tuple[str, str], ...]) -> AppKey:
    """The app whose key this is; :class:`Unauthorized` otherwise. Every digest is compared
    (no early exit), each with :func:`hmac.compare_digest`."""
    found: AppKey | None = None
    candidate = digest(presented)
    for app, expected in keys:
        if hmac.compare_digest(candidate, expected):
            found = AppKey(app, expected[:16])
    if found is None:
        raise Unauthorized("The API key is not valid.", code="bad_api_key")
    return found


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ViewerTokens:
    """Mints and checks viewer tokens under one secret."""

    def __init__(self, secret_key: str, ttl: int):
        self._key = hashlib.sha256(b"longrun-viewer:" + secret_key.encode()).digest()
        self.ttl = ttl

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def mint(self, request_hash: str, *, may_cancel: bool = False, now: float | None = None) -> tuple[str, int]:
        """A token for ``request_hash`` and the epoch second it expires."""
        expires = int(now if now is not None else time.time()) + self.ttl
        payload = _b64(orjson.dumps({"h": request_hash, "x": expires, "c": may_cancel}))
        return f"{VIEWER_PREFIX}{payload}.{self._mac(payload)}", expires

    def check(self, token: str, *, now: float | None = None) -> ViewerGrant:
        """The grant a token carries; :class:`Unauthorized` when forged, damaged or expired."""
        body = token[len(VIEWER_PREFIX) :]
        payload, _, mac = body.partition(".")
        if len(token) > MAX_VIEWER_TOKEN or not mac or not hmac.compare_digest(mac, self._mac(payload)):
            raise Unauthorized("The viewer token is not valid.", code="bad_viewer_token")
        try:
            data = orjson.loads(_unb64(payload))
            grant = ViewerGrant(str(data["h"]), float(data["x"]), bool(data["c"]))
        except (ValueError, KeyError, TypeError):  # signed by us, so only an old format gets here
            raise Unauthorized("The viewer token is not valid.", code="bad_viewer_token") from None
        if grant.expires_at <= (now if now is not None else time.time()):
            raise Unauthorized(TOKEN_EXPIRED, code="token_expired")
        return grant
