"""Who is asking: the :class:`Caller` value every use case takes, and the access rule on it.

The web layer turns an HTTP request (its session, its bearer token, its address)
into a Caller; nothing below it sees a ``web.Request``. A request is visible to
the session whose user id created it, to a session that opened the request's
token link (``grants``), and to any caller holding its access token. A caller
with a token is judged by the token alone. An application's backend (an API key)
sees the requests created with any of its app's keys; a viewer token sees the one
request it was minted for. Everyone else gets the same 404 as for a hash that
never existed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from server.domain.errors import Forbidden, NotFound
from server.record import private_view
from server.requests.credentials import AppKey, ViewerGrant

HASH_RE = re.compile(r"req_[A-Za-z0-9_-]{22,48}")


@dataclass(frozen=True, slots=True)
class Caller:
    """One asker's identity, as plain values."""

    #: the client's address (per-address rate limits)
    address: str
    #: the session's user id (None: no session, or one that never made a request)
    user_id: str | None = None
    #: the digest of the bearer access token the caller sent, if any
    token_digest: str | None = None
    #: requests whose token link this session opened
    grants: frozenset[str] = frozenset()
    #: an application's backend, by its API key: sees its app's requests only
    app_key: AppKey | None = None
    #: a person's browser holding a viewer token: reads and answers one request
    viewer: ViewerGrant | None = None

    @property
    def expires_at(self) -> float | None:
        """When this caller's credential runs out (a viewer token's expiry), None when it does
        not: a connection it opened ends then."""
        return self.viewer.expires_at if self.viewer is not None else None

    def may_see(self, request_hash: str, owner: str | None, token_hash: str | None, app: str | None = None) -> bool:
        """The access rule, on what a record says about itself (its owner, its token's hash and
        the app that created it)."""
        if self.app_key is not None:
            return app is not None and app == self.app_key.app
        if self.viewer is not None:
            return hmac.compare_digest(request_hash, self.viewer.request_hash)
        if self.token_digest is not None:
            return token_hash is not None and hmac.compare_digest(token_hash, self.token_digest)
        if self.user_id is not None and owner is not None and self.user_id == owner:
            return True
        return request_hash in self.grants

    def can_see(self, record: dict[str, Any]) -> bool:
        owner = record.get("user_id")
        p = private_view(record)
        token, app = p.get("token"), p.get("app")
        return self.may_see(
            str(record.get("hash", "")),
            owner if isinstance(owner, str) else None,
            token if isinstance(token, str) else None,
            app if isinstance(app, str) else None,
        )

    def check_may_cancel(self) -> None:
        """Viewer tokens read and answer; they cancel only when the app minted them so (403)."""
        if self.viewer is not None and not self.viewer.may_cancel:
            raise Forbidden("This viewer token may read and answer, not cancel.", code="viewer_cannot_cancel")

    def check_may_create(self) -> None:
        """A viewer token is for one request: it creates none (403)."""
        if self.viewer is not None:
            raise Forbidden("A viewer token cannot create requests.", code="viewer_cannot_create")


def new_access_token() -> str:
    """A request's access token: whoever holds it may see the request (only its digest is stored)."""
    return secrets.token_urlsafe(32)


USER_REF_RE = re.compile(r"[A-Za-z0-9._:@+-]{1,128}")


def app_user_id(app: str, user_ref: str) -> str:
    """The record's ``user_id`` for an app's user: stable per (app, user_ref), so per-user rate
    limits and the history's partitions and pages work as for sessions, and never the raw
    reference (which may be an e-mail address)."""
    raw = hashlib.sha256(f"{app}\x00{user_ref}".encode()).digest()
    return "a_" + base64.urlsafe_b64encode(raw[:16]).rstrip(b"=").decode()


def check_hash(value: str) -> str:
    """A well-formed request hash, or the same 404 as an unknown one."""
    if not HASH_RE.fullmatch(value):
        raise NotFound()
    return value
