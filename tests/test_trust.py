"""Trust: rate limits, OTP hygiene, signed events with rotated secrets, secrets at start-up."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from server.domain.messages import MESSAGES
from server.infra.webhooks import sign
from server.record import Keys
from server.settings import Settings, new_webhook_secret
from tests.conftest import ROOT, Processes
from tests.helpers import add_fault, bot_calls, outbox, record, wait_for, wait_status

CREDIT = {"national_id": "0012345678", "mobile": "09121234567"}


async def test_creation_rate_limit_answers_429_with_retry_after_then_allows_again(
    make_client: Any, settings: Settings, redis: Redis
) -> None:
    limited = settings.with_(create_rate=(3, 3.0), create_rate_per_address=(100, 1.0))
    client = await make_client(limited)
    keys = Keys(limited.key_prefix)
    for _ in range(3):
        assert (
            await client.post("/api/requests", json={"service": "credit-score-rating", "data": CREDIT})
        ).status == 201
    refused = await client.post("/api/requests", json={"service": "credit-score-rating", "data": CREDIT})
    assert refused.status == 429
    retry_after = refused.headers["Retry-After"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 1
    assert (await refused.json())["error"]["code"] == "rate_limited"
    assert await redis.llen(keys.tracking_list()) == 3  # the refused call changed nothing
    await asyncio.sleep(int(retry_after))
    assert (await client.post("/api/requests", json={"service": "credit-score-rating", "data": CREDIT})).status == 201


async def test_per_address_limits_apply_across_sessions(make_client: Any, settings: Settings) -> None:
    limited = settings.with_(create_rate_per_address=(2, 60.0), poll_rate_per_address=(4, 60.0))
    client = await make_client(limited)
    url = client.make_url("/api/requests")
    statuses = []
    created = None
    for _ in range(3):  # three different browsers behind one address
        async with (
            aiohttp.ClientSession() as fresh,
            fresh.post(
                url, json={"service": "vehicle-fines", "data": {"plate": "12B345-67", "national_id": "0012345678"}}
            ) as r,
        ):
            statuses.append(r.status)
            created = created or await r.json()
    assert statuses == [201, 201, 429]
    assert created is not None
    auth = {"Authorization": f"Bearer {created['access_token']}"}
    polls = [(await client.get(f"/api/requests/{created['hash']}", headers=auth)).status for _ in range(5)]
    assert polls == [200] * 5  # polls are charged to Redis in batches (every 0.2 s) ...
    await asyncio.sleep(0.4)
    refused = await client.get(f"/api/requests/{created['hash']}", headers=auth)
    assert refused.status == 429 and refused.headers["Retry-After"].isdigit()  # ... then refused


async def test_a_refused_cookie_poll_never_opens_the_session(
    make_client: Any, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The poll limit comes before the session cookie is decrypted (and a poll for a hash that
    does not exist never decrypts it): a flood of polls costs no cryptography. A cookie that
    does not decrypt says so in the log each time it is opened, which makes opening visible."""
    client = await make_client(settings.with_(poll_rate_per_address=(2, 60.0)))
    fines = {"plate": "12B345-67", "national_id": "0012345678"}
    created = await (await client.post("/api/requests", json={"service": "vehicle-fines", "data": fines})).json()
    client.session.cookie_jar.clear()  # the creator's own session cookie: not this caller's
    forged = {"Cookie": "longrun_session=not-a-sealed-session"}
    path = f"/api/requests/{created['hash']}"
    with caplog.at_level(logging.WARNING, logger="aiohttp_session"):
        assert (await client.get(path, headers=forged)).status == 404  # opened: not this session's
        assert len(opened(caplog)) == 1
        assert (await client.get("/api/requests/req_" + "A" * 25, headers=forged)).status == 404
        assert len(opened(caplog)) == 1  # no such record: nothing to open the session for
        assert (await client.get(path, headers=forged)).status == 404  # the third poll: still counted
        await asyncio.sleep(0.4)  # the batched limiter has charged the first polls
        refused = [(await client.get(path, headers=forged)).status for _ in range(5)]
    assert refused == [429] * 5
    assert len(opened(caplog)) == 2


