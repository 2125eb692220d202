"""``/metrics`` parses with the Prometheus client's own parser and moves with the workload;
``/readyz`` follows Redis."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from server.embedded import EmbeddedRedis
from server.logs import ACCESS
from server.record import Keys
from server.settings import Settings
from tests.conftest import Processes
from tests.helpers import add_fault, wait_for, wait_status

FINES = {"plate": "12B345-67", "national_id": "0012345678"}


async def scrape(client: TestClient[Any, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
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
    assert value(after, "longrun_queue_depth", queue="high") == 3  # no worker yet
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
    assert value(final, "longrun_requests_unfinished", status="pending", service="vehicle-fines") == 0
    assert value(final, "longrun_websockets_open") == 1
    assert value(final, "longrun_ws_messages_relayed_total") > value(before, "longrun_ws_messages_relayed_total")
    assert value(final, "longrun_redis_memory_bytes") > 0
    await ws.close()


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
        own = EmbeddedRedis(own.directory, port=own.port)
        own.start()

        async def ready() -> bool:
            return (await client.get("/readyz")).status == 200

        await wait_for(ready, what="/readyz to recover")
    finally:
        own.stop()


async def test_access_lines_name_the_route_never_the_hash(
    client: TestClient[Any, Any], capfd: pytest.CaptureFixture[str]
) -> None:
    ACCESS.json_lines, ACCESS.enabled = True, True
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


async def test_no_archive_figures_without_a_database(client: TestClient[Any, Any]) -> None:
    h = (await create(client))["hash"]
    assert (await client.post(f"/api/requests/{h}/cancel")).status == 202
    m = await scrape(client)
    assert not [key for key in m if key[0].startswith("longrun_archive_")]
