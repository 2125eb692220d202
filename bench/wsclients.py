"""Browser stand-ins: many WebSocket clients in one process (never the server's).

``python -m bench.wsclients --kind longrun|socketio|sse --url BASE --targets FILE --count N --out PREFIX [--idle]``

- ``longrun``: ``GET /ws/requests/{hash}`` with the request's ``Bearer`` token;
  waits for the snapshot frame.
- ``socketio``: speaks Engine.IO 4 / Socket.IO 5 over a plain WebSocket
  (``/socket.io/?EIO=4&transport=websocket``): the open packet, a namespace
  connect carrying ``{"room": hash}`` (the bench server puts the client in that
  room), pongs to the server's pings, events as ``42["update", {...}]``. Both
  kinds use the same aiohttp client code, so the client side costs the same.
- ``sse``: Longrun's event stream, ``GET /sse/requests/{hash}`` with the token;
  waits for the snapshot event.

The N sockets are spread round-robin over the targets. When all are open the
process writes ``PREFIX.ready`` (JSON: opened, failed, seconds). Unless
``--idle``, every update frame is parsed as a browser would and its latency
taken: receive time minus the ``CLOCK_MONOTONIC`` stamp the publisher put in
``current_message`` (``"bench <seconds>"``; the clock is system-wide, so two
processes agree). On SIGUSR1 the samples gathered since the last dump go to
``PREFIX.<n>.bin`` (pairs of float64: send stamp, latency in seconds) and then
``PREFIX.<n>.done`` (JSON: samples, sockets the server closed so far, and the
client's own garbage-collection pauses meanwhile, which delay what it reads); on
SIGTERM the same, then the sockets close.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.common import raise_fd_limit
from server.devtools.processes import write_json

STAMP = "bench "
Socket = aiohttp.ClientWebSocketResponse | aiohttp.ClientResponse


def stamp_of(record: Any) -> float | None:
    """The publisher's send time carried in an update, if it is one of ours."""
    message = record.get("current_message") if isinstance(record, dict) else None
    if isinstance(message, str) and message.startswith(STAMP):
        return float(message[len(STAMP) :])
    return None


