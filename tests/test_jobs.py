"""End to end through the real path: HTTP API → Redis → RQ worker → demo bot API over HTTP → back.

Each test starts real worker processes on its own queues; the demo bots
report progress into Redis with the SDK.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from server.devtools.processes import Processes
from server.domain.catalog import get_service
from server.domain.prompts import Prompt
from server.domain.protocol import Accepted
from server.record import Keys, RecordStore
from server.settings import Settings
from server.web.typedefs import LIFECYCLE
from tests.helpers import add_fault, bot_calls, outbox, record, wait_for, wait_status

pytestmark = pytest.mark.usefixtures("workers")


async def create(client: TestClient[Any, Any], service: str, data: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/api/requests", json={"service": service, "data": data})
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def otp(client: TestClient[Any, Any], h: str, code: str) -> Any:
    return await client.post(f"/api/requests/{h}/otp", json={"otp": code})


CREDIT = {"national_id": "0012345678", "mobile": "09121234567"}


async def until_the_job_is_done_with(redis: Redis, keys: Keys, h: str) -> None:
    """Until the run job has written its last word (the bot answered 202: "working"), so that
    what the test writes next is not overwritten by it."""

    async def working() -> bool:
        return (await record(redis, keys, h)).get("message_key") == "working"

    await wait_for(working, what="the run job to hand the request to the bot")


async def test_credit_score_with_wrong_then_right_code(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.key_prefix)
    created = await create(client, "credit-score-rating", CREDIT)
    h = created["hash"]
    assert created["status"] == "pending" and created["access_token"]
    assert created["ws_url"].endswith(f"/ws/requests/{h}") and created["ws_url"].startswith("ws://")

    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.channel(h))

    waiting = await wait_status(redis, keys, h, "waiting_otp")
    assert waiting["requires_otp"] is True and waiting["progress"] >= 40
    assert waiting["otp_data"]["length"] == 6 and waiting["otp_data"]["destination_hint"] == "+98 912 *** **67"
    assert waiting["step"] == "otp" and set(waiting["steps"]) >= {"login", "captcha", "otp"}

    # every change went out on the channel, seq strictly increasing
    seqs: list[int] = []
    while (msg := await pubsub.get_message(timeout=0.2)) is not None:
        if msg["type"] == "message":
            seqs.append(orjson.loads(msg["data"])["seq"])
    assert len(seqs) > 5 and seqs == sorted(set(seqs))
    await pubsub.aclose()

    messages = await outbox(settings.bot_api_url, h)
    assert len(messages) == 1 and messages[0]["to"] == "+98 912 *** **67"
    code = messages[0]["code"]
    wrong = "000000" if code != "000000" else "111111"

    # a code of another length than the bot said is a typo: refused here, no attempt spent
    short = await otp(client, h, code[:4])
    assert short.status == 409
    assert (await short.json())["error"] == {"code": "otp_wrong_length", "message": "The code has 6 digits."}
    assert (await record(redis, keys, h))["otp_data"]["attempts_left"] == 3

    resp = await otp(client, h, wrong)
    assert resp.status == 202
    rejected = await wait_for(lambda: _waiting_with_error(redis, keys, h), what="the wrong code to be rejected")
    assert rejected["otp_data"]["attempts_left"] == 2

    resp = await otp(client, h, code)
    assert resp.status == 202
    done = await wait_status(redis, keys, h, "completed", "failed")
    assert done["status"] == "completed", done
    assert done["progress"] == 100 and 300 <= done["result_data"]["score"] <= 850
    assert done["finished_at"] and done["requires_otp"] is False

    resp = await client.get(f"/api/requests/{h}")
    assert resp.status == 200
    assert (await resp.json())["status"] == "completed"


async def _waiting_with_error(redis: Redis, keys: Keys, h: str) -> dict[str, Any] | None:
    rec = await record(redis, keys, h)
    od = rec.get("otp_data") or {}
    return rec if rec["status"] == "waiting_otp" and od.get("error") else None


async def test_double_submission_of_the_same_code_reaches_the_bot_once(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.key_prefix)
    h = (await create(client, "credit-score-rating", CREDIT))["hash"]
    await wait_status(redis, keys, h, "waiting_otp")
    code = (await outbox(settings.bot_api_url, h))[0]["code"]
    first, second = await asyncio.gather(otp(client, h, code), otp(client, h, code))
    assert sorted([first.status, second.status]) == [202, 409]
    assert (await (second if second.status == 409 else first).json())["error"]["code"] == "otp_pending"
    await wait_status(redis, keys, h, "completed")
    calls = await bot_calls(settings.bot_api_url, h)
    otp_calls = {k: n for k, n in calls.items() if ":otp:" in k}
    assert list(otp_calls.values()) == [1], calls


async def test_accepted_202_bot_finishes_through_the_sdk(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.key_prefix)
    h = (await create(client, "video-generation", {"prompt": "a paper boat", "duration_seconds": 10}))["hash"]
    running = await wait_status(redis, keys, h, "processing")
    assert running["priority"] == "low"
    done = await wait_status(redis, keys, h, "completed", "failed", timeout=30)
    assert done["status"] == "completed", done
    assert done["result_data"]["video_url"].endswith(".mp4")
    assert set(done["steps"]) == {"queued", "storyboard", "render", "encode"}


async def test_retryable_failure_then_success(client: TestClient[Any, Any], redis: Redis, settings: Settings) -> None:
    keys = Keys(settings.key_prefix)
    plate = {"plate": "12B345-67", "national_id": "1111111111"}
    await add_fault(settings.bot_api_url, service="vehicle-fines", match=plate, mode="retryable", count=1)
    h = (await create(client, "vehicle-fines", plate))["hash"]
    retrying = await wait_for(
        lambda: _retrying(redis, keys, h), what="the person to be told we are retrying", timeout=20
    )
    assert "attempt 2 of 4" in retrying["current_message"]
    done = await wait_status(redis, keys, h, "completed", "failed", timeout=30)
    assert done["status"] == "completed", done
    assert done["attempt"] == 2
    assert (await bot_calls(settings.bot_api_url, h)) == {f"{h}:run": 2}


async def _retrying(redis: Redis, keys: Keys, h: str) -> dict[str, Any] | None:
    rec = await record(redis, keys, h)
    return rec if rec.get("retrying") else None


async def test_permanent_failure_fails_with_the_bots_message(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.key_prefix)
    data = {"national_id": "2222222222", "mobile": "09120000000"}
    await add_fault(settings.bot_api_url, service="credit-score-rating", match=data, mode="fatal")
    h = (await create(client, "credit-score-rating", data))["hash"]
    failed = await wait_status(redis, keys, h, "failed", "completed")
    assert failed["status"] == "failed"
    assert failed["error"] == "No record was found for this national ID."
    assert (await bot_calls(settings.bot_api_url, h)) == {f"{h}:run": 1}


async def test_cancel_mid_run_tells_the_bot(client: TestClient[Any, Any], redis: Redis, settings: Settings) -> None:
    keys = Keys(settings.key_prefix)
    data = {"plate": "98C765-43", "national_id": "3333333333"}
    await add_fault(settings.bot_api_url, service="vehicle-fines", match=data, mode="stall")
    h = (await create(client, "vehicle-fines", data))["hash"]
    await wait_for(lambda: _progressed(redis, keys, h), what="the bot to start")
    resp = await client.post(f"/api/requests/{h}/cancel")
    assert resp.status == 202
    assert (await resp.json())["status"] == "cancelled"
    await wait_for(lambda: _bot_cancelled(settings.bot_api_url, h), what="the bot to hear of the cancel")
    again = await client.post(f"/api/requests/{h}/cancel")
    assert again.status == 409
    await asyncio.sleep(0.5)
    rec = await record(redis, keys, h)
    assert rec["status"] == "cancelled"


async def _progressed(redis: Redis, keys: Keys, h: str) -> bool:
    rec = await record(redis, keys, h)
    return rec["status"] == "processing" and rec["progress"] > 0


async def _bot_cancelled(bot_url: str, h: str) -> bool:
    return "cancel" in await bot_calls(bot_url, h)


async def test_old_style_update_is_read_by_the_api(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    """A bot written against the original design: GET, edit, SETEX, PUBLISH — no seq."""
    keys = Keys(settings.key_prefix)
    data = {"prompt": "old bot", "duration_seconds": 5}
    await add_fault(settings.bot_api_url, service="video-generation", match=data, mode="silent")
    h = (await create(client, "video-generation", data))["hash"]
    await until_the_job_is_done_with(redis, keys, h)
    raw = orjson.loads(await redis.get(keys.record(h)))
    raw.update(progress=77, step="render", current_message="rendering the old way")
    del raw["seq"]
    await redis.execute_command("SETEX", keys.record(h), 1800, orjson.dumps(raw))
    await redis.publish(keys.channel(h), orjson.dumps(raw))
    resp = await client.get(f"/api/local-requests/{h}/status")
    assert resp.status == 200
    body = await resp.json()
    assert body["progress"] == 77 and body["status"] == "processing" and body["requires_otp"] is False
    assert body["current_message"] == "rendering the old way"


async def test_the_per_service_concurrency_cap_holds(
    client: TestClient[Any, Any], redis: Redis, settings: Settings, processes: Processes
) -> None:
    """credit-score-rating may run 5 at once (RQ RateLimit): the sixth and seventh wait,
    although there are workers free for them (2 + 6 here)."""
    processes.workers(settings, count=6)
    keys = Keys(settings.key_prefix)
    data = {"national_id": "4444444444", "mobile": "09124444444"}
    await add_fault(settings.bot_api_url, service="credit-score-rating", match=data, mode="busy", count=7)
    hashes = [(await create(client, "credit-score-rating", data))["hash"] for _ in range(7)]

    async def five_running() -> list[str] | None:
        running = [h for h in hashes if (await record(redis, keys, h))["status"] == "processing"]
        return running if len(running) == 5 else None

    running = await wait_for(five_running, timeout=40, what="five requests to run")
    await asyncio.sleep(1.0)  # and no more than five, even given time
    assert len([h for h in hashes if (await record(redis, keys, h))["status"] == "processing"]) == 5
    held = await redis.zcard(f"rq:rl:{keys.prefix}service:credit-score-rating:rate_limited")
    assert held == 2
    waiting = [h for h in hashes if h not in running]
    assert (await client.post(f"/api/requests/{running[0]}/cancel")).status == 202

    async def one_let_in() -> list[str] | None:
        # RQ lets in the one held longest, which need not be the one created first: the
        # workers dequeued the two at the same moment and either may have been held first
        moved = [h for h in waiting if (await record(redis, keys, h))["status"] == "processing"]
        return moved or None

    assert len(await wait_for(one_let_in, what="a freed slot to let a held request in")) == 1
    for h in hashes:
        await client.post(f"/api/requests/{h}/cancel")


async def test_an_old_style_update_reaches_an_open_socket(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.key_prefix)
    data = {"prompt": "old bot live", "duration_seconds": 5}
    await add_fault(settings.bot_api_url, service="video-generation", match=data, mode="silent")
    h = (await create(client, "video-generation", data))["hash"]
    await until_the_job_is_done_with(redis, keys, h)
    ws = await client.ws_connect(f"/ws/requests/{h}")
    await ws.receive(timeout=5)
    raw = orjson.loads(await redis.get(keys.record(h)))
    raw.update(progress=64, current_message="from an old bot")
    del raw["seq"]
    await redis.execute_command("SETEX", keys.record(h), 1800, orjson.dumps(raw))
    await redis.publish(keys.channel(h), orjson.dumps(raw))
    async with asyncio.timeout(5):
        while True:
            frame = orjson.loads((await ws.receive()).data)
            if frame["type"] == "update" and frame["request"]["current_message"] == "from an old bot":
                break
    assert frame["request"]["progress"] == 64 and "_p" not in frame["request"]
    seen = frame["request"].get("seq", -1)
    # Longrun's next change after a seq-less write is not taken for a stale one
    await RecordStore(redis, keys, ttl=settings.request_ttl).update(h, {"progress": 70, "current_message": "next"})
    async with asyncio.timeout(5):
        while True:
            frame = orjson.loads((await ws.receive()).data)
            if frame["type"] == "update" and frame["request"]["current_message"] == "next":
                break
    assert frame["request"]["progress"] == 70 and frame["request"]["seq"] > seen
    await ws.close()


async def test_a_bots_202_read_after_its_first_prompt_leaves_the_prompt_as_it_is(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    """A fast bot answers 202 and asks the person something before the worker has read that
    202: "the service is working on it" must not be written over the question."""
    life = client.app[LIFECYCLE]  # type: ignore[index]
    service = get_service("credit-score-rating")
    h = (await create(client, "credit-score-rating", CREDIT))["hash"]
    await life.start(h, service)
    await life.ask_input(h, Prompt.parse({"id": "pay", "kind": "confirm", "label": "Pay?"}), service)
    asked = await record(redis, Keys(settings.key_prefix), h)
    assert not (await life.apply_answer(h, Accepted(), service)).applied
    now = await record(redis, Keys(settings.key_prefix), h)
    assert now["status"] == "waiting_input" and now["message_key"] == asked["message_key"] == "input_confirm"
