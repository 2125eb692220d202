"""Typed application state: every ``web.AppKey`` the server uses, declared once."""

from __future__ import annotations

from aiohttp import web

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

SETTINGS = web.AppKey("settings", Settings)
REDIS: web.AppKey[AsyncClient] = web.AppKey("redis")
STORE = web.AppKey("store", RecordStore)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
VERIFIER = web.AppKey("verifier", Verifier)
HUB = web.AppKey("hub", Hub)
DB = web.AppKey("db", Database)
OPS = web.AppKey("ops", Operations)
CACHE = web.AppKey("cache", RecordCache)
LIMITS = web.AppKey("limits", RateLimits)
SERVICE = web.AppKey("service", RequestService)
