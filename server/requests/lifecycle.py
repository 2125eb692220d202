"""What each event in a request's life does to its record.

One owner for the meaning of "started", "the bot asked for a code",
"completed", "failed", "cancelled": the web server (signed bot events,
cancel), the RQ jobs (bot answers), the bot SDK, the sweeper and the
operator's retry all call these, and each is one atomic script of
:class:`RecordStore` (``update``, ``revive``, ``adopt_terminal``).

Messages carry a ``message_key`` next to the English ``current_message`` so
that pages can show them in the person's language.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.domain.catalog import Service, find_service
from server.domain.messages import MESSAGES, message
from server.domain.prompts import Prompt
from server.domain.protocol import (
    Accepted,
    BotAnswer,
    BotEvent,
    BotFailure,
    CompletedEvent,
    FailedEvent,
    InputRequiredEvent,
    NeedsInput,
    NeedsOtp,
    OtpPrompt,
    OtpRequiredEvent,
    ProgressEvent,
    Success,
)
from server.domain.status import Status
from server.queue.dispatch import Dispatcher
from server.record import RecordStore, ScriptAnswer, UpdateResult
from server.settings import Settings

#: called with (hash, record seq) when a code the person typed early is ready for the bot
OtpReadyHook = Callable[[str, int], Awaitable[None]]


def progress_patch(progress: int, step: str | None = None, text: str | None = None) -> dict[str, Any]:
    """The change a progress report makes to a record (``RecordStore.update``'s patch)."""
    patch: dict[str, Any] = {"progress": progress, "retrying": False}
    if step is not None:
        patch["step"] = step
    if text is not None:
        patch["current_message"] = text
        patch["message_key"] = None
    return patch


@dataclass
class Lifecycle:
    store: RecordStore
    #: defaults are the settings' (processes build it with :meth:`for_settings`)
    otp_max_attempts: int = Settings.otp_max_attempts
    otp_resend_interval: int = Settings.otp_resend_interval
    on_otp_ready: OtpReadyHook | None = None
    time_scale: float = 1.0

    @classmethod
    def for_settings(cls, store: RecordStore, settings: Settings, dispatcher: Dispatcher) -> Lifecycle:
        """The lifecycle every process uses: its OTP rules, and early codes handed to a worker."""

        async def otp_ready(h: str, seq: int) -> None:
            rec = await store.get(h)
            service = find_service(str((rec or {}).get("service_slug", "")))
            if service is not None:
                await asyncio.to_thread(dispatcher.check_otp, h, service, seq)

        return cls(
            store,
            otp_max_attempts=settings.otp_max_attempts,
            otp_resend_interval=settings.otp_resend_interval,
            on_otp_ready=otp_ready,
            time_scale=settings.time_scale,
        )

    async def start(self, h: str, service: Service, *, attempt: int = 1, max_attempts: int = 1) -> UpdateResult:
        """pending (or a retried processing) → processing, with the service's deadline and heartbeat."""
        note = message("retrying", attempt=attempt, max=max_attempts) if attempt > 1 else message("starting")
        patch = {"status": Status.PROCESSING.value, "attempt": attempt, **note}
        limits = service.limits(self.time_scale)
        return await self.store.update(
            h,
            patch,
            expect=[Status.PENDING.value, Status.PROCESSING.value],
            deadline=limits.deadline,
            heartbeat=limits.heartbeat,
        )

    async def retrying(self, h: str, *, attempt: int, max_attempts: int) -> UpdateResult:
        """Tell the person we lost the service for a moment and will try again."""
        patch = {"attempt": attempt, "retrying": True, **message("retrying", attempt=attempt, max=max_attempts)}
        return await self.store.update(h, patch)

    async def progress(self, h: str, progress: int, step: str | None = None, text: str | None = None) -> UpdateResult:
        return await self.store.update(h, progress_patch(progress, step, text))

    async def ask_otp(
        self,
        h: str,
        prompt: OtpPrompt,
        service: Service | None = None,
        *,
        expect: Sequence[str] | None = None,
        prompt_id: str | None = None,
    ) -> UpdateResult:
        """The bot sent a code to the person's phone and waits for it; fails the request
        instead when the person has no submission left (``otp_max_attempts``). The record shows
        the prompt twice: ``otp_data`` as always, and ``input_request`` of kind ``code``
        (``prompt_id`` when the bot asked with ``input_required``, whose answer it also gets
        as ``input``)."""
        otp_data: dict[str, Any] = {
            "length": prompt.length,
            "destination_hint": prompt.destination_hint,
            "error": prompt.error,
        }
        if prompt.attempts_left is not None:
            otp_data["attempts_left"] = prompt.attempts_left
        note = message("otp_wrong") if prompt.error else message("otp", destination=prompt.destination_hint)
        patch: dict[str, Any] = {
            "status": Status.WAITING_OTP.value,
            "otp_data": otp_data,
            "input_request": Prompt.of_otp(prompt, prompt_id or "code").serialize(),
            **note,
        }
        if service is not None and any(s.name == "otp" for s in service.steps):
            patch["step"] = "otp"
        # With every code used up the ask is the end: the script fails the request instead of
        # waiting (unless a code the person typed early is still to be checked).
        exhausted = {"status": Status.FAILED.value, "error": MESSAGES["otp_exhausted"], "retrying": False}
        result = await self.store.update(
            h,
            patch,
            otp={
                "expires_in": prompt.expires_in,
                "resend_in": self.otp_resend_interval,
                "max_attempts": self.otp_max_attempts,
                "exhausted": {**exhausted, **message("otp_exhausted")},
            },
            checking=MESSAGES["checking"],
            expect=expect,
            private={"code_prompt": prompt_id or ""},
        )
        if result.applied and result.otp_ready and self.on_otp_ready is not None:
            await self.on_otp_ready(h, int((result.record or {}).get("seq") or 0))
        return result

    async def ask_input(
        self, h: str, prompt: Prompt, service: Service | None = None, *, expect: Sequence[str] | None = None
    ) -> UpdateResult:
        """The bot asks the person something (a captcha, a choice, ...) and waits for the answer;
        a ``code`` prompt is the OTP (:meth:`ask_otp`). Answers are counted per prompt id
        (``otp_max_attempts`` each): asked again after the last, the request fails instead."""
        if prompt.kind == "code":
            return await self.ask_otp(h, prompt.as_otp(), service, expect=expect, prompt_id=prompt.id)
        note = message("input_wrong") if prompt.error else message(f"input_{prompt.kind}")
        patch: dict[str, Any] = {"status": Status.WAITING_INPUT.value, "input_request": prompt.serialize(), **note}
        exhausted = {"status": Status.FAILED.value, "error": MESSAGES["input_exhausted"], "retrying": False}
        return await self.store.update(
            h,
            patch,
            input={
                "id": prompt.id,
                "expires_in": prompt.expires_in,
                "max_attempts": self.otp_max_attempts,
                "exhausted": {**exhausted, **message("input_exhausted")},
            },
            expect=expect,
        )

    async def complete(self, h: str, result: Mapping[str, Any]) -> UpdateResult:
        patch = {"status": Status.COMPLETED.value, "result_data": dict(result), "retrying": False}
        return await self.store.update(h, {**patch, **message("done")})

    async def fail(
        self, h: str, error: str, *, sweep: bool = False, expect: Sequence[str] | None = None
    ) -> UpdateResult:
        """Fail the request; with ``sweep`` only if it is really overdue, with ``expect`` only
        from one of those statuses (both checked inside the script)."""
        patch = {"status": Status.FAILED.value, "error": error[:500], "retrying": False}
        return await self.store.update(h, {**patch, **message("failed")}, sweep=sweep, expect=expect)

    async def cancel(self, h: str) -> UpdateResult:
        patch = {"status": Status.CANCELLED.value, "retrying": False}
        return await self.store.update(h, {**patch, **message("cancelled")})

    async def working(self, h: str) -> UpdateResult:
        """The bot took the request and goes on by itself (it answered 202): said only while the
        request is processing, never over a prompt the bot has asked meanwhile (a fast bot's
        event may come before its 202 is read)."""
        return await self.store.update(h, message("working"), expect=[Status.PROCESSING.value])

    async def revive(self, h: str) -> ScriptAnswer:
        """failed → pending, for an operator's retry of the request's failed job."""
        return await self.store.revive(h)

    async def keepalive(self, h: str) -> UpdateResult:
        """Keep a request that is still queued from expiring (the sweeper, while it waits)."""
        return await self.store.update(h, {}, keepalive=True)

    async def adopt(self, h: str) -> str:
        """Take over a request an old-style bot finished by itself (a plain SETEX of a terminal
        status): archived, and out of the in-flight index and the counts. ``adopted`` or why not."""
        return await self.store.adopt_terminal(h)

    async def apply_event(self, h: str, event: BotEvent) -> UpdateResult:
        """A bot event (SDK or signed HTTP) applied to the record."""
        if isinstance(event, ProgressEvent):
            return await self.progress(h, event.progress, event.step, event.message)
        if isinstance(event, OtpRequiredEvent):
            rec = await self.store.get(h)
            service = find_service(str((rec or {}).get("service_slug", "")))
            return await self.ask_otp(h, event.otp, service)
        if isinstance(event, InputRequiredEvent):
            rec = await self.store.get(h)
            return await self.ask_input(h, event.prompt, find_service(str((rec or {}).get("service_slug", ""))))
        if isinstance(event, CompletedEvent):
            return await self.complete(h, event.result)
        if isinstance(event, FailedEvent):
            return await self.fail(h, event.error)
        raise TypeError(f"not a bot event: {event!r}")

    async def apply_answer(self, h: str, answer: BotAnswer, service: Service) -> UpdateResult | None:
        """A bot's answer to ``/run``; a retryable failure is the caller's to retry (returns None)."""
        if isinstance(answer, Success):
            return await self.complete(h, answer.result)
        if isinstance(answer, NeedsOtp):
            return await self.ask_otp(h, answer.otp, service)
        if isinstance(answer, NeedsInput):
            return await self.ask_input(h, answer.prompt, service)
        if isinstance(answer, BotFailure):
            if answer.retryable:
                return None
            return await self.fail(h, answer.error)
        if isinstance(answer, Accepted):
            return await self.working(h)
        raise TypeError(f"not a bot answer: {answer!r}")
