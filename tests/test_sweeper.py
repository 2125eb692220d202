"""The sweeper: queued requests outlive their TTL while they wait; requests queued for too
long, and running ones gone quiet, are failed (the fault tests cover the running cases end
to end)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from server import sweeper
from server.catalog import get_service
from server.record import SHARDS, Keys
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


async def overdue_requests(client: TestClient[Any, Any], n: int) -> list[str]:
    """``n`` running requests whose service deadline passed long ago."""
    store, life = client.app[STORE], client.app[LIFECYCLE]  # type: ignore[index]
    service = get_service("vehicle-fines")
    hashes = []
    for _ in range(n):
        resp = await client.post("/api/requests", json={"service": "vehicle-fines", "data": FINES})
        assert resp.status == 201, await resp.text()
        h = (await resp.json())["hash"]
        assert (await life.start(h, service)).applied
        await store.update(h, {}, private={"deadline": 1.0})  # due since 1970
        hashes.append(h)
    return hashes


async def archived(redis: Redis, keys: Keys) -> list[str]:
    """Hashes handed to the archive streams (once per terminal record)."""
    out = []
    for shard in range(SHARDS):
        for _, fields in await redis.xrange(keys.archive(shard)):
            out.append(orjson.loads(fields[b"r"])["hash"])
    return out


async def test_one_sweep_at_a_time(make_client: Any, settings: Settings, redis: Redis) -> None:
    roomy = settings.with_(create_rate=(100, 1.0), create_rate_per_address=(100, 1.0))
    machine_a, machine_b = await make_client(roomy), await make_client(roomy)  # two web processes
    keys = Keys(roomy.key_prefix)
    hashes = await overdue_requests(machine_a, 12)
    before = {h: await redis.get(keys.record(h)) for h in hashes}

    # While another machine holds the lock, a sweep does nothing, though there is work.
    store = machine_a.app[STORE]  # type: ignore[index]
    token = await store.acquire_lock("sweep", 5)
    assert token is not None
    try:
        assert await sweep(machine_b) == 0
        assert {h: await redis.get(keys.record(h)) for h in hashes} == before
    finally:
        await store.release_lock("sweep", token)

    # Two machines sweep at once: one does all the work, the other is turned away by the lock.
    results = await asyncio.gather(sweep(machine_a), sweep(machine_b))
    assert sorted(results) == [0, len(hashes)], results
    for h in hashes:
        rec = await record(redis, keys, h)
        assert rec["status"] == "failed" and rec["error"] == sweeper.OVERDUE
        assert rec["seq"] == orjson.loads(before[h])["seq"] + 1  # failed exactly once
    assert sorted(await archived(redis, keys)) == sorted(hashes)  # handed to the archive once each
    queued = [j.decode() for j in await redis.lrange(f"rq:queue:{keys.prefix}high", 0, -1)]
    cancels = [j for j in queued if j.endswith("-cancel")]
    assert sorted(cancels) == sorted(f"{keys.prefix}{h}-cancel" for h in hashes)  # the bot told once each
