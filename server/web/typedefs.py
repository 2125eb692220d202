"""Typed application state: every ``web.AppKey`` the server uses, declared once.

The value types are imported for the type checker only: a handler module that
needs one key (``access`` needs ``SETTINGS``) does not load the hub, the
database pool, RQ and the rest at import.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from server.domain.errors import ApiError
    from server.history.db import Database
    from server.infra.connections import AsyncClient
    from server.infra.webhooks import Verifier
    from server.live.cache import RecordCache
    from server.live.hub import Hub
    from server.ops.operations import Operations
    from server.queue.dispatch import Dispatcher
    from server.record import RecordStore
    from server.requests.lifecycle import Lifecycle
    from server.requests.limits import RateLimits
    from server.requests.service import RequestService
    from server.settings import Settings
    from server.web.heartbeat import Heartbeat

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
REDIS: web.AppKey[AsyncClient] = web.AppKey("redis")
STORE: web.AppKey[RecordStore] = web.AppKey("store")
LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("lifecycle")
DISPATCHER: web.AppKey[Dispatcher] = web.AppKey("dispatcher")
VERIFIER: web.AppKey[Verifier] = web.AppKey("verifier")
HUB: web.AppKey[Hub] = web.AppKey("hub")
DB: web.AppKey[Database] = web.AppKey("db")
OPS: web.AppKey[Operations] = web.AppKey("ops")
CACHE: web.AppKey[RecordCache] = web.AppKey("cache")
LIMITS: web.AppKey[RateLimits] = web.AppKey("limits")
SERVICE: web.AppKey[RequestService] = web.AppKey("service")
#: every open browser socket and event stream, and their one heartbeat
HEARTBEAT: web.AppKey[Heartbeat] = web.AppKey("heartbeat")
#: the friendly page for an error on a page path (set by the pages; the API answers JSON)
ERROR_PAGE: web.AppKey[Callable[[web.Request, ApiError], Awaitable[web.StreamResponse]]] = web.AppKey("error_page")