def opened(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "aiohttp_session" and "decrypt" in r.getMessage()]


async def dump_keys(redis: Redis, pattern: str) -> bytes:
    """Every value of every key matching ``pattern``, whatever its type, as one blob."""
    out = []
    async for key in redis.scan_iter(match=pattern, count=1000):
        kind = (await redis.type(key)).decode()
        out.append(key)
        if kind == "string":
            out.append(await redis.get(key) or b"")
        elif kind == "hash":
            for k, v in (await redis.hgetall(key)).items():
                out += [k, v]
        elif kind == "list":
            out += await redis.lrange(key, 0, -1)
        elif kind == "set":
            out += list(await redis.smembers(key))
        elif kind == "zset":
            out += [m for m, _ in await redis.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            for _, fields in await redis.xrange(key):
                for k, v in fields.items():
                    out += [k, v]
    return b"\n".join(out)


async def test_the_code_is_nowhere_after_a_full_otp_flow(
    client: TestClient[Any, Any],
    settings: Settings,
    processes: Processes,
    redis: Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    code = "987654"
    processes.workers(settings, count=2, LOG_LEVEL="DEBUG")
    keys = Keys(settings.key_prefix)
    await add_fault(settings.bot_api_url, service="credit-score-rating", match=CREDIT, mode="fixed_code", code=code)
    h = (await (await client.post("/api/requests", json={"service": "credit-score-rating", "data": CREDIT})).json())[
        "hash"
    ]
    await wait_status(redis, keys, h, "waiting_otp")
    wrong = await client.post(f"/api/requests/{h}/otp", json={"otp": "111111"})
    assert wrong.status == 202
    await wait_status(redis, keys, h, "waiting_otp")
    ws = await client.ws_connect(f"/ws/requests/{h}")
    await ws.receive(timeout=5)
    await ws.send_str(orjson.dumps({"type": "otp", "otp": code}).decode())  # the right one, over the socket
    done = await wait_status(redis, keys, h, "completed", "failed")
    assert done["status"] == "completed"
    await ws.close()
    await asyncio.sleep(0.5)

    everything = await dump_keys(redis, f"*{settings.key_prefix}*")
    # we looked at the right keys (the phases' jobs are gone: a job is deleted once it succeeds)
    assert b"local_request" in everything and b"longrun:stats" in everything
    assert code.encode() not in everything
    logs = processes.logs(tail=None)
    assert "relaying a code" in logs  # the workers did log their work, just not the code
    assert code not in logs
    assert code not in caplog.text
    calls = await bot_calls(settings.bot_api_url, h)
    assert sum(n for k, n in calls.items() if ":otp:" in k) == 2  # each code relayed once


# --------------------------------------------------------------------------- the OTP cap and resend


async def otp_checks(redis: Redis, keys: Keys) -> int:
    """How many code checks the workers ran under this test's prefix (the jobs themselves are
    deleted once they succeed; the workers' counts stay)."""
    counts = await redis.hgetall(keys.job_stats())
    return sum(int(n) for field, n in counts.items() if b"|otp|" in field)


async def test_the_code_cap_fails_the_request_at_once_then_answers_429_and_the_bot_hears_no_more(
    client: TestClient[Any, Any], settings: Settings, processes: Processes, redis: Redis
) -> None:
    processes.workers(settings, count=2)
    keys = Keys(settings.key_prefix)
    cap = settings.otp_max_attempts
    h = (await (await client.post("/api/requests", json={"service": "credit-score-rating", "data": CREDIT})).json())[
        "hash"
    ]
    await wait_status(redis, keys, h, "waiting_otp")
    code = (await outbox(settings.bot_api_url, h))[0]["code"]
    wrong = "000000" if code != "000000" else "111111"

    async def rejected(left: int) -> bool:
        rec = await record(redis, keys, h)
        od = rec.get("otp_data") or {}
        return rec["status"] == "waiting_otp" and bool(od.get("error")) and od.get("attempts_left") == left

    for n in range(1, cap + 1):
        assert (await client.post(f"/api/requests/{h}/otp", json={"otp": wrong})).status == 202
        if n < cap:
            await wait_for(lambda n=n: rejected(cap - n), what=f"wrong code {n} to be rejected")
    # The last wrong code ends the request there and then: no prompt that no code may answer,
    # left for the sweeper to fail as "not entered in time" once the code's two minutes are up.
    failed = await wait_status(redis, keys, h, "failed", "completed", "waiting_otp")
    assert failed["status"] == "failed", failed
    assert failed["error"] == MESSAGES["otp_exhausted"] == "Too many wrong codes. Please start a new request."
    assert failed["message_key"] == "otp_exhausted" and failed["requires_otp"] is False
    calls = await bot_calls(settings.bot_api_url, h)
    assert sum(n for k, n in calls.items() if ":otp:" in k) == cap

    before = await redis.get(keys.record(h))
    for path in (f"/api/requests/{h}/otp", f"/api/local-requests/{h}/otp"):
        refused = await client.post(path, json={"otp": code})  # even the right code
        assert refused.status == 429, await refused.text()
        assert refused.headers["Retry-After"].isdigit() and int(refused.headers["Retry-After"]) > 0
        assert (await refused.json())["error"]["code"] == "otp_attempts_exhausted"
    ws = await client.ws_connect(f"/ws/requests/{h}")
    assert orjson.loads((await ws.receive(timeout=5)).data)["type"] == "snapshot"
    await ws.send_str(orjson.dumps({"type": "otp", "otp": code}).decode())
    frame = orjson.loads((await ws.receive(timeout=5)).data)
    assert frame["type"] == "error" and frame["code"] == "otp_attempts_exhausted", frame
    await ws.close()
    assert await redis.get(keys.record(h)) == before  # nothing changed, seq included
    assert not await redis.exists(keys.otp(h))  # the refused code was not kept
    await asyncio.sleep(0.5)
    assert await bot_calls(settings.bot_api_url, h) == calls  # the bot heard nothing more
    assert await otp_checks(redis, keys) == cap  # and no check was queued

    # The person reads why, in their language.
    page = await (await client.get(f"/requests/{h}", headers={"Accept-Language": "fa"})).text()
    assert "کدهای نادرست زیادی وارد شد" in page


async def test_resend_too_early_is_429_then_reaches_the_bot_and_a_new_sms_arrives(
    make_client: Any, settings: Settings, processes: Processes, redis: Redis
) -> None:
    throttled = settings.with_(otp_resend_interval=4)
    client = await make_client(throttled)
    processes.workers(throttled, count=2)
    keys = Keys(throttled.key_prefix)
    h = (await (await client.post("/api/requests", json={"service": "credit-score-rating", "data": CREDIT})).json())[
        "hash"
    ]
    await wait_status(redis, keys, h, "waiting_otp")
    assert len(await outbox(throttled.bot_api_url, h)) == 1
    before = await redis.get(keys.record(h))
    waits = []
    for path in (f"/api/requests/{h}/resend-otp", f"/api/local-requests/{h}/resend-otp"):
        early = await client.post(path)
        assert early.status == 429, await early.text()
        assert (await early.json())["error"]["code"] == "resend_too_early"
        waits.append(early.headers["Retry-After"])
    assert all(w.isdigit() and 1 <= int(w) <= 4 for w in waits), waits
    assert await redis.get(keys.record(h)) == before  # refused: nothing changed
    await asyncio.sleep(0.3)
    assert not [k for k in await bot_calls(throttled.bot_api_url, h) if "resend" in k]
    assert len(await outbox(throttled.bot_api_url, h)) == 1

    await asyncio.sleep(max(int(w) for w in waits))
    assert (await client.post(f"/api/requests/{h}/resend-otp")).status == 202
    messages = await wait_for(
        lambda: _at_least(outbox(throttled.bot_api_url, h), 2), what="the second SMS in the demo outbox"
    )
    assert len(messages) == 2 and messages[1]["code"] and messages[1]["to"] == messages[0]["to"]
    calls = await bot_calls(throttled.bot_api_url, h)
    assert [n for k, n in calls.items() if "resend" in k] == [1], calls
    # The bot now expects the new code: it is the one that works.
    assert (await client.post(f"/api/requests/{h}/otp", json={"otp": messages[1]["code"]})).status == 202
    done = await wait_status(redis, keys, h, "completed", "failed")
    assert done["status"] == "completed", done


async def _at_least(messages: Any, n: int) -> list[dict[str, Any]] | None:
    got: list[dict[str, Any]] = await messages
    return got if len(got) >= n else None


# --------------------------------------------------------------------------- who may see a request


def browser() -> aiohttp.ClientSession:
    """A browser's own session: its cookie jar keeps cookies for 127.0.0.1 (aiohttp's default
    jar ignores cookies for IP hosts, which would make every "other session" cookieless)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def start_in(session: aiohttp.ClientSession, client: TestClient[Any, Any]) -> dict[str, Any]:
    body = {"service": "credit-score-rating", "data": CREDIT}
    async with session.post(client.make_url("/api/requests"), json=body) as r:
        assert r.status == 201, await r.text()
        created: dict[str, Any] = await r.json()
        return created


async def everything_about(
    session: aiohttp.ClientSession, client: TestClient[Any, Any], h: str, headers: dict[str, str], csrf: str
) -> list[tuple[str, int, str]]:
    """Every way to look at or act on ``h``: (what, status, body) for pages, API, forms, socket."""
    out = []
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/requests/{h}", {}),
        ("GET", f"/requests/{h}/result", {}),
        ("GET", f"/demo/outbox/{h}", {}),
        ("GET", f"/api/requests/{h}", {}),
        ("GET", f"/api/local-requests/{h}/status", {}),
        ("POST", f"/api/requests/{h}/otp", {"json": {"otp": "123456"}}),
        ("POST", f"/api/requests/{h}/resend-otp", {}),
        ("POST", f"/api/requests/{h}/cancel", {}),
        ("POST", f"/api/local-requests/{h}/otp", {"json": {"otp": "123456"}}),
        ("POST", f"/api/local-requests/{h}/resend-otp", {}),
        ("POST", f"/api/local-requests/{h}/cancel", {}),
        ("POST", f"/requests/{h}/otp", {"data": {"otp": "123456", "csrf_token": csrf}}),
        ("POST", f"/requests/{h}/resend-otp", {"data": {"csrf_token": csrf}}),
        ("POST", f"/requests/{h}/cancel", {"data": {"csrf_token": csrf}}),
    ]
    for method, path, kw in calls:
        async with session.request(method, client.make_url(path), headers=headers, allow_redirects=False, **kw) as r:
            out.append((f"{method} {path.replace(h, '{h}')}", r.status, await r.text()))
    try:
        ws = await session.ws_connect(client.make_url(f"/ws/requests/{h}"), headers=headers)
    except aiohttp.WSServerHandshakeError as err:
        out.append(("WS /ws/requests/{h}", err.status, ""))
    else:
        await ws.close()
        out.append(("WS /ws/requests/{h}", 101, ""))
    return out


async def test_another_session_with_its_own_cookie_or_a_wrong_token_gets_404_everywhere(
    client: TestClient[Any, Any], settings: Settings, redis: Redis
) -> None:
    keys = Keys(settings.key_prefix)
    async with browser() as alice, browser() as mallory, browser() as cookieless:
        a, m = await start_in(alice, client), await start_in(mallory, client)
        jar = {name: s.cookie_jar.filter_cookies(client.make_url("/")) for name, s in (("a", alice), ("m", mallory))}
        assert jar["a"]["longrun_session"].value != jar["m"]["longrun_session"].value  # two real sessions
        async with mallory.get(client.make_url(f"/requests/{m['hash']}")) as r:
            page = await r.text()
            assert r.status == 200  # Mallory's cookie is valid: she sees her own request ...
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert csrf is not None
        async with mallory.get(client.make_url(f"/api/requests/{m['hash']}")) as r:
            assert r.status == 200

        h = a["hash"]
        before = await redis.get(keys.record(h))
        never = Keys(settings.key_prefix).new_hash()
        attempts = {
            "another session": (mallory, {}),
            "another session with its own valid token": (mallory, {"Authorization": f"Bearer {m['access_token']}"}),
            "a wrong token": (cookieless, {"Authorization": "Bearer " + "x" * 43}),
            "another request's token": (cookieless, {"Authorization": f"Bearer {m['access_token']}"}),
        }
        for who, (session, headers) in attempts.items():
            seen = await everything_about(session, client, h, headers, csrf.group(1))
            baseline = await everything_about(session, client, never, headers, csrf.group(1))
            # ... but Alice's request answers exactly as a hash that never existed: 404 (a form
            # post with no session at all is refused for its CSRF token first, 403, either way).
            for (what, status, body), (_, base_status, base_body) in zip(seen, baseline, strict=True):
                form = what.startswith("POST /requests/")
                expected = 403 if form and session is cookieless else 404
                assert status == base_status == expected, (who, what, status, body[:300])
                if what.split()[1].startswith("/api/"):
                    assert body == base_body, (who, what)
        async with mallory.get(
            client.make_url(f"/requests/{h}").with_query(access_token=m["access_token"]), allow_redirects=False
        ) as r:
            assert r.status == 404  # another request's token is no token link to this one
        assert await redis.get(keys.record(h)) == before  # nothing changed, seq included
        assert not await redis.exists(keys.otp(h))
        async with alice.get(client.make_url(f"/api/requests/{h}")) as r:
            assert r.status == 200 and (await r.json())["status"] == "pending"  # Alice still does


async def test_cookie_and_page_headers(client: TestClient[Any, Any]) -> None:
    created = await client.post("/api/requests", json={"service": "credit-score-rating", "data": CREDIT})
    assert created.status == 201
    h = (await created.json())["hash"]
    cookies = [c for c in created.headers.getall("Set-Cookie") if c.startswith("longrun_session=")]
    assert len(cookies) == 1, created.headers.getall("Set-Cookie")
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookies[0].split(";")[1:]}
    assert "httponly" in attributes and attributes["samesite"].lower() == "samesite=lax", cookies[0]
    assert attributes["path"] == "Path=/"

    pages = ["/", "/services/credit-score-rating", f"/requests/{h}", f"/demo/outbox/{h}", "/history", "/nope"]
    for path in pages:
        resp = await client.get(path, allow_redirects=False)
        assert resp.content_type == "text/html", (path, resp.status)
        csp = {d.strip().split(" ")[0]: d.strip() for d in resp.headers["Content-Security-Policy"].split(";")}
        assert csp["default-src"] == "default-src 'self'", path
        assert csp["script-src"] == "script-src 'self'" and csp["style-src"] == "style-src 'self'", path
        assert csp["object-src"] == "object-src 'none'" and csp["frame-ancestors"] == "frame-ancestors 'none'", path
        assert "unsafe" not in resp.headers["Content-Security-Policy"], path
        assert resp.headers["Referrer-Policy"] == "no-referrer", path
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path
    api = await client.get(f"/api/requests/{h}")
    assert api.headers["X-Content-Type-Options"] == "nosniff" and api.headers["Referrer-Policy"] == "no-referrer"


async def test_rotated_secret_is_accepted_over_http(make_client: Any, settings: Settings, redis: Redis) -> None:
    old, new = settings.signing_secret, new_webhook_secret()
    client = await make_client(settings.with_(webhook_secrets=(new, old)))
    h = (await (await client.post("/api/requests", json={"service": "credit-score-rating", "data": CREDIT})).json())[
        "hash"
    ]
    for secret, event_id in ((old, "rot-1"), (new, "rot-2")):
        body = orjson.dumps(
            {"type": "failed", "error": "portal closed"} if event_id == "rot-2" else {"type": "progress", "progress": 1}
        )
        resp = await client.post(
            f"/api/bot/requests/{h}/events", data=body, headers=sign(secret, body, event_id=event_id)
        )
        assert resp.status == 202, await resp.text()
    rec = orjson.loads(await redis.get(Keys(settings.key_prefix).record(h)))
    assert rec["status"] == "failed" and rec["error"] == "portal closed"


@pytest.mark.parametrize(
    ("env", "named"),
    [({}, "SECRET_KEY"), ({"SECRET_KEY": "k" * 40}, "BOT_WEBHOOK_SECRET")],
)
def test_missing_secrets_stop_the_process_with_a_message(env: dict[str, str], named: str) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "BOT_WEBHOOK_SECRET", "LONGRUN_ENV")}
    for module in ("server", "jobs.worker"):
        proc = subprocess.run(
            [sys.executable, "-m", module], env={**clean, **env}, cwd=ROOT, capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 2 and named in proc.stderr, (module, proc.stderr)


def test_dev_mode_generates_secrets_and_says_so(tmp_path: Any) -> None:
    from server.settings import Settings as S

    s = S.from_env({"LONGRUN_ENV": "dev"})
    assert "generated" in " ".join(s.extra["notes"])


async def test_behind_a_trusted_proxy_limits_count_each_client(make_client: Any, settings: Settings) -> None:
    client = await make_client(settings.with_(create_rate_per_address=(1, 60.0), trusted_proxies=("127.0.0.1",)))

    async def create_from(forwarded: str) -> int:
        async with aiohttp.ClientSession() as fresh:  # a new session each time: only the address limit applies
            body = {"service": "vehicle-fines", "data": {"plate": "12B345-67", "national_id": "0012345678"}}
            async with fresh.post(
                client.make_url("/api/requests"), json=body, headers={"X-Forwarded-For": forwarded}
            ) as r:
                return r.status

    assert await create_from("203.0.113.7") == 201
    assert await create_from("203.0.113.8") == 201  # another client behind the same balancer
    assert await create_from("203.0.113.7") == 429
    # a client cannot pick its own address: only the hop our proxy appended counts
    assert await create_from("198.51.100.1, 203.0.113.7") == 429


async def test_cross_site_json_calls_with_the_cookie_are_refused(client: Any, redis: Redis, settings: Settings) -> None:
    body = {"service": "vehicle-fines", "data": {"plate": "12B345-67", "national_id": "0012345678"}}
    created = await (await client.post("/api/requests", json=body)).json()
    h = created["hash"]
    evil = {"Origin": "https://evil.example"}
    for path in (f"/api/requests/{h}/cancel", "/api/requests"):
        resp = await client.post(path, json=body, headers=evil)
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "cross_site"
    resp = await client.post(f"/api/requests/{h}/cancel", headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status == 403
    rec = orjson.loads(await redis.get(Keys(settings.key_prefix).record(h)))
    assert rec["status"] == "pending"  # nothing changed
    # our own pages (same origin) and bearer clients are fine
    own = {"Origin": str(client.make_url("")).rstrip("/"), "Sec-Fetch-Site": "same-origin"}
    assert (await client.post(f"/api/requests/{h}/cancel", headers=own)).status == 202
    other = await (await client.post("/api/requests", json=body)).json()
    bearer = {"Authorization": f"Bearer {other['access_token']}", **evil}
    assert (await client.post(f"/api/requests/{other['hash']}/cancel", headers=bearer)).status == 202


async def test_a_cross_site_form_aimed_at_the_api_is_refused(client: Any) -> None:
    body = {"service": "vehicle-fines", "data": {"plate": "12B345-67", "national_id": "0012345678"}}
    h = (await (await client.post("/api/requests", json=body)).json())["hash"]
    resp = await client.post(f"/api/requests/{h}/cancel", data={"x": "1"}, headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status == 403
