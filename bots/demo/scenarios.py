"""The three demo services: what each one does between being called and answering.

Each scenario takes the portal, the request hash, its session, the code the person typed and
their answer to another prompt (``{"id", "value"}``; both None on the first call) and returns
the portal's answer. ``SCENARIOS`` maps service slugs to them.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bots.demo.portal import OTP_LENGTH, Answer, Cancelled, Portal, Session, mask_phone, now_iso
from server.domain.protocol import CompletedEvent, OtpPrompt

Given = Mapping[str, Any] | None
Scenario = Callable[[Portal, str, Session, str | None, Given], Awaitable[Answer]]


def seeded(text: str, lo: int, hi: int) -> int:
    h = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
    return lo + h % (hi - lo + 1)


async def credit_score(portal: Portal, h: str, session: Session, otp: str | None, given: Given = None) -> Answer:
    if otp is None and given is None:
        await portal.step(h, session, "login", 2, 20, 12, "Logging in to the credit bureau")
        if portal.prompts:
            # The bureau's captcha is the person's to solve (DEMO_PROMPTS).
            await portal.step(h, session, "captcha", 20, 25, 2, "Fetching the captcha")
            return 200, {"status": "input_required", "input": portal.show_captcha(session)}
        await portal.step(h, session, "captcha", 20, 45, 16, "Solving the captcha")
        return await _text_code(portal, h, session)
    if given is not None or otp is None:
        return await _check_captcha(portal, h, session, given or {})
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


async def _text_code(portal: Portal, h: str, session: Session) -> Answer:
    prompt = portal.text_code(h, session)
    if session.answer_delay:
        await asyncio.sleep(session.answer_delay)
    return 200, {"status": "otp_required", "otp": prompt.serialize()}


async def _check_captcha(portal: Portal, h: str, session: Session, given: Mapping[str, Any]) -> Answer:
    if session.captcha is None or given.get("id") != "captcha":
        return 200, {"status": "error", "error": "The portal session was lost; start again.", "retryable": False}
    await portal.pause(1.0, session)
    if not secrets.compare_digest(str(given.get("value", "")).upper().encode(), session.captcha.encode()):
        session.captcha_tries -= 1
        if session.captcha_tries <= 0:
            return 200, {"status": "error", "error": "Too many wrong captchas: the portal locked the login."}
        error = "The characters did not match; here is a new picture."
        return 200, {"status": "input_required", "input": portal.show_captcha(session, error)}
    session.captcha = None
    await portal.step(h, session, "captcha", 25, 45, 4, "Captcha accepted")
    return await _text_code(portal, h, session)


def vehicles_of(national_id: str, plate: str) -> tuple[str, ...]:
    """The plates registered to a national id: the one typed, and for every other id a second
    one (the portal then asks which)."""
    if seeded(national_id + "vehicles", 1, 2) == 1:
        return (plate,)
    other = f"{seeded(national_id + 'a', 10, 99)}D{seeded(national_id + 'b', 100, 999)}-{seeded(national_id, 10, 99)}"
    return (plate, other) if other != plate else (plate,)


async def vehicle_fines(portal: Portal, h: str, session: Session, otp: str | None, given: Given = None) -> Answer:
    plate = str(session.data.get("plate", ""))
    if given is None:
        await portal.step(h, session, "login", 2, 25, 5, "Logging in to the traffic police portal")
        await portal.step(h, session, "search", 25, 50, 5, "Finding the vehicle")
        session.vehicles = vehicles_of(str(session.data.get("national_id", "")), plate) if portal.prompts else ()
        if len(session.vehicles) > 1:
            models = ("Peugeot 206", "Saipa Pride", "Samand LX")
            options = [
                {"value": v, "label": f"{v} · {models[seeded(v, 0, len(models) - 1)]}"} for v in session.vehicles
            ]
            prompt = {"id": "vehicle", "kind": "choice", "label": "Which vehicle?", "options": options}
            return 200, {"status": "input_required", "input": {**prompt, "expires_in": 300}}
    elif given.get("id") != "vehicle" or given.get("value") not in session.vehicles:
        return 200, {"status": "error", "error": "The portal session was lost; start again.", "retryable": False}
    else:
        plate = str(given["value"])
    await portal.step(h, session, "fetch", 50, 80, 6, "Fetching fines")
    await portal.step(h, session, "summarize", 80, 95, 3, "Adding them up")
    fines = [
        {"date": f"2026-0{1 + i}-1{i}", "place": place, "amount": seeded(plate + place, 5, 90) * 10_000}
        for i, place in enumerate(("Valiasr St.", "Hemmat Hwy", "Azadi Sq.")[: seeded(plate, 0, 3)])
    ]
    return 200, {
        "status": "success",
        "result": {"plate": plate, "fines": fines, "total": sum(f["amount"] for f in fines)},
    }


async def video(portal: Portal, h: str, session: Session, otp: str | None, given: Given = None) -> Answer:
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
