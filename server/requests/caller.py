"""Who is asking: the :class:`Caller` value every use case takes, and the access rule on it.

The web layer turns an HTTP request (its session, its bearer token, its address)
into a Caller; nothing below it sees a ``web.Request``. A request is visible to
the session whose user id created it, to a session that opened the request's
token link (``grants``), and to any caller holding its access token. A caller
with a token is judged by the token alone. Everyone else gets the same 404 as
for a hash that never existed.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from server.domain.errors import NotFound
from server.record import private_view

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
    lang: str = "en"

    def may_see(self, request_hash: str, owner: str | None, token_hash: str | None) -> bool:
        """The access rule, on what a record says about itself (its owner and its token's hash)."""
        if self.token_digest is not None:
            return token_hash is not None and hmac.compare_digest(token_hash, self.token_digest)
        if self.user_id is not None and owner is not None and self.user_id == owner:
            return True
        return request_hash in self.grants

    def can_see(self, record: dict[str, Any]) -> bool:
        owner = record.get("user_id")
        token = private_view(record).get("token")
        return self.may_see(
            str(record.get("hash", "")),
            owner if isinstance(owner, str) else None,
            token if isinstance(token, str) else None,
        )


def new_access_token() -> str:
    """A request's access token: whoever holds it may see the request (only its digest is stored)."""
    return secrets.token_urlsafe(32)


def check_hash(value: str) -> str:
    """A well-formed request hash, or the same 404 as an unknown one."""
    if not HASH_RE.fullmatch(value):
        raise NotFound()
    return value
