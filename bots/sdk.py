"""The bot SDK: how a bot tells Longrun what it is doing.

Two reporters with the same calls — ``progress``, ``otp_required``,
``input_required``, ``completed``, ``failed``:

- :class:`RedisReporter` writes straight into Redis through the record's
  atomic update script (one round trip per call), for bots that share
  Longrun's Redis;
- :class:`HttpReporter` sends Standard Webhooks-signed events to
  ``POST /api/bot/requests/{hash}/events``, for bots that run elsewhere.

Example::

    async with RedisReporter.connect(settings) as report:
        await report.progress(request_hash, 40, step="captcha", message="Solving the captcha")
        await report.completed(request_hash, {"score": 712})

A bot that answered ``/run`` with 202 and goes on by itself awaits the person's answers with
:class:`Answers`: the worker relays each answer to ``/run`` (``{"input": {"id", "value"}}``),
whose handler passes the body to :meth:`Answers.deliver`::

    vehicle = await answers.ask(report, request_hash, {"id": "vehicle", "kind": "choice", ...})
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aiohttp
import orjson

from server.domain.errors import LongrunError, ProtocolError
from server.domain.prompts import Prompt
from server.domain.protocol import (
    MAX_TEXT,
    BotEvent,
    CompletedEvent,
    FailedEvent,
    InputRequiredEvent,
    OtpPrompt,
    OtpRequiredEvent,
    ProgressEvent,
    parse_bot_event,
)
from server.domain.status import Status
from server.infra.connections import async_client, rq_connection
from server.infra.webhooks import new_event_id, sign
from server.queue.dispatch import Dispatcher
from server.record import Keys, RecordStore, UpdateResult
from server.requests.lifecycle import Lifecycle
from server.settings import Settings


class ReportError(LongrunError):
    """Longrun refused an event (the message says why)."""


class Reporter(Protocol):
    async def report(self, request_hash: str, event: BotEvent) -> bool: ...


class _Calls:
    """The four calls, on top of :meth:`report`."""

    async def report(self, request_hash: str, event: BotEvent) -> bool:
        raise NotImplementedError

    async def progress(
        self, request_hash: str, progress: int, *, step: str | None = None, message: str | None = None
    ) -> bool:
        """Report how far along the bot is (0-100; Longrun never lets the bar go back)."""
        return await self.report(request_hash, ProgressEvent(max(0, min(100, int(progress))), step, message))

    async def otp_required(self, request_hash: str, otp: OtpPrompt | Mapping[str, Any]) -> bool:
        """The bot sent a code to the person's phone and now waits for it."""
        prompt = otp if isinstance(otp, OtpPrompt) else OtpPrompt.parse(dict(otp))
        return await self.report(request_hash, OtpRequiredEvent(prompt))

    async def input_required(self, request_hash: str, prompt: Prompt | Mapping[str, Any]) -> bool:
        """The bot asks the person something (``captcha``, ``choice``, ``confirm``, ``text`` or
        ``code``; see :mod:`server.domain.prompts`) and waits for the answer."""
        asked = prompt if isinstance(prompt, Prompt) else Prompt.parse(dict(prompt))
        return await self.report(request_hash, InputRequiredEvent(asked))

    async def completed(self, request_hash: str, result: Mapping[str, Any]) -> bool:
        return await self.report(request_hash, CompletedEvent(dict(result)))

    async def failed(self, request_hash: str, error: str) -> bool:
        """The bot gave up; the person reads ``error`` (its first 500 characters, as the Node
        SDK and the server keep: an error is never refused for its length)."""
        return await self.report(request_hash, FailedEvent(str(error)[:MAX_TEXT]))


class Answers:
    """The person's answers, for a bot that goes on by itself after answering 202.

    :meth:`ask` reports the prompt and waits; the bot's ``/run`` handler hands every body it
    gets to :meth:`deliver`, which wakes the one waiting for that request and prompt (and says
    whether anyone was). One instance per bot process; nothing is kept once delivered.
    """

    #: seconds past the prompt's ``expires_in`` that :meth:`ask` waits (the relay takes a moment)
    GRACE = 10.0

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], asyncio.Future[str | bool]] = {}

    async def ask(
        self, reporter: _Calls, request_hash: str, prompt: Prompt | Mapping[str, Any], *, timeout: float | None = None
    ) -> str | bool:
        """Ask the person and return their answer (``TimeoutError`` when none came in time)."""
        asked = prompt if isinstance(prompt, Prompt) else Prompt.parse(dict(prompt))
        key = (request_hash, asked.id)
        # Waiting before asking: the answer may come back before input_required returns.
        future = self._waiting.get(key) or asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        try:
            if not await reporter.input_required(request_hash, asked):
                raise ReportError("the request has finished or expired")
            return await asyncio.wait_for(asyncio.shield(future), timeout or asked.expires_in + self.GRACE)
        finally:
            if self._waiting.get(key) is future:
                del self._waiting[key]

    def deliver(self, body: Mapping[str, Any]) -> bool:
        """Hand over a ``/run`` body; True when it carried an answer someone was waiting for."""
        h = str(body.get("requestHash", ""))
        given = body.get("input")
        if isinstance(given, Mapping) and isinstance(given.get("id"), str):
            key, value = (h, str(given["id"])), given.get("value")
        elif isinstance(body.get("otp"), str):
            key, value = (h, "code"), body["otp"]
        else:
            return False
        future = self._waiting.get(key)
        if future is None or future.done() or not isinstance(value, str | bool):
            return False
        future.set_result(value)
        return True


