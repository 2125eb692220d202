"""Apps that embed Longrun (DESIGN.md, "Apps that embed Longrun"): API keys, viewer tokens,
isolation between apps, listing, rate limits per key, CORS and socket origins for
EMBED_ORIGINS. Against a real Redis, the app in this process (no workers needed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from server.domain.errors import ConfigError, Unauthorized
from server.domain.i18n import ui
from server.history.db import migrate
from server.record import Keys
from server.record.keys import APP_INDEX_GRACE
from server.requests.caller import app_user_id
from server.requests.credentials import ViewerTokens, match_app_key
from server.settings import Settings, new_app_key
from server.web.typedefs import STORE
from tests.archive_helpers import insert, row

VALID = {"national_id": "0012345678", "mobile": "09121234567"}
# Fixed (pytest-xdist collects the same test ids in every worker); new_app_key makes real ones.
SHOP, SHOP_NEXT, BLOG = "lrk_shop" + "s" * 36, "lrk_shop_next" + "n" * 36, "lrk_blog" + "b" * 36
EMBED = "http://shop.test:8090"
Client = TestClient[Any, Any]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def embed_settings(settings: Settings) -> Settings:
    keys = Settings.from_env(
        {"LONGRUN_ENV": "dev", "APP_API_KEYS": f"shop:{SHOP} blog:{BLOG} shop:{SHOP_NEXT}", "EMBED_ORIGINS": EMBED}
    )
    return settings.with_(app_api_keys=keys.app_api_keys, embed_origins=keys.embed_origins)


@pytest.fixture
async def app_client(make_client: Callable[[Settings], Any], embed_settings: Settings) -> Client:
    c: Client = await make_client(embed_settings)
    return c


async def create(client: Client, key: str = SHOP, user_ref: str = "customer-42", **extra: Any) -> dict[str, Any]:
    body = {"service": "credit-score-rating", "data": VALID, "user_ref": user_ref, **extra}
    resp = await client.post("/api/requests", json=body, headers=auth(key))
    assert resp.status == 201, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def status_and_code(resp: aiohttp.ClientResponse) -> tuple[int, str | None]:
    body = await resp.json()
    return resp.status, (body.get("error") or {}).get("code")


# --------------------------------------------------------------------------- settings and credentials


def test_app_keys_are_kept_as_digests_and_written_back_as_digests() -> None:
    assert Settings.from_env({"LONGRUN_ENV": "dev", "APP_API_KEYS": f"x:{new_app_key()}"}).app_api_keys
    s = Settings.from_env({"LONGRUN_ENV": "dev", "APP_API_KEYS": f"shop:{SHOP} shop:{SHOP_NEXT}"})
    assert SHOP not in repr(s) and SHOP not in s.to_env()["APP_API_KEYS"]
    assert Settings.from_env({**s.to_env(), "LONGRUN_ENV": "dev"}).app_api_keys == s.app_api_keys
    assert match_app_key(SHOP_NEXT, s.app_api_keys).app == "shop"
    with pytest.raises(Unauthorized):
        match_app_key(BLOG, s.app_api_keys)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("Shop:" + SHOP, "not an app name"),
        ("shop:lrk_short", "at least 32"),
        ("shop:" + SHOP + " blog:" + SHOP, "listed twice"),
        ("shop", "at least 32"),
    ],
)
def test_bad_app_keys_are_a_start_up_error_naming_the_variable(value: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as exc:
        Settings.from_env({"LONGRUN_ENV": "dev", "APP_API_KEYS": value})
    assert "APP_API_KEYS" in str(exc.value) and SHOP not in str(exc.value)


def test_embed_origins_must_be_origins() -> None:
    with pytest.raises(ConfigError, match="EMBED_ORIGINS"):
        Settings.from_env({"LONGRUN_ENV": "dev", "EMBED_ORIGINS": "https://shop.example/page"})


def test_the_elements_own_text_is_the_keyed_one() -> None:
    """The one text the element holds itself (before the server's words arrive) is i18n's."""
    script = (Path(__file__).resolve().parent.parent / "static" / "longrun-progress.js").read_text()
    for lang in ("en", "fa"):
        assert f"{lang}: '{ui('embed_unreachable', lang)}'" in script


def test_viewer_tokens_are_bound_signed_and_short_lived() -> None:
    tokens = ViewerTokens("secret", ttl=60)
    token, expires = tokens.mint("req_" + "a" * 22, now=1000.0)
    grant = tokens.check(token, now=1059.0)
    assert grant.request_hash == "req_" + "a" * 22 and expires == 1060 and not grant.may_cancel
    with pytest.raises(Unauthorized, match="expired"):
        tokens.check(token, now=1060.0)
    payload = token.split(".")[0]
    forged = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + token.split(".")[1]
    for bad in (forged, token + "x", "lrv_", ViewerTokens("other", ttl=60).mint("req_" + "a" * 22)[0]):
        with pytest.raises(Unauthorized):
            tokens.check(bad, now=1000.0)


# --------------------------------------------------------------------------- the API with keys


async def test_an_app_creates_reads_lists_and_cancels_its_requests(
    app_client: Client, redis: Redis, embed_settings: Settings
) -> None:
    made = await create(app_client)
    h = made["hash"]
    assert made["user_ref"] == "customer-42" and made["viewer_token"].startswith("lrv_")
    assert {"access_token", "viewer_token_expires_at", "ws_url", "status_url"} <= set(made)
    stored = orjson.loads(await redis.get(Keys(embed_settings.key_prefix).record(h)))
    assert stored["_p"]["app"] == "shop" and stored["user_id"] == app_user_id("shop", "customer-42")
    assert "customer-42" not in orjson.dumps({k: v for k, v in stored.items() if k != "_p"}).decode()
    # Any of the app's keys (rotation) reads it; the record never says who the person is.
    resp = await app_client.get(f"/api/requests/{h}", headers=auth(SHOP_NEXT))
    assert resp.status == 200 and "customer-42" not in await resp.text()
    other = await create(app_client, user_ref="customer-7")
    await create(app_client, key=BLOG, user_ref="customer-42")
    listed = await (await app_client.get("/api/requests", headers=auth(SHOP))).json()
    assert [i["hash"] for i in listed["items"]] == [other["hash"], h] and listed["next_cursor"] is None
    assert listed["items"][1]["user_ref"] == "customer-42" and listed["items"][1]["status"] == "pending"
    page = await (await app_client.get("/api/requests?limit=1&user_ref=customer-42", headers=auth(SHOP))).json()
    assert [i["hash"] for i in page["items"]] == [h] and page["next_cursor"] is None
    first = await (await app_client.get("/api/requests?limit=1", headers=auth(SHOP))).json()
    nxt = await (
        await app_client.get(f"/api/requests?limit=1&cursor={first['next_cursor']}", headers=auth(SHOP))
    ).json()
    assert [i["hash"] for i in first["items"] + nxt["items"]] == [other["hash"], h] and nxt["next_cursor"] is None
    resp = await app_client.post(f"/api/requests/{h}/cancel", headers=auth(SHOP))
    assert resp.status == 202 and (await resp.json())["status"] == "cancelled"
    # A record that expired is dropped from the list.
    await redis.delete(Keys(embed_settings.key_prefix).record(other["hash"]))
    listed = await (await app_client.get("/api/requests", headers=auth(SHOP))).json()
    assert [i["hash"] for i in listed["items"]] == [h]


async def test_a_listing_while_a_request_is_created_keeps_it_and_drops_only_old_orphans(
    app_client: Client, redis: Redis, embed_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request is listed under its app before its record is stored; a listing in between
    (another web process, the app's backend polling) must not drop it for good. An entry whose
    record never came (a create that died) goes once it is older than the grace."""
    keys = Keys(embed_settings.key_prefix)
    store = app_client.app[STORE]  # type: ignore[index]
    store_record = store.create
    meanwhile: list[list[str]] = []

    async def listed_meanwhile(record: dict[str, Any]) -> Any:
        listing = await (await app_client.get("/api/requests", headers=auth(SHOP))).json()
        meanwhile.append([i["hash"] for i in listing["items"]])
        return await store_record(record)

    monkeypatch.setattr(store, "create", listed_meanwhile)
    h = (await create(app_client))["hash"]
    assert meanwhile == [[]]  # not shown before its record is there
    listed = await (await app_client.get("/api/requests", headers=auth(SHOP))).json()
    assert [i["hash"] for i in listed["items"]] == [h]

    orphan = keys.new_hash()
    old = (time.time() - APP_INDEX_GRACE - 1) * 1_000_000
    await redis.zadd(keys.app_requests("shop"), {orphan: old})
    listed = await (await app_client.get("/api/requests", headers=auth(SHOP))).json()
    assert [i["hash"] for i in listed["items"]] == [h]
    assert await redis.zscore(keys.app_requests("shop"), orphan) is None
    assert await redis.zscore(keys.app_requests("shop"), h) is not None


async def test_apps_are_isolated_from_each_other_and_from_sessions(app_client: Client) -> None:
    h = (await create(app_client))["hash"]
    session_made = await (
        await app_client.post("/api/requests", json={"service": "credit-score-rating", "data": VALID})
    ).json()
    for path in (f"/api/requests/{h}", f"/api/local-requests/{h}/status"):
        assert await status_and_code(await app_client.get(path, headers=auth(BLOG))) == (404, "not_found")
    for action in ("cancel", "otp", "resend-otp", "viewer-token"):
        resp = await app_client.post(f"/api/requests/{h}/{action}", json={"otp": "123456"}, headers=auth(BLOG))
        assert await status_and_code(resp) == (404, "not_found"), action
    # A session's request is no app's; an app's list holds only its own.
    resp = await app_client.get(f"/api/requests/{session_made['hash']}", headers=auth(SHOP))
    assert resp.status == 404
    assert (await (await app_client.get("/api/requests", headers=auth(BLOG))).json())["items"] == []
    # An unknown key is refused outright (401), a missing one cannot list.
    bad = "lrk_" + "x" * 43
    assert await status_and_code(await app_client.get(f"/api/requests/{h}", headers=auth(bad))) == (
        401,
        "bad_api_key",
    )
    assert await status_and_code(await app_client.get("/api/requests")) == (401, "api_key_required")
    assert await status_and_code(
        await app_client.post(
            "/api/requests", json={"service": "credit-score-rating", "data": VALID}, headers=auth(bad)
        )
    ) == (401, "bad_api_key")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_ref": ""}, "user_ref"),
        ({"user_ref": "a b"}, "user_ref"),
        ({"user_ref": "x" * 129}, "user_ref"),
        ({"user_ref": 42}, "user_ref"),
        ({}, "user_ref"),
        ({"user_ref": "ok", "viewer_can_cancel": "yes"}, "viewer_can_cancel"),
    ],
)
async def test_user_ref_is_checked(app_client: Client, body: dict[str, Any], field: str) -> None:
    resp = await app_client.post(
        "/api/requests", json={"service": "credit-score-rating", "data": VALID, **body}, headers=auth(SHOP)
    )
    assert resp.status == 422 and field in (await resp.json())["error"]["fields"]


