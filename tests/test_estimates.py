"""Learned estimates: medians of recent completions, cached in Redis, used by the API."""

from __future__ import annotations

import re
import statistics
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from server.devtools.processes import Processes
from server.domain.catalog import SERVICES, get_service
from server.history import estimates
from server.history.db import connect, migrate
from server.history.estimates import Estimate, summarize
from server.record import Keys
from server.settings import Settings
from server.web.app import create_app
from tests.archive_helpers import archived_count, insert, row, rows
from tests.helpers import wait_for, wait_status

FINES = get_service("vehicle-fines")


def test_median_needs_enough_samples_and_has_a_floor() -> None:
    assert summarize([3.0, 4.0, 5.0, 6.0], [], min_samples=5) is None
    e = summarize([3.0, 4.0, 100.0, 6.0, 5.0], [{"a": 1.0, "b": 2.0}] * 5, min_samples=5)
    assert e is not None and e.duration == 5.0 and e.samples == 5 and e.steps == {"a": 1.0, "b": 2.0}
    tiny = summarize([0.2] * 6, [], min_samples=5)
    assert tiny is not None and tiny.duration == estimates.FLOOR
    rare = summarize([4.0] * 6, [{"a": 1.0}] * 6 + [{"rare": 9.0}], min_samples=5)
    assert rare is not None and "rare" not in rare.steps


def test_cached_estimate_round_trips_and_garbage_is_ignored() -> None:
    e = Estimate(duration=7.5, samples=9, steps={"login": 1.5}, at=123.0)
    assert Estimate.loads(e.dumps()) == e
    for junk in (b"nope", b"[]", b'{"duration": "x", "samples": 1}', None):
        assert Estimate.loads(junk) is None


async def test_estimates_learn_from_completed_runs_only(redis: Redis, pg_settings: Settings) -> None:
    await migrate(pg_settings)
    keys = Keys(pg_settings.key_prefix)
    now = time.time()
    completed = [
        row("u_1", now - i, duration=d, steps={"login": 1.0, "search": d - 1}) for i, d in enumerate([4, 5, 6, 7])
    ]
    noise = [
        row("u_2", now, status="failed", duration=500.0),
        row("u_2", now, status="cancelled", duration=900.0),
        row("u_3", now, service="video-generation", duration=1.0),
        row("u_4", now - 10_000, duration=300.0),  # the oldest completion
    ]
    await insert(pg_settings, completed + noise)
    conn = await connect(pg_settings, statement_timeout=10, application="test")
    try:
        learned = await estimates.refresh(conn, redis, keys, ["vehicle-fines"], window=4, min_samples=5)
        assert learned == {"vehicle-fines": None}  # 4 recent ones in the window: too few
        assert await estimates.estimated_duration(redis, keys, FINES) == FINES.estimated_duration

        learned = await estimates.refresh(conn, redis, keys, ["vehicle-fines"], window=20, min_samples=5)
        fines = learned["vehicle-fines"]
        assert fines is not None and fines.samples == 5
        assert fines.duration == 6.0  # median of 4 5 6 7 300: failures and other services do not count
        assert fines.steps == {"login": 1.0, "search": 5.0}
        assert await redis.ttl(keys.estimate("vehicle-fines")) > 3600

        assert await estimates.estimated_duration(redis, keys, FINES) == 6.0
        both = await estimates.estimated_durations(redis, keys, SERVICES)
        assert both["vehicle-fines"] == 6.0 and both["video-generation"] == 120  # catalog: no history

        # History shrinks below the minimum (retention, say): back to the catalog.
        await conn.execute("DELETE FROM history WHERE service_slug = 'vehicle-fines' AND duration >= 6")
        assert (await estimates.refresh(conn, redis, keys, ["vehicle-fines"]))["vehicle-fines"] is None
        assert await redis.exists(keys.estimate("vehicle-fines")) == 0
    finally:
        await conn.close()


