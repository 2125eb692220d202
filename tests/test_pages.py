"""The server-rendered pages over real HTTP and a real Redis: forms, CSRF, access, no-JS flows."""

from __future__ import annotations

import html
import re
import socket
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from server.domain.catalog import get_service
from server.domain.prompts import Prompt
from server.domain.protocol import OtpPrompt
from server.record import Keys
from server.settings import Settings
from server.web.typedefs import LIFECYCLE
from tests.fuzz_helpers import PNG
from tests.helpers import outbox, wait_status

VALID = {"national_id": "0012345678", "mobile": "09121234567"}
FA = {"Accept-Language": "fa-IR,fa;q=0.9,en;q=0.5"}


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no CSRF token on the page"
    return match.group(1)


def page_data(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', page, re.S)
    assert match, "no page data"
    data: dict[str, Any] = orjson.loads(html.unescape(match.group(1)))
    return data


async def text_of(resp: aiohttp.ClientResponse, status: int) -> str:
    body = await resp.text()
    assert resp.status == status, body[:2000]
    assert resp.content_type == "text/html"
    return body


async def start(client: TestClient[Any, Any], data: dict[str, str] | None = None, **headers: str) -> str:
    """Fill the credit form like a browser without JavaScript; the new request's hash."""
    form = await text_of(await client.get("/services/credit-score-rating", headers=headers), 200)
    body = {**(data or VALID), "csrf_token": csrf_of(form)}
    resp = await client.post("/services/credit-score-rating", data=body, allow_redirects=False, headers=headers)
    assert resp.status == 303, await resp.text()
    location = resp.headers["Location"]
    assert re.fullmatch(r"/requests/req_[A-Za-z0-9_-]+", location), location
    return location.rsplit("/", 1)[1]


async def tracked(redis: Redis, settings: Settings) -> int:
    return int(await redis.llen(Keys(settings.key_prefix).tracking_list()))


def stranger() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


# --------------------------------------------------------------------------- catalog, language


async def test_catalog_lists_the_services_in_the_readers_language(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/")
    page = await text_of(resp, 200)
    assert '<html lang="en" dir="ltr">' in page
    for slug in ("credit-score-rating", "vehicle-fines", "video-generation"):
        assert f'href="/services/{slug}"' in page
    assert "Credit score report" in page and "Asks for an SMS code" in page
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Referrer-Policy"] == "no-referrer"

    fa = await text_of(await client.get("/", headers=FA), 200)
    assert '<html lang="fa" dir="rtl">' in fa and "گزارش رتبه اعتباری" in fa


async def test_a_forms_example_is_in_the_readers_language(client: TestClient[Any, Any]) -> None:
    fa = await text_of(await client.get("/services/video-generation", headers=FA), 200)
    assert 'placeholder="قایقی کاغذی که از خیابانی بارانی می‌گذرد"' in fa and "A paper boat" not in fa
    en = await text_of(await client.get("/services/video-generation"), 200)
    assert 'placeholder="A paper boat crossing a rainy street"' in en


async def test_language_switch_sets_a_cookie_and_stays_on_this_site(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/lang/fa?next=/services/vehicle-fines", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/services/vehicle-fines"
    assert resp.cookies["lang"].value == "fa"
    page = await text_of(await client.get("/services/vehicle-fines"), 200)
    assert 'dir="rtl"' in page and "خلافی خودرو" in page
    # the page links back to English, returning to the same place
    assert 'href="/lang/en?next=/services/vehicle-fines"' in page
    for evil in ("//evil.example/x", "/\\evil.example", "https://evil.example"):
        resp = await client.get("/lang/en", params={"next": evil}, allow_redirects=False)
        assert resp.headers["Location"] == "/"
    await text_of(await client.get("/lang/xx"), 404)


# --------------------------------------------------------------------------- the form and CSRF


async def test_a_form_post_without_its_csrf_token_is_refused(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    form = await text_of(await client.get("/services/credit-score-rating"), 200)
    token = csrf_of(form)
    url = "/services/credit-score-rating"
    for body in (VALID, {**VALID, "csrf_token": ""}, {**VALID, "csrf_token": token[:-2] + "xx"}):
        page = await text_of(await client.post(url, data=body, allow_redirects=False), 403)
        assert "This form has expired" in page and "Traceback" not in page
    # a token is bound to its session: another browser cannot use it
    async with stranger() as other, other.post(client.make_url(url), data={**VALID, "csrf_token": token}) as resp:
        assert resp.status == 403
    assert await tracked(redis, settings) == 0
    # the actions on a request are protected the same way
    h = await start(client)
    for action in ("otp", "resend-otp", "cancel"):
        resp = await client.post(f"/requests/{h}/{action}", data={"otp": "123456"}, allow_redirects=False)
        await text_of(resp, 403)
    rec = orjson.loads(await redis.get(Keys(settings.key_prefix).record(h)))
    assert rec["status"] == "pending" and rec["seq"] == 1


async def test_the_form_shows_server_side_errors_next_to_the_fields(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    form = await text_of(await client.get("/services/credit-score-rating"), 200)
    assert 'name="national_id"' in form and 'name="mobile"' in form and 'autocomplete="tel"' in form
    bad = {"national_id": "12ab", "mobile": "", "csrf_token": csrf_of(form)}
    page = await text_of(await client.post("/services/credit-score-rating", data=bad), 422)
    assert re.search(r'id="e-national_id">\s*A national ID has 10 digits\.', page)
    assert re.search(r'id="e-mobile">\s*This field is required\.', page)
    assert 'value="12ab"' in page and 'aria-invalid="true"' in page
    assert "Please fix the fields marked below." in page
    # the first field to fix takes the focus, the others do not
    assert page.count("autofocus") == 1
    assert re.search(r'<input id="f-national_id"[^>]*aria-invalid="true" autofocus', page)

    fa = await text_of(await client.post("/services/credit-score-rating", data=bad, headers=FA), 422)
    assert "کد ملی ۱۰ رقم است." in fa and "این فیلد الزامی است." in fa
    video = await text_of(await client.get("/services/video-generation"), 200)
    assert "<textarea" in video and 'name="duration_seconds"' in video
    assert await tracked(redis, settings) == 0


async def test_the_form_creates_the_request_and_shows_its_progress_page(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    h = await start(client, {"national_id": "۰۰۱۲۳۴۵۶۷۸", "mobile": "09121234567"})
    rec = orjson.loads(await redis.get(Keys(settings.key_prefix).record(h)))
    assert rec["request_data"] == VALID  # created by the API's own code: Persian digits cleaned
    page = await text_of(await client.get(f"/requests/{h}"), 200)
    assert re.search(r'role="progressbar" aria-valuemin="0" aria-valuemax="100"\s+aria-valuenow="0"', page)
    assert '<noscript><meta http-equiv="refresh" content="5"></noscript>' in page
    assert page.count('class="step step-todo"') == 4
    assert f'action="/requests/{h}/cancel"' in page and "In the queue" in page
    data = page_data(page)
    assert data["hash"] == h and data["record"]["status"] == "pending"
    assert data["ws_path"] == f"/ws/requests/{h}" and data["api_url"] == f"/api/requests/{h}"
    assert "request_data" not in data["record"] and "0012345678" not in page
    assert data["messages"]["otp_wrong"][0].startswith("That code was not accepted")


# --------------------------------------------------------------------------- who may see it


async def test_only_the_creator_or_a_token_holder_sees_the_pages(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    resp = await client.post("/api/requests", json={"service": "credit-score-rating", "data": VALID})
    created = await resp.json()
    h, token = created["hash"], created["access_token"]
    await text_of(await client.get(f"/requests/{h}"), 200)
    async with stranger() as other:
        for path in (f"/requests/{h}", f"/requests/{h}/result", f"/demo/outbox/{h}", f"/requests/{h}?access_token=x"):
            async with other.get(client.make_url(path), allow_redirects=False) as r:
                body = await r.text()
                assert r.status == 404 and "does not exist or has expired" in body, path
                assert 'href="/"' in body
        link = client.make_url(f"/requests/{h}").with_query(access_token=token)
        async with other.get(link, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == f"/requests/{h}"
        async with other.get(client.make_url(f"/requests/{h}")) as r:
            assert r.status == 200 and 'role="progressbar"' in await r.text()


async def test_unknown_and_malformed_requests_get_a_friendly_404(client: TestClient[Any, Any]) -> None:
    for path in (f"/requests/{Keys().new_hash()}", "/requests/nope", f"/requests/{Keys().new_hash()}/result"):
        page = await text_of(await client.get(path), 404)
        assert "does not exist or has expired" in page and "Start a new request" in page
    page = await text_of(await client.get("/no/such/page"), 404)
    assert "There is no page at this address." in page
    fa = await text_of(await client.get(f"/requests/{Keys().new_hash()}", headers=FA), 404)
    assert 'dir="rtl"' in fa and "منقضی" in fa


async def test_redis_down_shows_a_friendly_page(make_client: Any, settings: Settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    client = await make_client(settings.with_(redis_url=f"redis://127.0.0.1:{dead}/0"))
    page = await text_of(await client.get(f"/requests/{Keys().new_hash()}"), 503)
    assert "We will be right back" in page and "Traceback" not in page and "ConnectionError" not in page
    form = await text_of(await client.get("/services/vehicle-fines"), 200)  # no Redis needed to show a form
    body = {"plate": "12B345-67", "national_id": "0012345678", "csrf_token": csrf_of(form)}
    page = await text_of(await client.post("/services/vehicle-fines", data=body), 503)
    assert "Please try again in a moment." in page


# --------------------------------------------------------------------------- without JavaScript


async def test_code_resend_and_cancel_work_without_javascript(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.key_prefix)
    life = client.app[LIFECYCLE]
    service = get_service("credit-score-rating")
    h = await start(client)
    await life.start(h, service)
    await life.progress(h, 30, "captcha", "Solving the captcha")
    await life.ask_otp(h, OtpPrompt(length=6, destination_hint="+98 912 *** **67", attempts_left=5), service)

    page = await text_of(await client.get(f"/requests/{h}"), 200)
    token = csrf_of(page)
    otp_input = re.search(r'<input id="otp-input"[^>]*>', page, re.S)
    assert otp_input, "no code field"
    for attr in ('autocomplete="one-time-code"', 'inputmode="numeric"', 'maxlength="6"', 'pattern="[0-9۰-۹]{6}"'):
        assert attr in otp_input.group(0), attr
    assert "+98 912 *** **67" in page and "3 tries left" in page
    assert 'http-equiv="refresh"' not in page  # never reload while the person types a code
    assert f'href="/demo/outbox/{h}"' in page
    assert 'class="step step-done" data-step="login"' in page
    assert re.search(r'class="step step-current" data-step="otp" aria-current="step"', page)

    resp = await client.post(f"/requests/{h}/otp", data={"otp": "123456", "csrf_token": token}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == f"/requests/{h}"
    assert await redis.get(keys.otp(h)) == b"123456"
    page = await text_of(await client.get(f"/requests/{h}"), 200)
    assert "Checking the code…" in page and 'http-equiv="refresh"' in page

    await redis.delete(keys.otp(h))  # what the job does (GETDEL) before the bot answers
    await life.ask_otp(
        h, OtpPrompt(length=6, destination_hint="+98 912 *** **67", error="The code is not correct."), service
    )
    page = await text_of(await client.get(f"/requests/{h}"), 200)
    assert re.search(r'id="otp-error" role="alert">The code is not correct\.', page)
    fa = await text_of(await client.get(f"/requests/{h}", headers=FA), 200)
    assert "این کد پذیرفته نشد" in fa and "۲ بار دیگر" in fa

    resp = await client.post(f"/requests/{h}/resend-otp", data={"csrf_token": token}, allow_redirects=False)
    assert resp.status == 303
    page = await text_of(await client.get(f"/requests/{h}"), 200)
    assert "You can ask for a new code a little later." in page  # resend interval not over yet

    resp = await client.post(f"/requests/{h}/cancel", data={"csrf_token": token}, allow_redirects=False)
    assert resp.status == 303
    assert orjson.loads(await redis.get(keys.record(h)))["status"] == "cancelled"
    page = await text_of(await client.get(f"/requests/{h}"), 200)
    assert re.search(r'<section class="outcome" id="cancelled">', page)
    assert 'href="/services/credit-score-rating"' in page and 'http-equiv="refresh"' not in page
    resp = await client.post(f"/requests/{h}/cancel", data={"csrf_token": token}, allow_redirects=False)
    page = await text_of(await client.get(resp.headers["Location"]), 200)
    assert "This request has already finished." in page


@pytest.mark.parametrize(
    ("prompt", "field", "answer", "relayed"),
    [
        (
            {"id": "captcha", "kind": "captcha", "image": PNG, "length": 5, "label": "Show you are a person."},
            r'<input id="prompt-input" name="value" type="text" class="otp-input captcha-input" dir="ltr"',
            "ab۱2c",
            "ab12c",
        ),
        (
            {"id": "vehicle", "kind": "choice", "options": [{"value": "12B345-67"}, {"value": "43D236-74"}]},
            r'<button type="submit" class="button choice" name="value" value="43D236-74"><bdi>43D236-74</bdi>',
            "43D236-74",
            "43D236-74",
        ),
        (
            {"id": "model", "kind": "choice", "options": [{"value": str(n), "label": f"Model {n}"} for n in range(8)]},
            r'<select id="prompt-input" name="value" required',
            "7",
            "7",
        ),
        ({"id": "pay", "kind": "confirm"}, r'name="value" value="no">No</button>', "no", False),
        (
            # no pattern for the browser to check: it would refuse a Persian keyboard's digits,
            # which the server reads as 0-9 (and it answers a mismatch in the reader's language)
            {"id": "post", "kind": "text", "max_length": 10, "pattern": "[0-9]{10}"},
            r'<input id="prompt-input" name="value" type="text"(?![^>]*pattern=)[^>]*maxlength="10" required',
            "۱۲۳۴۵۶۷۸۹۰",
            "1234567890",
        ),
    ],
)
async def test_every_prompt_is_answered_without_javascript(
    client: TestClient[Any, Any],
    redis: Redis,
    settings: Settings,
    prompt: dict[str, Any],
    field: str,
    answer: str,
    relayed: Any,
) -> None:
    keys = Keys(settings.key_prefix)
    life = client.app[LIFECYCLE]
    service = get_service("credit-score-rating")
    h = await start(client)
    await life.start(h, service)
    await life.ask_input(h, Prompt.parse({**prompt, "error": "Not that one."}), service)
    page = await text_of(await client.get(f"/requests/{h}"), 200)
    assert re.search(field, page), field
    assert 'action="/requests/' + h + '/input"' in page and f'name="id" id="prompt-id" value="{prompt["id"]}"' in page
    assert 'http-equiv="refresh"' not in page and "Waiting for your answer" in page
    assert re.search(r'id="prompt-error" role="alert">Not that one\.', page)  # the bot's words, in English
    fa = await text_of(await client.get(f"/requests/{h}", headers=FA), 200)
    assert "پاسخ شما لازم است" in fa and "این پاسخ پذیرفته نشد" in fa  # in the reader's language
    token = csrf_of(page)
    wrong = await client.post(
        f"/requests/{h}/input", data={"id": "other", "value": answer, "csrf_token": token}, allow_redirects=False
    )
    page = await text_of(await client.get(wrong.headers["Location"]), 200)
    assert "No answer is needed right now." in page
    resp = await client.post(
        f"/requests/{h}/input", data={"id": prompt["id"], "value": answer, "csrf_token": token}, allow_redirects=False
    )
    assert resp.status == 303 and resp.headers["Location"] == f"/requests/{h}"
    assert orjson.loads(await redis.get(keys.otp(h))) == {"id": prompt["id"], "value": relayed}
    page = await text_of(await client.get(f"/requests/{h}"), 200)
    assert "Checking your answer…" in page and 'id="prompt" hidden' in page  # answered: the prompt goes
    again = await client.post(
        f"/requests/{h}/input", data={"id": prompt["id"], "value": answer, "csrf_token": token}, allow_redirects=False
    )
    page = await text_of(await client.get(again.headers["Location"]), 200)
    assert "Your answer is already being checked" in page  # a second submission is refused


async def test_a_failed_request_says_why_and_offers_to_try_again(client: TestClient[Any, Any]) -> None:
    life = client.app[LIFECYCLE]
    h = await start(client)
    await life.start(h, get_service("credit-score-rating"))
    await life.fail(h, "No record was found for this national ID.")
    page = await text_of(await client.get(f"/requests/{h}"), 200)
    assert re.search(r'id="failed">\s*<h2>What went wrong</h2>\s*<p id="error-text">No record was found', page)
    assert '<a class="button button-primary" href="/services/credit-score-rating">Try again</a>' in page
    assert 'http-equiv="refresh"' not in page and 'id="otp" hidden' in page


async def test_a_completed_request_moves_to_its_result(client: TestClient[Any, Any]) -> None:
    life = client.app[LIFECYCLE]
    h = await start(client)
    await life.start(h, get_service("credit-score-rating"))
    result = {
        "score": 7200,
        "rating": "B",
        "fines": [{"place": "Azadi Sq.", "amount": 50000}],
        "none": [],
        "video_url": "https://videos.example/a.mp4",
        "evil": "javascript:alert(1)",
        "checked_at": "2026-03-01T10:20:30.000Z",
    }
    await life.complete(h, result)
    resp = await client.get(f"/requests/{h}", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == f"/requests/{h}/result"
    page = await text_of(await client.get(f"/requests/{h}/result"), 200)
    assert "Credit score" in page and "7,200" in page and "Azadi Sq." in page and "50,000" in page
    assert '<a href="https://videos.example/a.mp4"' in page and 'href="javascript' not in page
    assert "2026-03-01 10:20 UTC" in page
    fa = await text_of(await client.get(f"/requests/{h}/result", headers=FA), 200)
    assert "امتیاز اعتباری" in fa and "۷٬۲۰۰" in fa


async def test_pages_carry_no_inline_script_style_or_handler(client: TestClient[Any, Any]) -> None:
    h = await start(client)
    for path in ("/", "/services/video-generation", f"/requests/{h}", "/nope"):
        resp = await client.get(path)
        page = await resp.text()
        assert "Content-Security-Policy" in resp.headers
        for tag in re.findall(r"<script\b[^>]*>", page):
            assert "src=" in tag or 'type="application/json"' in tag, (path, tag)
        assert not re.search(r"\sstyle=", page), path
        assert not re.search(r"\son[a-z]+=", page), path
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
            assert (await client.get(asset)).status == 200, asset


# --------------------------------------------------------------------------- the demo phone, end to end


@pytest.mark.usefixtures("workers")
async def test_the_whole_flow_without_javascript_through_the_demo_phone(
    client: TestClient[Any, Any], redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.key_prefix)
    h = await start(client)
    await wait_status(redis, keys, h, "waiting_otp")
    code = (await outbox(settings.bot_api_url, h))[0]["code"]
    phone = await text_of(await client.get(f"/demo/outbox/{h}"), 200)
    assert code in phone and "+98 912 *** **67" in phone
    async with stranger() as other, other.get(client.make_url(f"/demo/outbox/{h}")) as r:
        assert r.status == 404

    page = await text_of(await client.get(f"/requests/{h}"), 200)
    resp = await client.post(
        f"/requests/{h}/otp", data={"otp": code, "csrf_token": csrf_of(page)}, allow_redirects=False
    )
    assert resp.status == 303
    await wait_status(redis, keys, h, "completed")
    result = await text_of(await client.get(f"/requests/{h}"), 200)  # follows the redirect
    assert "Your result" in result and "Credit score" in result


async def test_the_demo_phone_exists_only_in_demo_mode(make_client: Any, settings: Settings) -> None:
    client = await make_client(settings.with_(demo_mode=False))
    h = await start(client)
    page = await text_of(await client.get(f"/requests/{h}"), 200)
    assert "/demo/outbox/" not in page
    await text_of(await client.get(f"/demo/outbox/{h}"), 404)


@pytest.mark.parametrize(
    "query",  # as it would arrive on the wire
    ["//evil.example", "/%5Cevil.example", "/%09/evil.example", "/%0a/x", "https://evil.example/", "%2F%2Fevil"],
)
async def test_the_language_switch_never_sends_people_off_site(client: Any, query: str) -> None:
    from yarl import URL

    resp = await client.get(URL(f"/lang/fa?next={query}", encoded=True), allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/"
