"""Who is asking, from an HTTP request: :func:`caller` turns it into a
:class:`~server.requests.caller.Caller` (the access rule itself lives there).

Sessions are aiohttp-session's encrypted (Fernet: signed and sealed),
HttpOnly, SameSite=Lax cookies. Each session gets a random user id the first
time it needs one. A request is visible to the session whose user id created
it, to a session that opened the request's token link, and to any client
sending ``Authorization: Bearer <access_token>``; an application's backend
with its API key sees its app's requests, a browser with a viewer token the one
request the token names. Everyone else gets the same 404 as for a hash that
never existed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from typing import Any

from aiohttp import web
from aiohttp_session import Session
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from yarl import URL

from server.record import private_view, token_digest
from server.requests.caller import Caller
from server.requests.credentials import APP_KEY_PREFIX, VIEWER_PREFIX, match_app_key
from server.settings import Settings
from server.web.typedefs import SERVICE, SETTINGS

COOKIE_NAME = "longrun_session"
#: the session storage; opened by :func:`session` only for a request that needs it (no
#: aiohttp-session middleware: the edge saves what changed, see :func:`save_session`)
SESSIONS: web.AppKey[EncryptedCookieStorage] = web.AppKey("sessions", EncryptedCookieStorage)
#: the request's session once loaded
SESSION: web.RequestKey[Session] = web.RequestKey("session", Session)
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
    app[SESSIONS] = storage


async def session(request: web.Request) -> Session:
    """This request's session (aiohttp-session's, loaded from the cookie on first use)."""
    opened = request.get(SESSION)
    if opened is None:
        opened = request[SESSION] = await request.app[SESSIONS].load_session(request)
    return opened


async def save_session(request: web.Request, response: web.StreamResponse) -> None:
    """What aiohttp-session's middleware does after a handler, done by the edge (no middleware
    layer on every request): a session opened and changed is written into ``response``'s
    cookie. Reads ``Session._changed``, as that middleware does: the library has no public
    getter for it."""
    if not len(request):  # nothing stored on this request, so no session was opened: the usual case
        return
    opened = request.get(SESSION)
    if opened is None or not opened._changed:
        return
    if not isinstance(response, web.Response):
        return  # a socket or a stream: no cookie can be set any more (aiohttp-session skips them too)
    if response.prepared:
        raise RuntimeError("Cannot save session data into prepared response")
    await request.app[SESSIONS].save_session(request, response, opened)


async def user_id(request: web.Request, *, create: bool = True) -> str | None:
    """The session's user id, made on first use when ``create``."""
    opened = await session(request)
    uid = opened.get("uid")
    if isinstance(uid, str):
        return uid
    if not create:
        return None
    uid = "u_" + secrets.token_urlsafe(12)
    opened["uid"] = uid
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


async def caller(request: web.Request, *, new_user: bool = False) -> Caller:
    """Who sends ``request``: an application's API key (``lrk_…``), a viewer token (``lrv_…``;
    401 when forged or expired), a request's access token (its digest), else its session's
    user id and token links (only when it sent a session cookie); its address.
    With ``new_user`` a session caller gets a user id if it has none (creating a request needs
    one). A caller with a bearer credential is judged by it alone: no cookie is read."""
    token = bearer_token(request) or socket_token(request)
    address = client_address(request)
    if token is not None and token.startswith(APP_KEY_PREFIX):
        key = match_app_key(token, request.app[SETTINGS].app_api_keys)
        return Caller(address=address, app_key=key)
    if token is not None and token.startswith(VIEWER_PREFIX):
        grant = request.app[SERVICE].viewers.check(token)
        return Caller(address=address, viewer=grant)
    uid: str | None = None
    grants: frozenset[str] = frozenset()
    if new_user:
        uid = await user_id(request)
    if token is None and request.cookies.get(COOKIE_NAME) is not None:
        opened = await session(request)
        stored = opened.get("uid")
        uid = stored if isinstance(stored, str) else uid
        listed = opened.get("grants")
        grants = frozenset(g for g in listed if isinstance(g, str)) if isinstance(listed, list) else frozenset()
    return Caller(
        address=address,
        user_id=uid,
        token_digest=token_digest(token) if token is not None else None,
        grants=grants,
    )


#: the socket subprotocol that carries a bearer credential (browsers cannot set headers on a
#: WebSocket): ``new WebSocket(url, ["longrun", "bearer." + token])``
SOCKET_PROTOCOL = "longrun"
_BEARER_PROTOCOL = "bearer."


def socket_token(request: web.Request) -> str | None:
    """The bearer credential a socket handshake carries in ``Sec-WebSocket-Protocol``."""
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return None
    for item in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        item = item.strip()
        if item.startswith(_BEARER_PROTOCOL) and len(item) > len(_BEARER_PROTOCOL):
            return item[len(_BEARER_PROTOCOL) :]
    return None


def client_address(request: web.Request) -> str:
    """The client's address: the peer, or — when the peer is a trusted proxy — the nearest
    address in X-Forwarded-For that is not one of ours (what a client writes there itself
    is to the left of what our proxies appended, so it is never believed)."""
    peer = request.remote or "unknown"
    trusted = request.app[SETTINGS].trusted_proxies
    if not trusted or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop
    return peer


def _in(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)


def grant(opened: Session, request_hash: str) -> None:
    """Let this browser session see a request (it opened the request's token link)."""
    grants = opened.get("grants")
    grants = [g for g in grants if g != request_hash] if isinstance(grants, list) else []
    grants.append(request_hash)
    opened["grants"] = grants[-MAX_GRANTS:]


def embed_origin(request: web.Request) -> str | None:
    """The request's ``Origin`` when it is one of ``EMBED_ORIGINS`` (pages that embed the element)."""
    origin = request.headers.get("Origin")
    return origin if origin is not None and origin in request.app[SETTINGS].embed_origins else None


def origin_allowed(request: web.Request) -> bool:
    """Same-origin sockets only (plus ALLOWED_ORIGINS, and EMBED_ORIGINS for a socket that
    carries its own credential: a cookie never speaks for a page on another site); clients
    that send no Origin are not browsers."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    settings = request.app[SETTINGS]
    if origin in settings.allowed_origins:
        return True
    if origin in settings.embed_origins and socket_token(request) is not None:
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
