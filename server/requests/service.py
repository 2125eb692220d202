"""The person's use cases on a request: create, read, submit a code or another answer, ask for
another code, cancel.

One :class:`RequestService` per process, built in the composition root
(``server.web.app``). The JSON API, the HTML form posts, the socket frames and
anything else call it with a :class:`~server.requests.caller.Caller` (who is
asking), never with an HTTP request; it answers with public records or raises
:class:`~server.domain.errors.ApiError` subclasses, which the callers map to
their own medium (status codes, flash messages, error frames).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from server.domain.catalog import Service, get_service
from server.domain.errors import (
    Conflict,
    NotFound,
    ProtocolError,
    RateLimited,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from server.domain.messages import text
from server.domain.prompts import prompt_in
from server.domain.protocol import normalize_otp
from server.domain.status import Status
from server.history import estimates
from server.live.cache import RecordCache
from server.queue.dispatch import Dispatcher
from server.record import RecordStore, new_record, private_view, public_view, token_digest
from server.requests.caller import USER_REF_RE, Caller, app_user_id, check_hash, new_access_token
from server.requests.credentials import AppKey, ViewerTokens
from server.requests.lifecycle import Lifecycle
from server.requests.limits import RateLimits
from server.settings import Settings

QUEUE_FAILED = text("queue_failed")
#: an application's list of requests: page sizes
LIST_LIMIT_MAX = 100


@dataclass(frozen=True, slots=True)
class AppCreated:
    """What an application's backend gets for a new request."""

    record: dict[str, Any]
    access_token: str
    viewer_token: str
    viewer_expires_at: int


@dataclass(frozen=True, slots=True)
class Draft:
    """A service and form data it accepted: what :meth:`RequestService.create` stores."""

    service: Service
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Refusals:
    """What the person is told, (code, message), when the submit script does not take an answer."""

    exhausted: tuple[str, str]
    busy: tuple[str, str]
    conflict: tuple[str, str]


CODE_REFUSALS = Refusals(
    exhausted=("otp_attempts_exhausted", "Too many codes were tried for this request; start a new one."),
    busy=("otp_pending", "A code is already being checked."),
    conflict=("not_waiting_for_otp", "This request is not waiting for a code."),
)
INPUT_REFUSALS = Refusals(
    exhausted=("input_attempts_exhausted", "Too many answers were tried for this question; start a new request."),
    busy=("input_pending", "An answer is already being checked."),
    conflict=("not_waiting_for_input", "This request is not waiting for that answer."),
)


async def enqueue_run(lifecycle: Lifecycle, dispatcher: Dispatcher, h: str, service: Service) -> None:
    """Queue a request's first phase (a new request, or one an operator starts over); when
    that fails the request fails with it (queue_failed), rather than wait for a job that
    never comes."""
    try:
        await asyncio.to_thread(dispatcher.run, h, service)
    except Exception:
        await lifecycle.fail(h, QUEUE_FAILED)
        raise


