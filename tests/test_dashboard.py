"""The operator dashboard: who may see it, its figures for a known workload (queues, workers,
codes awaited, throughput, runtimes, archive, sockets per process), the wait alerts, acting
on failed jobs (one and all), the live feed, and a screenshot in Chromium during a small load."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.rate_limit import RateLimitRegistry
from rq.registry import FailedJobRegistry

from bots.demo import create_bot_app
from jobs.cron import check_interval
from server.devtools.processes import Processes, free_port
from server.domain.catalog import get_service
from server.ops.operations import SOCKETS_STALE
from server.queue.dispatch import job_id, queue_names
from server.record import SHARDS, Keys
from server.settings import Settings
from server.web.app import PROCESS
from server.web.typedefs import DISPATCHER, LIFECYCLE, OPS
from tests.helpers import add_fault, outbox, record, wait_for, wait_status

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PASSWORD = "correct horse battery staple"
TOKEN = "ops-token-for-tests"
FINES = {"plate": "12B345-67", "national_id": "0012345678"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_(operator_password=PASSWORD, operator_token=TOKEN)


BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def csrf_of(client: TestClient[Any, Any], path: str) -> str:
    html = await (await client.get(path)).text()
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


async def log_in(client: TestClient[Any, Any]) -> None:
    token = await csrf_of(client, "/dashboard/login")
    resp = await client.post(
        "/dashboard/login", data={"csrf_token": token, "password": PASSWORD}, allow_redirects=False
    )
    assert resp.status == 303 and resp.headers["Location"] == "/dashboard"


async def test_everyone_without_the_credential_is_refused(
    client: TestClient[Any, Any], make_client: Any, settings: Settings
) -> None:
    resp = await client.get("/dashboard", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/dashboard/login"
    assert (await client.get("/api/dashboard")).status == 403
    assert (await client.get("/api/dashboard", headers={"Authorization": "Bearer nope"})).status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await client.ws_connect("/ws/dashboard")
    assert err.value.status == 403
    assert (await client.post("/api/dashboard/failed-jobs/retry-all")).status == 403
    token = await csrf_of(client, "/dashboard/login")
    wrong = await client.post("/dashboard/login", data={"csrf_token": token, "password": "guess"})
    assert wrong.status == 403 and "not right" in await wrong.text()
    no_csrf = await client.post("/dashboard/login", data={"password": PASSWORD})
    assert no_csrf.status == 403
    assert (await client.get("/api/dashboard")).status == 403  # still nobody
    # and with nothing configured the dashboard is simply off
    off = await make_client(settings.with_(operator_password=None, operator_token=None))
    assert (await off.get("/dashboard")).status == 403


async def test_figures_for_a_known_workload(client: TestClient[Any, Any]) -> None:
    for _ in range(3):
        assert (await client.post("/api/requests", json={"service": "vehicle-fines", "data": FINES})).status == 201
    await asyncio.sleep(1.1)
    snap = await (await client.get("/api/dashboard", headers=BEARER)).json()
    high = next(q for q in snap["queues"] if q["name"] == "high")
    assert high["depth"] == 3 and high["oldest_wait"] >= 1.0 and high["running"] == 0
    assert snap["requests_by_status"] == {"pending": 3}
    assert snap["requests_by_service"] == {"vehicle-fines": {"pending": 3}}
    assert snap["workers"] == []  # none started: the page says nothing will run
    await log_in(client)
    page = await (await client.get("/dashboard")).text()
    assert "Operations" in page and "No worker is alive" in page
    assert re.search(r"<th scope=\"row\">high</th><td>3</td>", page)


async def test_a_failed_job_retried_from_the_dashboard_completes(
    client: TestClient[Any, Any], settings: Settings, processes: Processes, redis: Redis
) -> None:
    keys = Keys(settings.key_prefix)
    # down for all four attempts, up again for the operator's retry
    await add_fault(settings.bot_api_url, service="vehicle-fines", match=FINES, mode="unavailable", count=4)
    processes.workers(settings)
    h = (await (await client.post("/api/requests", json={"service": "vehicle-fines", "data": FINES})).json())["hash"]
    failed = await wait_status(redis, keys, h, "failed", timeout=30)
    assert failed["error"].startswith("The service is not available")

    async def listed() -> list[dict[str, Any]] | None:
        snap = await (await client.get("/api/dashboard", headers=BEARER)).json()
        return snap["failed_jobs"] or None

    jobs = await wait_for(listed, what="the failed job to be listed")
    assert jobs[0]["request"] == h[:12] and jobs[0]["phase"] == "run" and "BotUnavailable" in jobs[0]["error"]
    await log_in(client)
    token = await csrf_of(client, "/dashboard")
    resp = await client.post(
        "/dashboard/actions", data={"csrf_token": token, "action": f"retry:{jobs[0]['id']}"}, allow_redirects=False
    )
    assert resp.status == 303
    done = await wait_status(redis, keys, h, "completed", timeout=30)
    assert done["error"] is None and done["result_data"]["plate"] == "12B345-67"
    snap = await (await client.get("/api/dashboard", headers=BEARER)).json()
    assert snap["failed_jobs"] == []


async def test_the_live_feed_pushes_the_rendered_dashboard(client: TestClient[Any, Any]) -> None:
    await log_in(client)
    ws = await client.ws_connect("/ws/dashboard")
    frame = orjson.loads((await ws.receive(timeout=10)).data)
    assert frame["type"] == "dashboard" and "Queues" in frame["html"]
    assert (await client.post("/api/requests", json={"service": "vehicle-fines", "data": FINES})).status == 201
    for _ in range(5):
        frame = orjson.loads((await ws.receive(timeout=10)).data)
        if re.search(r"<th scope=\"row\">high</th><td>1</td>", frame["html"]):
            break
    else:
        pytest.fail("the feed never showed the new job")
    await ws.close()


async def snapshot(client: TestClient[Any, Any]) -> dict[str, Any]:
    resp = await client.get("/api/dashboard", headers=BEARER)
    assert resp.status == 200
    snap: dict[str, Any] = await resp.json()
    return snap


def queue(snap: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(q for q in snap["queues"] if q["name"] == name)
    return found


async def create(client: TestClient[Any, Any], service: str, data: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/api/requests", json={"service": service, "data": data})
    assert resp.status == 201, await resp.text()
    created: dict[str, Any] = await resp.json()
    return created


def log_entries(text: str, logger: str) -> list[dict[str, Any]]:
    """The JSON log lines of one logger in a process's output."""
    out = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        entry = orjson.loads(line)
        if entry.get("logger") == logger:
            out.append(entry)
    return out


