"""The sweeper: queued requests outlive their TTL while they wait; requests queued for too
long, and running ones gone quiet, are failed (the fault tests cover the running cases end
to end)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from jobs.archiver import Archiver
from server.devtools.processes import Processes
from server.domain.catalog import get_service
from server.domain.prompts import Prompt
from server.domain.protocol import OtpPrompt
from server.record import SHARDS, Keys
from server.requests import sweeper
from server.settings import Settings
from server.web.typedefs import DISPATCHER, LIFECYCLE, STORE
from tests.archive_helpers import rows
from tests.helpers import record, wait_for

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

    async def finished() -> dict[str, Any] | None:
        # the sweeper goes on keeping it alive until a worker (slow to start on a busy machine) takes it
        await sweep(client)
        rec = await record(redis, keys, h)
        return rec if rec["status"] in ("completed", "failed") else None

    done = await wait_for(finished, timeout=30, interval=0.5, what="the request to finish")
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


async def test_a_request_queued_too_long_that_starts_as_it_is_given_up_runs_on(
    client: TestClient[Any, Any], redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker starts the request between the sweeper's read (pending for six hours) and its
    giving up: the request runs on, not failed as "never started" under the bot at work."""
    keys = Keys(settings.key_prefix)
    store, life = client.app[STORE], client.app[LIFECYCLE]  # type: ignore[index]
    h = (await (await client.post("/api/requests", json={"service": "vehicle-fines", "data": FINES})).json())["hash"]
    await store.update(h, {}, private={"created": 1.0})
    await redis.zadd(keys.inflight(keys.shard(h)), {h: 0})
    read = store.get

    async def read_then_a_worker_starts_it(request_hash: str) -> dict[str, Any] | None:
        rec = await read(request_hash)
        if request_hash == h:
            assert (await life.start(h, get_service("vehicle-fines"))).applied
        return rec

    monkeypatch.setattr(store, "get", read_then_a_worker_starts_it)
    assert await sweep(client) == 0
    assert (await record(redis, keys, h))["status"] == "processing"


async def test_an_unanswered_prompt_fails_at_its_expiry_and_its_wait_is_not_work(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.key_prefix)
    store, life = client.app[STORE], client.app[LIFECYCLE]  # type: ignore[index]
    service = get_service("vehicle-fines")
    h = (await (await client.post("/api/requests", json={"service": "vehicle-fines", "data": FINES})).json())["hash"]
    assert (await life.start(h, service)).applied
    options = [{"value": "12B345-67"}, {"value": "43D236-74"}]
    prompt = Prompt.parse({"id": "vehicle", "kind": "choice", "options": options, "expires_in": 60})
    assert (await life.ask_input(h, prompt, service)).applied
    rec = await record(redis, keys, h)
    p = rec["_p"]
    assert p["wait_since"] and p["deadline_left"] > 0  # the service's clock stops while the person answers
    due = await redis.zscore(keys.inflight(keys.shard(h)), h)
    assert due is not None and abs(due - (p["input_exp"] + 5)) < 0.01  # due at the prompt's expiry
    assert await sweep(client) == 0  # not yet
    await store.update(h, {}, private={"input_exp": 1.0})  # the prompt expired in 1970
    assert await sweep(client) == 1
    rec = await record(redis, keys, h)
    assert rec["status"] == "failed" and rec["error"] == sweeper.INPUT_EXPIRED
    assert rec["requires_input"] is False


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


