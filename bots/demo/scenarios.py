"""The three demo services: what each one does between being called and answering.

Each scenario takes the portal, the request hash, its session and the code the person typed
(None on the first call) and returns the portal's answer. ``SCENARIOS`` maps service slugs
to them.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable

from bots.demo.portal import OTP_LENGTH, Answer, Cancelled, Portal, Session, mask_phone, now_iso
from server.domain.protocol import CompletedEvent, OtpPrompt

Scenario = Callable[[Portal, str, Session, str | None], Awaitable[Answer]]


def seeded(text: str, lo: int, hi: int) -> int:
    h = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
    return lo + h % (hi - lo + 1)


async def credit_score(portal: Portal, h: str, session: Session, otp: str | None) -> Answer:
    if otp is None:
        await portal.step(h, session, "login", 2, 20, 12, "Logging in to the credit bureau")
        await portal.step(h, session, "captcha", 20, 45, 16, "Solving the captcha")
        prompt = portal.text_code(h, session)
        if session.answer_delay:
            await asyncio.sleep(session.answer_delay)
        return 200, {"status": "otp_required", "otp": prompt.serialize()}
    if session.code is None:
        return 200, {"status": "error", "error": "The portal session was lost; start again.", "retryable": False}
    if asyncio.get_running_loop().time() > session.code_expires:
        session.code = None
        prompt = portal.text_code(h, session)
        prompt = OtpPrompt(**{**prompt.__dict__, "error": "The code expired; we sent a new one."})
        return 200, {"status": "otp_required", "otp": prompt.serialize()}
    await portal.pause(1.5, session)
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
    await portal.step(h, session, "otp", 50, 60, 4, "Code accepted")
    await portal.step(h, session, "report", 60, 95, 26.5, "Fetching your credit report")
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


async def vehicle_fines(portal: Portal, h: str, session: Session, otp: str | None) -> Answer:
    await portal.step(h, session, "login", 2, 25, 5, "Logging in to the traffic police portal")
    await portal.step(h, session, "search", 25, 50, 5, "Finding the vehicle")
    await portal.step(h, session, "fetch", 50, 80, 6, "Fetching fines")
    await portal.step(h, session, "summarize", 80, 95, 3, "Adding them up")
    plate = str(session.data.get("plate", ""))
    fines = [
        {"date": f"2026-0{1 + i}-1{i}", "place": place, "amount": seeded(plate + place, 5, 90) * 10_000}
        for i, place in enumerate(("Valiasr St.", "Hemmat Hwy", "Azadi Sq.")[: seeded(plate, 0, 3)])
    ]
    return 200, {
        "status": "success",
        "result": {"plate": plate, "fines": fines, "total": sum(f["amount"] for f in fines)},
    }


async def video(portal: Portal, h: str, session: Session, otp: str | None) -> Answer:
    async def render() -> None:
        try:
            await portal.step(h, session, "queued", 1, 5, 5, "Waiting for a free renderer")
            await portal.step(h, session, "storyboard", 5, 20, 20, "Drawing the storyboard")
            await portal.step(h, session, "render", 20, 85, 75, "Rendering frames")
            await portal.step(h, session, "encode", 85, 99, 20, "Encoding the video")
            await portal.final(
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

    portal.start(session, render())
    return 202, {"status": "accepted"}


SCENARIOS: dict[str, Scenario] = {
    "credit-score-rating": credit_score,
    "vehicle-fines": vehicle_fines,
    "video-generation": video,
}
