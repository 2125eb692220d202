"""The bot SDK: straight into Redis (one Lua round trip) and over signed HTTP events."""

from __future__ import annotations

from typing import Any

import aiohttp
from redis.asyncio import Redis

from bots.demo import create_bot_app
from bots.sdk import HttpReporter, RedisReporter
from server.devtools.processes import Processes
from server.record import Keys, RecordStore, new_record, token_digest
from server.settings import Settings
from tests.helpers import outbox, wait_status


async def new_running(store: RecordStore, slug: str = "vehicle-fines") -> str:
    h = store.keys.new_hash()
    rec = new_record(
        request_hash=h,
        service_slug=slug,
        request_data={},
        user_id="u",
        token_hash=token_digest("t"),
        estimated_duration=20,
        priority="high",
    )
    await store.create(rec)
    await store.update(h, {"status": "processing"})
    return h


async def test_redis_reporter_reports_each_event(base_settings: Settings, redis: Redis) -> None:
    async with RedisReporter.connect(base_settings) as report:
        store = report.lifecycle.store
        h = await new_running(store)
        assert await report.progress(h, 30, step="search", message="Finding the vehicle")
        rec = await store.get(h)
        assert rec is not None and rec["progress"] == 30 and rec["current_message"] == "Finding the vehicle"
        assert await report.progress(h, 10)  # applied, but the bar never goes back
        rec = await store.get(h)
        assert rec is not None and rec["progress"] == 30
        assert await report.completed(h, {"total": 0, "fines": []})
        assert not await report.progress(h, 99)  # finished: ignored, and the bot learns it
        rec = await store.get(h)
        assert rec is not None and rec["status"] == "completed" and rec["result_data"] == {"total": 0, "fines": []}


async def test_whole_otp_flow_with_bots_reporting_over_signed_http(
    aiohttp_server: Any, make_client: Any, base_settings: Settings, processes: Processes, redis: Redis
) -> None:
    client = await make_client(base_settings)
    async with aiohttp.ClientSession() as session:
        reporter = HttpReporter(session, str(client.make_url("")).rstrip("/"), base_settings.signing_secret)
        bots = await aiohttp_server(create_bot_app(base_settings, reporter))
        settings = base_settings.with_(bot_api_url=str(bots.make_url("")).rstrip("/"))
        processes.workers(settings)
        keys = Keys(settings.key_prefix)
        resp = await client.post(
            "/api/requests",
            json={"service": "credit-score-rating", "data": {"national_id": "0012345678", "mobile": "09121234567"}},
        )
        h = (await resp.json())["hash"]
        waiting = await wait_status(redis, keys, h, "waiting_otp")
        assert set(waiting["steps"]) >= {"login", "captcha"}  # progress came in as signed events
        code = (await outbox(settings.bot_api_url, h))[0]["code"]
        assert (await client.post(f"/api/requests/{h}/otp", json={"otp": code})).status == 202
        done = await wait_status(redis, keys, h, "completed", "failed")
        assert done["status"] == "completed", done
        assert "report" in done["steps"]
