"""Why a request failed, in the reader's language: the sweeper's and the workers' reasons are
keyed messages, so a Persian page says them in Persian (the English texts stay as they were)."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from server.domain.catalog import get_service
from server.domain.display import error_key, progress_view
from server.domain.i18n import ISOLATE, MESSAGES_FA
from server.domain.messages import MESSAGES, text
from server.domain.protocol import OtpPrompt
from server.record import Keys
from server.requests import sweeper
from server.settings import Settings
from server.web.typedefs import DISPATCHER, LIFECYCLE, STORE
from tests.helpers import record, wait_for

FA = {"Accept-Language": "fa-IR,fa;q=0.9,en;q=0.5"}
VALID = {"national_id": "0012345678", "mobile": "09121234567"}


async def start_from_the_form(client: TestClient[Any, Any]) -> str:
    """A request made through the form (so this client may see its page); its hash."""
    form = await (await client.get("/services/credit-score-rating")).text()
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    body = {**VALID, "csrf_token": html.unescape(token.group(1))}
    resp = await client.post("/services/credit-score-rating", data=body, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    return resp.headers["Location"].rsplit("/", 1)[1]


@pytest.mark.parametrize("why", ["silent", "overdue", "otp_expired"])
async def test_a_request_the_sweeper_failed_says_why_in_persian(
    client: TestClient[Any, Any], settings: Settings, redis: Redis, why: str
) -> None:
    app = client.app
    store, life = app[STORE], app[LIFECYCLE]  # type: ignore[index]
    keys = Keys(settings.key_prefix)
    service = get_service("credit-score-rating")
    h = await start_from_the_form(client)
    assert (await life.start(h, service)).applied
    if why == "otp_expired":
        prompt = OtpPrompt(length=6, destination_hint="+98 912 *** **67", expires_in=120)
        assert (await life.ask_otp(h, prompt, service)).applied
    # No heartbeat for longer than a (very short) window; its deadline or its code's life over since 1970:
    private = {"silent": {"hbw": 0.1}, "overdue": {"deadline": 1.0}, "otp_expired": {"otp_exp": 1.0}}[why]
    await store.update(h, {}, private=private)

    async def swept() -> dict[str, Any] | None:
        # (the app's own sweeper may get there first, or hold the lock: either is fine)
        await sweeper.sweep(store, life, app[DISPATCHER])  # type: ignore[index]
        rec = await record(redis, keys, h)
        return rec if rec["status"] == "failed" else None

    rec = await wait_for(swept, timeout=10, interval=0.2, what="the sweeper to fail the request")

    english = {"silent": sweeper.SILENT, "overdue": sweeper.OVERDUE, "otp_expired": sweeper.OTP_EXPIRED}[why]
    assert rec["status"] == "failed" and rec["error"] == english == MESSAGES[why]
    assert progress_view(rec, service, "fa")["error"] == MESSAGES_FA[why]

    fa = await (await client.get(f"/requests/{h}", headers=FA)).text()
    assert 'dir="rtl"' in fa and f'<p id="error-text">{html.escape(MESSAGES_FA[why], quote=False)}</p>' in fa
    en = await (await client.get(f"/requests/{h}")).text()
    assert f'<p id="error-text">{html.escape(english, quote=False)}</p>' in en


def test_the_workers_reasons_are_keyed_and_translated() -> None:
    for key in ("service_gone", "bad_answer", "bot_unavailable", "worker_lost", "internal", "never_started"):
        failed = {"status": "failed", "error": text(key)}
        assert error_key(text(key)) == (key, {})
        assert progress_view(failed, None, "fa")["error"] == MESSAGES_FA[key]
        assert progress_view(failed, None, "en")["error"] == MESSAGES[key]
    # A reason with the bot's own words in it: the words kept, left-to-right inside the Persian.
    because = text("bot_gave_up_because", error="HTTP 503 from upstream")
    assert because == "The service could not finish the request: HTTP 503 from upstream"
    fa = progress_view({"status": "failed", "error": because}, None, "fa")["error"]
    assert fa == MESSAGES_FA["bot_gave_up_because"].format(error=ISOLATE[0] + "HTTP 503 from upstream" + ISOLATE[1])
    assert progress_view({"status": "failed", "error": because}, None, "en")["error"] == because
    # A bot's own failure stays as the bot said it.
    assert progress_view({"status": "failed", "error": "No record found."}, None, "fa")["error"] == "No record found."


def test_every_message_has_its_persian() -> None:
    assert set(MESSAGES) == set(MESSAGES_FA)
    for key, english in MESSAGES.items():
        assert re.findall(r"\{\w+\}", english) == re.findall(r"\{\w+\}", MESSAGES_FA[key]), key
