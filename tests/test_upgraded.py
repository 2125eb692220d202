"""What a WebSocket upgrade leaves of HTTP is dropped (``server.web.upgraded``), and the socket
works as before. The attributes are aiohttp's private ones: when an aiohttp upgrade renames
them, the first test says so (the sockets still work; they cost more memory again)."""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any

import orjson
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from server.record import token_digest
from server.web import upgraded
from server.web.socket_client import Client
from server.web.typedefs import HEARTBEAT, HUB, STORE
from tests.helpers import wait_for

VALID = {"national_id": "0012345678", "mobile": "09121234567"}


async def create(client: TestClient[Any, Any]) -> str:
    resp = await client.post("/api/requests", json={"service": "credit-score-rating", "data": VALID})
    assert resp.status == 201
    h: str = (await resp.json())["hash"]
    return h


async def _true(value: bool) -> bool:
    return value


async def test_the_http_leftovers_are_dropped_and_the_socket_still_works(client: TestClient[Any, Any]) -> None:
    h = await create(client)
    ws = await client.ws_connect(f"/ws/requests/{h}")
    assert orjson.loads((await ws.receive(timeout=5)).data)["type"] == "snapshot"
    [peer] = client.app[HEARTBEAT].peers  # type: ignore[index]
    assert isinstance(peer, Client) and peer.transport is not None
    protocol: Any = peer.transport.get_protocol()
    writer: Any = peer.ws._writer
    assert protocol._parser is None
    assert protocol._messages is upgraded._NO_REQUESTS and not upgraded._NO_REQUESTS
    assert writer._background_tasks is upgraded._NO_TASKS and not upgraded._NO_TASKS
    assert writer.get_random_bits is upgraded._MASK_BITS
    await ws.send_str('{"type": "ping"}')
    assert orjson.loads((await ws.receive(timeout=5)).data)["type"] == "pong"
    await client.app[STORE].update(h, {"status": "processing", "progress": 10})  # type: ignore[index]
    got = orjson.loads((await ws.receive(timeout=5)).data)
    assert (got["type"], got["request"]["progress"]) == ("update", 10)
    await ws.close()
    assert ws.close_code == 1000
    hub = client.app[HUB]  # type: ignore[index]
    await wait_for(lambda: _true(hub.stats.sockets == 0), timeout=10, what="the socket forgotten")


async def test_a_frame_sent_with_the_handshake_is_read(client: TestClient[Any, Any]) -> None:
    """Bytes that arrive with the upgrade request (before the WebSocket reader is in place)
    still reach it once the HTTP parser is gone."""
    h = await create(client)
    await client.app[STORE].update(h, {}, private={"token": token_digest("tail-token")})  # type: ignore[index]
    payload = b'{"type": "ping"}'
    mask = os.urandom(4)
    frame = struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        (
            f"GET /ws/requests/{h} HTTP/1.1\r\nHost: {client.host}:{client.port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            "Authorization: Bearer tail-token\r\n\r\n"
        ).encode()
        + frame
    )
    await writer.drain()
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        types = []
        while "pong" not in types:
            first, length = await reader.readexactly(2)
            assert first & 0x0F == WSMsgType.TEXT and length < 127
            if length == 126:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
            types.append(orjson.loads(await reader.readexactly(length))["type"])
    assert types == ["snapshot", "pong"]
    writer.close()
