"""Who may see a request: the browser session that created it, or a holder of its token.

Sessions are aiohttp-session's encrypted (Fernet: signed and sealed),
HttpOnly, SameSite=Lax cookies. Each session gets a random user id the first
time it needs one. A request is visible to the session whose user id created
it, to a session that opened the request's token link, and to any client
sending ``Authorization: Bearer <access_token>``. Everyone else gets the same
404 as for a hash that never existed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any

from aiohttp import web
from aiohttp_session import Session, get_session, setup
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from yarl import URL

from server.domain.errors import NotFound
from server.record import private_view, token_digest
from server.settings import Settings
from server.web.typedefs import SETTINGS

COOKIE_NAME = "longrun_session"
HASH_RE = re.compile(r"req_[A-Za-z0-9_-]{22,48}")
#: token links opened by this session (bounded: oldest dropped)
MAX_GRANTS = 50


def setup_sessions(app: web.Application, settings: Settings) -> None:
    # Fernet wants 32 bytes (the storage base64-encodes raw bytes itself); derive them
    # from SECRET_KEY so any length of secret works and every process agrees.
    key = hashlib.sha256(b"longrun-session:" + settings.secret_key.encode()).digest()
    storage = EncryptedCookieStorage(
        key,
        cookie_name=COOKIE_NAME,
        httponly=True,
        samesite="Lax",
        secure=settings.public_url.startswith("https://"),
        max_age=30 * 24 * 3600,
    )
    setup(app, storage)


def new_access_token() -> str:
    return secrets.token_urlsafe(32)


async def user_id(request: web.Request, *, create: bool = True) -> str | None:
    """The session's user id, made on first use when ``create``."""
    session = await get_session(request)
    uid = session.get("uid")
    if isinstance(uid, str):
        return uid
    if not create:
        return None
    uid = "u_" + secrets.token_urlsafe(12)
    session["uid"] = uid
    return uid


def bearer_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def token_matches(record: dict[str, Any], token: str) -> bool:
    expected = private_view(record).get("token")
    return isinstance(expected, str) and hmac.compare_digest(expected, token_digest(token))


async def can_see(request: web.Request, record: dict[str, Any]) -> bool:
    owner = record.get("user_id")
    token = private_view(record).get("token")
    return await may_see(
        request,
        str(record.get("hash", "")),
        owner if isinstance(owner, str) else None,
        token if isinstance(token, str) else None,
    )


async def may_see(request: web.Request, request_hash: str, owner: str | None, token_hash: str | None) -> bool:
    """The access rule, on what a record says about itself (its owner and its token's hash)."""
    token = bearer_token(request)
    if token is not None:
        return token_hash is not None and hmac.compare_digest(token_hash, token_digest(token))
    if request.cookies.get(COOKIE_NAME) is None:
        return False
    session = await get_session(request)
    uid = session.get("uid")
    if isinstance(uid, str) and owner is not None and uid == owner:
        return True
    grants = session.get("grants")
    return isinstance(grants, list) and request_hash in grants


def grant(session: Session, request_hash: str) -> None:
    """Let this browser session see a request (it opened the request's token link)."""
    grants = session.get("grants")
    grants = [g for g in grants if g != request_hash] if isinstance(grants, list) else []
    grants.append(request_hash)
    session["grants"] = grants[-MAX_GRANTS:]


def check_hash(value: str) -> str:
    """A well-formed request hash, or the same 404 as an unknown one."""
    if not HASH_RE.fullmatch(value):
        raise NotFound()
    return value


def origin_allowed(request: web.Request) -> bool:
    """Same-origin sockets only (plus ALLOWED_ORIGINS); clients that send no Origin are not browsers."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    settings = request.app[SETTINGS]
    if origin in settings.allowed_origins:
        return True
    try:
        url = URL(origin)
    except ValueError:
        return False
    if url.host is None:
        return False
    public = URL(settings.public_url)
    candidates = {request.host.lower(), f"{public.host}:{public.port}".lower()}
    return f"{url.host}:{url.port}".lower() in candidates or url.host.lower() in candidates


def cross_site(request: web.Request) -> bool:
    """Whether a browser says this request does not come from one of our own pages.

    ``Sec-Fetch-Site`` first (every current browser sends it): only ``same-origin`` and
    ``none`` (typed or bookmarked) pass — not ``same-site``, a sibling subdomain. Without
    it, ``Origin``; our pages send ``Referrer-Policy: no-referrer``, under which a browser
    sends ``Origin: null`` even on its own site, so such old browsers must use forms (with
    their CSRF token). A client that sends neither is not a browser and holds no cookie by
    accident."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site.lower() not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    return origin == "null" or not origin_allowed(request)
