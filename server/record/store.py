"""The store: every read and write of request records, through the scripts."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from server.infra.connections import AsyncClient, mget
from server.record.keys import (
    APP_INDEX_GRACE,
    APP_INDEX_LIFETIMES,
    REQUEST_TTL,
    TRACKING_LIST_MAX,
    WEBHOOK_ID_TTL,
    Keys,
)
from server.record.lua import (
    ADOPT_TERMINAL_SCRIPT,
    CLAIM_EVENT_SCRIPT,
    CREATE_SCRIPT,
    RATE_LIMIT_SCRIPT,
    READ_LOG_SCRIPT,
    RELEASE_LOCK_SCRIPT,
    RESEND_OTP_SCRIPT,
    REVIVE_SCRIPT,
    SUBMIT_ANSWER_SCRIPT,
    UPDATE_SCRIPT,
)
from server.record.model import dumps, loads_record, text

Outcome = Literal["ok", "missing", "terminal", "conflict", "not_due"]


@dataclass(frozen=True)
class UpdateResult:
    outcome: Outcome
    record: dict[str, Any] | None = None
    #: the bot asked for a code that the person had already typed: check it now
    otp_ready: bool = False
    previous_status: str | None = None

    @property
    def applied(self) -> bool:
        return self.outcome == "ok"


@dataclass(frozen=True)
class LogRead:
    """A record and its logged changes after a seq, read at once (see ``read_log.lua``)."""

    #: the stored record (private part included), None when it is gone
    raw: bytes | None
    #: the logged changes asked for, as published (public record JSON), oldest first
    entries: list[bytes]


@dataclass(frozen=True)
class ScriptAnswer:
    outcome: str
    record: dict[str, Any] | None = None
    detail: str | None = None


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _answer(reply: Sequence[Any]) -> ScriptAnswer:
    outcome = text(reply[0])
    record = loads_record(reply[1]) if len(reply) > 1 else None
    detail = text(reply[2]) if len(reply) > 2 else None
    return ScriptAnswer(outcome, record, detail)


class RecordStore:
    """Every read and write of request records (async; one instance per Redis client)."""

    def __init__(self, redis: AsyncClient, keys: Keys, *, ttl: int = REQUEST_TTL, sharded: bool = False):
        self.redis = redis
        self.keys = keys
        self.ttl = ttl
        #: also publish on each request's shard channel (Redis Cluster)
        self.sharded = sharded
        self._create = redis.register_script(CREATE_SCRIPT)
        self._update = redis.register_script(UPDATE_SCRIPT)
        self._submit_answer = redis.register_script(SUBMIT_ANSWER_SCRIPT)
        self._resend = redis.register_script(RESEND_OTP_SCRIPT)
        self._rate_limit = redis.register_script(RATE_LIMIT_SCRIPT)
        self._release_lock = redis.register_script(RELEASE_LOCK_SCRIPT)
        self._revive = redis.register_script(REVIVE_SCRIPT)
        self._adopt = redis.register_script(ADOPT_TERMINAL_SCRIPT)
        self._read_log = redis.register_script(READ_LOG_SCRIPT)
        self._claim_event = redis.register_script(CLAIM_EVENT_SCRIPT)

    def _shard(self, h: str) -> str:
        return self.keys.shard_channel(h) if self.sharded else ""

    async def create(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        """Store a new record and track it; returns the public record, None on a hash clash."""
        h = record["hash"]
        shard = self.keys.shard(h)
        keys = [self.keys.record(h), self.keys.counts(shard), self.keys.inflight(shard), self.keys.log(h)]
        args: list[Any] = [dumps(record), self.ttl, self.keys.channel(h), h, self._shard(h)]
        if self.sharded:
            # A cluster pipeline cannot carry scripts; the tracking list lives in another slot.
            reply = await self._create(keys=keys, args=args)
            async with self.redis.pipeline(transaction=False) as cluster_pipe:
                cluster_pipe.lpush(self.keys.tracking_list(), h)
                cluster_pipe.ltrim(self.keys.tracking_list(), 0, TRACKING_LIST_MAX - 1)
                await cluster_pipe.execute()
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                await self._create(keys=keys, args=args, client=pipe)  # type: ignore[arg-type]
                pipe.lpush(self.keys.tracking_list(), h)
                pipe.ltrim(self.keys.tracking_list(), 0, TRACKING_LIST_MAX - 1)
                reply, *_ = await pipe.execute()
        answer = _answer(reply)
        return answer.record if answer.outcome == "ok" else None

    async def get_raw(self, h: str) -> bytes | None:
        raw = await self.redis.get(self.keys.record(h))
        return raw if raw is None or isinstance(raw, bytes) else str(raw).encode()

    async def get(self, h: str) -> dict[str, Any] | None:
        """The stored record, private fields included (``_p``); None if absent or unreadable."""
        return loads_record(await self.get_raw(h))

    async def get_many(self, hashes: Sequence[str]) -> list[dict[str, Any] | None]:
        if not hashes:
            return []
        raws = await mget(self.redis, [self.keys.record(h) for h in hashes])
        return [loads_record(r) for r in raws]

    def _change_keys(self, h: str, shard: int) -> list[str]:
        """The keys of the update script, in its KEYS order (the adopt script takes the first six)."""
        k = self.keys
        return [
            k.record(h),
            k.archive(shard),
            k.inflight(shard),
            k.otp(h),
            k.counts(shard),
            k.otp_waits(shard),
            k.log(h),
        ]

    async def update(
        self,
        h: str,
        patch: Mapping[str, Any],
        *,
        expect: Sequence[str] | None = None,
        deadline: float | None = None,
        heartbeat: float | None = None,
        otp: Mapping[str, Any] | None = None,
        input: Mapping[str, Any] | None = None,
        checking: str | None = None,
        sweep: bool = False,
        keepalive: bool = False,
        private: Mapping[str, Any] | None = None,
    ) -> UpdateResult:
        """Apply one change atomically: merge, state machine, seq, TTL, publish, archive hand-off."""
        control: dict[str, Any] = {"ttl": self.ttl}
        if expect is not None:
            control["expect"] = list(expect)
        if deadline is not None:
            control["deadline"] = deadline
        if heartbeat is not None:
            control["heartbeat"] = heartbeat
        if otp is not None:
            control["otp"] = dict(otp)
        if input is not None:
            control["input"] = dict(input)
        if checking is not None:
            control["checking"] = checking
        if sweep:
            control["sweep"] = True
        if keepalive:
            control["keepalive"] = True
        if private:
            control["private"] = dict(private)
        shard = self.keys.shard(h)
        reply = await self._update(
            keys=self._change_keys(h, shard),
            args=[dumps(dict(patch)), dumps(control), self.keys.channel(h), h, self._shard(h)],
        )
        return _update_result(reply)

    async def update_many(self, changes: Sequence[tuple[str, Mapping[str, Any]]]) -> list[UpdateResult]:
        """Plain patches (no ``expect`` or other control) to several records in one round trip:
        one pipeline of update scripts, each as atomic as :meth:`update`'s. A bot reporting for
        many requests at once pays one write and one read instead of one per record. On a
        cluster (scripts cannot share a pipeline there) they run one after another."""
        if not changes:
            return []
        control = dumps({"ttl": self.ttl})
        if self.sharded:
            return [await self.update(h, patch) for h, patch in changes]
        async with self.redis.pipeline(transaction=False) as pipe:
            for h, patch in changes:
                await self._update(
                    keys=self._change_keys(h, self.keys.shard(h)),
                    args=[dumps(dict(patch)), control, self.keys.channel(h), h, ""],
                    client=pipe,  # type: ignore[arg-type]
                )
            replies = await pipe.execute()
        return [_update_result(reply) for reply in replies]

    async def submit_otp(
        self,
        h: str,
        code: str,
        *,
        code_ttl: int,
        max_attempts: int,
        early_allowed: bool,
        heartbeat: float,
        message: str = "Checking the code…",
    ) -> ScriptAnswer:
        """The person's code (see SUBMIT_ANSWER_SCRIPT; ``max_attempts`` per request)."""
        return await self._submit(h, code, "", code_ttl, max_attempts, early_allowed, heartbeat, message)

    async def submit_input(
        self,
        h: str,
        prompt_id: str,
        value: str | bool,
        *,
        answer_ttl: int,
        max_attempts: int,
        heartbeat: float,
        message: str = "Checking your answer…",
    ) -> ScriptAnswer:
        """The person's answer to the prompt ``prompt_id`` (``max_attempts`` per prompt); kept as
        ``{id, value}`` in the pending-answer key, never in the record."""
        answer = dumps({"id": prompt_id, "value": value}).decode()
        return await self._submit(h, answer, prompt_id, answer_ttl, max_attempts, False, heartbeat, message)

    async def _submit(
        self,
        h: str,
        answer: str,
        prompt_id: str,
        ttl: int,
        max_attempts: int,
        early_allowed: bool,
        heartbeat: float,
        message: str,
    ) -> ScriptAnswer:
        shard = self.keys.shard(h)
        reply = await self._submit_answer(
            keys=[
                self.keys.record(h),
                self.keys.otp(h),
                self.keys.inflight(shard),
                self.keys.counts(shard),
                self.keys.otp_waits(shard),
                self.keys.log(h),
            ],
            args=[
                answer,
                ttl,
                max_attempts,
                self.keys.channel(h),
                self.ttl,
                "1" if early_allowed else "0",
                message,
                h,
                heartbeat,
                prompt_id,
                self._shard(h),
            ],
        )
        return _answer(reply)

    async def read_log(self, h: str, since: int | None) -> LogRead:
        """The record and every logged change from seq ``since`` on (None: the newest one), at once."""
        arg = "" if since is None else since
        reply = await self._read_log(keys=[self.keys.record(h), self.keys.log(h)], args=[arg])
        return LogRead(None if reply[0] is None else _bytes(reply[0]), [_bytes(e) for e in reply[1:]])

    async def take_input(self, h: str) -> dict[str, Any] | None:
        """The submitted ``{id, value}``, removed as it is read (an answer reaches the bot once)."""
        raw = await self.redis.getdel(self.keys.otp(h))
        answer = loads_record(raw)
        return answer if answer is not None and "id" in answer else None

    async def take_otp(self, h: str) -> str | None:
        """The submitted code, removed as it is read: a code reaches the bot once."""
        raw = await self.redis.getdel(self.keys.otp(h))
        return None if raw is None else text(raw)

    async def request_resend(
        self, h: str, *, interval: int, max_resends: int, message: str = "Sending a new code…"
    ) -> ScriptAnswer:
        reply = await self._resend(
            keys=[self.keys.record(h), self.keys.log(h)],
            args=[self.keys.channel(h), self.ttl, interval, max_resends, message, self._shard(h)],
        )
        return _answer(reply)

    async def hit_rate_limit(self, name: str, who: str, *, burst: int, per: float, cost: int = 1) -> float:
        """Count ``cost`` calls against a GCRA limit; 0 if allowed, else seconds until allowed."""
        allowed, wait_ms = await self._rate_limit(
            keys=[self.keys.rate_limit(name, who)], args=[per / burst, burst, cost]
        )
        return 0.0 if int(allowed) else int(wait_ms) / 1000

    async def index_app_request(self, app: str, user_id: str, h: str, created_us: int) -> None:
        """List a new request under its app and the app's user (before it is stored: an entry
        whose record has not come ``APP_INDEX_GRACE`` seconds on is dropped when listed; a
        listing sooner leaves it, the record may be on its way). Entries older than a few record
        lifetimes go on each add; the index expires when the app stops creating."""
        keep = self.ttl * APP_INDEX_LIFETIMES
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in (self.keys.app_requests(app), self.keys.app_user_requests(app, user_id)):
                pipe.zadd(key, {h: created_us})
                pipe.zremrangebyscore(key, "-inf", created_us - keep * 1_000_000)
                pipe.expire(key, keep)
            await pipe.execute()

    async def app_requests(
        self, app: str, user_id: str | None, *, limit: int, before: int | None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """An app's (or one of its users') live records, newest first, created before ``before``
        (µs, exclusive): the records and the cursor of the next page (None at the end)."""
        key = self.keys.app_requests(app) if user_id is None else self.keys.app_user_requests(app, user_id)
        top = "+inf" if before is None else f"({before}"
        found: list[dict[str, Any]] = []
        cursor: int | None = None
        settled = (time.time() - APP_INDEX_GRACE) * 1_000_000  # older entries' records were stored
        while True:
            page = cast(
                "list[tuple[bytes, float]]",
                await self.redis.zrevrangebyscore(key, top, "-inf", start=0, num=limit, withscores=True),
            )
            hashes = [text(m) for m, _ in page]
            records = await self.get_many(hashes)
            gone = [h for h, (_, score), r in zip(hashes, page, records, strict=True) if r is None and score < settled]
            if gone:
                await self.redis.zrem(key, *gone)
            for (_, score), rec in zip(page, records, strict=True):
                if rec is None:
                    continue
                if len(found) == limit:
                    return found, cursor
                found.append(rec)
                cursor = int(score)
            if len(page) < limit:
                return found, None
            top = f"({int(page[-1][1])}"

    async def claim_event_id(self, event_id: str, h: str) -> Literal["claimed", "replayed", "other"]:
        """Claim a bot event's id for request ``h`` before applying it: ``replayed`` when it was
        applied (or is being applied) already, ``other`` when it was sent for another request
        (a signed body names no request: a captured event must not be replayed onto another
        one). See claim_event.lua."""
        answer = text(await self._claim_event(keys=[self.keys.webhook_id(event_id)], args=[h, WEBHOOK_ID_TTL]))
        return cast('Literal["claimed", "replayed", "other"]', answer)

    async def release_event_id(self, event_id: str, h: str) -> None:
        """The claimed event was refused: the same request may retry it (the id stays bound to it)."""
        await self.redis.set(self.keys.webhook_id(event_id), f"{h} free", ex=WEBHOOK_ID_TTL)

    async def revive(self, h: str, message: str = "Retried by an operator; waiting for a free worker…") -> ScriptAnswer:
        """failed → pending, for an operator's retry (see REVIVE_SCRIPT)."""
        reply = await self._revive(
            keys=[
                self.keys.record(h),
                self.keys.counts(self.keys.shard(h)),
                self.keys.inflight(self.keys.shard(h)),
                self.keys.log(h),
            ],
            args=[self.keys.channel(h), self.ttl, message, h, self._shard(h)],
        )
        return _answer(reply)

    async def acquire_lock(self, name: str, ttl: float) -> str | None:
        """A token if we now hold the named lock (for ``ttl`` seconds), else None."""
        token = secrets.token_hex(8)
        got = await self.redis.set(self.keys.lock(name), token, nx=True, px=int(ttl * 1000))
        return token if got else None

    async def release_lock(self, name: str, token: str) -> None:
        await self._release_lock(keys=[self.keys.lock(name)], args=[token])

    async def overdue(self, shard: int, now: float, limit: int = 500) -> list[str]:
        """Running requests of a shard whose heartbeat, deadline or OTP has passed."""
        raw = await self.redis.zrangebyscore(self.keys.inflight(shard), "-inf", now, start=0, num=limit)
        return [text(r) for r in raw]

    async def adopt_terminal(self, h: str) -> str:
        """Hand a request an old-style bot finished by itself (SETEX of a terminal status) to the
        archive, and take it out of the in-flight index and the counts (see
        ADOPT_TERMINAL_SCRIPT). Returns ``adopted``, or why not: ``not_inflight``,
        ``not_terminal``, ``missing``."""
        shard = self.keys.shard(h)
        reply = await self._adopt(
            keys=self._change_keys(h, shard)[:6],
            args=[h],
        )
        return text(reply[0])

    async def forget_inflight(self, h: str) -> None:
        await self.redis.zrem(self.keys.inflight(self.keys.shard(h)), h)

    async def tracked_hashes(self, limit: int = 100) -> list[str]:
        raw = await self.redis.lrange(self.keys.tracking_list(), 0, limit - 1)
        return [text(r) for r in raw]

    async def prune_tracking_list(self, batch: int = 500) -> int:
        """Drop tracked hashes whose record has expired; returns how many were removed."""
        hashes = await self.tracked_hashes(TRACKING_LIST_MAX)
        removed = 0
        for i in range(0, len(hashes), batch):
            chunk = hashes[i : i + batch]
            exists = await mget(self.redis, [self.keys.record(h) for h in chunk])
            gone = [h for h, e in zip(chunk, exists, strict=True) if e is None]
            if gone:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for h in gone:
                        pipe.lrem(self.keys.tracking_list(), 0, h)
                    await pipe.execute()
                removed += len(gone)
        return removed


def _update_result(reply: Any) -> UpdateResult:
    """The update script's answer: outcome, record, whether a typed code waits, previous status."""
    return UpdateResult(
        outcome=text(reply[0]),  # type: ignore[arg-type]
        record=loads_record(reply[1]) if len(reply) > 1 else None,
        otp_ready=len(reply) > 2 and text(reply[2]) == "1",
        previous_status=text(reply[3]) if len(reply) > 3 else None,
    )
