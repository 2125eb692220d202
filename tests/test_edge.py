"""The edge around every route: what no route answers (404, 405) and what a handler did not
mean to raise (500) get the same headers, counts and access lines as any answer.

(The answers themselves — JSON errors, the friendly page, CORS, the security headers on
pages and the API — are checked where they are used: ``test_trust``, ``test_pages``,
``test_embed``, ``test_metrics``.)"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web

from server.infra.logs import ACCESS
from server.settings import Settings
from server.web import edge
from server.web.app import create_app
from server.web.rendering import STATIC


def test_every_route_of_the_app_has_the_edge_and_unmatched_paths_a_route_of_their_own(settings: Settings) -> None:
    app = create_app(settings)
    routes = list(app.router.routes())
    assert routes and all(getattr(route.handler, "__wrapped__", None) is not None for route in routes)
    assert {route.handler.__wrapped__ for route in routes} >= {edge.unmatched}  # type: ignore[union-attr]
    assert any(route.resource is not None and route.resource.canonical == "/static" for route in routes)
    last = list(app.router.resources())[-1]
    assert [route.handler.__wrapped__ for route in last] == [edge.unmatched]  # type: ignore[union-attr]


def test_static_files_hold_no_html() -> None:
    # A file's Content-Type is set only when it is prepared, after the edge: HTML there would
    # miss the page headers (CSP, frame refusal).
    assert not [p for p in STATIC.rglob("*") if p.suffix.lower() in {".html", ".htm", ".xhtml", ".svgz"}]


async def boom(request: web.Request) -> web.Response:
    raise KeyError("a bug")


async def slow(request: web.Request) -> web.Response:
    raise TimeoutError


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def nothing(request: web.Request) -> web.Response:
    return None  # type: ignore[return-value]  # a bug the edge itself trips on (no .status)


@pytest.fixture
async def bare(aiohttp_client: Any) -> Any:
    """An app with four routes and the edge, and no error page (every error answers JSON)."""
    app = web.Application()
    app.router.add_get("/api/boom", boom)
    app.router.add_get("/api/slow", slow)
    app.router.add_get("/api/ok/{hash}", ok)
    app.router.add_get("/api/nothing", nothing)
    edge.install(app)
    return await aiohttp_client(app)


async def test_unmatched_wrong_method_and_a_bug_are_answered_counted_and_logged(
    bare: Any, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ACCESS, "json_lines", True)
    monkeypatch.setattr(ACCESS, "enabled", True)
    resp = await bare.get("/api/nothing/here")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    resp = await bare.delete("/api/ok/abc")
    assert resp.status == 405 and resp.headers["Allow"] == "GET,HEAD"
    assert (await resp.json())["error"]["code"] == "method_not_allowed"
    resp = await bare.get("/api/boom")
    assert resp.status == 500 and resp.content_type == "text/plain"
    assert (await bare.get("/api/slow")).status == 504
    resp = await bare.get("/api/ok/abc")
    assert resp.status == 200
    ACCESS.flush()
    lines = [orjson.loads(line) for line in capfd.readouterr().out.splitlines() if '"longrun.access"' in line]
    seen = [(line["method"], line["route"], line["status"]) for line in lines]
    assert seen == [
        ("GET", "other", 404),
        ("DELETE", "other", 405),
        ("GET", "/api/boom", 500),
        ("GET", "/api/slow", 504),
        ("GET", "/api/ok/{hash}", 200),
    ]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("POST", "/api/ok/abc", 405),
        ("GET", "/api/boom", 500),
        ("GET", "/api/nothing", 500),
        ("GET", "/api/ok/a", 200),
    ],
)
async def test_every_kind_of_answer_carries_the_security_headers(
    bare: Any, method: str, path: str, status: int
) -> None:
    resp = await bare.request(method, path, headers={"Accept": "text/html"})
    assert resp.status == status
    assert resp.headers["X-Content-Type-Options"] == "nosniff" and resp.headers["Referrer-Policy"] == "no-referrer"
    if resp.content_type == "text/html":  # aiohttp's own 500 page, for a browser
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]


async def test_a_route_added_after_the_edge_stops_the_app_from_starting() -> None:
    """It would answer without the edge, or the route of last resort would answer for it
    (a 405 naming the very method asked)."""
    app = web.Application()
    app.router.add_get("/api/ok/{hash}", ok)
    edge.install(app)
    app.router.add_get("/{name}.txt", ok)
    runner = web.AppRunner(app)
    with pytest.raises(RuntimeError, match=r"after edge\.install"):
        await runner.setup()  # on_startup
    await runner.cleanup()
    twice = web.Application()
    edge.install(twice)
    with pytest.raises(RuntimeError, match="once per app"):
        edge.install(twice)


async def test_a_static_file_is_counted_with_the_status_it_was_sent_with(
    client: Any, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A static file's status is known only once aiohttp prepares it (after the handler):
    a cached copy's 304 and a missing file's 404 are logged and counted as such, not 200."""
    monkeypatch.setattr(ACCESS, "json_lines", True)
    monkeypatch.setattr(ACCESS, "enabled", True)
    first = await client.get("/static/longrun-progress.js")
    assert first.status == 200
    cached = await client.get("/static/longrun-progress.js", headers={"If-None-Match": first.headers["ETag"]})
    assert cached.status == 304 and cached.headers["X-Content-Type-Options"] == "nosniff"
    assert (await client.get("/static/no-such-file.js")).status == 404
    ACCESS.flush()
    lines = [orjson.loads(line) for line in capfd.readouterr().out.splitlines() if '"longrun.access"' in line]
    assert [(line["route"], line["status"]) for line in lines if line["route"] == "/static"] == [
        ("/static", 200),
        ("/static", 304),
        ("/static", 404),
    ]
