"""The request's log (``save`` in _prelude.lua, read_log.lua), read the way its users read
it: ``server.live.resume`` (a WebSocket's ``?since=``, SSE's ``Last-Event-ID``, the hub's
resync). Every state a resume sends must be the one that was published, and the
newest one the very bytes published (a late pub/sub copy of it is recognised by them)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from server.live.resume import Outcome, resume
from server.record import LOG_MAX, LOG_SLACK, UPDATE_SCRIPT, Keys, RecordStore, dumps
from tests.helpers import create_record


class Published:
    """What the scripts publish on a request's channel, in order."""

    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub
        self.seen: list[bytes] = []

    async def drain(self, expected: int) -> list[bytes]:
        deadline = asyncio.get_running_loop().time() + 10
        while len(self.seen) < expected:
            assert asyncio.get_running_loop().time() < deadline, f"published {len(self.seen)} of {expected}"
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:  # (None also for the subscription's confirmation)
                self.seen.append(message["data"])
        return self.seen


async def watched(store: RecordStore, redis: Redis) -> tuple[str, Published]:
    """A new request whose every publication is collected from its creation on."""
    h = store.keys.new_hash()
    pubsub = redis.pubsub()
    await pubsub.subscribe(store.keys.channel(h))
    await create_record(
        store, h, service_slug="vehicle-fines", request_data={"plate": "12B345-67", "national_id": "0012345678"}
    )
    return h, Published(pubsub)


async def checked(take: Awaitable[Any], then: Awaitable[Any]) -> Any:
    """The bot takes the person's answer (nothing published), then reports."""
    await take
    return await then


def parsed(payloads: list[bytes]) -> list[Any]:
    return [orjson.loads(p) for p in payloads]


async def assert_every_resume_replays(store: RecordStore, h: str, published: list[bytes]) -> None:
    """From every published seq, a resume replays exactly what was published after it."""
    by_seq = {orjson.loads(p)["seq"]: p for p in published}
    last = max(by_seq)
    fresh = await resume(store, h, None)
    assert fresh.outcome is Outcome.FRESH and fresh.frames[0].payload == by_seq[last]
    for since in sorted(by_seq):
        answer = await resume(store, h, since)
        assert answer.outcome is Outcome.REPLAYED, since
        missed = [by_seq[s] for s in range(since + 1, last + 1)]
        assert parsed([f.payload for f in answer.frames]) == parsed(missed), since
        assert answer.seq == last and answer.edge == by_seq[last]  # the newest: byte for byte


async def test_every_script_that_saves_leaves_a_history_a_resume_replays_as_published(
    store: RecordStore, redis: Redis
) -> None:
    h, channel = await watched(store, redis)
    otp_kw = {"code_ttl": 60, "max_attempts": 3, "early_allowed": False, "heartbeat": 60}
    input_kw = {"answer_ttl": 60, "max_attempts": 3, "heartbeat": 60}
    captcha = {"id": "captcha", "kind": "captcha", "image": "data:image/png;base64,iVBORw0KGgo="}
    steps: list[Any] = [
        lambda: store.update(h, {"status": "processing", "progress": 5, "current_message": "Logging in"}),
        # a field that was never there appears, changes, goes to null and comes back
        lambda: store.update(h, {"note": "first", "step": "search", "progress": 20}),
        lambda: store.update(h, {"note": None, "error": "a hiccup", "message_params": {"n": 1}}),
        lambda: store.update(h, {"note": "again", "error": None, "message_params": None}),
        lambda: store.update(
            h,
            {"status": "waiting_otp", "otp_data": {"length": 6, "destination": "+98 ••• 12"}},
            otp={"expires_in": 60, "resend_in": 0, "max_attempts": 3},
        ),
        lambda: store.request_resend(h, interval=0, max_resends=3),  # resend_otp.lua
        lambda: store.submit_otp(h, "123456", **otp_kw),  # submit_answer.lua
        # a wrong code: asked again, the prompt the record holds edited (attempts, expiry)
        lambda: checked(store.take_otp(h), store.update(h, {"status": "waiting_otp"}, otp={"expires_in": 90})),
        lambda: store.submit_otp(h, "654321", **otp_kw),
        lambda: checked(store.take_otp(h), store.update(h, {"step": "fetch", "progress": 40})),
        lambda: store.update(
            h,
            {"status": "waiting_input", "input_request": captcha},
            input={"id": "captcha", "expires_in": 60, "max_attempts": 3},
        ),
        lambda: store.submit_input(h, "captcha", "AB12", **input_kw),  # the picture set aside
        lambda: checked(store.take_input(h), store.update(h, {"input_request": captcha, "progress": 50})),
        lambda: store.update(h, {"status": "failed", "error": "The service is down."}),
        lambda: store.revive(h),  # revive.lua: back to pending, error and prompts cleared
        lambda: store.update(h, {"status": "processing", "progress": 60, "current_message": 'say "[]" {}'}),
        lambda: store.update(
            h, {"status": "completed", "result_data": {"fines": [], "total": 0, "note": None, "text": "a\nb"}}
        ),
    ]
    for step in steps:
        answer = await step()
        assert answer.outcome in ("ok", "accepted"), answer
    published = await channel.drain(1 + len(steps))
    await channel.pubsub.aclose()
    assert orjson.loads(published[-1])["status"] == "completed"
    await assert_every_resume_replays(store, h, published)


