"""Faults: dead workers, silent or hanging bots, bots that are down, Redis restarts, backlogs.

Real processes on loopback, bounded in time. Service deadlines and heartbeat
windows are scaled down (``time_scale``) so that a 60 s deadline takes 3 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from bots.demo import create_bot_app
from server.devtools.embedded import EmbeddedRedis
from server.devtools.processes import Processes, free_port, wait_http
from server.record import OTP_EXPIRY_GRACE, Keys
from server.requests.sweeper import OTP_EXPIRED, OVERDUE, SILENT
from server.settings import Settings
from tests.helpers import add_fault, bot_calls, outbox, record, wait_for, wait_status

FINES = {"plate": "12B345-67", "national_id": "0012345678"}
CREDIT = {"national_id": "0012345678", "mobile": "09121234567"}


@pytest.fixture
def slow_bots(aiohttp_server: Any, base_settings: Settings) -> Any:
    """Demo bots at another speed, for tests that need a bot call to last."""

    async def make(speed: float) -> Settings:
        server = await aiohttp_server(create_bot_app(base_settings.with_(bot_speed=speed)))
        return base_settings.with_(bot_api_url=str(server.make_url("")).rstrip("/"), bot_speed=speed)

    return make


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """Deadlines and heartbeats ×0.05 (vehicle-fines: 3 s deadline, 2.25 s heartbeat), sweeps every second."""
    return settings.with_(time_scale=0.05, sweep_interval=1)


def start_stack(processes: Processes, settings: Settings, workers: int = 2) -> None:
    processes.workers(settings, count=workers)
    processes.start("cron", ["-m", "jobs.cron"], settings.to_env())


async def create(client: TestClient[Any, Any], service: str, data: dict[str, Any]) -> str:
    resp = await client.post("/api/requests", json={"service": service, "data": data})
    assert resp.status == 201, await resp.text()
    h: str = (await resp.json())["hash"]
    return h


def parse(v: str) -> float:
    return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()


def seconds(rec: dict[str, Any], a: str, b: str) -> float:
    return parse(rec[b]) - parse(rec[a])


async def test_silent_bot_is_failed_after_the_heartbeat_window(
    make_client: Any, fast: Settings, processes: Processes, redis: Redis
) -> None:
    client = await make_client(fast)
    start_stack(processes, fast)
    data = {"prompt": "silent", "duration_seconds": 5}
    await add_fault(fast.bot_api_url, service="video-generation", match=data, mode="silent")
    h = await create(client, "video-generation", data)
    failed = await wait_status(redis, Keys(fast.key_prefix), h, "failed", "completed", timeout=20)
    assert failed["status"] == "failed" and failed["error"] == SILENT
    window = 60 * fast.time_scale  # video-generation's heartbeat window, scaled
    assert window <= seconds(failed, "started_at", "finished_at") <= window + 4
    await wait_for(lambda: _told_cancel(fast.bot_api_url, h), what="the bot to be told to cancel")


async def _told_cancel(bot_url: str, h: str) -> bool:
    return "cancel" in await bot_calls(bot_url, h)


async def test_bot_that_never_answers_is_failed_at_the_deadline(
    make_client: Any, fast: Settings, processes: Processes, redis: Redis
) -> None:
    client = await make_client(fast)
    start_stack(processes, fast)
    await add_fault(fast.bot_api_url, service="vehicle-fines", match=FINES, mode="busy")
    h = await create(client, "vehicle-fines", FINES)
    failed = await wait_status(redis, Keys(fast.key_prefix), h, "failed", "completed", timeout=20)
    assert failed["status"] == "failed" and failed["error"] == OVERDUE
    deadline = 60 * fast.time_scale
    assert deadline - 0.5 <= seconds(failed, "started_at", "finished_at") <= deadline + 2
    await wait_for(lambda: _told_cancel(fast.bot_api_url, h), what="the bot to be told to cancel")


async def test_bot_down_for_two_attempts_completes_on_the_third(
    client: TestClient[Any, Any], settings: Settings, processes: Processes, redis: Redis
) -> None:
    keys = Keys(settings.key_prefix)
    start_stack(processes, settings)
    await add_fault(settings.bot_api_url, service="vehicle-fines", match=FINES, mode="unavailable", count=2)
    h = await create(client, "vehicle-fines", FINES)
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.channel(h))
    done = await wait_status(redis, keys, h, "completed", "failed", timeout=30)
    assert done["status"] == "completed" and done["attempt"] == 3
    said = set()
    while (msg := await pubsub.get_message(timeout=0.1)) is not None:
        if msg["type"] == "message":
            said.add(orjson.loads(msg["data"])["current_message"])
    await pubsub.aclose()
    assert {m for m in said if "trying again" in m} >= {
        "The service is not answering; trying again (attempt 2 of 4).",
        "The service is not answering; trying again (attempt 3 of 4).",
    }


async def test_bot_down_for_good_fails_with_a_message_for_people(
    make_client: Any, settings: Settings, processes: Processes, redis: Redis
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    down = settings.with_(bot_api_url=f"http://127.0.0.1:{dead}")
    client = await make_client(down)
    start_stack(processes, down)
    h = await create(client, "vehicle-fines", FINES)
    failed = await wait_status(redis, Keys(down.key_prefix), h, "failed", "completed", timeout=30)
    assert failed["error"] == "The service is not available right now. Please try again in a few minutes."
    assert failed["attempt"] == 4


async def test_worker_killed_mid_call_is_retried_and_the_bot_acts_once(
    make_client: Any, slow_bots: Any, processes: Processes, redis: Redis
) -> None:
    slow = await slow_bots(2.0)  # vehicle-fines takes ~10 s at this speed
    keys = Keys(slow.key_prefix)
    client = await make_client(slow)
    start_stack(processes, slow)
    data = {"plate": "55D555-55", "national_id": "5555555555"}
    h = await create(client, "vehicle-fines", data)
    ws = await client.ws_connect(f"/ws/requests/{h}")
    await wait_for(lambda: _progress_at_least(redis, keys, h, 5), what="the bot call to be under way")
    await kill_worker_running(redis, f"{keys.prefix}{h}-run")
    killed_at = time.monotonic()

    seen: list[dict[str, Any]] = []

    async def watch() -> None:
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                return
            seen.append(orjson.loads(msg.data)["request"])

    watcher = asyncio.create_task(watch())
    await wait_for(
        lambda: _retried_or_done(redis, keys, h), timeout=30, what="the abandoned job to be retried or finished"
    )
    assert time.monotonic() - killed_at < 30
    done = await wait_status(redis, keys, h, "completed", "failed", timeout=40)
    assert done["status"] == "completed", done
    calls = await bot_calls(slow.bot_api_url, h)
    assert calls == {f"{h}:run": 2}  # the phase once more, with the same idempotency key
    await asyncio.sleep(0.3)
    watcher.cancel()
    await ws.close()
    assert any(r.get("retrying") or r["status"] == "completed" for r in seen)  # the browser saw it


async def kill_worker_running(redis: Redis, job_id: str) -> None:
    """SIGKILL the worker running ``job_id``. Workers run their job themselves: there is no
    work horse to kill with it (a child, if any, is RQ's scheduler, which lives on, as it would)."""
    job = await redis.hgetall(f"rq:job:{job_id}")
    assert job.get(b"worker_name"), f"{job_id} is not running: {job.get(b'status')!r}"
    pid = int(await redis.hget(f"rq:worker:{job[b'worker_name'].decode()}", "pid"))
    os.kill(pid, signal.SIGKILL)


async def test_worker_killed_while_checking_a_code_fails_the_request_with_a_message(
    client: TestClient[Any, Any], settings: Settings, processes: Processes, redis: Redis
) -> None:
    """Checking a code is not safe to repeat (the code was read once and is gone): no retry,
    a clear message instead, well before any deadline or heartbeat window."""
    keys = Keys(settings.key_prefix)
    start_stack(processes, settings)
    data = {"national_id": "6666666666", "mobile": "09126666666"}
    # the portal takes the code and never answers: the check stays in the worker's bot call
    await add_fault(settings.bot_api_url, service="credit-score-rating", match=data, mode="hang", phase="otp")
    h = await create(client, "credit-score-rating", data)
    await wait_status(redis, keys, h, "waiting_otp")
    code = (await outbox(settings.bot_api_url, h))[0]["code"]
    ws = await client.ws_connect(f"/ws/requests/{h}")
    assert orjson.loads((await ws.receive(timeout=5)).data)["type"] == "snapshot"
    resp = await client.post(f"/api/requests/{h}/otp", json={"otp": code})
    assert resp.status == 202
    seq = (await resp.json())["request"]["seq"]
    key = f"{h}:otp:{seq}"
    await wait_for(lambda: _bot_has(settings.bot_api_url, h, key), what="the code to reach the bot")
    await kill_worker_running(redis, f"{keys.prefix}{h}-otp{seq}")
    killed_at = time.monotonic()

    failed = await wait_status(redis, keys, h, "failed", "completed", timeout=30)
    assert time.monotonic() - killed_at < 30
    assert failed["status"] == "failed"
    assert failed["error"] == "The worker running your request stopped unexpectedly. Please start again."
    assert not failed.get("retrying")

    async def browser_saw_it() -> bool:
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type != aiohttp.WSMsgType.TEXT:
                return False
            if orjson.loads(msg.data)["request"]["status"] == "failed":
                return True

    assert await browser_saw_it()
    await ws.close()
    await asyncio.sleep(1.5)  # RQ retries after 1 s in these tests: a retry would show by now
    calls = await bot_calls(settings.bot_api_url, h)
    assert {k: n for k, n in calls.items() if ":otp:" in k} == {key: 1}  # the code was relayed once
    assert not await redis.exists(keys.otp(h))
    # the portal, still holding the code, is told to stop (which also lets its hanging call go)
    await wait_for(lambda: _told_cancel(settings.bot_api_url, h), what="the bot to be told to cancel")


async def _bot_has(bot_url: str, h: str, key: str) -> bool:
    return key in await bot_calls(bot_url, h)


async def _progress_at_least(redis: Redis, keys: Keys, h: str, n: int) -> bool:
    return (await record(redis, keys, h)).get("progress", 0) >= n


async def _retried_or_done(redis: Redis, keys: Keys, h: str) -> bool:
    rec = await record(redis, keys, h)
    return bool(rec.get("retrying")) or rec["status"] in ("completed", "failed") or rec.get("attempt", 1) > 1


async def test_otp_wait_longer_than_the_code_life_fails_as_expired(
    make_client: Any, fast: Settings, processes: Processes, redis: Redis
) -> None:
    client = await make_client(fast)
    start_stack(processes, fast)
    data = {"national_id": "7777777777", "mobile": "09127777777"}
    await add_fault(fast.bot_api_url, service="credit-score-rating", match=data, mode="short_otp")
    h = await create(client, "credit-score-rating", data)
    keys = Keys(fast.key_prefix)
    waiting = await wait_status(redis, keys, h, "waiting_otp", timeout=20)
    assert waiting["otp_data"]["expires_at"]
    failed = await wait_status(redis, keys, h, "failed", timeout=25)
    assert failed["error"] == OTP_EXPIRED
    # after the code's life (10 s) and the sweeper's grace, not before
    expired = parse(waiting["otp_data"]["expires_at"])
    assert expired + OTP_EXPIRY_GRACE - 0.5 <= parse(failed["finished_at"]) <= expired + OTP_EXPIRY_GRACE + 3


async def test_a_code_typed_before_the_bot_asks_is_not_lost(
    client: TestClient[Any, Any], settings: Settings, processes: Processes, redis: Redis
) -> None:
    keys = Keys(settings.key_prefix)
    start_stack(processes, settings)
    data = {"national_id": "8888888888", "mobile": "09128888888"}
    await add_fault(settings.bot_api_url, service="credit-score-rating", match=data, mode="late_otp")
    h = await create(client, "credit-score-rating", data)
    messages = await wait_for(lambda: outbox(settings.bot_api_url, h), what="the SMS")
    assert (await record(redis, keys, h))["status"] == "processing"  # the bot has not said so yet
    resp = await client.post(f"/api/requests/{h}/otp", json={"otp": messages[0]["code"]})
    assert resp.status == 202
    done = await wait_status(redis, keys, h, "completed", "failed", timeout=20)
    assert done["status"] == "completed", done


async def test_workers_finish_their_job_on_sigterm(
    make_client: Any, slow_bots: Any, processes: Processes, redis: Redis
) -> None:
    slow = await slow_bots(6.0)  # vehicle-fines takes ~3 s
    keys = Keys(slow.key_prefix)
    client = await make_client(slow)
    pool = processes.workers(slow, count=1)
    h = await create(client, "vehicle-fines", FINES)
    await wait_for(lambda: _progress_at_least(redis, keys, h, 5), what="the job to start")
    os.killpg(pool.pid, signal.SIGTERM)
    done = await wait_status(redis, keys, h, "completed", "failed", timeout=20)
    assert done["status"] == "completed"
    assert await asyncio.to_thread(pool.wait, 20) == 0


async def start_services(processes: Processes, settings: Settings) -> Settings:
    """The demo bots and the web server as their own processes (as in production)."""
    bots_port, web_port = free_port(), free_port()
    settings = settings.with_(
        bot_api_url=f"http://127.0.0.1:{bots_port}",
        bot_port=bots_port,
        port=web_port,
        public_url=f"http://127.0.0.1:{web_port}",
    )
    bots = processes.start("bots", ["-m", "bots.demo"], settings.to_env())
    web = processes.start("web", ["-m", "server"], settings.to_env())
    await wait_http(f"{settings.bot_api_url}/healthz", bots)
    await wait_http(f"{settings.public_url}/healthz", web)
    return settings


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_redis_stopped_for_5s_under_200_running_requests(
    base_settings: Settings, processes: Processes, tmp_path: Path
) -> None:
    """API 503s while Redis is down, nothing crashes, every socket and record ends on the true
    state — also for requests that were inside a worker's bot call when Redis went — and the
    workers take and finish new work afterwards."""
    own = EmbeddedRedis(tmp_path / "redis", extra_args=("--appendonly", "yes", "--appendfsync", "everysec"))
    own.start()
    try:
        settings = await start_services(
            processes,
            base_settings.with_(
                redis_url=own.url, bot_speed=3.0, create_rate=(500, 1.0), create_rate_per_address=(500, 1.0)
            ),
        )  # a video takes ~40 s at this speed (202: the bot goes on alone), vehicle fines ~7 s (a worker waits):
        # the last of the 200 must start before the first ends, also on a loaded machine
        start_stack(processes, settings, workers=4)
        keys = Keys(settings.key_prefix)
        api = settings.public_url
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

            async def post(service: str, data: dict[str, Any]) -> dict[str, Any]:
                async with http.post(f"{api}/api/requests", json={"service": service, "data": data}) as resp:
                    assert resp.status == 201, await resp.text()
                    created: dict[str, Any] = await resp.json()
                    return created

            followers: list[asyncio.Task[None]] = []
            sockets: list[aiohttp.ClientWebSocketResponse] = []
            probes: list[Redis] = []
            try:
                created = [
                    await post("video-generation", {"prompt": f"video {i}", "duration_seconds": 5}) for i in range(200)
                ]
                auth = {c["hash"]: {"Authorization": f"Bearer {c['access_token']}"} for c in created}
                latest: dict[str, dict[str, Any]] = {}

                async def follow(h: str) -> None:
                    # As the page does: a socket the server closes (going away, or dropped as a slow
                    # reader on a loaded machine) is opened again, resuming from the last seq seen.
                    while True:
                        since = f"?since={latest[h]['seq']}" if h in latest else ""
                        try:
                            ws = await http.ws_connect(
                                f"{api.replace('http', 'ws')}/ws/requests/{h}{since}", headers=auth[h]
                            )
                        except (aiohttp.ClientError, OSError):
                            await asyncio.sleep(0.5)  # the web process answers 503 while Redis is down
                            continue
                        sockets.append(ws)
                        async for msg in ws:
                            if msg.type is aiohttp.WSMsgType.TEXT:
                                frame = orjson.loads(msg.data)
                                if "request" in frame:
                                    latest[h] = frame["request"]
                        await asyncio.sleep(0.5)

                for c in created:
                    followers.append(asyncio.create_task(follow(c["hash"])))
                videos = [c["hash"] for c in created]
                probe = Redis.from_url(own.url)
                probes.append(probe)
                await wait_for(lambda: _all_running(probe, keys, videos), timeout=60, what="all 200 to be running")
                # Four requests inside a worker's bot call when Redis stops (four workers, one each):
                # the bot answers during the outage, and the worker cannot write the answer down.
                fines = [
                    await post("vehicle-fines", {"plate": f"1{i}B345-67", "national_id": f"000000000{i}"})
                    for i in range(4)
                ]
                for c in fines:
                    auth[c["hash"]] = {"Authorization": f"Bearer {c['access_token']}"}
                    followers.append(asyncio.create_task(follow(c["hash"])))
                in_call = [c["hash"] for c in fines]
                await wait_for(
                    lambda: _all_running(probe, keys, in_call), timeout=20, what="the fines to be in bot calls"
                )
                hashes = videos + in_call

                own.stop()
                down_at = time.monotonic()
                statuses, creates = set(), set()
                while time.monotonic() - down_at < 5:
                    started = time.monotonic()
                    async with http.get(f"{api}/api/requests/{hashes[0]}", headers=auth[hashes[0]]) as resp:
                        statuses.add(resp.status)
                        assert resp.content_type == "application/json"
                    body = {"service": "vehicle-fines", "data": FINES}
                    async with http.post(f"{api}/api/requests", json=body) as resp:
                        creates.add(resp.status)
                        assert resp.content_type == "application/json"
                        assert (await resp.json())["error"]["code"] == "unavailable"
                    assert time.monotonic() - started < 5  # never hangs
                    await asyncio.sleep(0.5)
                assert statuses == {503} and creates == {503}
                own = EmbeddedRedis(own.directory, port=own.port, extra_args=own.extra_args)
                own.start()

                probe = Redis.from_url(own.url)
                probes.append(probe)
                await wait_for(
                    lambda: _all_done(probe, keys, hashes), timeout=120, interval=1, what="all 204 to finish"
                )
                final = {h: (await record(probe, keys, h)) for h in hashes}
                assert {r["status"] for r in final.values()} == {"completed"}, {
                    h[:12]: (r["status"], r.get("error")) for h, r in final.items() if r["status"] != "completed"
                }
                assert [final[h]["result_data"]["plate"] for h in in_call] == [f"1{i}B345-67" for i in range(4)]
                for h in in_call:  # a call cut off by the outage is retried with the same idempotency key
                    assert set(await bot_calls(settings.bot_api_url, h)) == {f"{h}:run"}
                assert await probe.llen(keys.tracking_list()) == len(hashes)  # a refused create left no trace
                await wait_for(
                    lambda: _sockets_caught_up(latest, final), timeout=20, what="every socket to show the final state"
                )
                # The workers take and finish new work (not merely: their processes are alive).
                after = await post("vehicle-fines", {"plate": "99B999-99", "national_id": "9999999999"})
                done = await wait_status(probe, keys, after["hash"], "completed", "failed", timeout=60)
                assert done["status"] == "completed", (done.get("error"), done.get("attempt"), done.get("step"))
                for t in followers:
                    t.cancel()
                for ws in sockets:
                    await ws.close()
                async with http.get(f"{api}/api/requests/{hashes[0]}", headers=auth[hashes[0]]) as resp:
                    assert resp.status == 200
            finally:  # also when an assertion fails: nothing left open for the next test to trip on
                for t in followers:
                    t.cancel()
                for ws in sockets:
                    await ws.close()
                for p in probes:
                    await p.aclose()

        for proc in processes.procs:
            assert proc.poll() is None, "no process crashed"
    finally:
        own.stop()


async def _all_running(redis: Redis, keys: Keys, hashes: list[str]) -> bool:
    raws = await redis.mget([keys.record(h) for h in hashes])
    return all(r and orjson.loads(r)["status"] == "processing" and orjson.loads(r)["progress"] > 0 for r in raws)


async def _all_done(redis: Redis, keys: Keys, hashes: list[str]) -> bool:
    raws = await redis.mget([keys.record(h) for h in hashes])
    return all(r and orjson.loads(r)["status"] in ("completed", "failed", "cancelled") for r in raws)


async def _sockets_caught_up(latest: dict[str, dict[str, Any]], final: dict[str, dict[str, Any]]) -> bool:
    return all(latest.get(h, {}).get("seq") == rec["seq"] for h, rec in final.items())


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_1000_requests_created_while_workers_are_stopped_all_complete_once(
    base_settings: Settings, processes: Processes, redis: Redis
) -> None:
    settings = await start_services(
        processes, base_settings.with_(bot_speed=1000.0, create_rate=(2000, 1.0), create_rate_per_address=(2000, 1.0))
    )
    keys = Keys(settings.key_prefix)
    api = settings.public_url
    hashes = []
    async with aiohttp.ClientSession() as http:
        for i in range(1000):
            data = {"plate": f"{10 + i % 90}B{100 + i % 900}-{10 + i % 90}", "national_id": f"{i:010d}"}
            async with http.post(f"{api}/api/requests", json={"service": "vehicle-fines", "data": data}) as resp:
                assert resp.status == 201
                hashes.append((await resp.json())["hash"])
    queued = await redis.llen(f"rq:queue:{keys.prefix}high")
    held = await redis.zcard(f"rq:rl:{keys.prefix}service:vehicle-fines:rate_limited")
    assert queued + held == 1000  # all accepted, none lost, nothing running yet
    processes.workers(settings, count=4)
    await wait_for(lambda: _all_done(redis, keys, hashes), timeout=200, interval=1, what="all 1,000 to complete")
    raws = await redis.mget([keys.record(h) for h in hashes])
    assert {orjson.loads(r)["status"] for r in raws} == {"completed"}
    async with aiohttp.ClientSession() as http:  # every one of them, not a sample

        async def calls_for(h: str) -> dict[str, int]:
            async with http.get(f"{settings.bot_api_url}/demo/calls", params={"requestHash": h}) as r:
                calls: dict[str, int] = (await r.json())["calls"]
                return calls

        calls = await asyncio.gather(*(calls_for(h) for h in hashes))
    twice = {h: c for h, c in zip(hashes, calls, strict=True) if c != {f"{h}:run": 1}}
    assert not twice, f"{len(twice)} not run exactly once, e.g. {list(twice.items())[:3]}"
    assert {orjson.loads(r).get("attempt") for r in raws} == {1}  # and none was started again
