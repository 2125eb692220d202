"""The RQ jobs: one per phase of a request, each carrying only the request hash.

- ``run_request``: mark the record processing, call the bot's ``/run``, map its answer.
- ``check_otp``: read the submitted code once (GETDEL) and relay it to the bot.
- ``check_input``: the same for the answer to another prompt (captcha, choice, ...).
- ``resend_otp``: ask the bot for a new code.
- ``cancel_bot``: tell the bot to stop.

Transport failures raise, so RQ's ``Retry`` (with growing intervals) takes
over for phases that are safe to repeat; ``on_job_failure`` tells the person
"retrying" or, after the last attempt, fails the request with a message a
person understands.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from types import TracebackType
from typing import Any

from redis import Redis as SyncRedis
from rq import get_current_job
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.timeouts import JobTimeoutException

from jobs.botclient import BOT_CALL_FAILED, BotRetryableError, BotTimeout, BotUnavailable
from jobs.context import JobContext, run_job, settings
from jobs.stats import record_job
from server.domain.catalog import Service, find_service
from server.domain.errors import ProtocolError
from server.domain.messages import text as reason
from server.domain.prompts import prompt_in
from server.domain.protocol import Accepted, BotAnswer, BotFailure, NeedsOtp, OtpPrompt
from server.domain.status import Status
from server.infra.logs import short
from server.queue.dispatch import phase_of, request_of
from server.record import Keys, is_terminal, private_view

log = logging.getLogger("longrun.jobs")


PhaseWork = Callable[[JobContext, str], Coroutine[Any, Any, None]]


def phase(work: PhaseWork) -> Callable[..., None]:
    """The RQ job function of one phase: runs ``work(ctx, hash)`` for the request its job id
    names, on the process's event loop (the worker counts the job as it ends: successes in
    ``LongrunWorker.handle_job_success``, failures in :func:`on_job_failure`)."""

    @functools.wraps(work)
    def job_function(*args: str) -> None:
        job = get_current_job()
        h = str(args[0]) if args else request_of(job, settings().key_prefix) if job else ""
        run_job(lambda ctx: work(ctx, h))

    return job_function


def _attempt() -> tuple[int, int]:
    """(this attempt, all attempts) of the current job under its Retry policy."""
    job = get_current_job()
    total = len(settings().retry_intervals) + 1
    if job is None or job.retries_left is None:
        return 1, total
    return total - int(job.retries_left), total


def _time_left(record: dict[str, Any], service: Service) -> float:
    deadline = private_view(record).get("deadline")
    if isinstance(deadline, int | float):
        return float(deadline) - time.time()
    return service.limits(settings().time_scale).deadline


async def _load(ctx: JobContext, h: str) -> tuple[dict[str, Any], Service] | None:
    rec = await ctx.store.get(h)
    if rec is None:
        log.info("request %s expired before its job ran", short(h))
        return None
    if is_terminal(rec.get("status")):
        return None
    service = find_service(str(rec.get("service_slug", "")))
    if service is None:
        await ctx.life.fail(h, reason("service_gone"))
        return None
    return rec, service


async def _timed_out(ctx: JobContext, h: str, service: Service) -> None:
    await ctx.life.fail(h, reason("overdue"))
    try:
        await ctx.bot.cancel(service.slug, h)
    except BOT_CALL_FAILED:
        log.warning("could not tell the bot to cancel %s", short(h))


async def _call_bot(
    ctx: JobContext, h: str, service: Service, call: Awaitable[BotAnswer], *, unavailable: str | None = None
) -> BotAnswer | None:
    """The bot's answer to ``call``, or None when the call failed and the request is settled
    here: out of time (failed, the bot told to cancel), an unreadable answer (failed), the bot
    out of reach (failed with ``unavailable``; without it the error is raised, and RQ's Retry
    takes over)."""
    try:
        return await call
    except BotTimeout:
        await _timed_out(ctx, h, service)
    except BotUnavailable:
        if unavailable is None:
            raise
        await ctx.life.fail(h, unavailable)
    except ProtocolError as exc:
        log.warning("bot answer for %s unreadable: %s", short(h), exc)
        await ctx.life.fail(h, reason("bad_answer"))
    return None


# --------------------------------------------------------------------------- run


def _run_key(h: str, rec: dict[str, Any]) -> str:
    """The idempotency key of the bot call: the same for every attempt of a run (a retried call
    joins the first), a new one after an operator's retry (which asks the bot to act again)."""
    revived = private_view(rec).get("revived")
    return f"{h}:run" if not revived else f"{h}:run:{revived}"


