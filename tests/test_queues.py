"""Priority queues, seen the way a worker sees them (real Redis, a real RQ worker, the demo bot)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from server.devtools.processes import Processes
from server.queue.dispatch import job_id, queue_names
from server.record import Keys
from server.settings import Settings
from tests.helpers import outbox, record, wait_for, wait_status

FINES = {"plate": "12B345-67", "national_id": "1111111111"}
CREDIT = {"national_id": "0012345678", "mobile": "09121234567"}
VIDEO = {"prompt": "a paper boat", "duration_seconds": 10}


async def create(client: TestClient[Any, Any], service: str, data: dict[str, Any]) -> str:
    resp = await client.post("/api/requests", json={"service": service, "data": data})
    assert resp.status == 201, await resp.text()
    h: str = (await resp.json())["hash"]
    return h


async def test_one_worker_takes_high_then_default_then_low_and_a_code_goes_on_high(
    client: TestClient[Any, Any], redis: Redis, settings: Settings, processes: Processes
) -> None:
    keys = Keys(settings.key_prefix)
    prefix = settings.key_prefix
    # No worker yet: each run job waits on its service's queue, created low first.
    low = await create(client, "video-generation", VIDEO)
    default = await create(client, "credit-score-rating", CREDIT)
    high = await create(client, "vehicle-fines", FINES)
    high_q, default_q, low_q = (f"rq:queue:{name}" for name in queue_names(prefix))
    assert [await redis.lrange(q, 0, -1) for q in (high_q, default_q, low_q)] == [
        [job_id(prefix, h, "run").encode()] for h in (high, default, low)
    ]

    # One job at a time: the order the worker takes them in is the order they start in.
    processes.workers(settings, count=1, jobs=1)
    await wait_status(redis, keys, high, "completed", timeout=30)
    await wait_status(redis, keys, default, "waiting_otp", timeout=30)
    await wait_status(redis, keys, low, "processing", "completed", timeout=30)

    async def started(h: str) -> datetime:
        # when its run job started it (a finished job is gone: its outcome is in the record)
        return datetime.fromisoformat((await record(redis, keys, h))["started_at"])

    assert await started(high) < await started(default) < await started(low)

    # The person's code is a continuation: it goes on the high queue, ahead of new work.
    code = (await wait_for(lambda: outbox(settings.bot_api_url, default), what="the SMS"))[-1]["code"]
    resp = await client.post(f"/api/requests/{default}/otp", json={"otp": code})
    assert resp.status == 202, await resp.text()
    jobs = await wait_for(lambda: redis.keys(f"rq:job:{job_id(prefix, default, 'otp')}*"), what="the continuation job")
    assert [await redis.hget(j, "origin") for j in jobs] == [f"{prefix}high".encode()]
    await wait_status(redis, keys, default, "completed", timeout=30)
