"""The process's one heartbeat over its sockets and event streams (``server.web.heartbeat``),
with a short period (``SOCKET_HEARTBEAT``), over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from server.settings import Settings
from server.web.socket_client import Client
from server.web.typedefs import HEARTBEAT, HUB
from tests.helpers import wait_for

PERIOD = 0.2
VALID = {"national_id": "0012345678", "mobile": "09121234567"}


async def fast_client(make_client: Callable[[Settings], Any], settings: Settings) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await make_client(settings.with_(socket_heartbeat=PERIOD))
    return client


async def create(client: TestClient[Any, Any]) -> str:
    resp = await client.post("/api/requests", json={"service": "credit-score-rating", "data": VALID})
    assert resp.status == 201
    h: str = (await resp.json())["hash"]
    return h


class Browser:
    """A socket read in the background: pings counted (and answered, unless ``silent``), text
    frames queued, the way it ended kept."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, *, silent: bool):
        self.ws = ws
        self.silent = silent
        self.pings = 0
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.ended: aiohttp.WSMessage | None = None
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type is WSMsgType.PING:
                self.pings += 1
                if not self.silent:
                    await self.ws.pong(msg.data)
            elif msg.type is WSMsgType.TEXT:
                self.frames.put_nowait(orjson.loads(msg.data))
            else:
                self.ended = msg
                return

    async def frame(self, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            return await self.frames.get()

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({self.task}, timeout=5)


async def test_a_socket_that_stops_answering_pings_is_dropped_and_one_that_answers_is_kept(
    make_client: Callable[[Settings], Any], settings: Settings
) -> None:
    client = await fast_client(make_client, settings)
    heartbeat, hub = client.app[HEARTBEAT], client.app[HUB]
    h = await create(client)
    # autoping off on both: the test answers (or not) the server's pings itself
    alive = Browser(await client.ws_connect(f"/ws/requests/{h}", autoping=False), silent=False)
    assert (await alive.frame())["type"] == "snapshot"
    silent = Browser(await client.ws_connect(f"/ws/requests/{h}", autoping=False), silent=True)
    assert (await silent.frame())["type"] == "snapshot"
    assert hub.stats.sockets == 2 and len(heartbeat.peers) == 2

    # the silent one is pinged, then dropped a period later: the server ends the connection
    async with asyncio.timeout(10):
        await asyncio.wait({silent.task})
    assert silent.pings >= 1
    assert silent.ended is not None and silent.ended.type in (WSMsgType.CLOSED, WSMsgType.CLOSE, WSMsgType.ERROR)
    await wait_for(lambda: _true(hub.stats.sockets == 1 and len(heartbeat.peers) == 1), timeout=10, what="forgotten")

    # the one that answers was pinged too, and stays through more periods than that took
    await wait_for(lambda: _true(alive.pings >= 1), timeout=10, what="a ping to the answering socket")
    sweeps = heartbeat.sweeps
    await wait_for(lambda: _true(heartbeat.sweeps >= sweeps + 4), timeout=10, what="four more sweeps")
    assert not alive.task.done() and alive.pings >= 2
    [kept] = heartbeat.peers
    assert isinstance(kept, Client) and not kept.closed
    # and still speaks: a ping frame of the protocol's own is answered
    await alive.ws.send_str('{"type": "ping"}')
    assert (await alive.frame())["type"] == "pong"
    await alive.close()
    await wait_for(lambda: _true(not heartbeat.peers and hub.stats.sockets == 0), timeout=10, what="closed")


async def test_a_browsers_own_ping_is_answered(client: TestClient[Any, Any]) -> None:
    """autoping is off on the server (the heartbeat pings): a browser's ping still gets its pong."""
    h = await create(client)
    ws = await client.ws_connect(f"/ws/requests/{h}", autoping=False)
    assert (await ws.receive(timeout=5)).type is WSMsgType.TEXT  # the snapshot
    await ws.ping(b"hello")
    msg = await ws.receive(timeout=5)
    assert (msg.type, msg.data) == (WSMsgType.PONG, b"hello")
    await ws.close()


async def test_an_event_stream_gets_keepalives_and_ends_when_its_browser_leaves(
    make_client: Callable[[Settings], Any], settings: Settings
) -> None:
    client = await fast_client(make_client, settings)
    heartbeat, hub = client.app[HEARTBEAT], client.app[HUB]
    h = await create(client)
    resp = await client.get(f"/sse/requests/{h}")
    assert resp.status == 200
    async with asyncio.timeout(10):
        while (line := await resp.content.readline()) != b"event: keepalive\n":
            assert line, "the stream ended"
    assert len(heartbeat.peers) == 1 and h in hub.watchers
    resp.close()  # the browser leaves: the next visit finds the connection gone
    await wait_for(lambda: _true(not heartbeat.peers and h not in hub.watchers), timeout=10, what="the stream ended")


async def _true(value: bool) -> bool:
    return value
