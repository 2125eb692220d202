"""The HTTP API's answers to good and bad input, against a real Redis (no workers needed)."""

from __future__ import annotations

import pickle
import socket
import time
import zlib
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from server.domain.catalog import get_service
from server.domain.prompts import Prompt
from server.infra.webhooks import HEADERS, sign
from server.record import Keys
from server.settings import Settings, new_webhook_secret
from server.web.typedefs import LIFECYCLE, STORE
from tests.helpers import record

VALID = {"national_id": "0012345678", "mobile": "09121234567"}


async def create(client: TestClient[Any, Any], data: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = await client.post("/api/requests", json={"service": "credit-score-rating", "data": data or VALID})
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def error_of(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    err: dict[str, Any] = body["error"]
    return err


async def test_catalog_lists_the_services(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/services")
    assert resp.status == 200
    services = {s["slug"]: s for s in (await resp.json())["services"]}
    assert set(services) == {"credit-score-rating", "vehicle-fines", "video-generation", "parcel-tracking"}
    credit = services["credit-score-rating"]
    assert credit["requires_otp"] is True and credit["estimated_duration"] == 60
    assert [f["name"] for f in credit["fields"]] == ["national_id", "mobile"]
    assert credit["fields"][0]["pattern"] == "[0-9]{10}" and credit["fields"][0]["required"] is True
    fa = await (await client.get("/api/services", headers={"Accept-Language": "fa-IR,fa;q=0.9"})).json()
    assert fa["services"][0]["title"] == "گزارش رتبه اعتباری"


async def test_create_answers_the_contract(client: TestClient[Any, Any], redis: Redis, settings: Settings) -> None:
    body = await create(client)
    assert set(body) == {"hash", "status", "access_token", "progress_url", "status_url", "ws_url", "expires_at"}
    h = body["hash"]
    assert body["status"] == "pending" and body["status_url"].endswith(f"/api/requests/{h}")
    rec = orjson.loads(await redis.get(Keys(settings.key_prefix).record(h)))
    assert rec["request_data"] == VALID and body["access_token"] not in orjson.dumps(rec).decode()
    job = await redis.hgetall(f"rq:job:{settings.key_prefix}{h}-run")
    assert job[b"origin"] == f"{settings.key_prefix}default".encode()
    assert b"0012345678" not in b"".join(job.values())  # the job carries nothing but its id
    assert b"" not in job.values()  # nor the empty fields RQ writes for what has not happened yet
    func, _, args, kwargs = pickle.loads(zlib.decompress(job[b"data"]))
    assert (func, tuple(args), kwargs) == ("jobs.tasks.run_request", (), {})
    # small enough for Redis' compact hash encoding (a 64-byte value would double its size)
    encoding = await redis.object("encoding", f"rq:job:{settings.key_prefix}{h}-run")
    assert encoding in (b"listpack", b"ziplist")  # Redis 7, Redis 6


async def test_unknown_service_is_404(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/api/requests", json={"service": "no-such-thing", "data": {}})
    assert (await error_of(resp, 404))["code"] == "unknown_service"


async def test_invalid_fields_are_422_with_a_message_per_field(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/api/requests",
        json={"service": "credit-score-rating", "data": {"national_id": "12ab", "extra": 1}},
    )
    err = await error_of(resp, 422)
    assert set(err["fields"]) == {"national_id", "mobile", "extra"}
    assert err["fields"]["national_id"] == "A national ID has 10 digits."
    assert err["fields"]["mobile"] == "This field is required."
    resp = await client.post(
        "/api/requests", json={"service": "video-generation", "data": {"prompt": "x" * 501, "duration_seconds": 99}}
    )
    err = await error_of(resp, 422)
    assert err["fields"] == {"prompt": "Must be at most 500 characters.", "duration_seconds": "Must be at most 60."}


async def test_persian_digits_are_accepted(client: TestClient[Any, Any], redis: Redis, settings: Settings) -> None:
    body = await create(client, {"national_id": "۰۰۱۲۳۴۵۶۷۸", "mobile": "۰۹۱۲۱۲۳۴۵۶۷"})
    rec = orjson.loads(await redis.get(Keys(settings.key_prefix).record(body["hash"])))
    assert rec["request_data"] == VALID
    # a plate typed on a Persian keyboard (its letter Persian too); a digit is not a letter
    plate = {"plate": "۱۲ب۳۴۵-۶۷", "national_id": "0012345678"}
    resp = await client.post("/api/requests", json={"service": "vehicle-fines", "data": plate})
    assert resp.status == 201, await resp.text()
    rec = orjson.loads(await redis.get(Keys(settings.key_prefix).record((await resp.json())["hash"])))
    assert rec["request_data"]["plate"] == "12ب345-67"
    wrong = {**plate, "plate": "12۳345-67"}
    resp = await client.post("/api/requests", json={"service": "vehicle-fines", "data": wrong})
    assert resp.status == 422


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2", b"\xff\xfe"])
async def test_malformed_json_is_400(client: TestClient[Any, Any], raw: bytes) -> None:
    resp = await client.post("/api/requests", data=raw, headers={"Content-Type": "application/json"})
    assert (await error_of(resp, 400))["code"] == "malformed_json"


async def test_body_must_be_an_object(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/api/requests", json=["credit-score-rating"])
    await error_of(resp, 400)
    resp = await client.post("/api/requests", json={"data": VALID})
    assert (await error_of(resp, 422))["fields"] == {"service": "This field is required."}


async def test_oversized_body_is_413(client: TestClient[Any, Any], redis: Redis, settings: Settings) -> None:
    before = await redis.llen(Keys(settings.key_prefix).tracking_list())
    big = {"service": "credit-score-rating", "data": {"national_id": "1" * (70 * 1024)}}
    resp = await client.post("/api/requests", json=big)
    assert (await error_of(resp, 413))["code"] == "payload_too_large"
    assert await redis.llen(Keys(settings.key_prefix).tracking_list()) == before


async def test_redis_down_is_503_json_and_fast(make_client: Any, settings: Settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    client = await make_client(settings.with_(redis_url=f"redis://127.0.0.1:{dead_port}/0"))
    started = time.monotonic()
    resp = await client.post("/api/requests", json={"service": "credit-score-rating", "data": VALID})
    assert (await error_of(resp, 503))["code"] == "unavailable"
    resp = await client.get("/api/requests/req_AAAAAAAAAAAAAAAAAAAAAAAAA")
    await error_of(resp, 503)
    assert (await client.get("/readyz")).status == 503
    assert (await client.get("/healthz")).status == 200
    assert time.monotonic() - started < 10


async def test_get_unknown_malformed_and_foreign_hashes_are_404(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    body = await create(client)
    h = body["hash"]
    assert (await client.get(f"/api/requests/{h}")).status == 200  # same session
    for path in (f"/api/requests/{Keys().new_hash()}", "/api/requests/nope", "/api/requests/req_%00"):
        await error_of(await client.get(path), 404)
    async with ClientSession() as stranger:
        url = client.make_url(f"/api/requests/{h}")
        async with stranger.get(url) as resp:
            assert resp.status == 404
        async with stranger.get(url, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 404
        async with stranger.get(url, headers={"Authorization": f"Bearer {body['access_token']}"}) as resp:
            assert resp.status == 200
            assert (await resp.json())["hash"] == h


async def test_local_status_alias_has_the_original_format(client: TestClient[Any, Any]) -> None:
    h = (await create(client))["hash"]
    resp = await client.get(f"/api/local-requests/{h}/status")
    assert resp.status == 200
    body = await resp.json()
    assert {"hash", "status", "progress", "estimated_remaining_time", "requires_otp"} <= set(body)
    assert body["hash"] == h and body["status"] == "pending" and body["requires_otp"] is False


async def test_actions_refused_in_the_wrong_state(client: TestClient[Any, Any]) -> None:
    h = (await create(client))["hash"]
    for prefix in ("/api/requests", "/api/local-requests"):
        err = await error_of(await client.post(f"{prefix}/{h}/otp", json={"otp": "123456"}), 409)
        assert err["code"] == "not_waiting_for_otp"
        await error_of(await client.post(f"{prefix}/{h}/resend-otp"), 409)
    err = await error_of(await client.post(f"/api/requests/{h}/otp", json={"otp": "12ab"}), 422)
    assert "otp" in err["fields"]
    await error_of(await client.post(f"/api/requests/{h}/otp", json={}), 422)
    assert (await client.post(f"/api/local-requests/{h}/cancel")).status == 202
    await error_of(await client.post(f"/api/requests/{h}/cancel"), 409)


async def test_an_answer_after_its_prompt_ran_out_is_refused_and_spends_no_attempt(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    """The bot said until when it waits for the code (or another answer): one typed after
    that is refused (409 prompt_expired), the attempts left as they were, the request still
    waiting for the sweeper to fail it as expired."""
    store, life = client.app[STORE], client.app[LIFECYCLE]  # type: ignore[index]
    service = get_service("credit-score-rating")
    for prompt, path, body in (
        ({"kind": "code", "length": 6}, "otp", {"otp": "123456"}),
        ({"id": "pay", "kind": "confirm", "label": "Pay?"}, "input", {"id": "pay", "value": True}),
    ):
        h = (await create(client))["hash"]
        await life.start(h, service)
        assert (await life.ask_input(h, Prompt.parse(prompt), service)).applied
        waiting = await record(redis, Keys(settings.key_prefix), h)
        ran_out = time.time() - 1
        await store.update(h, {}, private={"otp_exp" if path == "otp" else "input_exp": ran_out})
        err = await error_of(await client.post(f"/api/requests/{h}/{path}", json=body), 409)
        assert err["code"] == "prompt_expired"
        now = await record(redis, Keys(settings.key_prefix), h)
        assert now["status"] == waiting["status"] and now["status"].startswith("waiting_")
        field = "otp_data" if path == "otp" else "input_request"
        assert now[field]["attempts_left"] == waiting[field]["attempts_left"]
        assert await redis.exists(Keys(settings.key_prefix).otp(h)) == 0  # nothing for a check job


async def test_openapi_document(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    assert {"/api/requests", "/api/requests/{hash}", "/api/bot/requests/{hash}/events"} <= set(doc["paths"])


# --------------------------------------------------------------------------- bot events


async def post_event(client: TestClient[Any, Any], h: str, event: dict[str, Any], secret: str, **sign_kw: Any) -> Any:
    body = orjson.dumps(event)
    headers = {"Content-Type": "application/json", **sign(secret, body, **sign_kw)}
    return await client.post(f"/api/bot/requests/{h}/events", data=body, headers=headers)


async def test_signed_bot_events(client: TestClient[Any, Any], redis: Redis, settings: Settings) -> None:
    h = (await create(client))["hash"]
    keys = Keys(settings.key_prefix)
    # pending → the worker would start it; do that here so progress applies
    await redis.eval(
        "local r = cjson.decode(redis.call('GET', KEYS[1])); r.status = 'processing';"
        "redis.call('SET', KEYS[1], cjson.encode(r), 'KEEPTTL')",
        1,
        keys.record(h),
    )
    secret = settings.signing_secret
    resp = await post_event(client, h, {"type": "progress", "progress": 30, "step": "login"}, secret, event_id="e1")
    assert resp.status == 202 and (await resp.json())["applied"] is True
    assert orjson.loads(await redis.get(keys.record(h)))["progress"] == 30
    applied = await redis.get(keys.record(h))

    replay = await post_event(client, h, {"type": "progress", "progress": 90}, secret, event_id="e1")
    assert (await error_of(replay, 409))["code"] == "replayed_event"
    stale = await post_event(client, h, {"type": "progress", "progress": 90}, secret, timestamp=int(time.time()) - 301)
    await error_of(stale, 401)
    future = await post_event(client, h, {"type": "progress", "progress": 90}, secret, timestamp=int(time.time()) + 301)
    await error_of(future, 401)
    wrong = await post_event(client, h, {"type": "progress", "progress": 90}, new_webhook_secret())
    await error_of(wrong, 401)
    unsigned = await client.post(f"/api/bot/requests/{h}/events", json={"type": "progress", "progress": 90})
    await error_of(unsigned, 401)
    bad = await post_event(client, h, {"type": "progress", "progress": 900}, secret)
    await error_of(bad, 422)
    unknown = await post_event(client, Keys().new_hash(), {"type": "progress", "progress": 9}, secret)
    await error_of(unknown, 404)
    assert orjson.loads(await redis.get(keys.record(h)))["progress"] == 30
    assert await redis.get(keys.record(h)) == applied  # every refusal left the whole record as it was

    done = await post_event(client, h, {"type": "completed", "result": {"score": 700}}, secret)
    assert done.status == 202
    rec = orjson.loads(await redis.get(keys.record(h)))
    assert rec["status"] == "completed" and rec["result_data"] == {"score": 700}


async def start_processing(redis: Redis, keys: Keys, h: str) -> None:
    """What a worker's start does, so that progress events apply."""
    await redis.eval(
        "local r = cjson.decode(redis.call('GET', KEYS[1])); r.status = 'processing';"
        "redis.call('SET', KEYS[1], cjson.encode(r), 'KEEPTTL')",
        1,
        keys.record(h),
    )


@pytest.mark.parametrize("tamper", ["one byte of the body", *[f"no {name}" for name in HEADERS]])
async def test_a_tampered_or_unsigned_event_is_401_and_changes_nothing(
    client: TestClient[Any, Any], redis: Redis, settings: Settings, tamper: str
) -> None:
    h = (await create(client))["hash"]
    keys = Keys(settings.key_prefix)
    await start_processing(redis, keys, h)
    before = await redis.get(keys.record(h))
    body = orjson.dumps({"type": "completed", "result": {"score": 700}})
    headers = {"Content-Type": "application/json", **sign(settings.signing_secret, body, event_id="evt-tamper")}
    if tamper == "one byte of the body":
        body = body.replace(b"700", b"800")
        assert len(body) == len(orjson.dumps({"type": "completed", "result": {"score": 700}}))
    else:
        del headers[tamper.removeprefix("no ")]
    refused = await client.post(f"/api/bot/requests/{h}/events", data=body, headers=headers)
    assert (await error_of(refused, 401))["code"] == "bad_signature"
    assert await redis.get(keys.record(h)) == before  # the whole record, seq included
    assert not await redis.exists(keys.webhook_id("evt-tamper"))  # and the id was not used up
    # the genuine event with the same id is still accepted
    genuine = orjson.dumps({"type": "completed", "result": {"score": 700}})
    signed = {"Content-Type": "application/json", **sign(settings.signing_secret, genuine, event_id="evt-tamper")}
    assert (await client.post(f"/api/bot/requests/{h}/events", data=genuine, headers=signed)).status == 202
    assert orjson.loads(await redis.get(keys.record(h)))["result_data"] == {"score": 700}


async def test_a_signed_event_cannot_be_replayed_onto_another_request(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    """A signed body names no request: its id is bound to the request it was first sent for.
    Replayed onto another one (sent to a made-up hash first, or refused for its state there)
    it is refused, and nothing of the other request changes."""
    secret = settings.signing_secret
    first, second = (await create(client))["hash"], (await create(client))["hash"]
    event = {"type": "progress", "progress": 70, "message": "Almost there"}
    probe = await post_event(client, "req_" + "x" * 25, event, secret, event_id="evt-captured")
    assert probe.status == 404
    replay = await post_event(client, first, event, secret, event_id="evt-captured")
    assert (await error_of(replay, 409))["code"] == "event_for_another_request"
    done = {"type": "completed", "result": {"score": 640}}
    refused = await post_event(client, first, done, secret, event_id="evt-refused")  # pending: cannot complete
    assert (await error_of(refused, 409))["code"] == "state_conflict"
    elsewhere = await post_event(client, second, done, secret, event_id="evt-refused")
    assert (await error_of(elsewhere, 409))["code"] == "event_for_another_request"
    for h in (first, second):
        rec = await record(redis, Keys(settings.key_prefix), h)
        assert rec["status"] == "pending" and rec["progress"] == 0


async def test_an_event_refused_for_its_state_can_be_retried_with_the_same_id(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    """Standard Webhooks senders retry with the same webhook-id: an id is used up only when applied."""
    h = (await create(client))["hash"]
    keys = Keys(settings.key_prefix)
    secret = settings.signing_secret
    done = {"type": "completed", "result": {"score": 640}}
    early = await post_event(client, h, done, secret, event_id="evt-retry")
    assert (await error_of(early, 409))["code"] == "state_conflict"  # pending cannot complete
    await redis.eval(
        "local r = cjson.decode(redis.call('GET', KEYS[1])); r.status = 'processing';"
        "redis.call('SET', KEYS[1], cjson.encode(r), 'KEEPTTL')",
        1,
        keys.record(h),
    )
    again = await post_event(client, h, done, secret, event_id="evt-retry")
    assert again.status == 202
    replay = await post_event(client, h, done, secret, event_id="evt-retry")
    assert (await error_of(replay, 409))["code"] == "replayed_event"
