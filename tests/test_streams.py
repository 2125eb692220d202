"""Streams that resume without a gap, under faults, with real processes.

One web process (``python -m server``) serves two WebSockets and one SSE stream of the
same request while this test, playing the bot, writes its changes through the update
script. The hub's pub/sub connection is killed mid-flow, a socket is dropped and reopened
with ``?since=``, the SSE stream reconnects with ``Last-Event-ID``, and the web process is
restarted while changes keep coming: each of the three sees every change once, in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType
from redis.asyncio import Redis

from server.devtools.processes import Processes, wait_http
from server.record import Keys, RecordStore
from server.settings import Settings
from tests.helpers import EventReader, wait_for

FINES = {"plate": "12B345-67", "national_id": "0012345678"}


class Observer:
    """A browser's live view of one request that reconnects, resuming from the last seq it has,
    whenever its connection ends (once ``gate`` is open)."""

    def __init__(self, kind: str, base: list[str], h: str, token: str):
        self.kind, self.base, self.h = kind, base, h
        self.headers = {"Authorization": f"Bearer {token}"}
        self.seqs: list[int] = []
        self.snapshots = 0
        self.connections = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.conn: Any = None
        self.finished = False
        self.task = asyncio.create_task(self._run())

    @property
    def last(self) -> int:
        return self.seqs[-1] if self.seqs else -1

    def _see(self, kind: str, rec: dict[str, Any]) -> None:
        if kind == "snapshot":
            self.snapshots += 1
        self.seqs.append(rec["seq"])
        self.finished = rec["status"] in ("completed", "failed", "cancelled")

    async def _run(self) -> None:
        async with aiohttp.ClientSession(headers=self.headers) as session:
            while not self.finished:
                await self.gate.wait()
                try:
                    await (self._ws(session) if self.kind == "ws" else self._sse(session))
                except (aiohttp.ClientError, ConnectionError, TimeoutError):
                    await asyncio.sleep(0.05)  # the web process is restarting: try again

    async def _ws(self, session: aiohttp.ClientSession) -> None:
        since = f"?since={self.last}" if self.seqs else ""
        async with session.ws_connect(f"{self.base[0]}/ws/requests/{self.h}{since}") as ws:
            self.conn = ws
            self.connections += 1
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                f = orjson.loads(msg.data)
                if f["type"] in ("snapshot", "update"):
                    self._see(f["type"], f["request"])
                    if self.finished:
                        return

    async def _sse(self, session: aiohttp.ClientSession) -> None:
        headers = {"Last-Event-ID": str(self.last)} if self.seqs else {}
        async with session.get(f"{self.base[0]}/sse/requests/{self.h}", headers=headers) as resp:
            resp.raise_for_status()
            self.conn = resp
            self.connections += 1
            events = EventReader(resp)
            while not self.finished:
                kind, ident, rec = await events.next_event(timeout=30)
                assert ident == str(rec["seq"])
                self._see(kind, rec)

    async def drop(self) -> None:
        """Close the connection from the browser's side; it stays away until ``gate`` opens."""
        self.gate.clear()
        conn = self.conn
        if isinstance(conn, aiohttp.ClientWebSocketResponse):
            await conn.close()
        else:
            conn.close()


async def test_every_change_once_in_order_through_pubsub_kill_drops_and_a_web_restart(
    settings: Settings, processes: Processes, redis: Redis
) -> None:
    proc, base = processes.web(settings)
    await wait_http(f"{base}/healthz", proc)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/api/requests", json={"service": "vehicle-fines", "data": FINES}) as r,
    ):
        created = await r.json()
    h, token = created["hash"], created["access_token"]
    # the bot: every change through the update script (no worker runs: nothing else writes)
    store = RecordStore(redis, Keys(settings.key_prefix), ttl=settings.request_ttl)
    written = [1]

    async def write(n: int, pause: float = 0.0) -> None:
        for _ in range(n):
            i = len(written)
            done = await store.update(
                h, {"status": "processing", "progress": min(99, i // 3), "current_message": f"m{i}"}
            )
            assert done.applied
            written.append(done.record["seq"] if done.record else -1)
            if pause:
                await asyncio.sleep(pause)  # the bot's pace, so the faults land mid-flow

    base_ref = [base]
    observers = [
        Observer("ws", base_ref, h, token),
        Observer("ws", base_ref, h, token),
        Observer("sse", base_ref, h, token),
    ]
    _, b, c = observers

    async def caught_up() -> bool:
        for o in observers:
            if not o.task.done():
                continue
            o.task.result()  # an observer that failed says why
        return all(o.last == written[-1] for o in observers)

    await wait_for(caught_up, timeout=20, what="the first snapshots")
    await write(10, 0.01)
    await wait_for(caught_up, timeout=20, what="the first updates")

    # 1. The hub's pub/sub connection killed mid-flow (CLIENT KILL, aimed at this web process).
    name = "longrun-hub-" + settings.key_prefix.strip("_:")
    ids = [str(cl["id"]) for cl in await redis.client_list() if cl.get("name") == name and "P" in cl.get("flags", "")]
    assert len(ids) == 1
    writing = asyncio.create_task(write(30, 0.01))

    async def under_way() -> bool:
        return len(written) > 15

    await wait_for(under_way, timeout=10, interval=0.005, what="the bot at work")
    await redis.execute_command("CLIENT", "KILL", "ID", ids[0])
    await writing
    await wait_for(caught_up, timeout=20, what="every socket after the pub/sub kill")

    # 2. A socket dropped, changes made while it is away, reopened with ?since=.
    # (paced as a bot is: the sockets still open get them live)
    await b.drop()
    await write(10, 0.01)
    b.gate.set()
    await write(5, 0.01)
    await wait_for(caught_up, timeout=20, what="the reopened socket")

    # 3. The SSE stream dropped, reconnected with Last-Event-ID.
    await c.drop()
    await write(10, 0.01)
    c.gate.set()
    await wait_for(caught_up, timeout=20, what="the reconnected stream")

    # 4. The web process restarted while the bot goes on.
    for o in observers:
        o.gate.clear()
    processes.stop(proc)
    await write(30)
    proc, base_ref[0] = processes.web(settings)
    await wait_http(f"{base_ref[0]}/healthz", proc)
    for o in observers:
        o.gate.set()
    await write(10, 0.01)
    done = await store.update(h, {"status": "completed", "result_data": {"fines": []}})
    written.append(done.record["seq"] if done.record else -1)
    await wait_for(caught_up, timeout=20, what="every view after the restart")

    for o in observers:
        assert o.seqs == list(range(1, written[-1] + 1)), (o.kind, o.seqs)  # every change, once, in order
        assert o.snapshots == 1  # the first connection's; every reconnect resumed from the log
    assert [o.connections for o in observers] == [2, 3, 3]

    # The web process counts resumes by outcome and the delivery lag.
    async with aiohttp.ClientSession() as session, session.get(f"{base_ref[0]}/metrics") as r:
        metrics = await r.text()
    assert 'longrun_stream_resumes_total{outcome="replayed",via="ws"} 2.0' in metrics
    assert 'longrun_stream_resumes_total{outcome="replayed",via="sse"} 1.0' in metrics
    assert "longrun_delivery_lag_seconds_count" in metrics
