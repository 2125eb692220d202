"""The application factory: ``create_app(settings)``; tests call the same one.

Resources come up through one ``cleanup_ctx`` each, in dependency order
(Redis → RQ dispatcher → …); aiohttp tears them down in reverse.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from jobs.queues import Dispatcher
from server import access, api, health, openapi, sockets
from server.catalog import find_service
from server.hub import Hub
from server.lifecycle import Lifecycle
from server.middleware import error_middleware, security_headers
from server.record import Keys, RecordStore
from server.settings import Settings
from server.typedefs import DISPATCHER, HUB, LIFECYCLE, REDIS, SETTINGS, STORE, VERIFIER
from server.webhooks import Verifier

#: bodies above this are refused with 413 before they are read
MAX_BODY = 64 * 1024


def redis_client(settings: Settings) -> Redis:
    """An async client that fails fast: a request never hangs on a dead Redis."""
    return Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        health_check_interval=15,
        max_connections=200,
    )


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    redis = redis_client(settings)
    store = RecordStore(redis, Keys(settings.key_prefix), ttl=settings.request_ttl)
    app[REDIS] = redis
    app[STORE] = store
    app[VERIFIER] = Verifier(settings.webhook_secrets)
    yield
    await redis.aclose()


async def dispatcher_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    connection = SyncRedis.from_url(settings.redis_url, socket_connect_timeout=1.0, socket_timeout=5.0)
    dispatcher = Dispatcher(connection, settings)
    app[DISPATCHER] = dispatcher

    async def otp_ready(h: str, seq: int) -> None:
        rec = await app[STORE].get(h)
        service = find_service(str((rec or {}).get("service_slug", "")))
        if service is not None:
            await asyncio.to_thread(dispatcher.check_otp, h, service, seq)

    app[LIFECYCLE] = Lifecycle(
        app[STORE],
        otp_max_attempts=settings.otp_max_attempts,
        otp_resend_interval=settings.otp_resend_interval,
        on_otp_ready=otp_ready,
    )
    yield
    connection.close()


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    """The process's single pub/sub connection and its listener task."""
    settings = app[SETTINGS]
    # Its own client, without redis-py's silent reconnect: the hub must notice a drop
    # to resubscribe and resync what its sockets missed.
    redis = Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=2.0,
        retry=Retry(ExponentialBackoff(), retries=0),
        health_check_interval=10,
        client_name="longrun-hub" + (f"-{settings.key_prefix.strip('_:')}" if settings.key_prefix else ""),
    )
    hub = Hub(redis, Keys(settings.key_prefix), main=app[REDIS])
    app[HUB] = hub
    hub.start()
    yield
    await hub.stop()
    await redis.aclose()


async def close_sockets(app: web.Application) -> None:
    """on_shutdown: tell every browser we are going away (1001) so it reconnects elsewhere."""
    hub = app.get(HUB)
    if hub is not None:
        await hub.close_all(1001, "server shutdown")


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY)
    app[SETTINGS] = settings
    access.setup_sessions(app, settings)
    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(dispatcher_ctx)
    app.cleanup_ctx.append(hub_ctx)
    app.on_shutdown.append(close_sockets)
    app.add_routes(api.routes)
    app.add_routes(health.routes)
    app.add_routes(openapi.routes)
    app.add_routes(sockets.routes)
    app.on_response_prepare.append(security_headers)
    return app