THRESHOLDS = {"high": 1.0, "default": 30.0, "low": 120.0}


async def test_a_long_wait_is_shown_and_logged_once_then_its_recovery(
    make_client: Any, settings: Settings, processes: Processes, redis: Redis
) -> None:
    """Horizon-style long-wait detection: no worker takes from "high", its oldest job waits past
    the (1 s) threshold; the dashboard shows it and the cron logs it at warning, once even with
    two crons checking; when workers come back the recovery is logged, once."""
    watched = settings.with_(wait_thresholds=THRESHOLDS, log_format="json")
    client = await make_client(watched)
    for _ in range(2):  # two crons, as on two machines: still one line per alert
        processes.start("cron", ["-m", "jobs.cron"], watched.to_env())
    for i in range(2):
        await create(client, "vehicle-fines", {"plate": f"12B345-6{i}", "national_id": "0012345678"})

    def lines(kind: str) -> list[dict[str, Any]]:
        return [
            e
            for e in log_entries(processes.logs(tail=None), "longrun.ops")
            if e["event"].startswith("queue high") and kind in e["event"]
        ]

    async def raised() -> list[dict[str, Any]]:
        return lines("has waited")

    [alert] = await wait_for(raised, timeout=30, what="a cron to log the long wait")
    assert alert["level"] == "warning" and alert["event"].endswith("(threshold 1 s)")
    snap = await snapshot(client)
    high = queue(snap, "high")
    assert high["alert"] is True and high["oldest_wait"] > 1.0 and high["threshold"] == 1.0
    assert not queue(snap, "default")["alert"] and not queue(snap, "low")["alert"]
    assert len(snap["alerts"]) == 1 and snap["alerts"][0].startswith("Queue high: the oldest job has waited")
    await log_in(client)
    page = await (await client.get("/dashboard")).text()
    assert '<div class="ops-alerts" role="alert">' in page and "⚠ Queue high" in page
    assert re.search(r'<tr class="ops-alert" data-queue="high">.*?over 1 s', page, re.S)

    await asyncio.sleep(3 * check_interval(THRESHOLDS))  # three more checks by each cron
    assert len(lines("has waited")) == 1

    processes.workers(watched)

    async def recovered() -> list[dict[str, Any]]:
        return lines("back under")

    [back] = await wait_for(recovered, timeout=30, what="a cron to log the recovery")
    assert back["level"] == "warning"
    snap = await snapshot(client)
    assert not queue(snap, "high")["alert"] and snap["alerts"] == []
    assert "ops-alerts" not in await (await client.get("/dashboard")).text()
    await asyncio.sleep(3 * check_interval(THRESHOLDS))
    assert len(lines("has waited")) == 1 and len(lines("back under")) == 1


