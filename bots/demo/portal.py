"""The demo portal's memory and pacing: sessions, the outbox of texted codes, progress reports.

What every scenario shares: a :class:`Session` per request, steps that sleep (scaled by
``BOT_SPEED``) and report progress, texting a one-time code into the outbox the tests and
the demo page read, and reporting a 202 job's outcome until it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bots.demo import captcha
from bots.sdk import Reporter
from server.domain.protocol import BotEvent, CompletedEvent, FailedEvent, OtpPrompt, ProgressEvent
from server.infra.backoff import Backoff

log = logging.getLogger("longrun.demo")

#: (HTTP status, JSON body): what a call to the portal answers
Answer = tuple[int, dict[str, Any]]
MAX_SESSIONS = 20_000
OTP_LENGTH = 6
OTP_TTL = 120
BOT_ATTEMPTS = 5
#: seconds a finished 202 job keeps trying to report its outcome
FINAL_REPORT_PATIENCE = 60.0


class Cancelled(Exception):
    pass


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def mask_phone(mobile: str) -> str:
    digits = "".join(c for c in mobile if c.isdigit())
    if len(digits) == 11 and digits.startswith("0"):
        return f"+98 {digits[1:4]} *** **{digits[-2:]}"
    return "*** **" + digits[-2:]


def bounded_put(d: OrderedDict[str, Any], key: str, value: Any) -> None:
    """Store ``value`` as the newest entry, dropping the oldest past MAX_SESSIONS."""
    d[key] = value
    d.move_to_end(key)
    while len(d) > MAX_SESSIONS:
        d.popitem(last=False)


@dataclass
class Session:
    """What the demo portal remembers about one request."""

    slug: str
    data: dict[str, Any]
    code: str | None = None
    code_expires: float = 0.0
    attempts_left: int = BOT_ATTEMPTS
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    #: real seconds between texting a code and saying so (a slow network: the code can
    #: reach the person before Longrun hears that the bot asked for it)
    answer_delay: float = 0.0
    otp_ttl: int = OTP_TTL
    fixed_code: str = ""
    #: the captcha shown and not yet solved (its answer), and the pictures left before a lockout
    captcha: str | None = None
    captcha_tries: int = BOT_ATTEMPTS
    #: the plates offered when the national id has more than one vehicle
    vehicles: tuple[str, ...] = ()


class Portal:
    """The sessions and outbox of the demo portal, and how its scenarios pace and report."""

    def __init__(self, speed: float, reporter: Reporter, *, prompts: bool = False):
        self.speed = max(0.001, speed)
        self.reporter = reporter
        #: DEMO_PROMPTS: ask the person more than the code (a captcha, which vehicle)
        self.prompts = prompts
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.outbox: OrderedDict[str, list[dict[str, str]]] = OrderedDict()
        self.background: set[asyncio.Task[None]] = set()

    def start(self, session: Session, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` (a coroutine) in the background as the session's task."""
        session.task = asyncio.create_task(work)
        self.background.add(session.task)
        session.task.add_done_callback(self.background.discard)

    async def pause(self, seconds: float, session: Session) -> None:
        """Sleep (scaled by BOT_SPEED) unless the request is cancelled meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds / self.speed):
                await session.cancelled.wait()
        if session.cancelled.is_set():
            raise Cancelled()

    async def tell(self, h: str, event: BotEvent, session: Session) -> None:
        try:
            applied = await self.reporter.report(h, event)
        except Exception as exc:  # progress is best-effort; the answer still counts
            log.warning("report for %s failed: %s", h[:12], exc)
            return
        if not applied and isinstance(event, ProgressEvent):
            # Longrun ignored us: the request was cancelled or has expired.
            session.cancelled.set()
            raise Cancelled()

    async def step(
        self, h: str, session: Session, name: str, start: int, end: int, seconds: float, message: str
    ) -> None:
        """A step of the portal, reporting progress along the way: about once a second of its
        time at ``BOT_SPEED``, at most 20 times, and at least when it starts and ends."""
        ticks = max(1, min(20, round(seconds / self.speed)))
        await self.tell(h, ProgressEvent(start, name, message), session)
        for i in range(1, ticks + 1):
            await self.pause(seconds / ticks, session)
            await self.tell(h, ProgressEvent(start + (end - start) * i // ticks, name, message), session)

    def text_code(self, h: str, session: Session) -> OtpPrompt:
        session.code = session.fixed_code or f"{secrets.randbelow(10**OTP_LENGTH):0{OTP_LENGTH}d}"
        session.code_expires = asyncio.get_running_loop().time() + session.otp_ttl
        to = mask_phone(str(session.data.get("mobile", "")))
        message = {
            "to": to,
            "text": f"Your credit bureau login code is {session.code}. Do not share it.",
            "code": session.code,
            "sent_at": now_iso(),
        }
        self.outbox.setdefault(h, []).append(message)
        bounded_put(self.outbox, h, self.outbox[h][-10:])
        return OtpPrompt(
            length=OTP_LENGTH, destination_hint=to, expires_in=session.otp_ttl, attempts_left=session.attempts_left
        )

    def show_captcha(self, session: Session, error: str | None = None) -> dict[str, Any]:
        """A new captcha for the person (its answer kept in the session, and in ``captchas`` for
        ``GET /demo/captcha``); the ``input`` of an ``input_required`` answer."""
        session.captcha = captcha.new_answer()
        prompt: dict[str, Any] = {
            "id": "captcha",
            "kind": "captcha",
            "label": "The credit bureau asks you to show you are a person.",
            "image": captcha.data_url(captcha.draw(session.captcha)),
            "length": captcha.LENGTH,
            "expires_in": 180,
            "attempts_left": session.captcha_tries,
        }
        if error:
            prompt["error"] = error
        return prompt

    async def final(self, h: str, event: CompletedEvent | FailedEvent) -> None:
        """The outcome of a 202 job must arrive: retry the report, backing off up to 4 s
        between tries, for up to FINAL_REPORT_PATIENCE (a Redis restart under load, AOF
        reload included, outlasted the five tries in 15 s this used to make)."""
        give_up_at = time.monotonic() + FINAL_REPORT_PATIENCE
        backoff = Backoff(0.5, 4.0)
        while True:
            try:
                await self.reporter.report(h, event)
                return
            except Exception as exc:
                if time.monotonic() + backoff.delay > give_up_at:
                    log.error("final report for %s failed (%s); giving up", h[:12], exc)
                    return
                log.warning("final report for %s failed (%s); retrying in %.1f s", h[:12], exc, backoff.delay)
                await asyncio.sleep(next(backoff))