@pytest.mark.parametrize("waiting_for_code", [False, True])
async def test_a_request_an_old_style_bot_finished_is_archived_once(
    make_client: Any, pg_full_settings: Settings, redis: Redis, waiting_for_code: bool
) -> None:
    """A bot written against the original design ends a request with GET, edit, SETEX,
    PUBLISH: no script sees the terminal status. The sweeper adopts it: archived once, out
    of the in-flight index and of the counts."""
    settings = pg_full_settings
    client = await make_client(settings)
    keys = Keys(settings.key_prefix)
    life = client.app[LIFECYCLE]
    service = get_service("credit-score-rating")
    h = (
        await (
            await client.post(
                "/api/requests",
                json={"service": service.slug, "data": {"national_id": "0012345678", "mobile": "09121234567"}},
            )
        ).json()
    )["hash"]
    assert (await life.start(h, service)).applied
    if waiting_for_code:
        prompt = OtpPrompt(length=6, destination_hint="+98 912 *** **67", expires_in=120)
        assert (await life.ask_otp(h, prompt, service)).applied
    shard = keys.shard(h)
    status_counted = "waiting_otp" if waiting_for_code else "processing"
    assert int(await redis.hget(keys.counts(shard), f"{status_counted}|{service.slug}") or 0) == 1

    raw = orjson.loads(await redis.get(keys.record(h)))
    raw.update(status="completed", progress=100, current_message="done, the old way", result_data={"score": 700})
    del raw["seq"]
    await redis.execute_command("SETEX", keys.record(h), 1800, orjson.dumps(raw))
    await redis.publish(keys.channel(h), orjson.dumps(raw))
    assert await redis.zscore(keys.inflight(shard), h) is not None  # no script saw it end

    await redis.zadd(keys.inflight(shard), {h: 0})  # due now, not after the heartbeat window
    assert await sweep(client) == 0  # adopted, not failed
    assert await sweep(client) == 0  # and only once

    assert await redis.zscore(keys.inflight(shard), h) is None
    assert await redis.zscore(keys.otp_waits(shard), h) is None
    counts = {k.decode(): int(v) for k, v in (await redis.hgetall(keys.counts(shard))).items()}
    assert all(n == 0 for n in counts.values()), counts
    stored = await record(redis, keys, h)
    assert stored["status"] == "completed" and stored["current_message"] == "done, the old way"

    archiver = Archiver(settings, redis, consumer="archiver-test")
    try:
        assert await archiver.drain() == 1
        assert await archiver.drain() == 0
    finally:
        await archiver.close()
    [row] = rows(settings, "hash = %s", [h])
    assert row["status"] == "completed" and row["result_data"] == {"score": 700}
    assert row["started_at"] is not None and row["finished_at"] >= row["started_at"]
    assert len(rows(settings)) == 1


async def test_an_old_style_bot_reporting_by_setex_is_alive_and_failed_once_silent(
    client: TestClient[Any, Any], settings: Settings, redis: Redis
) -> None:
    """A bot written against the original design reports with GET, edit, SETEX, PUBLISH: no
    script counts a heartbeat. The sweeper takes a change it did not write for one; a record
    that stays as it was is failed as silent one window later."""
    keys = Keys(settings.key_prefix)
    service = get_service("vehicle-fines")
    resp = await client.post("/api/requests", json={"service": service.slug, "data": FINES})
    h = (await resp.json())["hash"]
    app = client.app
    window = 0.8  # a short heartbeat window, the deadline far away
    started = await app[STORE].update(  # type: ignore[index]
        h, {"status": "processing"}, expect=["pending"], deadline=60, heartbeat=window
    )
    assert started.applied
    shard = keys.shard(h)

    async def old_bot_reports(progress: int) -> None:
        raw = orjson.loads(await redis.get(keys.record(h)))
        raw.update(progress=progress, step="search", current_message=f"old bot at {progress}")
        await redis.execute_command("SETEX", keys.record(h), 1800, orjson.dumps(raw))
        await redis.publish(keys.channel(h), orjson.dumps(raw))

    await asyncio.sleep(window / 2)
    await old_bot_reports(40)
    await asyncio.sleep(window / 2 + 0.2)  # the window since the last script's heartbeat is over
    assert await sweep(client) == 0  # alive: it reported
    rec = await record(redis, keys, h)
    assert rec["status"] == "processing" and rec["progress"] == 40 and rec["current_message"] == "old bot at 40"
    due = await redis.zscore(keys.inflight(shard), h)
    assert due is not None and due > time.time()  # looked at again one window later

    await old_bot_reports(55)
    await asyncio.sleep(window + 0.2)
    assert await sweep(client) == 0  # reported again within the window
    await asyncio.sleep(window + 0.2)  # and nothing since
    assert await sweep(client) == 1
    failed = await record(redis, keys, h)
    assert failed["status"] == "failed" and failed["error"] == sweeper.SILENT and failed["progress"] == 55