@phase
async def run_request(ctx: JobContext, h: str) -> None:
    attempt, total = _attempt()
    loaded = await _load(ctx, h)
    if loaded is None:
        return
    rec, service = loaded
    started = await ctx.life.start(h, service, attempt=attempt, max_attempts=total)
    if not started.applied:
        return
    # The record read before the start serves unless it changed meanwhile (a code typed at
    # that moment moves the deadline on by the time spent waiting): the start itself sets a
    # deadline only on a first attempt, the service's whole deadline from now (what
    # _time_left gives for a record without one), and never touches an operator's retries.
    if started.previous_status != rec.get("status"):
        rec = await ctx.store.get(h) or rec
    left = _time_left(rec, service)
    if left <= 0:
        await _timed_out(ctx, h, service)
        return
    log.info("run %s on %s (attempt %d of %d)", short(h), service.slug, attempt, total)
    answer = await _call_bot(
        ctx,
        h,
        service,
        ctx.bot.run(service.slug, h, rec.get("request_data") or {}, idempotency_key=_run_key(h, rec), timeout=left),
    )
    if answer is None:
        return
    result = await ctx.life.apply_answer(h, answer, service)
    if result is None:
        assert isinstance(answer, BotFailure)
        raise BotRetryableError(answer.error)


# --------------------------------------------------------------------------- OTP


@phase
async def check_otp(ctx: JobContext, h: str) -> None:
    loaded = await _load(ctx, h)
    if loaded is None:
        return
    rec, service = loaded
    code = await ctx.store.take_otp(h)
    if code is None:
        # The code outlived its key (a very slow queue): ask the person again.
        prompt = _prompt_of(rec, error=reason("otp_expired_unchecked"))
        await ctx.life.ask_otp(h, prompt, service)
        return
    log.info("relaying a code for %s", short(h))
    # Asked with input_required (kind code): the bot hears the answer both ways.
    asked_as = private_view(rec).get("code_prompt")
    relayed = {"id": asked_as, "value": code} if isinstance(asked_as, str) and asked_as else None
    try:
        await _relay(ctx, h, rec, service, "otp", otp=code, answer=relayed)
    finally:
        del code, relayed


@phase
async def check_input(ctx: JobContext, h: str) -> None:
    loaded = await _load(ctx, h)
    if loaded is None:
        return
    rec, service = loaded
    answer = await ctx.store.take_input(h)
    if answer is None:
        # The answer outlived its key (a very slow queue): ask the person again, with the
        # captcha's picture the record set aside once answered.
        shown = rec.get("input_request")
        picture = private_view(rec).get("input_image")
        if isinstance(shown, dict) and picture and not shown.get("image"):
            shown = {**shown, "image": picture}
        prompt = prompt_in({"input_request": shown})
        if prompt is None:
            await ctx.life.fail(h, reason("input_expired"))
        else:
            await ctx.life.ask_input(h, replace(prompt, error=reason("input_expired_unchecked")), service)
        return
    log.info("relaying an answer for %s", short(h))
    try:
        await _relay(ctx, h, rec, service, "input", answer=answer)
    finally:
        del answer


async def _relay(
    ctx: JobContext,
    h: str,
    rec: dict[str, Any],
    service: Service,
    what: str,
    *,
    otp: str | None = None,
    answer: dict[str, Any] | None = None,
) -> None:
    """Hand the person's code or answer to the bot's ``/run`` and apply what it says; ``what``
    (otp, input) names the idempotency key and the messages when that fails."""
    answered = await _call_bot(
        ctx,
        h,
        service,
        ctx.bot.run(
            service.slug,
            h,
            rec.get("request_data") or {},
            otp=otp,
            input=answer,
            idempotency_key=f"{h}:{what}:{int(rec.get('seq') or 0)}",
            timeout=max(1.0, _time_left(rec, service)),
        ),
        unavailable=reason(f"{what}_check_unreachable"),
    )
    if answered is None:
        return
    if isinstance(answered, BotFailure) and answered.retryable:
        await ctx.life.fail(h, reason(f"{what}_check_failed", error=answered.error))
        return
    await ctx.life.apply_answer(h, answered, service)


