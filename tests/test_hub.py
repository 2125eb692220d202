"""The WebSocket hub over real sockets and a real Redis."""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from server.devtools.processes import wait_http
from server.infra.counters import RESUMES
from server.record import LOG_MAX, LOG_SLACK, Keys, RecordStore
from server.settings import Settings
from server.web.socket_client import MAX_PENDING, Client, Feed
from server.web.typedefs import HUB, STORE
from tests.helpers import EventReader, wait_for

VALID = {"national_id": "0012345678", "mobile": "09121234567"}


async def create(client: TestClient[Any, Any], service: str = "credit-score-rating") -> dict[str, Any]:
    data = VALID if service == "credit-score-rating" else {"plate": "12B345-67", "national_id": "0012345678"}
    resp = await client.post("/api/requests", json={"service": service, "data": data})
    assert resp.status == 201
    body: dict[str, Any] = await resp.json()
    return body


async def frame(ws: Any, timeout: float = 5.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == WSMsgType.TEXT, msg
    out: dict[str, Any] = orjson.loads(msg.data)
    return out


async def until(ws: Any, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            f = await frame(ws, timeout)
            if pred(f):
                return f


def store_of(client: TestClient[Any, Any]) -> RecordStore:
    return client.app[STORE]  # type: ignore[no-any-return,index]


async def test_snapshot_then_updates(client: TestClient[Any, Any]) -> None:
    h = (await create(client))["hash"]
    ws = await client.ws_connect(f"/ws/requests/{h}")
    snap = await frame(ws)
    assert snap["type"] == "snapshot" and snap["request"]["hash"] == h and snap["request"]["seq"] == 1
    assert "_p" not in snap["request"]
    store = store_of(client)
    await store.update(h, {"status": "processing", "progress": 20})
    await store.update(h, {"progress": 40, "step": "captcha"})
    upd = await until(ws, lambda f: f["request"]["progress"] == 40)
    assert upd["type"] == "update" and upd["request"]["seq"] == 3
    await ws.send_str('{"type": "ping"}')
    assert (await until(ws, lambda f: f["type"] == "pong"))["type"] == "pong"
    await ws.close()


async def test_a_burst_read_at_once_reaches_every_socket_in_order(client: TestClient[Any, Any]) -> None:
    """Updates published back to back arrive in one read of the pub/sub socket: each is relayed."""
    hashes = [(await create(client))["hash"] for _ in range(2)]
    sockets = [await client.ws_connect(f"/ws/requests/{h}") for h in hashes]
    for ws in sockets:
        assert (await frame(ws))["type"] == "snapshot"
    store = store_of(client)
    await store.update_many([(h, {"status": "processing"}) for h in hashes])
    changes = [(h, {"progress": p}) for p in range(10, 70, 10) for h in hashes]
    assert all(r.applied for r in await store.update_many(changes))
    for ws in sockets:
        seen = [(await frame(ws))["request"]["progress"] for _ in range(7)]
        assert seen == [0, 10, 20, 30, 40, 50, 60]
        await ws.close()


async def test_refused_frames_get_error_frames_not_a_dropped_socket(client: TestClient[Any, Any]) -> None:
    h = (await create(client))["hash"]
    ws = await client.ws_connect(f"/ws/requests/{h}")
    await frame(ws)
    for bad, code in (
        ("not json", "bad_frame"),
        ('{"type": "otp", "otp": "12"}', "bad_frame"),
        ('{"type": "otp", "otp": "123456"}', "not_waiting_for_otp"),
        ('{"type": "resend_otp"}', "not_waiting_for_otp"),
    ):
        await ws.send_str(bad)
        err = await until(ws, lambda f: f["type"] == "error")
        assert err["code"] == code, (bad, err)
    await ws.send_bytes(b"\x00")
    assert (await until(ws, lambda f: f["type"] == "error"))["code"] == "bad_frame"
    await ws.send_str('{"type": "cancel"}')
    cancelled = await until(ws, lambda f: f["type"] == "update")
    assert cancelled["request"]["status"] == "cancelled"
    assert not ws.closed
    await ws.close()


async def test_access_and_origin(client: TestClient[Any, Any]) -> None:
    body = await create(client)
    h = body["hash"]
    url = client.make_url(f"/ws/requests/{h}")
    async with aiohttp.ClientSession() as stranger:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await stranger.ws_connect(url, headers=headers)
            assert err.value.status == 404
        ws = await stranger.ws_connect(url, headers={"Authorization": f"Bearer {body['access_token']}"})
        assert (await frame(ws))["type"] == "snapshot"
        await ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await client.ws_connect(f"/ws/requests/{h}", headers={"Origin": "https://evil.example"})
    assert err.value.status == 403
    same = await client.ws_connect(f"/ws/requests/{h}", headers={"Origin": str(client.make_url("")).rstrip("/")})
    assert (await frame(same))["type"] == "snapshot"
    await same.close()


async def test_one_subscription_per_channel_reference_counted(client: TestClient[Any, Any], redis: Redis) -> None:
    hub = client.app[HUB]  # type: ignore[index]
    a, b = (await create(client))["hash"], (await create(client))["hash"]
    sockets = [await client.ws_connect(f"/ws/requests/{h}") for h in (a, a, a, b)]
    for ws in sockets:
        await frame(ws)
    keys = store_of(client).keys
    numsub = dict(await redis.pubsub_numsub(keys.channel(a), keys.channel(b)))
    assert numsub == {keys.channel(a).encode(): 1, keys.channel(b).encode(): 1}
    assert set(hub.watchers) == {a, b} and len(hub.watchers[a]) == 3
    for ws in sockets[:3]:
        await ws.close()
    await asyncio.sleep(0.2)
    assert set(hub.watchers) == {b}
    numsub = dict(await redis.pubsub_numsub(keys.channel(a)))
    assert numsub[keys.channel(a).encode()] == 0
    await sockets[3].close()


async def test_oversized_frame_closes_with_1009(client: TestClient[Any, Any]) -> None:
    h = (await create(client))["hash"]
    ws = await client.ws_connect(f"/ws/requests/{h}")
    await frame(ws)
    await ws.send_str('{"type": "ping", "pad": "' + "x" * (1024 * 1024) + '"}')
    msg = await ws.receive(timeout=5)
    while msg.type == WSMsgType.TEXT:
        msg = await ws.receive(timeout=5)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    assert ws.close_code == 1009


async def test_frame_flood_is_throttled(client: TestClient[Any, Any]) -> None:
    h = (await create(client))["hash"]
    ws = await client.ws_connect(f"/ws/requests/{h}")
    await frame(ws)
    for _ in range(200):
        await ws.send_str('{"type": "ping"}')
    pongs = errors = 0
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type != WSMsgType.TEXT:
            break
        f = orjson.loads(msg.data)
        if f["type"] == "pong":
            pongs += 1
        elif f["type"] == "error":
            assert f["code"] == "rate_limited"
            errors += 1
    assert pongs <= 25 and errors >= 1  # the burst is served, the flood is refused
    assert ws.close_code == 1008  # 200 frames at once: closed as abusive


async def test_stuck_reader_is_bounded_and_closed_without_slowing_others(client: TestClient[Any, Any]) -> None:
    """A browser that stops reading: bounded memory, other sockets unaffected, finally closed."""
    hub = client.app[HUB]  # type: ignore[index]
    hub.send_timeout = 1.0
    store = store_of(client)
    h = (await create(client))["hash"]
    await store.update(h, {"status": "processing"})
    fast = await client.ws_connect(f"/ws/requests/{h}")
    await frame(fast)
    # A raw socket that completes the handshake and then never reads a byte.
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        (
            f"GET /ws/requests/{h} HTTP/1.1\r\nHost: {client.host}:{client.port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {await _token(client, h)}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    await asyncio.sleep(0.3)
    slow = [c for c in hub.watchers[h] if isinstance(c, Client)]
    assert len(slow) == 2
    big = {"blob": "x" * 20_000}
    for i in range(300):
        await store.update(h, {"progress": i // 3, "current_message": f"step {i}", "result_data": big})
        if i % 50 == 0:
            got = await until(fast, lambda f, i=i: f["request"]["current_message"] == f"step {i}", timeout=5)
            assert got["type"] == "update"
        for c in hub.watchers.get(h, ()):
            assert len(c.pending) <= MAX_PENDING
    last = await until(fast, lambda f: f["request"]["current_message"] == "step 299", timeout=5)
    assert last["request"]["progress"] == 99
    # the stuck socket is closed and forgotten; the fast one stays
    for _ in range(50):
        if len(hub.watchers[h]) == 1:
            break
        await asyncio.sleep(0.1)
    assert len(hub.watchers[h]) == 1
    writer.close()
    await fast.close()
    gc.collect()
    del reader


@pytest.mark.parametrize("transport", ["socket", "sse"])
async def test_a_browser_that_falls_behind_is_sent_every_change_from_the_log(
    client: TestClient[Any, Any], transport: str
) -> None:
    """A browser reading slower than the bot writes: each change once, in order, none
    conflated away; while it is behind its queue stays short and the log holds the rest."""
    hub = client.app[HUB]  # type: ignore[index]
    hub.send_timeout = 60.0  # slow, not stuck: it is not dropped
    store = store_of(client)
    h = (await create(client))["hash"]
    await store.update(h, {"status": "processing"})
    if transport == "socket":
        ws = await client.ws_connect(f"/ws/requests/{h}")
        connection = ws._conn  # aiohttp keeps the upgraded connection there

        async def next_change() -> tuple[str, dict[str, Any]]:
            f = await frame(ws, timeout=20)
            return f["type"], f["request"]
    else:
        resp = await client.get(f"/sse/requests/{h}")
        connection = resp.connection
        events = EventReader(resp)

        async def next_change() -> tuple[str, dict[str, Any]]:
            kind, _, data = await events.next_event(timeout=20)
            return kind, data

    kind, first = await next_change()
    assert kind == "snapshot"
    # The browser stops reading (its connection is not read from at all) and the network holds
    # little: the server's socket buffers 16 KB, so its writes soon wait and its frames queue.
    # (Left to itself, loopback buffered all 9 MB in one make test run: nothing queued.)
    assert connection is not None and connection.transport is not None
    (feed,) = [c for c in hub.watchers[h] if isinstance(c, Feed)]
    assert feed.transport is not None
    feed.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    connection.transport.pause_reading()
    replayed = RESUMES.labels("behind", "replayed")._value.get()
    blob = "x" * 50_000
    steps = 90  # within the log (at least LOG_MAX changes are kept)
    assert steps <= LOG_MAX
    deepest = 0
    for i in range(steps):
        await store.update(h, {"progress": i, "current_message": f"step {i}", "result_data": {"blob": blob}})
        for c in hub.watchers.get(h, ()):
            if isinstance(c, Feed):
                deepest = max(deepest, len(c.pending))
                assert len(c.pending) <= MAX_PENDING
    connection.transport.resume_reading()
    seen: list[int] = []
    messages: list[str] = []
    while not messages or messages[-1] != f"step {steps - 1}":
        kind, rec = await next_change()
        assert kind == "update", kind  # never a snapshot: the log reached back
        seen.append(rec["seq"])
        messages.append(rec["current_message"])
    assert messages == [f"step {i}" for i in range(steps)]
    assert seen == list(range(first["seq"] + 1, first["seq"] + 1 + steps))
    assert RESUMES.labels("behind", "replayed")._value.get() > replayed, (
        f"the browser never fell behind (at most {deepest} frames queued): nothing was proven"
    )
    if transport == "socket":
        await ws.close()
    else:
        resp.close()


async def _token(client: TestClient[Any, Any], h: str) -> str:
    # the raw socket has no session cookie: give the request a known token
    from server.record import token_digest

    await store_of(client).update(h, {}, private={"token": token_digest("slow-token")})
    return "slow-token"


async def test_updates_written_through_another_process_reach_the_socket(
    client: TestClient[Any, Any], settings: Settings, processes: Any, redis: Redis
) -> None:
    proc, base = processes.web(settings)
    await wait_http(f"{base}/healthz", proc)
    async with aiohttp.ClientSession() as b:
        async with b.post(
            f"{base}/api/requests",
            json={"service": "vehicle-fines", "data": {"plate": "12B345-67", "national_id": "0012345678"}},
        ) as r:
            created = await r.json()
        h, token = created["hash"], created["access_token"]
        ws = await client.ws_connect(f"/ws/requests/{h}", headers={"Authorization": f"Bearer {token}"})
        assert (await frame(ws))["request"]["status"] == "pending"
        async with b.post(f"{base}/api/requests/{h}/cancel", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 202
        upd = await until(ws, lambda f: f["type"] == "update")
        assert upd["request"]["status"] == "cancelled"
        await ws.close()


async def _true(value: bool) -> bool:
    return value


async def hub_connection_ids(redis: Redis, name: str) -> list[str]:
    clients = await redis.client_list()
    return [str(c["id"]) for c in clients if c.get("name") == name and "P" in c.get("flags", "")]


async def test_pubsub_connection_killed_resubscribes_and_resyncs(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    hub = client.app[HUB]  # type: ignore[index]
    # Hold the reconnect for 3-9 s (the hub's own backoff, jittered 0.5-1.5x) so that the
    # writes below land while the hub has no subscription at all: only the resync can bring
    # them to the sockets. (1-3 s and 2-6 s were not always enough with the suite running
    # side by side on two cores.)
    hub.retry_first = 6.0
    store = store_of(client)
    hashes = [(await create(client))["hash"] for _ in range(3)]
    sockets = [await client.ws_connect(f"/ws/requests/{h}") for h in hashes]
    for ws in sockets:
        await frame(ws)
    name = "longrun-hub-" + settings.key_prefix.strip("_")
    # The session must be up (subscribed and resynced) before it is killed: a session killed
    # while it starts has not counted as up, and its retry comes after the start-up backoff.
    await wait_for(lambda: _true(hub.connected), timeout=20, what="the hub's pub/sub session to be up")
    ids = await hub_connection_ids(redis, name)
    assert len(ids) == 1  # one pub/sub connection for the whole process
    resynced, replayed = hub.stats.resynced, hub.stats.replayed
    # CLIENT KILL TYPE pubsub, aimed at this test's hub only (other processes share this Redis)
    await redis.execute_command("CLIENT", "KILL", "ID", ids[0])
    for h in hashes:
        await store.update(h, {"status": "processing", "progress": 10})
        await store.update(h, {"status": "completed", "result_data": {"ok": h}})
    assert await hub_connection_ids(redis, name) == [], "the hub resubscribed before the writes: nothing is proven"
    for h, ws in zip(hashes, sockets, strict=True):
        # Published to nobody, both changes come from the request's log, in order, once.
        step = await frame(ws, timeout=20)
        assert step["type"] == "update" and step["request"]["status"] == "processing"
        assert step["request"]["seq"] == 2
        done = await frame(ws)
        assert done["type"] == "update" and done["request"]["status"] == "completed"
        assert done["request"]["result_data"] == {"ok": h}
        assert done["request"]["seq"] == (await store_record(redis, store, h))["seq"] == 3
    assert hub.stats.resynced - resynced == len(hashes)
    assert hub.stats.replayed - replayed == len(hashes)
    assert hub.stats.reconnects >= 1
    assert len(await hub_connection_ids(redis, name)) == 1
    # and live relaying works again after the reconnect
    h = (await create(client))["hash"]
    ws = await client.ws_connect(f"/ws/requests/{h}")
    await frame(ws)
    await store.update(h, {"status": "processing", "progress": 33})
    assert (await until(ws, lambda f: f["type"] == "update"))["request"]["progress"] == 33
    assert hub.stats.resynced - resynced == len(hashes)  # that one came live
    for s in [*sockets, ws]:
        await s.close()


async def store_record(redis: Redis, store: RecordStore, h: str) -> dict[str, Any]:
    rec: dict[str, Any] = orjson.loads(await redis.get(store.keys.record(h)))
    return rec


async def test_every_drop_is_reconnected_promptly_however_many_came_before(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    """Backoff is for attempts that fail: a connection that was up starts again from the first wait."""
    hub = client.app[HUB]  # type: ignore[index]
    h = (await create(client))["hash"]
    ws = await client.ws_connect(f"/ws/requests/{h}")
    await frame(ws)
    name = "longrun-hub-" + settings.key_prefix.strip("_")
    # Doubling from 0.1 s without a reset, the 7th drop would wait at least 2.5 s (the 5 s
    # ceiling, jittered down by half); with the reset every wait is 0.05-0.15 s.
    for drop in range(8):
        generation = hub.generation
        ids = await hub_connection_ids(redis, name)
        assert len(ids) == 1, (drop, ids)
        await redis.execute_command("CLIENT", "KILL", "ID", ids[0])

        async def back(generation: int = generation) -> bool:
            return bool(hub.generation != generation)

        # not a speed limit: the designed wait is 0.15 s at most
        await wait_for(back, timeout=2.0, interval=0.01, what=f"the hub back after drop {drop + 1}")
    # eight resyncs of a record that had not changed: the socket was sent nothing again
    await store_of(client).update(h, {"status": "cancelled"})
    upd = await frame(ws)
    assert upd["type"] == "update" and upd["request"]["status"] == "cancelled" and upd["request"]["seq"] == 2
    await ws.close()


async def test_redis_restart_every_socket_ends_on_the_true_state(
    make_client: Any, settings: Settings, tmp_path: Any
) -> None:
    from server.devtools.embedded import EmbeddedRedis

    own = EmbeddedRedis(tmp_path / "redis", extra_args=("--appendonly", "yes", "--appendfsync", "always"))
    own.start()
    try:
        client = await make_client(settings.with_(redis_url=own.url))
        hub = client.app[HUB]
        # The first attempt after the drop comes 1-3 s later: the restart below and the writes
        # after it are done by then, so the sockets can only learn of them through the resync.
        hub.retry_first = 2.0
        store = store_of(client)
        hashes = [(await create(client))["hash"] for _ in range(5)]
        sockets = [await client.ws_connect(f"/ws/requests/{h}") for h in hashes]
        for ws in sockets:
            await frame(ws)
        resynced = hub.stats.resynced
        own.stop()
        resp = await client.get(f"/api/requests/{hashes[0]}")
        assert resp.status == 503  # a friendly JSON error while Redis is gone

        async def dropped() -> bool:
            return not hub.connected

        await wait_for(dropped, timeout=5, interval=0.01, what="the hub to see the drop")
        own = EmbeddedRedis(own.directory, port=own.port, extra_args=own.extra_args)
        own.start()
        fresh = Redis.from_url(own.url)
        writer = RecordStore(fresh, store.keys, ttl=600)
        for h in hashes:
            await writer.update(h, {"status": "processing"})
            await writer.update(h, {"status": "failed", "error": f"gone {h[-4:]}"})
        subscribers = [c for c in await fresh.client_list() if "P" in c.get("flags", "")]
        assert subscribers == [], "the hub resubscribed before the writes: nothing is proven"
        for h, ws in zip(hashes, sockets, strict=True):
            # nobody heard them live: both changes replayed from the log (kept by the restart)
            step = await frame(ws, timeout=15)
            assert step["type"] == "update" and step["request"]["status"] == "processing"
            done = await frame(ws)
            assert done["type"] == "update" and done["request"]["status"] == "failed"
            assert done["request"]["error"] == f"gone {h[-4:]}"
            assert done["request"]["seq"] == (await store_record(fresh, store, h))["seq"] == 3
        assert hub.stats.resynced - resynced == len(hashes)
        await fresh.aclose()
        for ws in sockets:
            await ws.close()
    finally:
        own.stop()


@pytest.mark.parametrize("signals", [("SIGTERM",), ("SIGINT", "SIGTERM")], ids=["one-signal", "two-signals"])
async def test_shutdown_closes_sockets_with_going_away(
    settings: Settings, processes: Any, redis: Redis, signals: tuple[str, ...]
) -> None:
    """A stop tells every browser to reconnect elsewhere (1001) and takes the process off the
    dashboard; a second signal while it runs (Ctrl-C reaches a supervisor and its children both,
    and the supervisor passes a SIGTERM on) lets that stop finish instead of cutting it short."""
    proc, base = processes.web(settings)
    await wait_http(f"{base}/healthz", proc)
    counts = Keys(settings.key_prefix).socket_counts()
    me = f"{socket.gethostname()}:{proc.pid}"

    async def reported(n: int) -> bool:
        entry = await redis.hget(counts, me)
        return entry is not None and entry.split()[0] == str(n).encode()

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        data = {"service": "vehicle-fines", "data": {"plate": "12B345-67", "national_id": "0012345678"}}
        async with session.post(f"{base}/api/requests", json=data) as r:
            h = (await r.json())["hash"]
        ws = await session.ws_connect(f"{base}/ws/requests/{h}")
        await frame(ws)
        await wait_for(lambda: reported(1), timeout=10, interval=0.05, what="the process to report its socket")
        first, *more = signals
        proc.send_signal(getattr(signal, first))
        msg = await ws.receive(timeout=10)
        assert msg.type == WSMsgType.CLOSE and msg.data == 1001
        for name in more:  # while the stop is under way
            proc.send_signal(getattr(signal, name))
        await ws.close()
    assert await asyncio.to_thread(proc.wait, 15) == 0
    assert await redis.hget(counts, me) is None  # the whole stop ran: the dashboard forgot it


async def test_a_socket_reopened_with_since_gets_every_missed_change_once_in_order(
    client: TestClient[Any, Any], redis: Redis
) -> None:
    store = store_of(client)
    h = (await create(client))["hash"]
    ws = await client.ws_connect(f"/ws/requests/{h}")
    assert (await frame(ws))["request"]["seq"] == 1
    await store.update(h, {"status": "processing", "progress": 5, "step": "login", "current_message": "Logging in"})
    seen = (await frame(ws))["request"]["seq"]
    assert seen == 2
    await ws.close()
    for i in range(3):  # while the page was away
        await store.update(h, {"progress": 10 + i, "step": f"s{i}", "current_message": f"message {i}"})
    ws = await client.ws_connect(f"/ws/requests/{h}?since={seen}")
    missed = [await frame(ws) for _ in range(3)]
    assert [f["type"] for f in missed] == ["update"] * 3
    assert [f["request"]["seq"] for f in missed] == [3, 4, 5]
    assert [f["request"]["current_message"] for f in missed] == ["message 0", "message 1", "message 2"]
    await store.update(h, {"progress": 50})
    live = await frame(ws)
    assert live["request"]["seq"] == 6 and live["request"]["progress"] == 50  # then live, nothing twice
    await ws.close()
    # Nothing missed: nothing sent until the next change.
    ws = await client.ws_connect(f"/ws/requests/{h}?since=6")
    await store.update(h, {"progress": 60})
    assert (await frame(ws))["request"]["seq"] == 7
    await ws.close()
    # The log is bounded and lives as long as the record.
    keys = store.keys
    ttl = await redis.ttl(keys.record(h))
    assert ttl > 0 and abs(await redis.ttl(keys.log(h)) - ttl) <= 1
    for i in range(LOG_MAX + LOG_SLACK + 5):
        await store.update(h, {"current_message": f"busy {i}"})
    assert LOG_MAX <= await redis.llen(keys.log(h)) <= LOG_MAX + LOG_SLACK
    # Further back than the log reaches: a snapshot, marked as such; so for a seq from the future.
    for since in (3, 10_000):
        ws = await client.ws_connect(f"/ws/requests/{h}?since={since}")
        snap = await frame(ws)
        assert snap["type"] == "snapshot" and snap["recovered"] is False
        assert snap["request"]["current_message"] == f"busy {LOG_MAX + LOG_SLACK + 4}"
        await ws.close()
    # a since that is not a seq is refused before the upgrade
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await client.ws_connect(f"/ws/requests/{h}?since=-1")
    assert err.value.status == 400
    # and on the event stream, answered as the API answers (a client can read the code)
    bad = await client.get(f"/sse/requests/{h}", headers={"Last-Event-ID": "abc"})
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "bad_since"
    resumes = {s.labels["outcome"]: s.value for m in RESUMES.collect() for s in m.samples if s.name.endswith("_total")}
    assert resumes.get("replayed", 0) >= 2 and resumes.get("not_recovered", 0) >= 2


async def test_sse_streams_and_resumes_from_last_event_id(client: TestClient[Any, Any]) -> None:
    store = store_of(client)
    body = await create(client)
    h = body["hash"]
    resp = await client.get(f"/sse/requests/{h}")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    events = EventReader(resp)
    kind, ident, data = await events.next_event()
    assert (kind, ident, data["seq"], data["hash"]) == ("snapshot", "1", 1, h)
    assert "_p" not in data
    await store.update(h, {"status": "processing", "progress": 20, "current_message": "one"})
    kind, ident, data = await events.next_event()
    assert (kind, ident, data["current_message"]) == ("update", "2", "one")
    resp.close()
    for text in ("two", "three"):
        await store.update(h, {"current_message": text})
    resp = await client.get(f"/sse/requests/{h}", headers={"Last-Event-ID": "2"})
    events = EventReader(resp)
    got = [await events.next_event() for _ in range(2)]
    assert [(k, i, d["current_message"]) for k, i, d in got] == [("update", "3", "two"), ("update", "4", "three")]
    resp.close()
    # the same access rule as the API: a stranger gets the 404 a hash that never existed gets
    async with aiohttp.ClientSession() as stranger:
        async with stranger.get(client.make_url(f"/sse/requests/{h}")) as r:
            assert r.status == 404
        async with stranger.get(client.make_url(f"/sse/requests/{h}"), headers={"Last-Event-ID": "x"}) as r:
            assert r.status == 400  # a bad id is refused before anything else
        bearer = {"Authorization": f"Bearer {body['access_token']}", "Last-Event-ID": "4"}
        async with stranger.get(client.make_url(f"/sse/requests/{h}"), headers=bearer) as r:
            assert r.status == 200
            await store.update(h, {"status": "completed"})
            kind, ident, data = await EventReader(r).next_event()
            assert (kind, ident, data["status"]) == ("update", "5", "completed")