class Clients:
    def __init__(self, kind: str, base: str, out: Path, *, idle: bool):
        self.kind = kind
        self.base = base.rstrip("/")
        self.out = out
        self.idle = idle
        self.samples = array("d")
        self.dumps = 0
        self.opened = 0
        self.failed = 0
        self.dropped = 0
        self.errors: dict[str, int] = {}
        self.stopping = asyncio.Event()
        # The client's own collector pauses, reported beside the samples they may have delayed.
        self.gc_started = 0.0
        self.gc_pauses: list[float] = []
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.gc_started = time.monotonic()
        else:
            self.gc_pauses.append(time.monotonic() - self.gc_started)

    def _error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1

    def _sample(self, record: Any) -> None:
        sent = stamp_of(record)
        if sent is not None:
            self.samples.append(sent)
            self.samples.append(time.monotonic() - sent)

    async def open_longrun(self, session: aiohttp.ClientSession, target: dict[str, str]) -> Socket:
        ws = await session.ws_connect(
            f"{self.base}/ws/requests/{target['hash']}",
            headers={"Authorization": f"Bearer {target['token']}"},
            autoping=True,
            max_msg_size=0,
        )
        first = await ws.receive(timeout=30)
        if first.type is not aiohttp.WSMsgType.TEXT or not first.data.startswith('{"type":"snapshot"'):
            await ws.close()
            raise RuntimeError(f"expected a snapshot, got {first.type} {str(first.data)[:80]}")
        return ws

    async def open_sse(self, session: aiohttp.ClientSession, target: dict[str, str]) -> Socket:
        resp = await session.get(
            f"{self.base}/sse/requests/{target['hash']}", headers={"Authorization": f"Bearer {target['token']}"}
        )
        if resp.status != 200:
            resp.close()
            raise RuntimeError(f"event stream refused: {resp.status}")
        async with asyncio.timeout(30):
            while not (line := await resp.content.readline()).startswith(b"event: snapshot"):
                if not line:
                    raise RuntimeError("the event stream ended before its snapshot")
        return resp

    async def read_sse(self, resp: aiohttp.ClientResponse) -> None:
        async for line in resp.content:
            if line.startswith(b"data: ") and not self.idle:
                self._sample(orjson.loads(line[6:]))
        if not self.stopping.is_set():
            self.dropped += 1

    async def open_socketio(self, session: aiohttp.ClientSession, target: dict[str, str]) -> Socket:
        ws = await session.ws_connect(f"{self.base}/socket.io/?EIO=4&transport=websocket", max_msg_size=0)
        opening = await ws.receive(timeout=30)  # 0{"sid":..., "pingInterval":...}
        if opening.type is not aiohttp.WSMsgType.TEXT or not opening.data.startswith("0"):
            await ws.close()
            raise RuntimeError(f"expected an Engine.IO open packet, got {str(opening.data)[:80]}")
        await ws.send_str("40" + orjson.dumps({"room": target["hash"]}).decode())
        while True:
            answer = await ws.receive(timeout=30)
            if answer.type is not aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"socket.io connect: {answer.type}")
            if answer.data == "2":
                await ws.send_str("3")
                continue
            if answer.data.startswith("40"):
                return ws
            raise RuntimeError(f"socket.io connect refused: {answer.data[:80]}")

    async def read(self, ws: Socket) -> None:
        if isinstance(ws, aiohttp.ClientResponse):
            await self.read_sse(ws)
            return
        socketio = self.kind == "socketio"
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = msg.data
            if socketio:
                if data == "2":
                    await ws.send_str("3")
                elif data.startswith("42") and not self.idle:
                    _event, record = orjson.loads(data[2:])
                    self._sample(record)
            elif not self.idle:
                frame = orjson.loads(data)
                self._sample(frame.get("request"))
        if not self.stopping.is_set():
            self.dropped += 1

    def dump(self) -> None:
        """Samples since the last dump to PREFIX.<n>.bin, then PREFIX.<n>.done."""
        samples, self.samples = self.samples, array("d")
        path = self.out.with_name(f"{self.out.name}.{self.dumps}.bin")
        with open(path, "wb") as f:
            samples.tofile(f)
        gc.freeze()  # between phases: whatever is alive now lives on
        pauses, self.gc_pauses = self.gc_pauses, []
        summary = {"samples": len(samples) // 2, "gc_ms": round(sum(pauses) * 1000, 1), "dropped": self.dropped}
        summary["gc_max_ms"] = round(max(pauses, default=0.0) * 1000, 1)
        path.with_suffix(".done").write_bytes(orjson.dumps(summary))
        self.dumps += 1

    async def run(self, targets: list[dict[str, str]], count: int, concurrency: int) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self.dump)
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        opener = {"socketio": self.open_socketio, "sse": self.open_sse}.get(self.kind, self.open_longrun)
        sockets: list[Socket] = []
        readers: list[asyncio.Task[None]] = []
        gate = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        started = time.monotonic()
        async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:

            async def one(i: int) -> None:
                async with gate:
                    try:
                        ws = await opener(session, targets[i % len(targets)])
                    except (TimeoutError, aiohttp.ClientError, RuntimeError, OSError) as exc:
                        self.failed += 1
                        self._error(exc)
                        return
                sockets.append(ws)
                readers.append(asyncio.create_task(self.read(ws)))

            await asyncio.gather(*(one(i) for i in range(count)))
            self.opened = len(sockets)
            # The sockets live until the end: keep the collector from walking them again and
            # again, so that the client's own pauses do not pass for the server's latency.
            gc.collect()
            gc.freeze()
            # What a received frame allocates is freed by reference counting at once: collect
            # the young generation rarely, so the client's pauses do not show as latency either.
            gc.set_threshold(50_000, *gc.get_threshold()[1:])
            self.gc_pauses.clear()
            ready = {
                "opened": self.opened,
                "failed": self.failed,
                "errors": self.errors,
                "seconds": round(time.monotonic() - started, 2),
            }
            write_json(self.out.with_name(self.out.name + ".ready"), ready)
            await self.stopping.wait()
            self.dump()
            for ws in sockets:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(0.5):
                        if isinstance(ws, aiohttp.ClientResponse):
                            ws.close()
                        else:
                            await ws.close()
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kind", choices=("longrun", "socketio", "sse"), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--targets", type=Path, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--idle", action="store_true", help="hold the sockets open, take no samples")
    parser.add_argument("--concurrency", type=int, default=100, help="sockets being opened at once")
    args = parser.parse_args(argv)
    raise_fd_limit()
    targets = orjson.loads(args.targets.read_bytes())
    clients = Clients(args.kind, args.url, args.out, idle=args.idle)
    asyncio.run(clients.run(targets, args.count, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
