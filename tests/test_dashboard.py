"""The operator dashboard: who may see it, its figures for a known workload, acting on a
failed job, the live feed, and a screenshot in Chromium during a small load."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from server.record import Keys
from server.settings import Settings
from tests.conftest import Processes
from tests.helpers import add_fault, wait_for, wait_status

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


@pytest.mark.browser
async def test_dashboard_in_chromium_during_a_small_load(
    settings: Settings, processes: Processes, redis: Redis, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, WebServer, free_port

    port = free_port()
    live = settings.with_(port=port, public_url=f"http://127.0.0.1:{port}", bot_speed=3.0)
    web = WebServer(processes, live)
    await web.start()
    processes.workers(live)
    async with aiohttp.ClientSession() as http:
        for i in range(6):
            service, data = (
                ("vehicle-fines", FINES)
                if i % 2
                else ("credit-score-rating", {"national_id": f"00123456{i:02d}", "mobile": "09121234567"})
            )
            async with http.post(f"{web.url}/api/requests", json={"service": service, "data": data}) as r:
                assert r.status == 201
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 1000})
        await page.goto(f"{web.url}/dashboard/login")
        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{web.url}/dashboard")
        await page.wait_for_function("document.querySelector('#ops-live').textContent === 'Live'")
        # a pushed update that shows the load (jobs running or people asked for their code)
        await page.wait_for_function(
            "['busy', 'processing', 'waiting_otp']"
            ".some(w => document.querySelector('#ops-body').textContent.includes(w))",
            timeout=30000,
        )
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        text = await page.text_content("#ops-body") or ""
        assert "Waiting for a code" in text and "Workers" in text
        await browser.close()
