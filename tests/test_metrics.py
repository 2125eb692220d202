"""``/metrics`` parses with the Prometheus client's own parser and moves with the workload
(requests and their latency, queues and their wait, jobs, sockets, pub/sub reconnects,
the archive's backlog and lag); ``/readyz`` follows Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from server.devtools.embedded import EmbeddedRedis
from server.devtools.processes import Processes
from server.infra.logs import ACCESS
from server.record import Keys
from server.settings import Settings
from tests.helpers import add_fault, wait_for, wait_status

Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]

FINES = {"plate": "12B345-67", "national_id": "0012345678"}


async def scrape(client: TestClient[Any, Any]) -> Metrics:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_with_the_workload(
    client: TestClient[Any, Any], settings: Settings, processes: Processes, redis: Redis
) -> None:
    before = await scrape(client)
    created = []
    for _ in range(3):
        resp = await client.post("/api/requests", json={"service": "vehicle-fines", "data": FINES})
        created.append((await resp.json())["hash"])
    after = await scrape(client)
    route = {"method": "POST", "route": "/api/requests", "status": "201"}
    assert (
        value(after, "longrun_http_requests_total", **route) - value(before, "longrun_http_requests_total", **route)
        == 3
    )
    # the latency histogram saw the same three answers, each taking some time
    timed = {"method": "POST", "route": "/api/requests"}
    latency = "longrun_http_request_duration_seconds"
    for name, labels in ((f"{latency}_count", timed), (f"{latency}_bucket", {**timed, "le": "+Inf"})):
        assert value(after, name, **labels) - value(before, name, **labels) == 3
    assert value(after, f"{latency}_sum", **timed) > value(before, f"{latency}_sum", **timed)
    buckets = sorted(
        (float(dict(labels)["le"]), n)
        for (name, labels), n in after.items()
        if name == f"{latency}_bucket" and ("route", "/api/requests") in labels and ("method", "POST") in labels
    )
    assert [n for _, n in buckets] == sorted(n for _, n in buckets)  # cumulative
    assert value(after, "longrun_queue_depth", queue="high") == 3  # no worker yet
    # no worker alive is a sample an alert can see, not a missing series
    assert ("longrun_workers", (("state", "busy"),)) in after and value(after, "longrun_workers", state="idle") == 0
    assert value(after, "longrun_redis_up") == 1

    async def waited() -> Metrics | None:
        m = await scrape(client)
        return m if value(m, "longrun_queue_oldest_wait_seconds", queue="high") >= 1.0 else None

    await wait_for(waited, what="the oldest job to have waited a second")
    assert value(after, "longrun_requests_unfinished", status="pending", service="vehicle-fines") == 3
    assert value(after, "longrun_websockets_open") == 0

    ws = await client.ws_connect(f"/ws/requests/{created[0]}")
    await ws.receive(timeout=5)
    await add_fault(settings.bot_api_url, service="vehicle-fines", match=FINES, mode="retryable", count=1)
    processes.workers(settings)
    keys = Keys(settings.key_prefix)
    for h in created:
        await wait_status(redis, keys, h, "completed")

    async def settled() -> dict[Any, float] | None:
        m = await scrape(client)
        return m if value(m, "longrun_jobs_total", queue="high", phase="run", outcome="ok") == 3 else None

    final = await wait_for(settled, what="the job counters to settle")
    assert value(final, "longrun_jobs_total", queue="high", phase="run", outcome="retried") == 1
    assert value(final, "longrun_queue_depth", queue="high") == 0
    assert value(final, "longrun_queue_oldest_wait_seconds", queue="high") == 0
    assert value(final, "longrun_requests_unfinished", status="pending", service="vehicle-fines") == 0
    assert value(final, "longrun_websockets_open") == 1
    assert value(final, "longrun_ws_messages_relayed_total") > value(before, "longrun_ws_messages_relayed_total")
    assert value(final, "longrun_redis_memory_bytes") > 0
    await ws.close()
    # a socket's lifetime is counted as an answer, never timed as an HTTP request's latency
    socket = {"method": "GET", "route": "/ws/requests/{hash}", "status": "101"}
    total = "longrun_http_requests_total"

    async def counted() -> Metrics | None:
        m = await scrape(client)
        return m if value(m, total, **socket) - value(before, total, **socket) == 1 else None

    closed = await wait_for(counted, what="the closed socket to be counted")
    socket_timed = (("method", "GET"), ("route", "/ws/requests/{hash}"))
    assert ("longrun_http_request_duration_seconds_count", socket_timed) not in closed


async def test_rate_limit_refusals_are_counted(make_client: Any, settings: Settings) -> None:
    client = await make_client(settings.with_(create_rate=(1, 60.0)))
    before = await scrape(client)
    for _ in range(3):
        await client.post("/api/requests", json={"service": "vehicle-fines", "data": FINES})
    after = await scrape(client)
    name, labels = "longrun_rate_limited_total", {"route": "/api/requests"}
    assert value(after, name, **labels) - value(before, name, **labels) == 2


async def test_readyz_follows_redis(make_client: Any, settings: Settings, tmp_path: Any) -> None:
    own = EmbeddedRedis(tmp_path / "redis")
    own.start()
    try:
        client = await make_client(settings.with_(redis_url=own.url))
        assert (await client.get("/readyz")).status == 200
        own.stop()
        down = await client.get("/readyz")
        assert down.status == 503 and (await down.json())["checks"]["redis"].startswith("down")
        assert (await client.get("/healthz")).status == 200
        # this process's own figures still come, and say Redis's did not
        without = await scrape(client)
        assert value(without, "longrun_redis_up") == 0
        assert value(without, "longrun_http_requests_total", method="GET", route="/readyz", status="503") == 1
        assert ("longrun_queue_depth", (("queue", "high"),)) not in without
        own = EmbeddedRedis(own.directory, port=own.port)
        own.start()

        async def ready() -> bool:
            return (await client.get("/readyz")).status == 200

        await wait_for(ready, what="/readyz to recover")
    finally:
        own.stop()


async def test_access_lines_name_the_route_never_the_hash(
    client: TestClient[Any, Any], capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ACCESS, "json_lines", True)
    monkeypatch.setattr(ACCESS, "enabled", True)
    resp = await client.post("/api/requests", json={"service": "vehicle-fines", "data": FINES})
    request_hash = (await resp.json())["hash"]
    assert (await client.get(f"/api/requests/{request_hash}")).status == 200
    assert (await client.get("/api/requests/req_doesnotexist")).status == 404
    ACCESS.flush()
    lines = [orjson.loads(line) for line in capfd.readouterr().out.splitlines() if '"longrun.access"' in line]
    seen = {(line["method"], line["route"], line["status"]) for line in lines}
    assert ("POST", "/api/requests", 201) in seen
    assert ("GET", "/api/requests/{hash}", 200) in seen
    assert ("GET", "/api/requests/{hash}", 404) in seen
    assert all(line["level"] == "info" and line["timestamp"].endswith("Z") for line in lines)
    assert request_hash not in str(lines)


async def test_made_up_methods_share_one_series(client: TestClient[Any, Any]) -> None:
    for method in ("PROPFIND", "MKCOL", "LOCK"):  # methods the HTTP parser knows
        assert (await client.request(method, "/api/requests")).status == 405
    after = await scrape(client)
    assert value(after, "longrun_http_requests_total", method="OTHER", route="other", status="405") == 3
    assert not [key for key in after if ("method", "PROPFIND") in key[1]]


async def create(client: TestClient[Any, Any], data: dict[str, str] = FINES) -> dict[str, Any]:
    resp = await client.post("/api/requests", json={"service": "vehicle-fines", "data": data})
    assert resp.status == 201, await resp.text()
    created: dict[str, Any] = await resp.json()
    return created


async def test_a_dropped_pubsub_connection_is_counted_and_the_socket_carries_on(
    client: TestClient[Any, Any], settings: Settings, processes: Processes, redis: Redis
) -> None:
    h = (await create(client))["hash"]
    ws = await client.ws_connect(f"/ws/requests/{h}")
    assert orjson.loads((await ws.receive(timeout=5)).data)["type"] == "snapshot"
    before = await scrape(client)
    # Only this test's server's hub: its connection is named after this test's key prefix.
    name = f"longrun-hub-{settings.key_prefix.strip('_:')}"
    ours = [c for c in await redis.client_list() if c.get("name") == name]
    assert len(ours) == 1, ours
    assert await redis.client_kill_filter(_id=ours[0]["id"]) == 1

    async def reconnected() -> Metrics | None:
        m = await scrape(client)
        moved = value(m, "longrun_pubsub_reconnects_total") - value(before, "longrun_pubsub_reconnects_total")
        return m if moved >= 1 else None

    after = await wait_for(reconnected, what="the reconnect to be counted")
    assert value(after, "longrun_pubsub_reconnects_total") - value(before, "longrun_pubsub_reconnects_total") == 1
    processes.workers(settings)  # the hub subscribed again: the socket follows the request to its end
    async with asyncio.timeout(20):
        while (frame := orjson.loads((await ws.receive()).data))["request"]["status"] != "completed":
            assert frame["type"] == "update"
    await ws.close()


async def test_archive_backlog_and_lag_are_exported(
    make_client: Any, pg_full_settings: Settings, processes: Processes
) -> None:
    client = await make_client(pg_full_settings)
    h = (await create(client))["hash"]
    assert (await client.post(f"/api/requests/{h}/cancel")).status == 202  # finished: handed to the archive

    async def lagging() -> Metrics | None:
        m = await scrape(client)
        return m if value(m, "longrun_archive_oldest_age") >= 1.0 else None

    m = await wait_for(lagging, what="the unarchived record to be a second old")
    assert value(m, "longrun_archive_backlog") == 1
    processes.archiver(pg_full_settings)

    async def archived() -> Metrics | None:
        m = await scrape(client)
        return m if value(m, "longrun_archive_backlog") == 0 else None

    m = await wait_for(archived, timeout=30, what="the archiver to catch up")
    assert ("longrun_archive_oldest_age", ()) not in m  # no lag to report


async def test_no_archive_figures_without_a_database(client: TestClient[Any, Any]) -> None:
    h = (await create(client))["hash"]
    assert (await client.post(f"/api/requests/{h}/cancel")).status == 202
    m = await scrape(client)
    assert not [key for key in m if key[0].startswith("longrun_archive_")]
