"""The bot SDK: straight into Redis (one Lua round trip) and over signed HTTP events."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from bots.demo import create_bot_app
from bots.sdk import Answers, HttpReporter, RedisReporter, ReportError
from server.devtools.processes import Processes, free_port
from server.domain.protocol import parse_bot_event
from server.record import Keys, RecordStore, new_record, token_digest
from server.settings import Settings
from tests.helpers import captcha_answer, outbox, two_vehicle_national_id, wait_status


async def new_running(store: RecordStore, slug: str = "vehicle-fines") -> str:
    h = store.keys.new_hash()
    rec = new_record(
        request_hash=h,
        service_slug=slug,
        request_data={},
        user_id="u",
        token_hash=token_digest("t"),
        estimated_duration=20,
        priority="high",
    )
    await store.create(rec)
    await store.update(h, {"status": "processing"})
    return h


async def test_redis_reporter_reports_each_event(base_settings: Settings, redis: Redis) -> None:
    async with RedisReporter.connect(base_settings) as report:
        store = report.lifecycle.store
        h = await new_running(store)
        assert await report.progress(h, 30, step="search", message="Finding the vehicle")
        rec = await store.get(h)
        assert rec is not None and rec["progress"] == 30 and rec["current_message"] == "Finding the vehicle"
        assert await report.progress(h, 10)  # applied, but the bar never goes back
        rec = await store.get(h)
        assert rec is not None and rec["progress"] == 30
        assert await report.completed(h, {"total": 0, "fines": []})
        assert not await report.progress(h, 99)  # finished: ignored, and the bot learns it
        rec = await store.get(h)
        assert rec is not None and rec["status"] == "completed" and rec["result_data"] == {"total": 0, "fines": []}


async def test_whole_otp_flow_with_bots_reporting_over_signed_http(
    aiohttp_server: Any, make_client: Any, base_settings: Settings, processes: Processes, redis: Redis
) -> None:
    client = await make_client(base_settings)
    async with aiohttp.ClientSession() as session:
        reporter = HttpReporter(session, str(client.make_url("")).rstrip("/"), base_settings.signing_secret)
        bots = await aiohttp_server(create_bot_app(base_settings, reporter))
        settings = base_settings.with_(bot_api_url=str(bots.make_url("")).rstrip("/"))
        processes.workers(settings)
        keys = Keys(settings.key_prefix)
        resp = await client.post(
            "/api/requests",
            json={"service": "credit-score-rating", "data": {"national_id": "0012345678", "mobile": "09121234567"}},
        )
        h = (await resp.json())["hash"]
        waiting = await wait_status(redis, keys, h, "waiting_otp")
        assert set(waiting["steps"]) >= {"login", "captcha"}  # progress came in as signed events
        code = (await outbox(settings.bot_api_url, h))[0]["code"]
        assert (await client.post(f"/api/requests/{h}/otp", json={"otp": code})).status == 202
        done = await wait_status(redis, keys, h, "completed", "failed")
        assert done["status"] == "completed", done
        assert "report" in done["steps"]


async def test_every_prompt_through_the_workers_over_the_api_and_the_socket(
    aiohttp_server: Any, make_client: Any, base_settings: Settings, processes: Processes, redis: Redis
) -> None:
    """DEMO_PROMPTS: the credit bureau's captcha (a wrong answer, then the right one, then the
    code as an ``input``) over the API, and the traffic portal's which-vehicle over the socket."""
    bots = await aiohttp_server(create_bot_app(base_settings.with_(demo_prompts=True)))
    settings = base_settings.with_(bot_api_url=str(bots.make_url("")).rstrip("/"), demo_prompts=True)
    processes.workers(settings)
    client = await make_client(settings)
    keys = Keys(settings.key_prefix)
    resp = await client.post(
        "/api/requests",
        json={"service": "credit-score-rating", "data": {"national_id": "0012345678", "mobile": "09121234567"}},
    )
    h = (await resp.json())["hash"]
    asked = await wait_status(redis, keys, h, "waiting_input")
    prompt = asked["input_request"]
    assert asked["requires_input"] and not asked["requires_otp"] and asked["message_key"] == "input_captcha"
    assert prompt["kind"] == "captcha" and prompt["secret"] and prompt["image"].startswith("data:image/png;base64,")
    polled = await (await client.get(f"/api/local-requests/{h}/status")).json()
    assert polled["status"] == "waiting_input" and polled["input_request"]["id"] == "captcha"
    url = f"/api/requests/{h}/input"
    assert (await client.post(url, json={"id": "vehicle", "value": "x"})).status == 409  # not that prompt
    assert (await client.post(url, json={"id": "captcha", "value": "  "})).status == 422
    assert (await client.post(url, json={"id": "captcha"})).status == 422
    assert (await client.post(url, json={"id": "captcha", "value": "WRONG"})).status == 202
    again = await wait_status(redis, keys, h, "waiting_input")
    assert again["message_key"] == "input_wrong" and again["input_request"]["attempts_left"] == 2
    answer = await captcha_answer(settings.bot_api_url, h)
    assert (await client.post(url, json={"id": "captcha", "value": answer.lower()})).status == 202
    assert (await client.post(url, json={"id": "captcha", "value": answer})).status == 409  # submitted twice
    await wait_status(redis, keys, h, "waiting_otp")
    code = (await outbox(settings.bot_api_url, h))[-1]["code"]
    assert (await client.post(url, json={"id": "code", "value": code})).status == 202
    done = await wait_status(redis, keys, h, "completed", "failed")
    assert done["status"] == "completed", done
    assert "image" not in done["input_request"]  # the picture is not kept once finished
    raw = (await redis.get(keys.record(h))).decode()
    assert answer not in raw and "WRONG" not in raw and code not in raw

    nid = two_vehicle_national_id()
    resp = await client.post(
        "/api/requests", json={"service": "vehicle-fines", "data": {"plate": "12B345-67", "national_id": nid}}
    )
    h = (await resp.json())["hash"]
    async with client.ws_connect(f"/ws/requests/{h}") as ws:
        choice = (await wait_status(redis, keys, h, "waiting_input"))["input_request"]
        assert choice["kind"] == "choice" and choice["options"][0]["value"] == "12B345-67"
        other = choice["options"][1]["value"]
        await ws.send_json({"type": "input", "id": "vehicle", "value": "not-a-vehicle"})
        while (frame := await ws.receive_json())["type"] != "error":
            pass
        assert frame["code"] == "invalid"
        await ws.send_json({"type": "input", "id": "vehicle", "value": other})
        done = await wait_status(redis, keys, h, "completed", "failed")
    assert done["status"] == "completed" and done["result_data"]["plate"] == other, done