async def test_failed_jobs_deleted_and_retried_one_and_all_from_the_dashboard(
    client: TestClient[Any, Any], settings: Settings, processes: Processes, redis: Redis
) -> None:
    keys = Keys(settings.key_prefix)
    processes.workers(settings)

    async def fail(*plates: str) -> dict[str, str]:
        """Requests whose bot is down for all four attempts: {hash: failed job id}."""
        hashes = []
        for plate in plates:
            data = {"plate": plate, "national_id": "0012345678"}
            await add_fault(settings.bot_api_url, service="vehicle-fines", match=data, mode="unavailable", count=4)
            hashes.append((await create(client, "vehicle-fines", data))["hash"])
        for h in hashes:
            await wait_status(redis, keys, h, "failed", timeout=30)

        async def listed() -> dict[str, str] | None:
            jobs = {j["request"]: j["id"] for j in (await snapshot(client))["failed_jobs"]}
            return {h: jobs[h[:12]] for h in hashes} if all(h[:12] in jobs for h in hashes) else None

        return await wait_for(listed, what="the failed jobs to be listed")

    a, b, c = (jobs := await fail("11B111-11", "22B222-22", "33B333-33"))
    assert queue(await snapshot(client), "high")["failed"] == 3
    await log_in(client)

    # delete one (the page's form): gone from the list and from Redis, its request stays failed
    token = await csrf_of(client, "/dashboard")
    resp = await client.post(
        "/dashboard/actions", data={"csrf_token": token, "action": f"delete:{jobs[a]}"}, allow_redirects=False
    )
    assert resp.status == 303
    snap = await snapshot(client)
    assert {j["id"] for j in snap["failed_jobs"]} == {jobs[b], jobs[c]} and queue(snap, "high")["failed"] == 2
    assert await redis.exists(f"rq:job:{jobs[a]}") == 0
    again = await client.post("/api/dashboard/failed-jobs/delete", json={"job_id": jobs[a]}, headers=BEARER)
    assert again.status == 404

    # retry all (the JSON endpoint): both come back and complete; the deleted one does not
    resp = await client.post("/api/dashboard/failed-jobs/retry-all", headers=BEARER)
    assert resp.status == 202 and (await resp.json()) == {"done": 2}
    for h in (b, c):
        done = await wait_status(redis, keys, h, "completed", timeout=30)
        assert done["error"] is None
    snap = await snapshot(client)
    assert snap["failed_jobs"] == [] and queue(snap, "high")["failed"] == 0
    assert (await wait_status(redis, keys, a, "failed"))["status"] == "failed"

    # delete all (the page's form): the list empties, the requests stay failed
    more = await fail("44B444-44", "55B555-55")
    token = await csrf_of(client, "/dashboard")
    resp = await client.post(
        "/dashboard/actions", data={"csrf_token": token, "action": "delete-all"}, allow_redirects=False
    )
    assert resp.status == 303
    snap = await snapshot(client)
    assert snap["failed_jobs"] == [] and queue(snap, "high")["failed"] == 0
    for h, job in more.items():
        assert await redis.exists(f"rq:job:{job}") == 0
        assert (await wait_status(redis, keys, h, "failed"))["status"] == "failed"
    assert "No failed jobs." in await (await client.get("/dashboard")).text()


