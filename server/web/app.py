"""The application factory: ``create_app(settings)``; tests call the same one.

Resources come up through one ``cleanup_ctx`` each, in dependency order
(Redis → RQ dispatcher → …); aiohttp tears them down in reverse. No middleware and no
response hook: once every route is registered, ``server.web.edge.install`` wraps each one
(errors, session, security headers, metrics and access log) and adds the route that
answers 404 and 405.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator

from aiohttp import web
from redis.exceptions import RedisError

from server.infra import connections
from server.infra.logs import ACCESS
from server.infra.webhooks import Verifier
from server.live.cache import RecordCache
from server.live.hub import Hub
from server.ops.operations import Operations
from server.queue.dispatch import Dispatcher
from server.record import Keys, RecordStore
from server.requests import sweeper
from server.requests.lifecycle import Lifecycle
from server.requests.limits import RateLimits
from server.requests.service import RequestService
from server.settings import Settings
from server.web import (
    access,
    api,
    dashboard,
    edge,
    health,
    history_views,
    metrics,
    openapi,
    pages,
    socket_client,
    sockets,
    sse,
)
from server.web.cors import preflight_routes
from server.web.embed import routes as embed_routes
from server.web.typedefs import (
    CACHE,
    DISPATCHER,
    HUB,
    LIFECYCLE,
    LIMITS,
    OPS,
    REDIS,
    SERVICE,
    SETTINGS,
    STORE,
    VERIFIER,
)

#: bodies above this are refused with 413 before they are read: the bot events endpoint
#: (results up to 256 KiB); the public API refuses more than 64 KiB itself (api.read_json)
MAX_BODY = 320 * 1024


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # Fails fast: a request never hangs on a dead Redis.
    redis = connections.async_client(settings, fail_fast=True, health_check_interval=15, max_connections=200)
    store = RecordStore(redis, Keys(settings.key_prefix), ttl=settings.request_ttl, sharded=settings.redis_cluster)
    app[REDIS] = redis
    app[STORE] = store
    app[VERIFIER] = Verifier(settings.webhook_secrets)
    yield
    await redis.aclose()


async def dispatcher_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    connection = connections.rq_connection(settings, socket_connect_timeout=1.0, socket_timeout=5.0)
    dispatcher = Dispatcher(connection, settings)
    app[DISPATCHER] = dispatcher

    app[LIFECYCLE] = Lifecycle.for_settings(app[STORE], settings, dispatcher)
    yield
    connection.close()


async def ops_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[OPS] = Operations(
        app[STORE],
        app[DISPATCHER],
        thresholds=settings.wait_thresholds,
        archive=bool(settings.database_url),
        lifecycle=app[LIFECYCLE],
    )
    yield


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    """The process's single pub/sub connection and its listener task."""
    settings = app[SETTINGS]
    # Its own client, without redis-py's silent reconnect: the hub must notice a drop
    # to resubscribe and resync what its sockets missed.
    name = "longrun-hub" + (f"-{settings.key_prefix.strip('_:')}" if settings.key_prefix else "")
    redis = connections.pubsub_client(settings, name)
    hub = Hub(redis, Keys(settings.key_prefix), store=app[STORE], sharded=settings.redis_cluster)
    app[HUB] = hub
    hub.start()
    stopping = asyncio.Event()
    reporter = asyncio.create_task(report_sockets(app[OPS], hub, stopping))
    yield
    stopping.set()
    await asyncio.wait({reporter}, timeout=3.0)
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        async with asyncio.timeout(2.0):
            await app[OPS].forget_process(PROCESS)
    await socket_client.close_all(app)  # any socket opened since on_shutdown: going away
    await hub.stop()
    await redis.aclose()


async def upkeep_ctx(app: web.Application) -> AsyncIterator[None]:
    """The sweeper, also from the web tier (less often than RQ's cron enqueues it), so that
    a queue without a live worker neither lets requests expire nor leaves them stuck."""
    stopping = asyncio.Event()
    every = max(30.0, app[SETTINGS].sweep_interval * 6.0)

    async def loop() -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await stopping.wait()
            if not stopping.is_set():
                with contextlib.suppress(RedisError, OSError):
                    await sweeper.sweep(app[STORE], app[LIFECYCLE], app[DISPATCHER])

    task = asyncio.create_task(loop())
    yield
    stopping.set()
    await asyncio.wait({task}, timeout=5.0)


async def cache_ctx(app: web.Application) -> AsyncIterator[None]:
    """The pub/sub-fed record cache, the rate limits (the poll limiter charges in batches) and
    the request service, which every medium (API, form posts, socket frames) calls."""
    settings = app[SETTINGS]
    cache = RecordCache(app[HUB], app[STORE])
    limits = RateLimits.for_settings(app[STORE], settings)
    app[CACHE] = cache
    app[LIMITS] = limits
    app[SERVICE] = RequestService(app[STORE], app[LIFECYCLE], app[DISPATCHER], settings, limits, cache)
    cache.start()
    yield
    await limits.stop()
    await cache.stop()


PROCESS = f"{socket.gethostname()}:{os.getpid()}"


async def report_sockets(
    ops: Operations, hub: Hub, stopping: asyncio.Event, every: float = 5.0, tick: float = 1.0
) -> None:
    """Tell the dashboard how many sockets this process holds (it shows each process): within
    a second of a change, and every few seconds anyway (a report older than
    ``ops.SOCKETS_STALE`` means the process is gone)."""
    reported: int | None = None
    at = 0.0
    while not stopping.is_set():
        count = hub.stats.sockets
        if count != reported or time.monotonic() - at >= every:
            with contextlib.suppress(RedisError, OSError):
                await ops.report_sockets(PROCESS, count)
                reported, at = count, time.monotonic()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(tick):
                await stopping.wait()


async def flush_access_log(_: web.Application) -> None:
    metrics.BATCH.flush()
    ACCESS.flush()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[SETTINGS] = settings
    access.setup_sessions(app, settings)
    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(dispatcher_ctx)
    app.cleanup_ctx.append(ops_ctx)
    app.cleanup_ctx.append(hub_ctx)
    app.cleanup_ctx.append(cache_ctx)
    app.cleanup_ctx.append(upkeep_ctx)
    if settings.database_url:
        app.cleanup_ctx.append(history_views.db_ctx)
    socket_client.setup(app)  # on_shutdown: tell every browser we are going away (1001) so it reconnects elsewhere
    app.on_cleanup.append(flush_access_log)
    app.add_routes(api.routes)
    app.add_routes(preflight_routes)
    app.add_routes(embed_routes)
    app.add_routes(health.routes)
    app.add_routes(openapi.routes)
    app.add_routes(sockets.routes)
    sse.setup(app)  # GET /sse/requests/{hash}; on_shutdown: every stream ends, the browser resumes elsewhere
    app.router.add_get("/metrics", metrics.metrics_handler)
    app.add_routes(history_views.routes)
    pages.setup(app)
    dashboard.setup(app)
    edge.install(app)  # last: around every route above, and the route of last resort (404/405)
    return app