async def test_a_202_bot_awaits_the_answer_it_asked_for(base_settings: Settings, redis: Redis) -> None:
    answers = Answers()
    async with RedisReporter.connect(base_settings) as report:
        h = await new_running(report.lifecycle.store)
        prompt = {"id": "pay", "kind": "confirm", "label": "Pay 120,000 rials?"}
        asking = asyncio.create_task(answers.ask(report, h, prompt))
        rec = await wait_status(redis, report.lifecycle.store.keys, h, "waiting_input")
        assert rec["input_request"]["kind"] == "confirm"
        assert not answers.deliver({"requestHash": h, "input": {"id": "other", "value": True}})
        assert answers.deliver({"requestHash": h, "input": {"id": "pay", "value": True}})
        assert await asking is True
        assert not answers.deliver({"requestHash": h, "input": {"id": "pay", "value": True}})  # once


async def test_the_redis_route_checks_and_normalizes_as_the_server_does_over_http(
    base_settings: Settings, redis: Redis
) -> None:
    """Straight to Redis no server looks at an event: the SDK checks it as the event endpoint
    would (the same bounds) and keeps an integer past JSON's exact range as its digits, so
    both routes store the same thing; an error too long to show is cut, never refused."""
    async with RedisReporter.connect(base_settings) as report:
        store = report.lifecycle.store
        h = await new_running(store)
        with pytest.raises(ReportError, match="step"):
            await report.progress(h, 20, step="s" * 100)
        result = {"bill_id": 123456789012345, "fines": [{"amount": 1.5}]}
        assert await report.completed(h, result)
        rec = await store.get(h)
        over_http = parse_bot_event({"type": "completed", "result": result})
        assert (
            rec is not None
            and rec["result_data"] == over_http.result
            and rec["result_data"]["bill_id"] != 123456789012340
        )
        other = await new_running(store)
        assert await report.failed(other, "x" * 900)
        rec = await store.get(other)
        assert rec is not None and rec["status"] == "failed" and rec["error"] == "x" * 500


