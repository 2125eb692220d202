"""The baselines of the status endpoint benchmark: aiohttp with nothing of Longrun in it.

``python -m bench.bare --port P --mode const|redis [--body FILE] [--redis-url URL --key KEY]``

- ``const``: one route answering a constant body (the same bytes the real
  endpoint answers, so both sides send the same response size).
- ``redis``: one route doing a plain redis-py ``GET`` per request and answering
  the value: the naive way to serve a status from Redis.

Binds with ``reuse_port`` so that several of them can share a port, as the
web processes of ``WEB_CONCURRENCY`` do, and runs on the same event loop as
``python -m server`` (uvloop where it is installed), so that the ratio compares
handlers, not loops.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from redis.asyncio import Redis

REDIS = web.AppKey("redis", Redis)


def const_app(body: bytes) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/requests/{hash}", handler)
    app.router.add_get("/healthz", handler)
    return app


def redis_app(url: str, key: str) -> web.Application:
    async def client(app: web.Application) -> AsyncIterator[None]:
        app[REDIS] = Redis.from_url(url, max_connections=200)
        yield
        await app[REDIS].aclose()

    async def handler(request: web.Request) -> web.Response:
        value = await request.app[REDIS].get(key)
        if value is None:
            raise web.HTTPNotFound()
        return web.Response(body=value, content_type="application/json")

    app = web.Application()
    app.cleanup_ctx.append(client)
    app.router.add_get("/api/requests/{hash}", handler)
    app.router.add_get("/healthz", handler)
    return app


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("const", "redis"), required=True)
    parser.add_argument("--body", type=Path, help="const: the file whose bytes every answer carries")
    parser.add_argument("--redis-url")
    parser.add_argument("--key", help="redis: the key every request GETs")
    args = parser.parse_args(argv)
    if args.mode == "const":
        app = const_app(args.body.read_bytes() if args.body else b'{"status":"processing"}')
    else:
        app = redis_app(args.redis_url, args.key)
    web.run_app(app, host="127.0.0.1", port=args.port, reuse_port=True, access_log=None, print=None, loop=new_loop())
    return 0


def new_loop() -> asyncio.AbstractEventLoop:
    """The event loop ``python -m server`` runs on: uvloop's when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