async def test_jobs_held_back_by_their_services_concurrency_count_as_waiting(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    """Run jobs beyond a service's concurrency wait in RQ's line for a slot, not in the queue:
    the queue's depth, its oldest wait (and so the alert) count them, with no worker alive."""
    video = get_service("video-generation")
    made = video.concurrency + 3
    for n in range(made):
        await create(client, "video-generation", {"prompt": f"a fox, take {n}", "duration_seconds": 5})
    assert queue(await snapshot(client), video.priority)["depth"] == made

    async def waited() -> dict[str, Any] | None:
        line = queue(await snapshot(client), video.priority)
        return line if (line["oldest_wait"] or 0) >= 2.0 else None  # (the line scores whole seconds)

    await wait_for(waited, what="the oldest of them to have waited two seconds")


def failed_run(sync: SyncRedis, settings: Settings, h: str, *, abandoned: bool = False, phase: str = "run") -> str:
    """Fail the queued ``phase`` job of ``h`` as RQ fails one (its status, the failed registry,
    a concurrency slot it held released); ``abandoned``: a dead worker's, whose execution RQ
    still lists after the execution's own hash expired. The job's id."""
    job = Job.fetch(job_id(settings.key_prefix, h, phase), connection=sync)
    Queue(job.origin, connection=sync).remove(job)
    job.set_status(JobStatus.FAILED)
    FailedJobRegistry(job.origin, connection=sync).add(job, ttl=600, exc_string="the bot was down")
    if job.rate_limit_key:
        RateLimitRegistry.from_job(job).release_stale_and_enqueue(job.id)
    if abandoned:
        sync.zadd(job.execution_registry.key, {"expired-execution": time.time() + 60})
    return job.id


async def test_operators_racing_for_a_failed_job_act_once_and_nothing_is_left_half_done(
    client: TestClient[Any, Any], settings: Settings, redis: Redis, redis_url: str
) -> None:
    """Two operators retry the same failed job, or one retries it as another deletes it: one
    of them acts, the other is told it is gone (no 500), and the request is either running
    again with one fresh run job or still failed with none. A job a dead worker left (RQ lists
    an execution already expired, which made RQ's own delete raise) is retried and deleted too."""
    keys = Keys(settings.key_prefix)
    ops, life = client.app[OPS], client.app[LIFECYCLE]  # type: ignore[index]
    sync = SyncRedis.from_url(redis_url)
    try:
        hashes = [(await create(client, "vehicle-fines", FINES))["hash"] for _ in range(4)]
        jobs = [failed_run(sync, settings, h, abandoned=n % 2 == 1) for n, h in enumerate(hashes)]
        for h in hashes:
            assert (await life.fail(h, "The service is not available right now")).applied
        high = Queue(queue_names(settings.key_prefix)[0], connection=sync)

        async def outcome(n: int) -> str:
            rec = await record(redis, keys, hashes[n])
            if rec["status"] == "pending":
                assert high.get_job_ids().count(jobs[n]) == 1
                assert Job.fetch(jobs[n], connection=sync).get_status() == JobStatus.QUEUED
                return "retried"
            assert rec["status"] == "failed" and not [k for k in sync.scan_iter(match=f"*{jobs[n]}*")]
            return "deleted"

        assert sorted(await asyncio.gather(ops.retry(jobs[0]), ops.retry(jobs[0]))) == [False, True]
        assert await outcome(0) == "retried"
        assert sorted(await asyncio.gather(ops.retry(jobs[1]), ops.retry(jobs[1]))) == [False, True]
        assert await outcome(1) == "retried"
        retried, deleted = await asyncio.gather(ops.retry(jobs[2]), ops.delete(jobs[2]))
        assert retried != deleted and await outcome(2) == ("retried" if retried else "deleted")
        assert await ops.delete(jobs[3]) and not await ops.delete(jobs[3]) and not await ops.retry(jobs[3])
        assert await outcome(3) == "deleted"
        assert all(FailedJobRegistry(q, connection=sync).get_job_ids() == [] for q in queue_names(keys.prefix))

        # a failed job of a request that is not failed (running again) is not started over: it stays
        h = (await create(client, "vehicle-fines", FINES))["hash"]
        stale = failed_run(sync, settings, h)
        assert not await ops.retry(stale) and stale in FailedJobRegistry(high.name, connection=sync)
        assert await ops.delete(stale)
        # a cancelled request's failed "tell the bot to stop" is run again
        await client.post(f"/api/requests/{h}/cancel")
        assert (await record(redis, keys, h))["status"] == "cancelled"
        dispatcher = client.app[DISPATCHER]  # type: ignore[index]
        await asyncio.to_thread(dispatcher.cancel, h, tell_bot=True)
        told = failed_run(sync, settings, h, phase="cancel")
        assert await ops.retry(told)
        assert Job.fetch(told, connection=sync).get_status() == JobStatus.QUEUED and told in high.get_job_ids()
        assert (await record(redis, keys, h))["status"] == "cancelled"
    finally:
        sync.close()


SLOW = 4.0  # bot speed: a fines job takes 19/4 s of the bot's time, a credit report 18/4 s to its code
CREDIT = {"national_id": "0012345678", "mobile": "09121234567"}


async def test_workers_codes_throughput_runtimes_memory_and_archive_lag(
    aiohttp_server: Any, make_client: Any, pg_full_settings: Settings, processes: Processes, redis: Redis
) -> None:
    bots = await aiohttp_server(create_bot_app(pg_full_settings.with_(bot_speed=SLOW)))
    s = pg_full_settings.with_(bot_api_url=str(bots.make_url("")).rstrip("/"))
    client = await make_client(s)
    keys = Keys(s.key_prefix)
    first_minute = int(time.time() // 60)
    fines = (await create(client, "vehicle-fines", FINES))["hash"]
    credit = (await create(client, "credit-score-rating", CREDIT))["hash"]
    processes.workers(s, count=2)

    # workers: alive, one busy on the fines job, heartbeats fresh
    fines_job = f"{s.key_prefix}{fines}-run"

    async def busy() -> dict[str, Any] | None:
        # (the figures are read one after the other, not at one instant: RQ marks the worker
        # busy a moment before the job enters its started registry)
        snap = await snapshot(client)
        working = any(w["state"] == "busy" and fines_job in w["running"] for w in snap["workers"])
        # (and both workers registered: the first one up may have taken both jobs already)
        both = len(snap["workers"]) == 2
        return snap if working and both and queue(snap, "high")["running"] == 1 else None

    snap = await wait_for(busy, what="both workers up, one busy with the fines job, counted as running")
    assert queue(snap, "high")["depth"] == 0
    assert all(0 <= w["heartbeat_age"] < 20 for w in snap["workers"])  # within RQ's worker TTL: alive
    await log_in(client)
    page = await (await client.get("/dashboard")).text()
    assert '<span class="chip chip-warm">busy</span>' in page

    # a code awaited: counted, and how long it has been awaited grows
    await wait_status(redis, keys, credit, "waiting_otp", timeout=30)

    async def awaited() -> dict[str, Any] | None:
        snap = await snapshot(client)
        return snap if snap["waiting_otp"] == 1 and (snap["longest_otp_wait"] or 0) >= 1.0 else None

    snap = await wait_for(awaited, what="the code to be awaited for a second")
    assert snap["requests_by_service"]["credit-score-rating"] == {"waiting_otp": 1}
    assert snap["waiting_by_kind"] == {"code": 1}  # people waiting, per kind of prompt
    assert '<span class="ops-sub" id="ops-kinds">code 1</span>' in await (await client.get("/dashboard")).text()
    [message] = await outbox(s.bot_api_url, credit)
    assert (await client.post(f"/api/requests/{credit}/otp", json={"otp": message["code"]})).status == 202
    for h in (fines, credit):
        await wait_status(redis, keys, h, "completed", timeout=40)

    # throughput: three jobs done (fines run, credit run, the code check); table and chart agree
    async def counted() -> dict[str, Any] | None:
        snap = await snapshot(client)
        return snap if sum(snap["jobs_total"].values()) == 3 else None

    snap = await wait_for(counted, what="the three jobs to be counted")
    assert snap["jobs_total"] == {"high|run|ok": 1, "default|run|ok": 1, "high|otp|ok": 1}
    assert snap["waiting_otp"] == 0 and snap["longest_otp_wait"] is None
    since = int(snap["at"] // 60) - first_minute  # minutes the test has spanned, usually 0 or 1
    assert sum(snap["charts"]["throughput"][-1 - since :]) == 3
    assert sum(q["done_this_minute"] for q in snap["queues"]) == snap["charts"]["throughput"][-1]
    # runtimes: at least the time the bot spent on each (its pauses), p50 <= p95 <= p99
    high, default = queue(snap, "high"), queue(snap, "default")
    assert 18.5 / SLOW * 0.98 <= high["runtime_p50"] <= high["runtime_p95"] <= high["runtime_p99"]
    assert default["runtime_p50"] == default["runtime_p99"] >= 18 / SLOW * 0.98  # one sample
    assert snap["redis_memory"] > 0 and snap["redis_memory_human"]

    # archive: two finished records wait for the archiver (none runs yet), then are archived
    archive = snap["archive"]
    assert archive["enabled"] is True and archive["backlog"] == 2 and archive["archived_total"] == 0
    assert archive["oldest_age"] > 1.0  # the fines request finished seconds ago
    page = await (await client.get("/dashboard")).text()
    assert re.search(r'id="ops-archive"><span class="ops-k">Archive backlog</span><span class="ops-v">2<', page)
    processes.archiver(s)

    async def archived() -> dict[str, Any] | None:
        figures: dict[str, Any] = (await snapshot(client))["archive"]
        return figures if figures["backlog"] == 0 and figures["archived_total"] == 2 else None

    archive = await wait_for(archived, timeout=30, what="the archiver to catch up")
    assert archive["oldest_age"] is None and archive["last_archived_at"] is not None


async def test_without_a_database_the_archive_is_shown_off(
    client: TestClient[Any, Any], settings: Settings, redis: Redis
) -> None:
    h = (await create(client, "vehicle-fines", FINES))["hash"]
    assert (await client.post(f"/api/requests/{h}/cancel")).status == 202
    # the finished record is handed to the archive stream all the same (a backlog of one that
    # nothing will ever take: the card used to show it, highlighted)
    keys = Keys(settings.key_prefix)
    assert sum([await redis.xlen(keys.archive(shard)) for shard in range(SHARDS)]) == 1
    assert (await snapshot(client))["archive"] == {"enabled": False}
    await log_in(client)
    page = await (await client.get("/dashboard")).text()
    card = re.search(r'<div class="ops-card[^"]*" id="ops-archive">(.*?)</div>', page, re.S)
    assert card is not None
    assert '<span class="ops-v">Off</span>' in card.group(1) and "DATABASE_URL" in card.group(1)
    assert "backlog" not in card.group(1) and "ops-warm" not in card.group(0)


async def test_sockets_are_shown_per_web_process(
    client: TestClient[Any, Any], settings: Settings, processes: Processes, redis: Redis
) -> None:
    """This process (the test's app) and another web process, each holding its own sockets."""
    from tests.test_browser import WebServer

    port = free_port()
    other = WebServer(processes, settings.with_(port=port, public_url=f"http://127.0.0.1:{port}"))
    await other.start()
    assert other.proc is not None
    theirs = f"{socket.gethostname()}:{other.proc.pid}"
    created = await create(client, "vehicle-fines", FINES)
    h, auth = created["hash"], {"Authorization": f"Bearer {created['access_token']}"}
    here = [await client.ws_connect(f"/ws/requests/{h}") for _ in range(2)]
    async with aiohttp.ClientSession() as http:
        there = await http.ws_connect(f"{other.url.replace('http', 'ws')}/ws/requests/{h}", headers=auth)

        def expect(counts: dict[str, int]) -> Any:
            async def probe() -> dict[str, Any] | None:
                snap = await snapshot(client)
                return snap if snap["sockets"] == counts else None

            return wait_for(probe, what=f"sockets per process to be {counts}")

        await expect({PROCESS: 2, theirs: 1})
        await log_in(client)
        page = await (await client.get("/dashboard")).text()
        assert f'<li data-process="{PROCESS}"><code>{PROCESS}</code> <b>2</b></li>' in page
        assert f'<li data-process="{theirs}"><code>{theirs}</code> <b>1</b></li>' in page
        assert re.search(r'id="ops-sockets"><span class="ops-k">Sockets open</span><span class="ops-v">3<', page)
        await here[0].close()
        await expect({PROCESS: 1, theirs: 1})
        await there.close()
        await expect({PROCESS: 1, theirs: 0})
        # a process killed without a word: its last count is left, silent, and forgotten once read
        killed = time.time() - SOCKETS_STALE - 1
        await redis.hset(Keys(settings.key_prefix).socket_counts(), "gone:1", f"5 {killed:.0f}")
        await expect({PROCESS: 1, theirs: 0})
        assert await redis.hget(Keys(settings.key_prefix).socket_counts(), "gone:1") is None
    await here[1].close()


@pytest.mark.browser
async def test_dashboard_in_chromium_during_a_small_load(
    aiohttp_server: Any, settings: Settings, processes: Processes, redis: Redis
) -> None:
    """The page goes Live only once its socket brings a frame, and its figures follow a load
    the test controls (queued with no worker, then worked off) without a reload."""
    from playwright.async_api import async_playwright

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, WebServer

    # bots slow enough for the load to be seen: about 4 s a fines job, 3.6 s to a code
    bots = await aiohttp_server(create_bot_app(settings.with_(bot_speed=5.0)))
    port = free_port()
    live = settings.with_(
        port=port, public_url=f"http://127.0.0.1:{port}", bot_api_url=str(bots.make_url("")).rstrip("/")
    )
    web = WebServer(processes, live)
    await web.start()
    async with aiohttp.ClientSession() as http:
        for i in range(6):  # four fines jobs on "high", two credit reports (which ask for a code) on "default"
            service, data = (
                ("vehicle-fines", {"plate": f"12B345-6{i}", "national_id": "0012345678"})
                if i < 4
                else ("credit-score-rating", {"national_id": f"00123456{i:02d}", "mobile": "09121234567"})
            )
            async with http.post(f"{web.url}/api/requests", json={"service": service, "data": data}) as r:
                assert r.status == 201
        async with http.get(f"{web.url}/dashboard", headers=BEARER) as r:
            served = await r.text()
    # what the server sends is not "Live": only the page's script says so, once connected
    badge = re.search(r'<span class="ops-live[^"]*" id="ops-live"[^>]*>([^<]*)</span>', served)
    assert badge is not None and badge.group(1) == "Connecting…"

    cell = """([queue, key]) => {
      const row = document.querySelector(`#ops-body tr[data-queue="${queue}"]`);
      return row ? (key ? row.querySelector(`td[data-k="${key}"]`) : row.querySelector('td')).textContent : null;
    }"""
    card = "(id) => document.querySelector(`#${id} .ops-v`).textContent"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 1000})
        await page.goto(f"{web.url}/dashboard/login")
        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{web.url}/dashboard")
        await page.evaluate("window.__sameDocument = true")
        # (predicates are functions: the page's CSP forbids evaluating strings)
        await page.wait_for_function(
            "() => { const b = document.querySelector('#ops-live'); return !b.hidden && b.textContent === 'Live'; }"
        )
        assert await page.evaluate(cell, ["high", None]) == "4"
        assert await page.evaluate(cell, ["default", None]) == "2"
        assert await page.evaluate(card, "ops-otp") == "0"
        assert await page.evaluate(card, "ops-archive") == "Off"  # no DATABASE_URL here

        processes.workers(live, count=2)
        # pushed frames show the workers taking the jobs, then the people asked for their codes
        # mid-load: the queue shrinking, a worker busy with a job it names (the screenshot)
        await page.wait_for_function(
            f"() => Number(({cell})(['high', null])) < 4"
            " && [...document.querySelectorAll('#ops-body tr')].some(r => r.querySelector('.chip')"
            " && r.querySelector('.chip').textContent === 'busy' && r.querySelector('td code'))",
            timeout=20000,
        )
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        await page.wait_for_function(
            f"() => ({cell})(['high', null]) === '0' && ({cell})(['default', null]) === '0'"
            f" && ({card})('ops-otp') === '2'",
            timeout=40000,
        )
        assert await page.evaluate("window.__sameDocument") is True  # updated in place, never reloaded
        text = await page.text_content("#ops-body") or ""
        assert "No worker is alive" not in text and "Nothing in flight." not in text
        await browser.close()