async def test_asking_once_more_after_the_last_attempt_is_not_a_prompt_to_wait_for(
    base_settings: Settings, redis: Redis
) -> None:
    """A prompt asked again after the person used every attempt fails the request instead: the
    SDK says so (False; Answers.ask raises at once) rather than letting the bot wait for an
    answer that cannot come."""
    answers = Answers()
    async with RedisReporter.connect(base_settings) as report:
        store = report.lifecycle.store
        h = await new_running(store)
        await store.update(h, {}, private={"otp_tries": base_settings.otp_max_attempts})
        assert not await report.otp_required(h, {"length": 6, "expires_in": 120, "error": "Wrong code"})
        assert (await wait_status(redis, store.keys, h, "failed"))["status"] == "failed"
        again = await new_running(store)
        prompt = {"id": "pay", "kind": "confirm", "label": "Pay?"}
        await store.update(again, {}, private={"input_id": "pay", "input_tries": base_settings.otp_max_attempts})
        with pytest.raises(ReportError):
            await asyncio.wait_for(answers.ask(report, again, prompt), 5)


async def test_over_http_as_over_redis_an_ignored_event_is_false_and_errors_say_what(
    make_client: Any, base_settings: Settings, redis: Redis
) -> None:
    """The same outcome on both routes: an expired (or unknown) request and a finished one are
    False, not an exception; a server that cannot be reached, or answers with a proxy's page,
    is a ReportError that says so (not a bare aiohttp or JSON error)."""
    client = await make_client(base_settings)
    store = RecordStore(redis, Keys(base_settings.key_prefix), ttl=base_settings.request_ttl)
    async with aiohttp.ClientSession() as session:
        report = HttpReporter(session, str(client.make_url("")).rstrip("/"), base_settings.signing_secret)
        assert not await report.progress("req_" + "n" * 25, 10)
        h = await new_running(store)
        assert await report.completed(h, {"total": 0})
        assert not await report.completed(h, {"total": 1})
        nowhere = HttpReporter(session, f"http://127.0.0.1:{free_port()}", base_settings.signing_secret, backoff=0.01)
        with pytest.raises(ReportError, match="could not reach Longrun"):
            await nowhere.progress(h, 10)


async def test_an_event_whose_answer_was_lost_is_retried_under_its_id_and_applied_once(
    aiohttp_server: Any, make_client: Any, base_settings: Settings, redis: Redis
) -> None:
    """Between the bot and Longrun a proxy applies the first delivery but loses its answer
    (502): the HttpReporter sends the event again under the same id, Longrun recognises it as
    applied, and the record moved once."""
    client = await make_client(base_settings)
    longrun = str(client.make_url("")).rstrip("/")
    forwarded = 0

    async def lossy(request: web.Request) -> web.Response:
        nonlocal forwarded
        forwarded += 1
        headers = {k: v for k, v in request.headers.items() if k.lower().startswith(("webhook-", "content-type"))}
        async with (
            aiohttp.ClientSession() as s,
            s.post(longrun + request.path, data=await request.read(), headers=headers) as r,
        ):
            body, status = await r.read(), r.status
        if forwarded == 1:
            return web.Response(status=502, text="<html>bad gateway</html>")  # applied; the answer lost
        return web.Response(status=status, body=body, content_type="application/json")

    proxy = web.Application()
    proxy.router.add_post("/api/bot/requests/{hash}/events", lossy)
    server = await aiohttp_server(proxy)
    store = RecordStore(redis, Keys(base_settings.key_prefix), ttl=base_settings.request_ttl)
    h = await new_running(store)
    before = (await store.get(h) or {})["seq"]
    async with aiohttp.ClientSession() as session:
        report = HttpReporter(session, str(server.make_url("")).rstrip("/"), base_settings.signing_secret, backoff=0.01)
        assert await report.progress(h, 40, step="search")
    assert forwarded == 2
    rec = await store.get(h)
    assert rec is not None and rec["progress"] == 40 and rec["seq"] == before + 1