def _still_asking(event: BotEvent, status: Any) -> bool:
    """False for a prompt the request does not wait for after all: asked once more after the
    person's last attempt, it fails the request instead (a bot waiting for the answer would
    wait in vain). A code typed early moves it on to processing at once: that one is asked."""
    return not (isinstance(event, OtpRequiredEvent | InputRequiredEvent) and status == Status.FAILED.value)


class RedisReporter(_Calls):
    """Reports through the record's Lua script; returns False when the update was ignored
    (the request already finished or expired)."""

    def __init__(self, lifecycle: Lifecycle):
        self.lifecycle = lifecycle

    @classmethod
    @asynccontextmanager
    async def connect(cls, settings: Settings) -> AsyncIterator[RedisReporter]:
        redis = async_client(settings, socket_connect_timeout=2, socket_timeout=5)
        store = RecordStore(redis, Keys(settings.key_prefix), ttl=settings.request_ttl, sharded=settings.redis_cluster)
        sync = rq_connection(settings, socket_connect_timeout=2, socket_timeout=5)

        # A code typed before the bot asked goes to a worker, as the server would send it.
        life = Lifecycle.for_settings(store, settings, Dispatcher(sync, settings))
        try:
            yield cls(life)
        finally:
            await redis.aclose()
            sync.close()

    async def report(self, request_hash: str, event: BotEvent) -> bool:
        # Checked and normalized exactly as the server does an event over HTTP (the same
        # bounds; an integer past JSON's exact range kept as its digits), since no server looks
        # at what goes straight to Redis.
        try:
            event = parse_bot_event(event.serialize())
        except ProtocolError as exc:
            raise ReportError(f"the event is not valid: {exc}") from None
        result: UpdateResult = await self.lifecycle.apply_event(request_hash, event)
        return result.applied and _still_asking(event, (result.record or {}).get("status"))


class HttpReporter(_Calls):
    """Reports over signed HTTP events to a Longrun server.

    As the Node SDK's: network errors, timeouts, 429 and 5xx are retried (``retries`` times,
    ``backoff`` seconds doubling) under the same event id, so an event the server applied but
    whose answer was lost is never applied twice (its retry is answered ``replayed_event``:
    applied); other refusals raise :class:`ReportError`.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        secret: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.25,
    ):
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.secret = secret
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.retries = retries
        self.backoff = backoff

    @classmethod
    @asynccontextmanager
    async def connect(cls, settings: Settings) -> AsyncIterator[HttpReporter]:
        async with aiohttp.ClientSession() as session:
            yield cls(session, settings.public_url, settings.signing_secret)

    async def report(self, request_hash: str, event: BotEvent, *, event_id: str | None = None) -> bool:
        body = orjson.dumps(event.serialize())
        url = f"{self.base_url}/api/bot/requests/{request_hash}/events"
        event_id = event_id or new_event_id()
        last: ReportError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            # Signed afresh each time: the server refuses timestamps more than 5 minutes off.
            headers = {"Content-Type": "application/json", **sign(self.secret, body, event_id=event_id)}
            try:
                async with self.session.post(url, data=body, headers=headers, timeout=self.timeout) as resp:
                    raw = await resp.read()
                    status, reason = resp.status, resp.reason
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = ReportError(f"could not reach Longrun: {exc.__class__.__name__}: {exc}")
                continue
            try:
                answer = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                answer = {}  # a proxy's error page: the status says it
            answer = answer if isinstance(answer, dict) else {}
            if status == 202:
                return bool(answer.get("applied", True)) and _still_asking(event, answer.get("status"))
            error: dict[str, Any] = answer["error"] if isinstance(answer.get("error"), dict) else {}
            code = str(error.get("code") or "")
            if status == 409 and code == "replayed_event" and attempt:
                return True  # our earlier attempt got through; only its answer was lost
            # Ignored, as over Redis: the request has expired (or never was), or has finished.
            if (status, code) in ((404, "not_found"), (409, "state_conflict")):
                return False
            last = ReportError(f"{status}: {error.get('message') or reason}")
            if status != 429 and status < 500:
                raise last
        assert last is not None
        raise last


@asynccontextmanager
async def reporter_for(settings: Settings) -> AsyncIterator[RedisReporter | HttpReporter]:
    """The reporter ``BOT_REPORT_MODE`` asks for."""
    if settings.bot_report_mode == "http":
        async with HttpReporter.connect(settings) as http:
            yield http
    else:
        async with RedisReporter.connect(settings) as direct:
            yield direct
