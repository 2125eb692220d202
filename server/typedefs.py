"""Typed application state: every ``web.AppKey`` the server uses, declared once."""

from __future__ import annotations

from aiohttp import web

from jobs.queues import Dispatcher
from server.cache import RecordCache
from server.connections import AsyncClient
from server.db import Database
from server.hub import Hub
from server.lifecycle import Lifecycle
from server.limits import BatchedLimiter
from server.ops import Operations
from server.record import RecordStore
from server.settings import Settings
from server.webhooks import Verifier

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
POLL_LIMITER = web.AppKey("poll_limiter", BatchedLimiter)
