"""Typed application state: every ``web.AppKey`` the server uses, declared once."""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis

from jobs.queues import Dispatcher
from server.hub import Hub
from server.lifecycle import Lifecycle
from server.record import RecordStore
from server.settings import Settings
from server.webhooks import Verifier

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
STORE = web.AppKey("store", RecordStore)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
VERIFIER = web.AppKey("verifier", Verifier)
HUB = web.AppKey("hub", Hub)