async def test_user_ref_without_a_key_and_bad_list_parameters_are_refused(app_client: Client) -> None:
    resp = await app_client.post(
        "/api/requests", json={"service": "credit-score-rating", "data": VALID, "user_ref": "customer-42"}
    )
    assert resp.status == 422 and "user_ref" in (await resp.json())["error"]["fields"]
    for query, name in (
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=x", "cursor"),
        ("user_ref=a%20b", "user_ref"),
        ("page=2", "page"),
    ):
        resp = await app_client.get(f"/api/requests?{query}", headers=auth(SHOP))
        assert resp.status == 422 and name in (await resp.json())["error"]["fields"], query


async def test_a_viewer_token_reads_and_answers_one_request_only(app_client: Client, embed_settings: Settings) -> None:
    made = await create(app_client)
    other = await create(app_client)
    h, viewer = made["hash"], made["viewer_token"]
    resp = await app_client.get(f"/api/requests/{h}", headers=auth(viewer))
    assert resp.status == 200 and (await resp.json())["hash"] == h
    # Answering: the request waits for no code yet, so the state says no (409), not the token.
    assert await status_and_code(
        await app_client.post(f"/api/requests/{h}/otp", json={"otp": "123456"}, headers=auth(viewer))
    ) == (409, "not_waiting_for_otp")
    assert await status_and_code(await app_client.get(f"/api/requests/{other['hash']}", headers=auth(viewer))) == (
        404,
        "not_found",
    )
    assert await status_and_code(await app_client.post(f"/api/requests/{h}/cancel", headers=auth(viewer))) == (
        403,
        "viewer_cannot_cancel",
    )
    resp = await app_client.post(
        "/api/requests", json={"service": "credit-score-rating", "data": VALID}, headers=auth(viewer)
    )
    assert await status_and_code(resp) == (403, "viewer_cannot_create")
    assert await status_and_code(await app_client.get("/api/requests", headers=auth(viewer))) == (
        401,
        "api_key_required",
    )
    expired, _ = ViewerTokens(embed_settings.secret_key, 60).mint(h, now=time.time() - 61)
    assert await status_and_code(await app_client.get(f"/api/requests/{h}", headers=auth(expired))) == (
        401,
        "token_expired",
    )
    # A token minted to cancel cancels; a fresh one comes from the app's backend.
    fresh = await app_client.post(
        f"/api/requests/{h}/viewer-token", json={"viewer_can_cancel": True}, headers=auth(SHOP)
    )
    assert fresh.status == 201
    resp = await app_client.post(f"/api/requests/{h}/cancel", headers=auth((await fresh.json())["viewer_token"]))
    assert resp.status == 202


