"""History: GET /api/history and the /history pages, over real PostgreSQL rows.

Rows are written with the archive's own COPY path (``write_rows``) so that a
test can place hundreds of them at chosen times; the session's user comes from
a real ``POST /api/requests`` (its job just waits in this test's queue).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import aiohttp_jinja2
import pytest
from aiohttp.test_utils import TestClient

from server.domain.display import error_text
from server.history.db import migrate
from server.history.queries import Cursor
from server.requests.sweeper import OVERDUE
from server.settings import Settings
from server.web import pages
from server.web.app import create_app
from tests.archive_helpers import TcpProxy, insert, row
from tests.helpers import wait_for

CREDIT = {"national_id": "0012345678", "mobile": "09121234567"}
SERVICES_2 = ("vehicle-fines", "video-generation")


async def client_for(aiohttp_client: Any, settings: Settings) -> TestClient[Any, Any]:
    app = create_app(settings)
    if aiohttp_jinja2.APP_KEY not in app:  # until create_app wires the pages in
        pages.setup(app)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    return client


async def session_user(client: TestClient[Any, Any]) -> str:
    """Give the client's session a user id the way people get one: by making a request."""
    resp = await client.post("/api/requests", json={"service": "credit-score-rating", "data": CREDIT})
    assert resp.status == 201, await resp.text()
    h = (await resp.json())["hash"]
    record = await (await client.get(f"/api/requests/{h}")).json()
    uid: str = record["user_id"]
    return uid


async def all_pages(client: TestClient[Any, Any], query: str = "", limit: int = 7) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        url = f"/api/history?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
        resp = await client.get(url)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


async def test_no_session_means_an_empty_history(aiohttp_client: Any, pg_settings: Settings) -> None:
    client = await client_for(aiohttp_client, pg_settings)
    resp = await client.get("/api/history")
    assert resp.status == 200
    assert await resp.json() == {"items": [], "next_cursor": None, "enabled": True}
    assert "set-cookie" not in {k.lower() for k in resp.headers}
    assert (await client.get(f"/api/history/req_{'a' * 25}")).status == 404
    page = await client.get("/history")
    assert page.status == 200 and "Nothing here yet." in await page.text()


async def test_pages_newest_first_filtered_and_only_your_own(aiohttp_client: Any, pg_settings: Settings) -> None:
    client = await client_for(aiohttp_client, pg_settings)
    uid = await session_user(client)
    now = time.time()
    mine = [row(uid, now - i, service=SERVICES_2[i % 2], status=("completed", "failed")[i % 3 == 0]) for i in range(25)]
    # Two rows finishing at the same microsecond: the hash breaks the tie.
    mine += [row(uid, now - 100.5), row(uid, now - 100.5)]
    others = [row("u_someone_else", now - i) for i in range(10)]
    await insert(pg_settings, mine + others)

    items = await all_pages(client)
    assert [i["hash"] for i in items] == [
        r.hash for r in sorted(mine, key=lambda r: (r.finished, r.hash), reverse=True)
    ]
    first = items[0]
    assert first["url"] == f"/history/{first['hash']}" and first["finished_at"].endswith("Z")
    assert "result_data" not in first and first["request_data"] == {"plate": "12B345-67"}

    videos = await all_pages(client, "&service=video-generation", limit=5)
    assert len(videos) == 12 and all(i["service_slug"] == "video-generation" for i in videos)
    failed = await all_pages(client, "&status=failed&service=vehicle-fines", limit=3)
    assert failed and all(i["status"] == "failed" and i["service_slug"] == "vehicle-fines" for i in failed)
    assert len(failed) == sum(1 for r in mine if r.status == "failed" and r.service_slug == "vehicle-fines")

    entry = await client.get(first["api_url"])
    assert entry.status == 200
    assert (await entry.json())["result_data"] in ({"total": 2}, None)
    someone_elses = others[0].hash
    assert (await client.get(f"/api/history/{someone_elses}")).status == 404
    assert (await client.get(f"/history/{someone_elses}")).status == 404

    stranger = await client_for(aiohttp_client, pg_settings)
    assert (await stranger.get(first["api_url"])).status == 404
    assert (await (await stranger.get("/api/history")).json())["items"] == []


async def test_pagination_is_stable_under_concurrent_inserts(aiohttp_client: Any, pg_settings: Settings) -> None:
    client = await client_for(aiohttp_client, pg_settings)
    uid = await session_user(client)
    base = time.time() - 3600
    existing = [row(uid, base + i * 0.25) for i in range(120)]
    await insert(pg_settings, existing)
    stop = asyncio.Event()

    async def archive_meanwhile() -> int:
        added = 0
        rng = random.Random(7)
        while not stop.is_set():
            # newer rows for this user (they belong before the pages already read) and rows of others
            fresh = [row(uid, time.time() + rng.random()) for _ in range(5)]
            await insert(pg_settings, [*fresh, row(f"u_{rng.randrange(50)}", base + rng.random() * 30)])
            added += len(fresh)
            await asyncio.sleep(0.01)
        return added

    writer = asyncio.create_task(archive_meanwhile())
    try:
        items = await all_pages(client, limit=9)
    finally:
        stop.set()
        added = await writer
    assert added > 0
    hashes = [i["hash"] for i in items]
    assert len(hashes) == len(set(hashes)), "a row appeared twice"
    assert {r.hash for r in existing} <= set(hashes), "a row that existed before paging was skipped"
    keys = [(i["finished_at"], i["hash"]) for i in items]
    assert keys == sorted(keys, reverse=True)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("status=running", "status"),
        ("service=Not%20A%20Slug", "service"),
        ("cursor=garbage!", "cursor"),
        ("cursor=WzEsMl0", "cursor"),
    ],
)
async def test_bad_parameters_are_refused_clearly(
    aiohttp_client: Any, pg_settings: Settings, query: str, field: str
) -> None:
    client = await client_for(aiohttp_client, pg_settings)
    resp = await client.get(f"/api/history?{query}")
    assert resp.status == 422
    body = await resp.json()
    assert body["error"]["code"] == "invalid" and field in body["error"]["fields"]