async def test_a_resume_reaches_back_at_least_log_max_changes_and_no_further_than_the_log(
    store: RecordStore, redis: Redis, keys: Keys
) -> None:
    h, channel = await watched(store, redis)
    await store.update(h, {"status": "processing"})
    changes = LOG_MAX + LOG_SLACK + 5
    for i in range(changes):
        # every few changes a field appears or goes back to null: the patches differ in shape
        extra = {"hint": None if i % 3 else f"h{i}"}
        await store.update(h, {"progress": i * 100 // changes, "current_message": f"busy {i}", **extra})
    published = await channel.drain(2 + changes)
    await channel.pubsub.aclose()
    assert LOG_MAX <= await redis.llen(keys.log(h)) <= LOG_MAX + LOG_SLACK
    ttl = await redis.ttl(keys.record(h))
    assert ttl > 0 and abs(await redis.ttl(keys.log(h)) - ttl) <= 1
    last = orjson.loads(published[-1])["seq"]
    answer = await resume(store, h, last - LOG_MAX)
    assert answer.outcome is Outcome.REPLAYED and len(answer.frames) == LOG_MAX
    assert parsed([f.payload for f in answer.frames]) == parsed(published[-LOG_MAX:])
    assert answer.frames[-1].payload == published[-1]
    # further back than the log reaches: the record, marked as not recovered
    answer = await resume(store, h, last - changes)
    assert answer.outcome is Outcome.SNAPSHOT and answer.frames[0].payload == published[-1]


async def test_a_change_saved_without_the_log_breaks_the_chain_there(store: RecordStore, redis: Redis) -> None:
    h, channel = await watched(store, redis)
    await store.update(h, {"status": "processing", "progress": 10})
    await store.update(h, {"progress": 20})
    # the update script given no log key (as the bench's "without the log" calls it)
    keys = store._change_keys(h, store.keys.shard(h))[:6]
    control = dumps({"ttl": store.ttl, "heartbeat": 60})
    script = redis.register_script(UPDATE_SCRIPT)
    await script(keys=keys, args=[dumps({"progress": 30}), control, store.keys.channel(h), h, ""])
    await store.update(h, {"progress": 40})
    published = await channel.drain(5)
    await channel.pubsub.aclose()
    seqs = [orjson.loads(p)["seq"] for p in published]
    # The change to seq 4 is not logged: a page behind the newest change gets a snapshot of it,
    # never a wrong state or a gap (the log is read back by seq from its newest entry, so one
    # missing in between spoils the reads that span it); one that has it gets nothing more.
    for since in seqs[:4]:
        answer = await resume(store, h, since)
        assert answer.outcome is Outcome.SNAPSHOT and parsed([answer.frames[0].payload]) == parsed(published[-1:])
    answer = await resume(store, h, seqs[4])
    assert answer.outcome is Outcome.REPLAYED and answer.frames == []


async def test_a_record_an_old_style_bot_rewrote_is_still_served_as_its_public_part(
    store: RecordStore, redis: Redis, keys: Keys
) -> None:
    h, channel = await watched(store, redis)
    await store.update(h, {"status": "processing", "progress": 10})
    # GET, edit, SETEX: the stored text in another layout, the private part first
    rec = orjson.loads(await redis.get(keys.record(h)))
    rec = {"_p": rec.pop("_p"), **rec, "progress": 15, "current_message": "the bot's own words"}
    await redis.set(keys.record(h), orjson.dumps(rec), ex=600)
    fresh = await resume(store, h, None)
    public = {k: v for k, v in rec.items() if k != "_p"}
    assert fresh.outcome is Outcome.FRESH and orjson.loads(fresh.frames[0].payload) == public
    # a page that had the last logged change (the same seq) gets the rewrite too, not nothing
    behind = await resume(store, h, rec["seq"])
    assert behind.outcome is Outcome.REPLAYED and [orjson.loads(f.payload) for f in behind.frames] == [public]
    assert orjson.loads(behind.edge) == public
    # and the scripts take it from there, the log with them
    await store.update(h, {"progress": 20})
    await store.update(h, {"progress": 30})
    published = await channel.drain(4)
    await channel.pubsub.aclose()
    answer = await resume(store, h, orjson.loads(published[-2])["seq"])
    assert answer.outcome is Outcome.REPLAYED and [f.payload for f in answer.frames] == published[-1:]
    assert orjson.loads(published[-2])["current_message"] == "the bot's own words"