async def test_rate_limits_are_per_key(make_client: Callable[[Settings], Any], embed_settings: Settings) -> None:
    client: Client = await make_client(embed_settings.with_(app_create_rate=(2, 3600.0)))
    await create(client, user_ref="a")
    await create(client, user_ref="b")
    resp = await client.post(
        "/api/requests", json={"service": "credit-score-rating", "data": VALID, "user_ref": "c"}, headers=auth(SHOP)
    )
    assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
    await create(client, key=SHOP_NEXT, user_ref="c")  # another key of the same app has its own budget


# --------------------------------------------------------------------------- CORS and sockets


async def test_cors_opens_reading_and_answering_to_embed_origins_only(app_client: Client) -> None:
    made = await create(app_client)
    h, viewer = made["hash"], made["viewer_token"]
    pre = await app_client.options(
        f"/api/requests/{h}/otp",
        headers={
            "Origin": EMBED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert pre.status == 204 and pre.headers["Access-Control-Allow-Origin"] == EMBED
    assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in pre.headers
    resp = await app_client.get(f"/api/requests/{h}", headers={**auth(viewer), "Origin": EMBED})
    assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == EMBED
    resp = await app_client.get(f"/api/requests/{h}", headers={"Origin": EMBED})  # an error is readable too
    assert resp.status == 404 and resp.headers["Access-Control-Allow-Origin"] == EMBED
    # The element's event stream: fetch() with the bearer token, so a preflight, then a readable stream.
    pre = await app_client.options(
        f"/sse/requests/{h}",
        headers={
            "Origin": EMBED,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert pre.status == 204 and pre.headers["Access-Control-Allow-Origin"] == EMBED
    assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
    async with app_client.get(f"/sse/requests/{h}", headers={**auth(viewer), "Origin": EMBED}) as stream:
        assert stream.status == 200 and stream.headers["Access-Control-Allow-Origin"] == EMBED
        assert "Access-Control-Allow-Credentials" not in stream.headers
        assert (await stream.content.readuntil(b"\n\n")).startswith(b"retry:")
        assert (await stream.content.readuntil(b"\n\n")).startswith(b"event: snapshot\n")
    script = await app_client.get("/static/longrun-progress.js", headers={"Origin": EMBED})
    assert script.status == 200 and script.headers["Access-Control-Allow-Origin"] == EMBED
    assert "customElements.define('longrun-progress'" in await script.text()
    words = await app_client.get("/api/embed/strings?lang=fa", headers={"Origin": EMBED})
    assert words.status == 200 and words.headers["Access-Control-Allow-Origin"] == EMBED
    assert {v.strip() for v in words.headers["Vary"].split(",")} == {"Accept-Language", "Origin"}
    fa = await words.json()
    assert fa["dir"] == "rtl" and fa["ui"]["status_waiting_otp"] == "کد تأیید لازم است"
    assert fa["services"]["credit-score-rating"]["title"] == "گزارش رتبه اعتباری" and "score" in fa["labels"]
    assert set(fa["messages"]["otp"]) and fa["messages"]["otp"][0] != fa["messages"]["otp"][1]
    for origin in ("http://evil.test", "null"):
        pre = await app_client.options(
            f"/api/requests/{h}", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
        )
        assert "Access-Control-Allow-Origin" not in pre.headers
    # Creating and listing are for backends: never opened to a browser.
    for method, path in (("OPTIONS", "/api/requests"), ("GET", "/api/requests")):
        resp = await app_client.request(method, path, headers={**auth(SHOP), "Origin": EMBED})
        assert "Access-Control-Allow-Origin" not in resp.headers, (method, path)


async def test_sockets_from_embed_origins_need_their_own_credential(app_client: Client) -> None:
    made = await create(app_client)
    h, viewer = made["hash"], made["viewer_token"]
    ws = await app_client.ws_connect(
        f"/ws/requests/{h}", headers={"Origin": EMBED}, protocols=("longrun", f"bearer.{viewer}")
    )
    assert ws.protocol == "longrun"
    first = await ws.receive_json(timeout=5)
    assert first["type"] == "snapshot" and first["request"]["hash"] == h
    await ws.send_json({"type": "cancel"})
    assert (await ws.receive_json(timeout=5))["code"] == "viewer_cannot_cancel"
    await ws.close()
    for headers, protocols, status in (
        ({"Origin": EMBED}, (), 403),  # the session cookie never speaks for another site
        ({"Origin": "http://evil.test"}, ("longrun", f"bearer.{viewer}"), 403),
        ({"Origin": EMBED}, ("longrun", f"bearer.{(await create(app_client))['viewer_token']}"), 404),
    ):
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await app_client.ws_connect(f"/ws/requests/{h}", headers=headers, protocols=protocols)
        assert exc.value.status == status


async def test_a_socket_and_a_stream_end_when_their_viewer_token_runs_out(
    make_client: Callable[[Settings], Any], embed_settings: Settings
) -> None:
    """A viewer token is checked when a socket or stream opens and again at every heartbeat
    visit: once it runs out, the socket is told token_expired and closed, the stream ended
    (and its reconnect refused), as a new connection would be; nothing streams past it."""
    client = await make_client(embed_settings.with_(socket_heartbeat=0.5))
    h = (await create(client))["hash"]
    ttl = 60
    soon, _ = ViewerTokens(embed_settings.secret_key, ttl).mint(h, now=time.time() - ttl + 2)
    ws = await client.ws_connect(
        f"/ws/requests/{h}", headers={"Origin": EMBED}, protocols=("longrun", f"bearer.{soon}")
    )
    assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
    stream = await client.get(f"/sse/requests/{h}", headers={"Authorization": f"Bearer {soon}", "Origin": EMBED})
    assert stream.status == 200
    async with asyncio.timeout(10):
        frames = []
        while (msg := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
            frames.append(orjson.loads(msg.data))
        assert frames[-1]["type"] == "error" and frames[-1]["code"] == "token_expired", frames
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        while await stream.content.readline():
            pass  # read to its end: the server ended it
    again = await client.get(f"/sse/requests/{h}", headers={"Authorization": f"Bearer {soon}", "Origin": EMBED})
    assert again.status == 401  # the element then asks its host page for a fresh token


# --------------------------------------------------------------------------- the archive


async def test_an_app_reads_one_persons_history_and_nobody_elses(
    make_client: Callable[[Settings], Any], embed_settings: Settings, database_url: str, pg_schema: str
) -> None:
    settings = embed_settings.with_(database_url=database_url, database_schema=pg_schema)
    await migrate(settings)
    now = time.time()
    mine = row(app_user_id("shop", "customer-42"), now - 60, app="shop", user_ref="customer-42")
    other_person = row(app_user_id("shop", "customer-7"), now - 50, app="shop", user_ref="customer-7")
    other_app = row(app_user_id("blog", "customer-42"), now - 40, app="blog", user_ref="customer-42")
    await insert(settings, [mine, other_person, other_app])
    client: Client = await make_client(settings)

    async def history(key: str | None, query: str) -> tuple[int, Any]:
        resp = await client.get(f"/api/history{query}", headers=auth(key) if key else {})
        return resp.status, await resp.json()

    status, page = await history(SHOP, "?user_ref=customer-42")
    assert status == 200 and [i["hash"] for i in page["items"]] == [mine.hash]
    assert page["items"][0]["app"] == "shop" and page["items"][0]["user_ref"] == "customer-42"
    status, page = await history(BLOG, "?user_ref=customer-42")
    assert status == 200 and [i["hash"] for i in page["items"]] == [other_app.hash]
    status, entry = await history(SHOP_NEXT, f"/{mine.hash}?user_ref=customer-42")
    assert status == 200 and entry["hash"] == mine.hash
    for key, query in ((BLOG, f"/{mine.hash}?user_ref=customer-42"), (SHOP, f"/{mine.hash}?user_ref=customer-7")):
        assert (await history(key, query))[0] == 404
    for key, query in ((SHOP, ""), (SHOP, "?user_ref=a%20b"), (None, "?user_ref=customer-42")):
        status, body = await history(key, query)
        assert status == 422 and "user_ref" in body["error"]["fields"], (key, query)