def _prompt_of(rec: dict[str, Any], *, error: str | None = None) -> OtpPrompt:
    od = rec.get("otp_data") if isinstance(rec.get("otp_data"), dict) else {}
    assert isinstance(od, dict)
    return OtpPrompt(
        length=int(od.get("length") or 6),
        destination_hint=str(od.get("destination_hint") or ""),
        expires_in=120,
        attempts_left=od.get("attempts_left") if isinstance(od.get("attempts_left"), int) else None,
        error=error,
    )


@phase
async def resend_otp(ctx: JobContext, h: str) -> None:
    loaded = await _load(ctx, h)
    if loaded is None:
        return
    rec, service = loaded
    if rec.get("status") != Status.WAITING_OTP.value:
        return
    job = get_current_job()
    answer = await ctx.bot.resend_otp(service.slug, h, idempotency_key=f"{h}:{job.id if job else 'resend'}", timeout=30)
    # Only while still waiting: a code the person typed meanwhile is being checked, and a
    # late answer to the resend must not reopen the prompt under it.
    still_waiting = [Status.WAITING_OTP.value]
    if isinstance(answer, NeedsOtp):
        await ctx.life.ask_otp(h, answer.otp, service, expect=still_waiting)
    elif isinstance(answer, Accepted):
        await ctx.life.ask_otp(h, _prompt_of(rec), service, expect=still_waiting)
    elif isinstance(answer, BotFailure):
        if answer.retryable:
            raise BotRetryableError(answer.error)
        prompt = _prompt_of(rec, error=reason("resend_failed", error=answer.error))
        await ctx.life.ask_otp(h, prompt, service, expect=still_waiting)


# --------------------------------------------------------------------------- cancel


@phase
async def cancel_bot(ctx: JobContext, h: str) -> None:
    rec = await ctx.store.get(h)
    service = find_service(str((rec or {}).get("service_slug", "")))
    if service is None:
        return
    await ctx.bot.cancel(service.slug, h)
    log.info("told the bot to cancel %s", short(h))


# --------------------------------------------------------------------------- failures

_FINAL_MESSAGES: dict[type[BaseException], str] = {
    BotUnavailable: reason("bot_unavailable"),
    BotRetryableError: reason("bot_gave_up"),
    AbandonedJobError: reason("worker_lost"),
    JobTimeoutException: reason("overdue"),
}


_BOT_MAY_BE_AT_WORK = (AbandonedJobError, JobTimeoutException)


def on_job_failure(
    job: Job,
    connection: SyncRedis,
    exc_type: type[BaseException] | None,
    exc_value: BaseException | None,
    traceback: TracebackType | None,
) -> None:
    """RQ failure callback, for raised errors and for jobs abandoned by a dead worker.

    Runs before RQ decides to retry: with retries left the person sees "retrying
    (attempt n of m)", otherwise the request fails with a message for people.
    """
    h = request_of(job, settings().key_prefix)
    if not h:
        return
    will_retry = bool(job.retries_left)
    total = len(settings().retry_intervals) + 1
    next_attempt = total - int(job.retries_left or 0) + 1
    text = next(
        (m for t, m in _FINAL_MESSAGES.items() if exc_type is not None and issubclass(exc_type, t)),
        reason("internal"),
    )
    if exc_type is BotRetryableError and exc_value is not None and str(exc_value):
        text = reason("bot_gave_up_because", error=exc_value)
    record_job(connection, Keys(settings().key_prefix), job, "retried" if will_retry else "failed")
    log.warning(
        "job %s for %s failed (%s); %s",
        phase_of(job.id),
        short(h),
        exc_type.__name__ if exc_type else "?",
        "retrying" if will_retry else "giving up",
    )
    # Only when the bot may still be at work on it (its worker died, or its call outlived the
    # job): a bot that answered with an error, or could not be reached, has nothing to stop.
    tell_bot = phase_of(job.id) != "cancel" and exc_type is not None and issubclass(exc_type, _BOT_MAY_BE_AT_WORK)
    run_job(lambda ctx: _after_failure(ctx, h, will_retry, next_attempt, total, text, tell_bot=tell_bot))


async def _after_failure(
    ctx: JobContext, h: str, will_retry: bool, attempt: int, total: int, text: str, *, tell_bot: bool
) -> None:
    if will_retry:
        await ctx.life.retrying(h, attempt=attempt, max_attempts=total)
        return
    failed = await ctx.life.fail(h, text)
    if failed.applied and tell_bot:
        # The bot may still be at work on it (a worker died mid-call, a code check hung):
        # tell it to stop, as the sweeper does for a request it fails.
        await asyncio.to_thread(ctx.dispatcher.cancel, h, tell_bot=True)
