"""The record's Lua scripts against a real Redis: layout, state machine, OTP hygiene, limits."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from redis.crc import key_slot as redis_key_slot

from server.infra.connections import async_client
from server.ops.operations import waiting_by_kind
from server.record import (
    _PRELUDE,
    SHARD_TAGS,
    Keys,
    RecordStore,
    key_slot,
    token_digest,
)
from server.settings import Settings
from tests.helpers import create_record


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_create_stores_record_with_ttl_seq_and_tracking(store: RecordStore, redis: Redis, keys: Keys) -> None:
    h = await create_record(store)
    rec = await store.get(h)
    assert rec is not None
    assert rec["status"] == "pending" and rec["seq"] == 1 and rec["progress"] == 0
    assert abs((parse_iso(rec["created_at"]) - datetime.now(UTC)).total_seconds()) < 5
    assert parse_iso(rec["expires_at"]) > parse_iso(rec["created_at"])
    assert 590 <= await redis.ttl(keys.record(h)) <= 600
    assert h.encode() in await redis.lrange(keys.tracking_list(), 0, -1)
    assert rec["_p"]["token"] == token_digest("tok")


async def test_hash_has_128_random_bits_and_lands_in_a_shard_slot(keys: Keys) -> None:
    hashes = {keys.new_hash() for _ in range(200)}
    assert len(hashes) == 200
    shard_slots = {redis_key_slot(t.encode()) for t in SHARD_TAGS}
    for h in hashes:
        assert h.startswith("req_") and len(h) == 4 + 22 + 3
        slot = key_slot(keys.record(h))
        assert slot == redis_key_slot(keys.record(h).encode())
        assert slot in shard_slots
        # every key a script touches for this request hashes to the same slot
        shard = keys.shard(h)
        for other in (
            keys.otp(h),
            keys.archive(shard),
            keys.inflight(shard),
            keys.counts(shard),
            keys.otp_waits(shard),
        ):
            assert redis_key_slot(other.encode()) == slot


async def test_update_merges_publishes_and_never_lowers_progress(store: RecordStore, redis: Redis, keys: Keys) -> None:
    h = await create_record(store)
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.channel(h))
    await pubsub.get_message(timeout=1)  # subscribe confirmation

    r = await store.update(h, {"status": "processing", "progress": 30, "step": "captcha"}, heartbeat=60, deadline=120)
    assert r.applied and r.record is not None
    assert r.record["progress"] == 30 and r.record["seq"] == 2 and r.record["started_at"]
    assert "_p" not in r.record
    r = await store.update(h, {"progress": 10, "current_message": "still going"})
    assert r.record is not None and r.record["progress"] == 30 and r.record["current_message"] == "still going"
    assert r.record["seq"] == 3
    assert r.record["steps"] == {"captcha": pytest.approx(0, abs=1)}

    seen = []
    for _ in range(2):
        msg = await pubsub.get_message(timeout=2)
        assert msg is not None and msg["type"] == "message"
        seen.append(orjson.loads(msg["data"]))
    assert [m["seq"] for m in seen] == [2, 3]
    assert all("_p" not in m for m in seen)
    await pubsub.aclose()


async def test_update_many_applies_each_patch_in_one_pipeline(store: RecordStore) -> None:
    first, second = await create_record(store), await create_record(store)
    assert (await store.update(second, {"status": "processing"})).applied
    assert (await store.update(second, {"status": "completed", "result": {}})).applied
    changes = [(first, {"progress": 40}), (second, {"progress": 50}), (first, {"progress": 60})]
    results = await store.update_many(changes)
    assert [r.outcome for r in results] == ["ok", "terminal", "ok"]
    assert results[2].record is not None and results[2].record["progress"] == 60
    assert results[2].record["seq"] == results[0].record["seq"] + 1  # type: ignore[index]
    assert await store.update_many([]) == []


async def test_terminal_states_are_final_and_archived_once(store: RecordStore, redis: Redis, keys: Keys) -> None:
    h = await create_record(store)
    await store.update(h, {"status": "processing"})
    r = await store.update(h, {"status": "completed", "result_data": {"ok": True}})
    assert r.applied and r.record is not None
    assert r.record["progress"] == 100 and r.record["finished_at"] and r.record["estimated_remaining_time"] == 0
    again = await store.update(h, {"status": "failed", "error": "late"})
    assert again.outcome == "terminal"
    after = await store.get(h)
    assert after is not None and after["status"] == "completed" and after["seq"] == r.record["seq"]
    entries = await redis.xrange(keys.archive(keys.shard(h)))
    assert len(entries) == 1
    archived = orjson.loads(entries[0][1][b"r"])
    assert archived["hash"] == h and archived["status"] == "completed"
    assert await redis.zscore(keys.inflight(keys.shard(h)), h) is None


@pytest.mark.parametrize(
    ("path", "last_ok"),
    [
        (["waiting_otp"], False),  # pending cannot wait for a code
        (["completed"], False),  # pending cannot complete without starting
        (["processing", "waiting_otp", "processing", "completed"], True),
        (["cancelled"], True),
        (["processing", "pending"], False),  # never back to pending
    ],
)
async def test_state_machine(store: RecordStore, path: list[str], last_ok: bool) -> None:
    h = await create_record(store)
    results = [await store.update(h, {"status": s}) for s in path]
    assert all(r.applied for r in results[:-1])
    assert results[-1].applied is last_ok
    if not last_ok:
        assert results[-1].outcome == "conflict"


async def test_missing_record(store: RecordStore, keys: Keys) -> None:
    assert (await store.update(keys.new_hash(), {"progress": 5})).outcome == "missing"


async def test_old_style_bot_records_are_read_and_updated(store: RecordStore, redis: Redis, keys: Keys) -> None:
    """A bot that GETs the JSON, edits it and SETEX/PUBLISHes it (no seq) must not break anything."""
    h = await create_record(store)
    raw = orjson.loads(await redis.get(keys.record(h)))
    assert raw["seq"] == 1
    await store.update(h, {"progress": 10})
    raw = orjson.loads(await redis.get(keys.record(h)))
    raw.update(status="processing", progress=42, step="login", current_message="old bot")
    raw.pop("seq")
    await redis.execute_command("SETEX", keys.record(h), 600, orjson.dumps(raw))
    await redis.publish(keys.channel(h), orjson.dumps(raw))
    rec = await store.get(h)
    assert rec is not None and rec["progress"] == 42
    r = await store.update(h, {"progress": 50})
    # seq goes on past everything published before the old bot dropped it (from the clock)
    assert r.applied and r.record is not None and r.record["seq"] > 2 and r.record["progress"] == 50
    after = await store.update(h, {"progress": 55})
    assert after.record is not None and after.record["seq"] == r.record["seq"] + 1
    # garbage written by a broken bot reads as missing, never as a crash
    await redis.execute_command("SETEX", keys.record(h), 600, b"{not json")
    assert await store.get(h) is None
    assert (await store.update(h, {"progress": 60})).outcome == "missing"


@pytest.mark.parametrize(
    ("epoch", "iso"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (951782400.5, "2000-02-29T00:00:00.500Z"),
        (1709251199, "2024-02-29T23:59:59.000Z"),
        (4102444800, "2100-01-01T00:00:00.000Z"),
    ],
)
async def test_lua_iso_dates(redis: Redis, epoch: float, iso: str) -> None:
    out = await redis.eval(_PRELUDE + "\nreturn iso(tonumber(ARGV[1]))", 0, str(epoch))
    assert out.decode() == iso


async def test_otp_submission_rules(store: RecordStore, redis: Redis, keys: Keys) -> None:
    h = await create_record(store)
    kw = {"code_ttl": 60, "max_attempts": 2, "early_allowed": False, "heartbeat": 60}
    assert (await store.submit_otp(h, "111111", **kw)).outcome == "conflict"  # pending
    await store.update(h, {"status": "processing"})
    assert (await store.submit_otp(h, "111111", **kw)).outcome == "conflict"  # not asked, not early
    await store.update(
        h, {"status": "waiting_otp", "otp_data": {"length": 6}}, otp={"expires_in": 60, "max_attempts": 2}
    )
    first = await store.submit_otp(h, "111111", **kw)
    assert first.outcome == "accepted" and first.record is not None
    assert first.record["status"] == "processing" and first.record["otp_data"]["attempts_left"] == 1
    assert (await store.submit_otp(h, "111111", **kw)).outcome == "busy"  # double submission
    assert await store.take_otp(h) == "111111"
    assert await store.take_otp(h) is None  # read once
    assert (await store.submit_otp(h, "222222", **kw)).outcome == "busy"  # still being checked
    await store.update(h, {"status": "waiting_otp"}, otp={"expires_in": 60, "max_attempts": 2})
    assert (await store.submit_otp(h, "222222", **kw)).outcome == "accepted"
    await store.take_otp(h)
    await store.update(h, {"status": "waiting_otp"}, otp={"expires_in": 60, "max_attempts": 2})
    assert (await store.submit_otp(h, "333333", **kw)).outcome == "exhausted"
    rec = await store.get(h)
    assert rec is not None and rec["otp_data"]["attempts_left"] == 0
    assert b"111111" not in await redis.get(keys.record(h))
    # an operator's retry starts the request over: the person gets their attempts back
    await store.update(h, {"status": "failed", "error": "Too many wrong codes."})
    assert (await store.revive(h)).outcome == "ok"
    revived = await store.get(h)
    assert revived is not None and revived["otp_data"] is None and revived["requires_otp"] is False
    await store.update(h, {"status": "processing"})
    await store.update(
        h, {"status": "waiting_otp", "otp_data": {"length": 6}}, otp={"expires_in": 60, "max_attempts": 2}
    )
    again = await store.submit_otp(h, "444444", **kw)
    assert again.outcome == "accepted" and again.record is not None
    assert again.record["otp_data"]["attempts_left"] == 1


async def test_input_submission_rules(store: RecordStore, redis: Redis, keys: Keys) -> None:
    h = await create_record(store)
    kw = {"answer_ttl": 60, "max_attempts": 2, "heartbeat": 60}
    exhausted = {"status": "failed", "error": "too many answers"}
    ask = {"id": "captcha", "expires_in": 60, "max_attempts": 2, "exhausted": exhausted}
    prompt = {"id": "captcha", "kind": "captcha", "secret": True, "image": "data:image/png;base64,iVBORw0KGgo="}
    await store.update(h, {"status": "processing"})
    assert (await store.submit_input(h, "captcha", "AB12", **kw)).outcome == "conflict"  # not asked: never early
    asked = await store.update(h, {"status": "waiting_input", "input_request": prompt}, input=ask)
    assert asked.record is not None and asked.record["requires_input"] is True
    assert asked.record["input_request"]["attempts_left"] == 2 and asked.record["input_request"]["expires_at"]
    assert (await store.submit_input(h, "vehicle", "x", **kw)).outcome == "conflict"  # another prompt's id
    first = await store.submit_input(h, "captcha", "AB12", **kw)
    assert first.outcome == "accepted" and first.record is not None
    assert first.record["status"] == "processing" and first.record["requires_input"] is False
    assert first.record["input_request"]["attempts_left"] == 1 and first.record["message_key"] == "checking_input"
    # the picture is not published once answered; set aside for asking again
    assert "image" not in first.record["input_request"]
    assert (await store.get(h) or {})["_p"]["input_image"] == prompt["image"]
    assert (await store.submit_input(h, "captcha", "AB12", **kw)).outcome == "busy"  # double submission
    assert await store.take_input(h) == {"id": "captcha", "value": "AB12"}
    assert await store.take_input(h) is None  # read once
    assert b"AB12" not in await redis.get(keys.record(h))
    # asked again (wrong answer): the same prompt goes on counting; the last try used up, it fails
    await store.update(h, {"status": "waiting_input", "input_request": prompt}, input=ask)
    assert (await store.submit_input(h, "captcha", "CD34", **kw)).outcome == "accepted"
    await store.take_input(h)
    ended = await store.update(h, {"status": "waiting_input", "input_request": prompt}, input=ask)
    assert (
        ended.record is not None and ended.record["status"] == "failed" and ended.record["error"] == exhausted["error"]
    )
    assert "image" not in ended.record["input_request"] and "input_image" not in (await store.get(h) or {})["_p"]
    assert (await store.submit_input(h, "captcha", "EF56", **kw)).outcome == "exhausted"


async def test_a_new_prompt_counts_its_own_answers(store: RecordStore) -> None:
    h = await create_record(store)
    kw = {"answer_ttl": 60, "max_attempts": 1, "heartbeat": 60}
    await store.update(h, {"status": "processing"})
    for pid in ("captcha", "vehicle"):
        ask = {"id": pid, "expires_in": 60, "max_attempts": 1, "exhausted": {"status": "failed"}}
        asked = await store.update(h, {"status": "waiting_input", "input_request": {"id": pid}}, input=ask)
        assert asked.record is not None and asked.record["status"] == "waiting_input"
        assert (await store.submit_input(h, pid, True, **kw)).outcome == "accepted"
        assert await store.take_input(h) == {"id": pid, "value": True}
    # then the code, whose own cap is untouched by the answers before it
    await store.update(h, {"status": "waiting_otp", "otp_data": {}}, otp={"expires_in": 60, "max_attempts": 1})
    otp_kw = {"code_ttl": 60, "max_attempts": 1, "early_allowed": False, "heartbeat": 60}
    assert (await store.submit_otp(h, "123456", **otp_kw)).outcome == "accepted"


async def test_early_code_is_checked_when_the_bot_asks(store: RecordStore) -> None:
    h = await create_record(store)
    await store.update(h, {"status": "processing"})
    kw = {"code_ttl": 60, "max_attempts": 3, "early_allowed": True, "heartbeat": 60}
    assert (await store.submit_otp(h, "123456", **kw)).outcome == "early"
    asked = await store.update(h, {"status": "waiting_otp"}, otp={"expires_in": 60}, checking="Checking")
    assert asked.applied and asked.otp_ready
    assert asked.record is not None and asked.record["status"] == "processing"
    assert asked.record["current_message"] == "Checking"
    assert await store.take_otp(h) == "123456"


async def test_an_ask_with_every_code_used_up_fails_unless_a_code_waits(store: RecordStore) -> None:
    h = await create_record(store)
    await store.update(h, {"status": "processing"})
    kw = {"code_ttl": 60, "max_attempts": 1, "early_allowed": True, "heartbeat": 60}
    otp = {"expires_in": 60, "max_attempts": 1, "exhausted": {"status": "failed", "error": "used up"}}
    assert (await store.submit_otp(h, "123456", **kw)).outcome == "early"  # the only code, typed early
    asked = await store.update(h, {"status": "waiting_otp"}, otp=otp)
    assert asked.otp_ready and asked.record is not None and asked.record["status"] == "processing"  # checked
    assert await store.take_otp(h) == "123456"
    again = await store.update(h, {"status": "waiting_otp", "otp_data": {"error": "wrong"}}, otp=otp)
    assert again.applied and again.record is not None
    assert again.record["status"] == "failed" and again.record["error"] == "used up"
    assert again.record["requires_otp"] is False and again.record["finished_at"]
    refused = await store.submit_otp(h, "654321", **kw)
    assert refused.outcome == "exhausted"  # the cap answers before "not waiting"


async def test_resend_is_throttled_and_capped(store: RecordStore) -> None:
    h = await create_record(store)
    await store.update(h, {"status": "processing"})
    await store.update(h, {"status": "waiting_otp"}, otp={"expires_in": 60, "resend_in": 30})
    early = await store.request_resend(h, interval=1, max_resends=1)
    assert early.outcome == "too_early" and early.detail is not None and 1 <= int(early.detail) <= 30
    await store.update(h, {"status": "waiting_otp"}, otp={"expires_in": 60, "resend_in": 0})
    ok = await store.request_resend(h, interval=1, max_resends=1)
    assert ok.outcome == "ok" and ok.record is not None and ok.record["otp_data"]["resend_available_at"]
    await asyncio.sleep(1.1)
    assert (await store.request_resend(h, interval=1, max_resends=1)).outcome == "exhausted"


async def test_rate_limit_allows_a_burst_then_refuses_until_refilled(store: RecordStore) -> None:
    waits = [await store.hit_rate_limit("t", "me", burst=3, per=0.6) for _ in range(4)]
    assert waits[:3] == [0, 0, 0] and 0 < waits[3] <= 0.2 + 0.01
    await asyncio.sleep(waits[3] + 0.02)
    assert await store.hit_rate_limit("t", "me", burst=3, per=0.6) == 0
    assert await store.hit_rate_limit("t", "someone-else", burst=3, per=0.6) == 0


async def test_sweep_only_fails_overdue_requests(store: RecordStore, keys: Keys, redis: Redis) -> None:
    h = await create_record(store)
    await store.update(h, {"status": "processing"}, heartbeat=1)
    fresh = await store.update(h, {"status": "failed", "error": "silent"}, sweep=True, heartbeat=1)
    assert fresh.outcome == "not_due"
    due = await redis.zscore(keys.inflight(keys.shard(h)), h)
    assert due is not None and due <= time.time() + 1.5
    await asyncio.sleep(1.1)
    late = await store.update(h, {"status": "failed", "error": "silent"}, sweep=True, heartbeat=1)
    assert late.applied


async def test_empty_arrays_and_tricky_strings_survive_the_scripts(store: RecordStore) -> None:
    """Redis' cjson cannot tell [] from {}; the scripts must not turn a bot's [] into {}."""
    h = await create_record(store)
    await store.update(h, {"status": "processing"})
    result = {
        "fines": [],
        "nested": {"a": [], "b": [[], [1, []]], "c": {}},
        "text": 'brackets [] and "[]" and \\"[ ]\\" stay',
        "unicode": "گزارش ✓",
    }
    r = await store.update(h, {"status": "completed", "result_data": result})
    assert r.record is not None and r.record["result_data"] == result
    stored = await store.get(h)
    assert stored is not None and stored["result_data"] == result


async def test_counts_by_status_and_service_and_otp_waits_follow_transitions(
    store: RecordStore, redis: Redis, keys: Keys
) -> None:
    h = await create_record(store)
    shard = keys.shard(h)

    async def counts() -> dict[str, int]:
        raw = await redis.hgetall(keys.counts(shard))
        return {k.decode(): int(v) for k, v in raw.items() if int(v)}

    assert await counts() == {"pending|credit-score-rating": 1}
    await store.update(h, {"status": "processing"})
    assert await counts() == {"processing|credit-score-rating": 1}
    await store.update(h, {"status": "waiting_otp"}, otp={"expires_in": 60})
    assert await counts() == {"waiting_otp|credit-score-rating": 1}
    since = await redis.zscore(keys.otp_waits(shard), h)
    assert since is not None and abs(since - time.time()) < 5
    kw = {"code_ttl": 60, "max_attempts": 3, "early_allowed": False, "heartbeat": 60}
    assert (await store.submit_otp(h, "123456", **kw)).outcome == "accepted"
    assert await counts() == {"processing|credit-score-rating": 1}
    assert await redis.zscore(keys.otp_waits(shard), h) is None
    await store.update(h, {"status": "completed"})
    assert await counts() == {}


async def test_people_waiting_for_an_answer_are_counted_per_kind(store: RecordStore, redis: Redis, keys: Keys) -> None:
    h = await create_record(store)
    shard = keys.shard(h)

    async def counts() -> dict[str, int]:
        raw = await redis.hgetall(keys.counts(shard))
        return {k.decode(): int(v) for k, v in raw.items() if int(v)}

    def ask(pid: str, kind: str) -> Any:
        control = {"id": pid, "expires_in": 60, "max_attempts": 3}
        return store.update(h, {"status": "waiting_input", "input_request": {"id": pid, "kind": kind}}, input=control)

    await store.update(h, {"status": "processing"})
    await ask("captcha", "captcha")
    assert await counts() == {"waiting_input:captcha|credit-score-rating": 1}
    assert await redis.zscore(keys.otp_waits(shard), h) is not None  # waiting for the person
    await ask("vehicle", "choice")  # one wait straight after another
    assert await counts() == {"waiting_input:choice|credit-score-rating": 1}
    kw = {"answer_ttl": 60, "max_attempts": 3, "heartbeat": 60}
    assert (await store.submit_input(h, "vehicle", "a", **kw)).outcome == "accepted"
    assert await counts() == {"processing|credit-score-rating": 1}
    await ask("pay", "confirm")
    assert waiting_by_kind({"waiting_otp": 2, "waiting_input:confirm": 1, "processing": 4}) == {"code": 2, "confirm": 1}
    await store.update(h, {"status": "cancelled"})
    assert await counts() == {}
    assert await redis.zscore(keys.otp_waits(shard), h) is None


async def test_rate_limit_generous_enough_to_be_off_still_answers(store: RecordStore) -> None:
    # 10^8 calls a second: the interval is below a millisecond; the state's TTL must not be 0
    assert [await store.hit_rate_limit("t", "me", burst=100_000_000, per=1.0) for _ in range(3)] == [0, 0, 0]


async def test_a_client_past_its_connection_cap_waits_instead_of_failing(base_settings: Settings) -> None:
    settings = base_settings
    client = async_client(settings, max_connections=2)
    try:
        # 12 calls that each hold a connection for 0.1 s, over 2 connections: all answered
        answers = await asyncio.gather(*(client.blpop([f"{settings.key_prefix}none"], timeout=0.1) for _ in range(12)))
        assert answers == [None] * 12
    finally:
        await client.aclose()
