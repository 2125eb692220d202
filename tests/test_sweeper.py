"""The sweeper: queued requests outlive their TTL while they wait; requests queued for too
long, and running ones gone quiet, are failed (the fault tests cover the running cases end
to end)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from server import sweeper
from server.record import Keys
from server.settings import Settings
from server.typedefs import DISPATCHER, LIFECYCLE, STORE
from tests.conftest import Processes
from tests.helpers import record, wait_status

FINES = {"plate": "12B345-67", "national_id": "0012345678"}


async def sweep(client: TestClient[Any, Any]) -> int:
    app = client.app
    return await sweeper.sweep(app[STORE], app[LIFECYCLE], app[DISPATCHER])  # type: ignore[index]


async def test_a_queued_request_does_not_expire_while_no_worker_takes_it(
    make_client: Any, settings: Settings, processes: Processes, redis: Redis
) -> None:
    short = settings.with_(request_ttl=4)
    client = await make_client(short)
    keys = Keys(short.key_prefix)
    h = (await (await client.post("/api/requests", json={"service": "vehicle-fines", "data": FINES})).json())["hash"]
    for _ in range(10):  # 10 s, more than twice the record's TTL, with no worker
        await sweep(client)
        await asyncio.sleep(1.0)
    assert (await record(redis, keys, h))["status"] == "pending"
    processes.workers(short)
    done = await wait_status(redis, keys, h, "completed", "failed", timeout=30)
    assert done["status"] == "completed"


async def test_a_request_queued_too_long_is_given_up(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.key_prefix)
    store = client.app[STORE]  # type: ignore[index]
    h = (await (await client.post("/api/requests", json={"service": "vehicle-fines", "data": FINES})).json())["hash"]
    await store.update(h, {}, private={"created": 1.0})  # queued since 1970
    await redis.zadd(keys.inflight(keys.shard(h)), {h: 0})  # and due now
    assert await sweep(client) == 1
    rec = await record(redis, keys, h)
    assert rec["status"] == "failed" and rec["error"] == sweeper.NEVER_STARTED


async def test_one_sweep_at_a_time(client: TestClient[Any, Any]) -> None:
    store = client.app[STORE]  # type: ignore[index]
    token = await store.acquire_lock("sweep", 5)
    assert token is not None
    try:
        assert await sweep(client) == 0  # another one holds the lock
    finally:
        await store.release_lock("sweep", token)
