"""The peer: a python-socketio server fed through Redis, as its documentation sets one up.

``python -m bench.sio_server --port P --redis-url URL --channel NAME``

``socketio.AsyncServer`` with ``socketio.AsyncRedisManager`` (one pub/sub
channel shared by every process and emitter), served by aiohttp, WebSocket
transport only, on the same event loop as ``python -m server`` (uvloop where
installed). A client connecting with ``{"room": hash}`` as its auth data
is put in that room; updates reach it from an external emitter
(``AsyncRedisManager(write_only=True)``, ``bench/publish.py``) with
``emit("update", record, room=hash)`` — the same job the Longrun hub does for a
request's channel.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import socketio
from aiohttp import web


def create_app(redis_url: str, channel: str) -> web.Application:
    manager = socketio.AsyncRedisManager(redis_url, channel=channel)
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        transports=["websocket"],
        cors_allowed_origins="*",
        logger=False,
        engineio_logger=False,
    )

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> bool:
        room = auth.get("room") if isinstance(auth, dict) else None
        if not isinstance(room, str):
            return False
        await sio.enter_room(sid, room)
        return True

    app = web.Application()
    sio.attach(app)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/healthz", healthz)
    return app


def main(argv: list[str]) -> int:
    from bench.bare import new_loop
    from bench.common import raise_fd_limit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--channel", required=True)
    args = parser.parse_args(argv)
    raise_fd_limit()
    app = create_app(args.redis_url, args.channel)
    web.run_app(app, host="127.0.0.1", port=args.port, reuse_port=True, access_log=None, print=None, loop=new_loop())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