def test_cursor_round_trip_is_exact_to_the_microsecond() -> None:
    from datetime import UTC, datetime

    moment = datetime(2026, 3, 1, 12, 30, 15, 123457, tzinfo=UTC)
    cursor = Cursor(moment, "req_" + "z" * 25)
    assert Cursor.decode(cursor.encode()) == cursor


async def test_history_pages_render_for_their_owner(aiohttp_client: Any, pg_settings: Settings) -> None:
    client = await client_for(aiohttp_client, pg_settings)
    uid = await session_user(client)
    now = time.time()
    done = row(uid, now, result_data={"total": 2, "report_url": "https://example.com/r.pdf"}, waited=12.0)
    failed = row(uid, now - 5, status="failed", error=OVERDUE)  # our own words
    await insert(pg_settings, [done, failed] + [row(uid, now - 100 - i) for i in range(25)])

    page = await client.get("/history")
    html = await page.text()
    assert page.status == 200 and page.content_type == "text/html"
    # reachable from every page's header; its table scrolls inside the page on a phone
    assert '<a class="topbar-link" href="/history">Your requests</a>' in html
    assert '<div class="table-scroll">' in html and '<span class="sr-only">' in html
    assert f'href="/history/{done.hash}"' in html and f'href="/history/{failed.hash}"' in html
    assert "Older requests" in html and "cursor=" in html
    older = html.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
    second = await (await client.get(older)).text()
    assert done.hash not in second and "Newest requests" in second

    filtered = await (await client.get("/history?status=failed")).text()
    assert failed.hash in filtered and done.hash not in filtered

    detail = await client.get(f"/history/{done.hash}")
    text = await detail.text()
    assert detail.status == 200
    assert "https://example.com/r.pdf" in text and "12B345-67" in text
    assert text.index("Logging in") < text.index("Finding the vehicle")  # the catalog's step order

    fa = await (await client.get("/history", headers={"Accept-Language": "fa"})).text()
    assert 'dir="rtl"' in fa
    # our own error, in the reader's language (the progress page says it so too)
    failed_fa = await (await client.get(f"/history/{failed.hash}", headers={"Accept-Language": "fa"})).text()
    assert failed.error and error_text(failed.error, "fa") in failed_fa and failed.error not in failed_fa

    # a stale or mistyped link goes to the first page, not to an error page whose "try again"
    # would send the same link again
    for stale in ("cursor=abc", "limit=0", "status=maybe"):
        resp = await client.get(f"/history?{stale}", allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/history", stale


async def test_history_without_an_archive_says_so(aiohttp_client: Any, base_settings: Settings) -> None:
    client = await client_for(aiohttp_client, base_settings)
    assert await (await client.get("/api/history")).json() == {"items": [], "next_cursor": None, "enabled": False}
    assert "not kept on this server" in await (await client.get("/history")).text()
    assert (await client.get(f"/history/req_{'a' * 25}")).status == 404


async def test_history_comes_back_when_postgres_does(aiohttp_client: Any, pg_settings: Settings) -> None:
    assert pg_settings.database_url
    proxy = TcpProxy(pg_settings.database_url)
    await proxy.start()
    await proxy.cut()  # PostgreSQL is "down" when the web starts
    try:
        client = await client_for(aiohttp_client, pg_settings.with_(database_url=proxy.url))
        uid = await session_user(client)
        ready = await client.get("/readyz")  # still serving people: only the history is down
        assert ready.status == 200 and (await ready.json())["status"] == "degraded"
        resp = await client.get("/api/history")
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "unavailable"

        await proxy.restore()
        await migrate(pg_settings)
        await insert(pg_settings, [row(uid, time.time())])

        async def back() -> bool:
            r = await client.get("/api/history")
            return r.status == 200 and len((await r.json())["items"]) == 1

        await wait_for(back, timeout=20, interval=0.5, what="history to come back")
        ready = await client.get("/readyz")
        assert ready.status == 200 and (await ready.json())["status"] == "ready"

        await proxy.cut()  # and down again, mid-life: a clear 503, not a hang
        started = time.monotonic()
        resp = await client.get("/api/history")
        assert resp.status == 503 and time.monotonic() - started < 10
    finally:
        await proxy.close()