async def test_the_api_uses_the_cached_estimate(redis: Redis, make_client: Any, pg_settings: Settings) -> None:
    keys = Keys(pg_settings.key_prefix)
    await redis.set(keys.estimate("vehicle-fines"), Estimate(duration=7.4, samples=12).dumps())
    client: TestClient[Any, Any] = await make_client(pg_settings)
    services = {s["slug"]: s for s in (await (await client.get("/api/services")).json())["services"]}
    assert services["vehicle-fines"]["estimated_duration"] == 7
    assert services["credit-score-rating"]["estimated_duration"] == 60

    resp = await client.post(
        "/api/requests", json={"service": "vehicle-fines", "data": {"plate": "12B345-67", "national_id": "0012345678"}}
    )
    assert resp.status == 201, await resp.text()
    created = await (await client.get(f"/api/requests/{(await resp.json())['hash']}")).json()
    assert created["estimated_duration"] == 7 and created["estimated_remaining_time"] == 7

    await redis.set(keys.estimate("vehicle-fines"), b"{broken")
    services = {s["slug"]: s for s in (await (await client.get("/api/services")).json())["services"]}
    assert services["vehicle-fines"]["estimated_duration"] == 20


async def test_the_pages_show_the_estimate_the_api_gives(redis: Redis, make_client: Any, pg_settings: Settings) -> None:
    keys = Keys(pg_settings.key_prefix)
    await redis.set(keys.estimate("vehicle-fines"), Estimate(duration=7.4, samples=12).dumps())
    await redis.set(keys.estimate("video-generation"), Estimate(duration=151.0, samples=30).dumps())
    client: TestClient[Any, Any] = await make_client(pg_settings)
    api = {s["slug"]: s["estimated_duration"] for s in (await (await client.get("/api/services")).json())["services"]}
    assert api == {"vehicle-fines": 7, "video-generation": 151, "credit-score-rating": 60, "parcel-tracking": 25}

    def chips(page: str) -> dict[str, str]:
        cards = re.findall(r'href="/services/([a-z-]+)".*?<span class="chip">(.*?)</span>', page, re.S)
        return dict(cards)

    catalog = await (await client.get("/", headers={"Accept-Language": "en"})).text()
    assert chips(catalog) == {
        "vehicle-fines": "About 7 s",
        "video-generation": "About 3 min",
        "credit-score-rating": "About 1 min",
        "parcel-tracking": "About 25 s",
    }
    form = await (await client.get("/services/vehicle-fines", headers={"Accept-Language": "en"})).text()
    assert '<span class="chip">About 7 s</span>' in form

    await redis.delete(keys.estimate("vehicle-fines"))  # too little history again: the catalog's
    form = await (await client.get("/services/vehicle-fines", headers={"Accept-Language": "en"})).text()
    assert '<span class="chip">About 20 s</span>' in form


@pytest.mark.slow
async def test_estimate_moves_toward_real_durations_after_a_run_of_completions(
    redis: Redis, pg_full_settings: Settings, processes: Processes, aiohttp_client: Any
) -> None:
    settings = pg_full_settings
    keys = Keys(settings.key_prefix)
    processes.workers(settings, count=2)
    processes.archiver(settings)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))

    async def estimate() -> int:
        services = (await (await client.get("/api/services")).json())["services"]
        return int(next(s for s in services if s["slug"] == "vehicle-fines")["estimated_duration"])

    assert await estimate() == FINES.estimated_duration
    hashes = []
    for _ in range(6):
        resp = await client.post(
            "/api/requests",
            json={"service": "vehicle-fines", "data": {"plate": "12B345-67", "national_id": "0012345678"}},
        )
        assert resp.status == 201, await resp.text()
        hashes.append((await resp.json())["hash"])
    for h in hashes:
        done = await wait_status(redis, keys, h, "completed", "failed", timeout=40)
        assert done["status"] == "completed", done

    async def all_archived() -> bool:
        return await archived_count(settings) == 6

    await wait_for(all_archived, timeout=30, what="6 archived completions")
    real = statistics.median(r["duration"] for r in rows(settings))
    expected = round(max(estimates.FLOOR, real))

    async def learned() -> bool:
        return await estimate() == expected

    await wait_for(learned, timeout=15, what=f"the estimate to become {expected} s")
    assert expected < FINES.estimated_duration
    resp = await client.post(
        "/api/requests", json={"service": "vehicle-fines", "data": {"plate": "12B345-67", "national_id": "0012345678"}}
    )
    record = await (await client.get(f"/api/requests/{(await resp.json())['hash']}")).json()
    assert record["estimated_duration"] == expected
