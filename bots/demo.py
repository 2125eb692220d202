"""Demo bot API (``python -m bots.demo``, port 9999): three services that behave like real bots.

- ``credit-score-rating``: logs in, solves a captcha, texts a one-time code to
  the person (the demo outbox), checks it (wrong codes cost attempts, resend
  works) and fetches a report — about a minute at real speed.
- ``vehicle-fines``: four steps, no code.
- ``video-generation``: long; answers 202 at once and finishes through the SDK.

``BOT_SPEED`` divides every delay (tests run at 50-200×). Calls carrying the
same ``Idempotency-Key`` share one execution, so a retried call never makes
the bot act twice. ``POST /demo/faults`` makes the next matching calls fail
in a chosen way (down, hanging, silent…) so that failure handling can be seen
and tested over real HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
from aiohttp import web

from bots.sdk import Reporter, reporter_for
from server.domain.protocol import BotEvent, CompletedEvent, FailedEvent, OtpPrompt, ProgressEvent
from server.infra import logs
from server.settings import Settings

log = logging.getLogger("longrun.demo")

Answer = tuple[int, dict[str, Any]]
MAX_SESSIONS = 20_000
OTP_LENGTH = 6
OTP_TTL = 120
BOT_ATTEMPTS = 5
#: seconds a finished 202 job keeps trying to report its outcome
FINAL_REPORT_PATIENCE = 60.0
FAULT_MODES = (
    "unavailable",
    "retryable",
    "fatal",
    "hang",
    "silent",
    "stall",
    "busy",
    "late_otp",
    "short_otp",
    "fixed_code",
)


class Cancelled(Exception):
    pass


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def mask_phone(mobile: str) -> str:
    digits = "".join(c for c in mobile if c.isdigit())
    if len(digits) == 11 and digits.startswith("0"):
        return f"+98 {digits[1:4]} *** **{digits[-2:]}"
    return "*** **" + digits[-2:]


def seeded(text: str, lo: int, hi: int) -> int:
    h = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
    return lo + h % (hi - lo + 1)


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


@dataclass
class Fault:
    mode: str
    count: int
    service: str | None = None
    match: dict[str, Any] = field(default_factory=dict)
    phase: str = "run"
    #: fixed_code: the code the portal texts (tests need to know it in advance)
    code: str = ""

    def applies(self, slug: str, data: dict[str, Any], phase: str) -> bool:
        if self.count <= 0 or (self.service and self.service != slug):
            return False
        if self.phase != "any" and self.phase != phase:
            return False
        return all(data.get(k) == v for k, v in self.match.items())


class DemoBots:
    def __init__(self, settings: Settings, reporter: Reporter):
        self.speed = max(0.001, settings.bot_speed)
        self.reporter = reporter
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.outbox: OrderedDict[str, list[dict[str, str]]] = OrderedDict()
        self.answers: OrderedDict[str, asyncio.Future[Answer]] = OrderedDict()
        self.calls: OrderedDict[str, Counter[str]] = OrderedDict()
        self.faults: list[Fault] = []
        self.background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _bounded_put(d: OrderedDict[str, Any], key: str, value: Any) -> None:
        d[key] = value
        d.move_to_end(key)
        while len(d) > MAX_SESSIONS:
            d.popitem(last=False)

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
        self._bounded_put(self.outbox, h, self.outbox[h][-10:])
        return OtpPrompt(
            length=OTP_LENGTH, destination_hint=to, expires_in=session.otp_ttl, attempts_left=session.attempts_left
        )

    # ------------------------------------------------------------------ services

    async def credit_score(self, h: str, session: Session, otp: str | None) -> Answer:
        if otp is None:
            await self.step(h, session, "login", 2, 20, 12, "Logging in to the credit bureau")
            await self.step(h, session, "captcha", 20, 45, 16, "Solving the captcha")
            prompt = self.text_code(h, session)
            if session.answer_delay:
                await asyncio.sleep(session.answer_delay)
            return 200, {"status": "otp_required", "otp": prompt.serialize()}
        if session.code is None:
            return 200, {"status": "error", "error": "The portal session was lost; start again.", "retryable": False}
        if asyncio.get_running_loop().time() > session.code_expires:
            session.code = None
            prompt = self.text_code(h, session)
            prompt = OtpPrompt(**{**prompt.__dict__, "error": "The code expired; we sent a new one."})
            return 200, {"status": "otp_required", "otp": prompt.serialize()}
        await self.pause(1.5, session)
        if not secrets.compare_digest(otp, session.code):
            session.attempts_left -= 1
            if session.attempts_left <= 0:
                return 200, {
                    "status": "error",
                    "error": "Too many wrong codes: the portal locked the login.",
                    "retryable": False,
                }
            prompt = OtpPrompt(
                length=OTP_LENGTH,
                destination_hint=mask_phone(str(session.data.get("mobile", ""))),
                expires_in=max(10, int(session.code_expires - asyncio.get_running_loop().time())),
                attempts_left=session.attempts_left,
                error="The code is not correct.",
            )
            return 200, {"status": "otp_required", "otp": prompt.serialize()}
        session.code = None
        await self.step(h, session, "otp", 50, 60, 4, "Code accepted")
        await self.step(h, session, "report", 60, 95, 26.5, "Fetching your credit report")
        nid = str(session.data.get("national_id", ""))
        score = seeded(nid, 300, 850)
        rating = "A" if score >= 750 else "B" if score >= 650 else "C" if score >= 550 else "D"
        return 200, {
            "status": "success",
            "result": {
                "score": score,
                "rating": rating,
                "report_id": "CR-" + secrets.token_hex(4).upper(),
                "open_loans": seeded(nid + "l", 0, 4),
                "checked_at": now_iso(),
            },
        }

    async def vehicle_fines(self, h: str, session: Session, otp: str | None) -> Answer:
        await self.step(h, session, "login", 2, 25, 5, "Logging in to the traffic police portal")
        await self.step(h, session, "search", 25, 50, 5, "Finding the vehicle")
        await self.step(h, session, "fetch", 50, 80, 6, "Fetching fines")
        await self.step(h, session, "summarize", 80, 95, 3, "Adding them up")
        plate = str(session.data.get("plate", ""))
        fines = [
            {"date": f"2026-0{1 + i}-1{i}", "place": place, "amount": seeded(plate + place, 5, 90) * 10_000}
            for i, place in enumerate(("Valiasr St.", "Hemmat Hwy", "Azadi Sq.")[: seeded(plate, 0, 3)])
        ]
        return 200, {
            "status": "success",
            "result": {"plate": plate, "fines": fines, "total": sum(f["amount"] for f in fines)},
        }

    async def video(self, h: str, session: Session, otp: str | None) -> Answer:
        async def render() -> None:
            try:
                await self.step(h, session, "queued", 1, 5, 5, "Waiting for a free renderer")
                await self.step(h, session, "storyboard", 5, 20, 20, "Drawing the storyboard")
                await self.step(h, session, "render", 20, 85, 75, "Rendering frames")
                await self.step(h, session, "encode", 85, 99, 20, "Encoding the video")
                await self.final(
                    h,
                    CompletedEvent(
                        {
                            "video_url": f"https://videos.example/{h[-10:]}.mp4",
                            "duration_seconds": session.data.get("duration_seconds", 15),
                            "prompt": session.data.get("prompt", ""),
                        }
                    ),
                )
            except Cancelled:
                pass

        session.task = asyncio.create_task(render())
        self.background.add(session.task)
        session.task.add_done_callback(self.background.discard)
        return 202, {"status": "accepted"}

    async def final(self, h: str, event: CompletedEvent | FailedEvent) -> None:
        """The outcome of a 202 job must arrive: retry the report, backing off up to 4 s
        between tries, for up to FINAL_REPORT_PATIENCE (a Redis restart under load, AOF
        reload included, outlasted the five tries in 15 s this used to make)."""
        give_up_at = time.monotonic() + FINAL_REPORT_PATIENCE
        delay = 0.5
        while True:
            try:
                await self.reporter.report(h, event)
                return
            except Exception as exc:
                if time.monotonic() + delay > give_up_at:
                    log.error("final report for %s failed (%s); giving up", h[:12], exc)
                    return
                log.warning("final report for %s failed (%s); retrying in %.1f s", h[:12], exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 4.0)

    SERVICES: ClassVar[dict[str, str]] = {
        "credit-score-rating": "credit_score",
        "vehicle-fines": "vehicle_fines",
        "video-generation": "video",
    }

    def scenario(self, slug: str) -> Callable[[str, Session, str | None], Awaitable[Answer]] | None:
        name = self.SERVICES.get(slug)
        return getattr(self, name) if name else None

    # ------------------------------------------------------------------ faults

    def take_fault(self, slug: str, data: dict[str, Any], phase: str) -> Fault | None:
        for fault in self.faults:
            if fault.applies(slug, data, phase):
                fault.count -= 1
                self.faults = [f for f in self.faults if f.count > 0]
                return fault
        return None

    async def faulty(self, fault: Fault, session: Session) -> Answer | None:
        if fault.mode == "unavailable":
            return 503, {"status": "error", "error": "The portal is down."}
        if fault.mode == "retryable":
            return 200, {"status": "error", "error": "The portal is busy; try again.", "retryable": True}
        if fault.mode == "fatal":
            return 200, {"status": "error", "error": "No record was found for this national ID.", "retryable": False}
        if fault.mode == "silent":
            return 202, {"status": "accepted"}
        if fault.mode == "hang":
            await session.cancelled.wait()
            return 200, {"status": "error", "error": "cancelled", "retryable": False}
        return None  # "stall" is handled by the scenario's caller

    # ------------------------------------------------------------------ HTTP

    async def handle_run(self, request: web.Request) -> web.Response:
        slug = request.match_info["slug"]
        scenario = self.scenario(slug)
        if scenario is None:
            return _json(404, {"status": "error", "error": f"unknown service {slug}"})
        try:
            body = orjson.loads(await request.read())
            h = str(body["requestHash"])
            data = dict(body.get("data") or {})
            otp = body.get("otp")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return _json(400, {"status": "error", "error": "expected {requestHash, data, otp?}"})
        phase = "otp" if otp is not None else "run"
        key = request.headers.get("Idempotency-Key") or f"{h}:{phase}:{secrets.token_hex(4)}"
        self.calls.setdefault(h, Counter())[key] += 1
        self._bounded_put(self.calls, h, self.calls[h])

        session = self.sessions.get(h)
        if session is None:
            session = Session(slug, data)
            self._bounded_put(self.sessions, h, session)

        fault = self.take_fault(slug, data, phase)
        if fault is not None and fault.mode in ("late_otp", "short_otp", "fixed_code"):
            # not failures: they change how the portal behaves for this request
            if fault.mode == "late_otp":
                session.answer_delay = 2.0
            elif fault.mode == "short_otp":
                session.otp_ttl = 10
            else:
                session.fixed_code = fault.code
            fault = None
        if fault is not None:
            if fault.mode in ("stall", "busy"):
                # stall: one report, then silence; busy: keeps reporting, never finishes
                await self.tell(h, ProgressEvent(3, None, "Logging in"), session)
                while fault.mode == "busy" and not session.cancelled.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            await session.cancelled.wait()
                    with contextlib.suppress(Cancelled):
                        await self.tell(h, ProgressEvent(5, None, "Still logging in"), session)
                await session.cancelled.wait()
                return _json(200, {"status": "error", "error": "cancelled", "retryable": False})
            answer = await self.faulty(fault, session)
            assert answer is not None
            return _json(*answer)

        existing = self.answers.get(key)
        if existing is not None:
            status, payload = await asyncio.shield(existing)
            return _json(status, payload)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._bounded_put(self.answers, key, future)
        try:
            answer = await scenario(h, session, None if otp is None else str(otp))
        except Cancelled:
            answer = (200, {"status": "error", "error": "cancelled", "retryable": False})
        except BaseException:
            self.answers.pop(key, None)
            future.cancel()
            raise
        if answer[1].get("retryable"):
            self.answers.pop(key, None)  # only final answers are replayed
        future.set_result(answer)
        return _json(*answer)

    async def handle_resend(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read() or b"{}")
        h = str(body.get("requestHash", ""))
        session = self.sessions.get(h)
        if session is None or session.slug != request.match_info["slug"]:
            return _json(200, {"status": "error", "error": "No login in progress.", "retryable": False})
        key = request.headers.get("Idempotency-Key", "")
        self.calls.setdefault(h, Counter())[key or "resend"] += 1
        prompt = self.text_code(h, session)
        return _json(200, {"status": "otp_required", "otp": prompt.serialize()})

    async def handle_cancel(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read() or b"{}")
        h = str(body.get("requestHash", ""))
        self.calls.setdefault(h, Counter())["cancel"] += 1
        session = self.sessions.get(h)
        if session is not None:
            session.cancelled.set()
            if session.task is not None:
                session.task.cancel()
        return _json(200, {"status": "cancelled"})

    async def handle_outbox(self, request: web.Request) -> web.Response:
        h = request.query.get("requestHash", "")
        return _json(200, {"messages": self.outbox.get(h, [])})

    async def handle_calls(self, request: web.Request) -> web.Response:
        h = request.query.get("requestHash", "")
        return _json(200, {"calls": dict(self.calls.get(h, Counter()))})

    async def handle_faults(self, request: web.Request) -> web.Response:
        if request.method == "DELETE":
            self.faults.clear()
            return _json(200, {"faults": []})
        try:
            body = orjson.loads(await request.read())
            fault = Fault(
                mode=str(body["mode"]),
                count=int(body.get("count", 1)),
                service=body.get("service"),
                match=dict(body.get("match") or {}),
                phase=str(body.get("phase", "run")),
                code=str(body.get("code", "")),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return _json(400, {"error": "expected {mode, count?, service?, match?, phase?}"})
        if fault.mode not in FAULT_MODES:
            return _json(400, {"error": f"mode must be one of {', '.join(FAULT_MODES)}"})
        self.faults.append(fault)
        return _json(201, {"faults": len(self.faults)})


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


BOTS = web.AppKey("bots", DemoBots)


def create_bot_app(settings: Settings, reporter: Reporter | None = None) -> web.Application:
    """The demo bot API; reports through ``reporter`` or the one BOT_REPORT_MODE names."""
    app = web.Application(client_max_size=256 * 1024)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            chosen = reporter if reporter is not None else await stack.enter_async_context(reporter_for(settings))
            app[BOTS] = DemoBots(settings, chosen)
            yield
            for task in list(app[BOTS].background):
                task.cancel()
            await asyncio.gather(*app[BOTS].background, return_exceptions=True)

    app.cleanup_ctx.append(lifecycle)

    def route(method: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return await getattr(request.app[BOTS], method)(request)  # type: ignore[no-any-return]

        return handler

    app.router.add_post("/services/{slug}/run", route("handle_run"))
    app.router.add_post("/services/{slug}/resend-otp", route("handle_resend"))
    app.router.add_post("/services/{slug}/cancel", route("handle_cancel"))
    app.router.add_get("/demo/outbox", route("handle_outbox"))
    app.router.add_get("/demo/calls", route("handle_calls"))
    app.router.add_post("/demo/faults", route("handle_faults"))
    app.router.add_delete("/demo/faults", route("handle_faults"))

    async def healthz(request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    app.router.add_get("/healthz", healthz)
    return app


def main() -> int:
    settings = Settings.from_env_or_exit("longrun demo bots")
    logs.configure(settings)
    web.run_app(create_bot_app(settings), host=settings.host, port=settings.bot_port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
