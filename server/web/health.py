"""Liveness and readiness, for the Procfile's processes and a load balancer.

``/healthz``: the process answers. ``/readyz``: Redis answers a PING within a
second (and PostgreSQL, when the archive is configured); 503 otherwise, so a
load balancer stops sending people to a server that cannot serve them.
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from server.web.typedefs import DB, REDIS

routes = web.RouteTableDef()


def _json(body: dict[str, object], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(1.0):
            await request.app[REDIS].ping()
        checks["redis"] = "ok"
    except (RedisError, OSError, TimeoutError) as exc:
        checks["redis"] = f"down: {exc.__class__.__name__}"
    database = request.app.get(DB)
    if database is not None:
        try:
            await database.ping(timeout=1.0)
            checks["postgres"] = "ok"
        except Exception as exc:  # any failure means "not ready"; the name says which
            checks["postgres"] = f"down: {exc.__class__.__name__}"
    # Only Redis decides: everything a person waits on runs on it. PostgreSQL holds the history
    # alone (its pages say it is unavailable), so its outage must not take every web process
    # out of the load balancer; it shows here as "degraded", and on the dashboard.
    ready = checks["redis"] == "ok"
    status = "not_ready" if not ready else "ready" if all(v == "ok" for v in checks.values()) else "degraded"
    return _json({"status": status, "checks": checks}, 200 if ready else 503)