@dataclass
class RequestService:
    store: RecordStore
    lifecycle: Lifecycle
    dispatcher: Dispatcher
    settings: Settings
    limits: RateLimits
    cache: RecordCache | None = None
    viewers: ViewerTokens = field(init=False)

    def __post_init__(self) -> None:
        self.viewers = ViewerTokens(self.settings.secret_key, self.settings.viewer_token_ttl)

    # ------------------------------------------------------------------ create

    def draft(self, service_slug: str, data: Any, lang: str = "en") -> Draft:
        """The service's validation of ``data`` (404 for an unknown service, 422 for bad data);
        needs no caller, so a refused form touches nobody's session."""
        service = get_service(service_slug)
        return Draft(service, service.validate(data, lang))

    async def create(self, caller: Caller, draft: Draft) -> tuple[dict[str, Any], str]:
        """Store and enqueue a new request owned by ``caller``; its public record and access token."""
        caller.check_may_create()
        if caller.user_id is None:
            raise ValueError("a request is created for a user id")
        await self.limits.create(caller.user_id, caller.address)
        return await self._store_new(draft, caller.user_id, self.store.keys.new_hash())

    async def create_for_app(
        self, caller: Caller, draft: Draft, user_ref: Any, *, viewer_may_cancel: bool = False
    ) -> AppCreated:
        """A new request made by an application's backend for one of its users (``user_ref``,
        the app's own name for the person): listed under the app, visible to its keys only,
        with a viewer token for the person's browser."""
        key = self._app_key(caller)
        if not isinstance(user_ref, str) or not USER_REF_RE.fullmatch(user_ref):
            raise ValidationFailed(
                "user_ref names the person in your application.",
                fields={"user_ref": "1 to 128 letters, digits or . _ : @ + -"},
            )
        user_id = app_user_id(key.app, user_ref)
        await self.limits.create_for_app(key.key_id, user_id)
        h = self.store.keys.new_hash()
        await self.store.index_app_request(key.app, user_id, h, time.time_ns() // 1000)
        record, token = await self._store_new(draft, user_id, h, {"app": key.app, "user_ref": user_ref})
        viewer, expires = self.viewers.mint(h, may_cancel=viewer_may_cancel)
        return AppCreated(record, token, viewer, expires)

    async def _store_new(
        self, draft: Draft, user_id: str, h: str, private: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], str]:
        service = draft.service
        token = new_access_token()
        record = new_record(
            request_hash=h,
            service_slug=service.slug,
            request_data=draft.data,
            user_id=user_id,
            token_hash=token_digest(token),
            estimated_duration=await estimates.estimated_duration(self.store.redis, self.store.keys, service),
            priority=service.priority,
            first_step=service.steps[0].name if service.steps else "",
            private=private,
        )
        created = await self.store.create(record)
        if created is None:  # 2^-128: a clash of fresh random hashes
            raise Unavailable("Could not create the request; please try again.")
        await enqueue_run(self.lifecycle, self.dispatcher, h, service)
        return created, token

    @staticmethod
    def _app_key(caller: Caller) -> AppKey:
        if caller.app_key is None:
            raise Unauthorized("This needs an application's API key.", code="api_key_required")
        return caller.app_key

    # ------------------------------------------------------------------ applications

    async def new_viewer_token(self, caller: Caller, request_hash: str, *, may_cancel: bool = False) -> tuple[str, int]:
        """A fresh viewer token for one of the app's requests (the old one expired)."""
        key = self._app_key(caller)
        self.limits.app_read(key.key_id)
        await self.visible(caller, request_hash)
        return self.viewers.mint(request_hash, may_cancel=may_cancel)

    async def list_for_app(
        self, caller: Caller, user_ref: str | None, limit: int, cursor: int | None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """The app's live requests (or one user's), newest first: public records with their
        ``user_ref``, and the next page's cursor."""
        key = self._app_key(caller)
        self.limits.app_read(key.key_id)
        user_id = None if user_ref is None else app_user_id(key.app, user_ref)
        records, after = await self.store.app_requests(key.app, user_id, limit=limit, before=cursor)
        items = []
        for rec in records:
            p = private_view(rec)
            if p.get("app") == key.app:  # the index is the app's own; the record says so too
                items.append({**public_view(rec), "user_ref": p.get("user_ref")})
        return items, after

    # ------------------------------------------------------------------ read

    async def visible(self, caller: Caller, request_hash: str) -> dict[str, Any]:
        """The stored record if the caller may see it; the same 404 otherwise."""
        check_hash(request_hash)
        record = await self.store.get(request_hash)
        if record is None or not caller.can_see(record):
            raise NotFound()
        return record

    async def poll(
        self,
        address: str,
        request_hash: str,
        who: Callable[[], Awaitable[Caller]],
        *,
        app_key: AppKey | None = None,
    ) -> bytes:
        """The public record JSON for a polling client: rate-limited per address (batched GCRA),
        read from the process's pub/sub-fed cache, same access rule as everywhere.

        ``who`` makes the :class:`Caller` only for a poll that passed the limit and names a
        record: for a browser that means decrypting its session cookie, which a flood of polls
        must not get for free. An application's backend (``app_key``) is limited per key."""
        assert self.cache is not None, "polling needs the record cache"
        if app_key is not None:  # one backend speaks for many people: its key is limited, not its address
            self.limits.app_read(app_key.key_id)
        else:
            self.limits.poll(address)
        check_hash(request_hash)
        entry = await self.cache.get(request_hash)
        if entry is None or not (await who()).may_see(request_hash, entry.user_id, entry.token, entry.app):
            raise NotFound()
        return entry.public

    # ------------------------------------------------------------------ actions

    async def submit_otp(self, caller: Caller, request_hash: str, raw_code: Any) -> dict[str, Any]:
        """Hand a code to the bot."""
        settings = self.settings
        record = await self.visible(caller, request_hash)
        try:
            code = normalize_otp(raw_code)
        except ProtocolError as exc:
            raise ValidationFailed("The code is not valid.", fields={"otp": str(exc)}) from None
        # A code the bot said the length of: one of another length is a typo, not an attempt
        # (409: a well-formed code, but not one the request now waits for).
        otp = record.get("otp_data") if record.get("status") == Status.WAITING_OTP.value else None
        length = otp.get("length") if isinstance(otp, Mapping) else None
        if isinstance(length, int) and not isinstance(length, bool) and len(code) != length:
            raise Conflict(f"The code has {length} digits.", code="otp_wrong_length")
        service = get_service(str(record.get("service_slug")))
        answer = await self.store.submit_otp(
            request_hash,
            code,
            code_ttl=settings.otp_code_ttl,
            max_attempts=settings.otp_max_attempts,
            early_allowed=service.may_ask_otp,
            heartbeat=service.limits(settings.time_scale).heartbeat,
        )
        del code
        self._refuse_unless_taken(answer.outcome, CODE_REFUSALS)
        if answer.outcome == "accepted":
            seq = int((answer.record or {}).get("seq") or 0)
            await asyncio.to_thread(self.dispatcher.check_otp, request_hash, service, seq)
        return public_view(answer.record or {})

    async def submit_input(self, caller: Caller, request_hash: str, prompt_id: Any, raw_value: Any) -> dict[str, Any]:
        """Hand the answer to the prompt ``prompt_id`` to the bot. An answer to a code prompt
        (or, while no other prompt is open, one typed before the bot asks) is the code."""
        settings = self.settings
        record = await self.visible(caller, request_hash)
        status = record.get("status")
        prompt = prompt_in(record)
        # The code's prompt is named "code" unless the bot asked for it with input_required.
        code_id = prompt.id if prompt is not None and prompt.kind == "code" else "code"
        if status != Status.WAITING_INPUT.value and prompt_id == code_id:
            return await self.submit_otp(caller, request_hash, raw_value)
        if prompt is None or prompt.id != prompt_id:
            raise Conflict("This request is not waiting for that answer.", code="not_waiting_for_input")
        try:
            value = prompt.answer(raw_value)
        except ProtocolError as exc:
            raise ValidationFailed("The answer is not valid.", fields={"value": str(exc)}) from None
        service = get_service(str(record.get("service_slug")))
        answer = await self.store.submit_input(
            request_hash,
            prompt.id,
            value,
            answer_ttl=settings.otp_code_ttl,
            max_attempts=settings.otp_max_attempts,
            heartbeat=service.limits(settings.time_scale).heartbeat,
        )
        del value
        self._refuse_unless_taken(answer.outcome, INPUT_REFUSALS)
        seq = int((answer.record or {}).get("seq") or 0)
        await asyncio.to_thread(self.dispatcher.check_input, request_hash, service, seq)
        return public_view(answer.record or {})

    def _refuse_unless_taken(self, outcome: str, refusals: Refusals) -> None:
        """The error for an answer the submit script did not take (``accepted``/``early`` pass)."""
        if outcome == "missing":
            raise NotFound()
        if outcome == "exhausted":
            raise RateLimited(refusals.exhausted[1], retry_after=self.settings.request_ttl, code=refusals.exhausted[0])
        if outcome == "busy":
            raise Conflict(refusals.busy[1], code=refusals.busy[0])
        if outcome == "conflict":
            raise Conflict(refusals.conflict[1], code=refusals.conflict[0])
        if outcome == "expired":
            raise Conflict("The time to answer has run out.", code="prompt_expired")

    async def resend_otp(self, caller: Caller, request_hash: str) -> dict[str, Any]:
        """Ask the bot for a new code (at most every ``otp_resend_interval``, ``otp_max_resends`` times)."""
        settings = self.settings
        record = await self.visible(caller, request_hash)
        service = get_service(str(record.get("service_slug")))
        answer = await self.store.request_resend(
            request_hash, interval=settings.otp_resend_interval, max_resends=settings.otp_max_resends
        )
        if answer.outcome == "missing":
            raise NotFound()
        if answer.outcome == "too_early":
            raise RateLimited(
                "A new code can be sent a little later.",
                retry_after=float(answer.detail or 1),
                code="resend_too_early",
            )
        if answer.outcome == "exhausted":
            raise RateLimited(
                "No more codes can be sent for this request.", retry_after=settings.request_ttl, code="resend_exhausted"
            )
        if answer.outcome == "conflict":
            raise Conflict("This request is not waiting for a code.", code="not_waiting_for_otp")
        await asyncio.to_thread(self.dispatcher.resend_otp, request_hash, service, int(answer.detail or 1))
        return public_view(answer.record or {})

    async def cancel(self, caller: Caller, request_hash: str) -> dict[str, Any]:
        """Cancel a request not yet finished; the bot is told if it had started."""
        await self.visible(caller, request_hash)
        caller.check_may_cancel()
        result = await self.lifecycle.cancel(request_hash)
        if result.outcome == "missing":
            raise NotFound()
        if not result.applied:
            raise Conflict("This request has already finished.", code="already_finished")
        tell_bot = result.previous_status != Status.PENDING.value
        await asyncio.to_thread(self.dispatcher.cancel, request_hash, tell_bot=tell_bot)
        return public_view(result.record or {})
