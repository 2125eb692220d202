"""The status endpoint's record cache: current through pub/sub, never stale, bounded."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from server.live.cache import RecordCache
from server.record import RecordStore
from server.settings import Settings
from server.web.typedefs import CACHE, HUB, STORE

FINES = {"plate": "12B345-67", "national_id": "0012345678"}


async def create(client: TestClient[Any, Any]) -> dict[str, Any]:
    resp = await client.post("/api/requests", json={"service": "vehicle-fines", "data": FINES})
    body: dict[str, Any] = await resp.json()
    return body


async def test_cached_answers_follow_every_change(client: TestClient[Any, Any]) -> None:
    cache: RecordCache = client.app[CACHE]  # type: ignore[index]
    store: RecordStore = client.app[STORE]  # type: ignore[index]
    h = (await create(client))["hash"]
    first = await (await client.get(f"/api/requests/{h}")).json()
    assert first["status"] == "pending"
    misses = cache.misses
    for progress in (10, 20, 30):
        await store.update(h, {"status": "processing", "progress": progress})
        for _ in range(50):  # pub/sub delivery is asynchronous: a few milliseconds
            body = await (await client.get(f"/api/requests/{h}")).json()
            if body["progress"] == progress:
                break
            await asyncio.sleep(0.01)
        assert body["progress"] == progress
    assert cache.misses == misses  # every answer after the first came from memory


async def test_a_change_published_while_the_entry_is_loaded_is_not_lost(client: TestClient[Any, Any]) -> None:
    cache: RecordCache = client.app[CACHE]  # type: ignore[index]
    store: RecordStore = client.app[STORE]  # type: ignore[index]
    h = (await create(client))["hash"]

    class ChangesWhileRead(RecordStore):
        async def get(self, request_hash: str) -> dict[str, Any] | None:
            rec = await super().get(request_hash)
            await store.update(request_hash, {"status": "processing", "progress": 55})  # lands mid-load
            return rec

    cache.store = ChangesWhileRead(store.redis, store.keys, ttl=store.ttl)
    await client.get(f"/api/requests/{h}")
    cache.store = store
    for _ in range(50):
        body = await (await client.get(f"/api/requests/{h}")).json()
        if body["progress"] == 55:
            break
        await asyncio.sleep(0.01)
    assert body["progress"] == 55 and body["status"] == "processing"


async def test_a_lost_pubsub_connection_means_reading_redis_again(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    hub = client.app[HUB]  # type: ignore[index]
    store: RecordStore = client.app[STORE]  # type: ignore[index]
    h = (await create(client))["hash"]
    await client.get(f"/api/requests/{h}")
    name = "longrun-hub-" + settings.key_prefix.strip("_")
    ids = [str(c["id"]) for c in await redis.client_list() if c.get("name") == name]
    before = hub.stats.reconnects
    await redis.execute_command("CLIENT", "KILL", "ID", ids[0])
    # changed while the cache cannot hear about it (its channel is gone with the connection)
    await store.update(h, {"status": "cancelled"})
    for _ in range(100):  # the hub notices within milliseconds and reconnects
        if hub.stats.reconnects > before and hub.connected:
            break
        await asyncio.sleep(0.02)
    assert hub.stats.reconnects > before
    # the entry read before the drop is not trusted any more: the answer is the true state
    body = await (await client.get(f"/api/requests/{h}")).json()
    assert body["status"] == "cancelled"


async def test_idle_entries_are_forgotten_and_unsubscribed(client: TestClient[Any, Any], redis: Redis) -> None:
    cache: RecordCache = client.app[CACHE]  # type: ignore[index]
    store: RecordStore = client.app[STORE]  # type: ignore[index]
    cache.idle = 0.3
    await cache.stop()
    cache._stopping.clear()
    cache.start()
    h = (await create(client))["hash"]
    await client.get(f"/api/requests/{h}")
    channel = store.keys.channel(h)
    assert dict(await redis.pubsub_numsub(channel))[channel.encode()] == 1
    for _ in range(40):
        await asyncio.sleep(0.1)
        if h not in cache.entries:
            break
    assert h not in cache.entries
    await asyncio.sleep(0.1)
    assert dict(await redis.pubsub_numsub(channel))[channel.encode()] == 0
    # and it is read again, correctly, when asked for
    assert orjson.loads(await (await client.get(f"/api/requests/{h}")).read())["hash"] == h
