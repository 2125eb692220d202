"""The live page in headless Chromium (Playwright, Debian's chromium), against the real system.

The web server runs as its own process (``python -m server``) on a fixed free port,
so a test can kill it and start it again; RQ workers are real processes; the demo
bots answer over HTTP from this process. Screenshots of the progress page land in
``tests/artifacts/``.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from playwright.async_api import Browser, BrowserContext, Page, Route, WebSocketRoute, async_playwright, expect
from redis.asyncio import Redis

from server.devtools.processes import Processes, free_port, wait_http
from server.domain.prompts import Prompt
from server.record import Keys, RecordStore
from server.requests.lifecycle import Lifecycle
from server.settings import Settings
from tests.helpers import add_fault, bot_calls, captcha_answer, outbox, two_vehicle_national_id, wait_for, wait_status

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
#: slow enough to see the bar move (the credit report asks for its code after ~1.2 s)
BOT_SPEED = 15.0
CREDIT = {"national_id": "0012345678", "mobile": "09121234567"}
FINES = {"plate": "12B345-67", "national_id": "0012345678"}
#: the steady polling interval (README, static/progress.js POLL_MS)
POLL_SECONDS = 5.0

# Runs before any page script: records every value the progress bar shows and every state
# of the connection indicator, lets a test pretend the tab is in the background (from the
# first moment of the next page too, through sessionStorage), and stands in for desktop
# notifications: permission starts as a browser's "default", is granted when asked, and
# every request for it is recorded (page and event) across page loads, as is every
# notification and every window.focus() call.
INIT_SCRIPT = """
(() => {
  window.__seen = [];
  window.__conn = [];
  window.__notes = [];
  window.__focusCalls = 0;
  window.__hidden = sessionStorage.getItem('startHidden') === '1';
  Object.defineProperty(Document.prototype, 'hidden', {configurable: true, get() { return window.__hidden; }});
  Object.defineProperty(Document.prototype, 'visibilityState',
    {configurable: true, get() { return window.__hidden ? 'hidden' : 'visible'; }});
  window.__setHidden = (v) => { window.__hidden = v; document.dispatchEvent(new Event('visibilitychange')); };
  const asks = () => JSON.parse(sessionStorage.getItem('permissionAsks') || '[]');
  class FakeNotification {
    constructor(title, options) {
      this.title = title; this.body = options && options.body; this.closed = false; window.__notes.push(this);
    }
    close() { this.closed = true; }
    static get permission() { return sessionStorage.getItem('notifyPermission') || 'default'; }
    static requestPermission(callback) {
      sessionStorage.setItem('permissionAsks', JSON.stringify(
        [...asks(), {path: location.pathname, event: window.event ? window.event.type : null}]));
      sessionStorage.setItem('notifyPermission', 'granted');
      return Promise.resolve('granted').then((answer) => {
        if (typeof callback === 'function') callback(answer);
        return answer;
      });
    }
  }
  window.Notification = FakeNotification;
  window.__asks = asks;
  const focus = window.focus.bind(window);
  window.focus = () => { window.__focusCalls += 1; focus(); };
  if (/^\\/requests\\/[^/]+$/.test(location.pathname)) {
    sessionStorage.setItem('progressLoads', String(Number(sessionStorage.getItem('progressLoads') || 0) + 1));
  }
  document.addEventListener('DOMContentLoaded', () => {
    const bar = document.getElementById('bar');
    if (bar) {
      const note = () => window.__seen.push(Number(bar.getAttribute('aria-valuenow')));
      note();
      new MutationObserver(note).observe(bar, {attributes: true, attributeFilter: ['aria-valuenow']});
    }
    const conn = document.getElementById('conn');
    if (conn) {
      new MutationObserver(() => {
        const state = conn.dataset.state;
        if (window.__conn[window.__conn.length - 1] !== state) window.__conn.push(state);
      }).observe(conn, {attributes: true, attributeFilter: ['data-state']});
    }
  });
})();
"""


# x of the first and last character of an element's text, as laid out
FIRST_AND_LAST_X = """(id) => {
  const n = document.getElementById(id).firstChild, r = document.createRange();
  const x = (i) => { r.setStart(n, i); r.setEnd(n, i + 1); return r.getBoundingClientRect().x; };
  return [x(0), x(n.length - 1)];
}"""


@pytest.fixture
def base_settings(base_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    prompts = request.node.get_closest_marker("prompts") is not None
    return base_settings.with_(bot_speed=BOT_SPEED, demo_prompts=prompts)


class WebServer:
    """``python -m server`` in its own process, on one port across restarts."""

    def __init__(self, processes: Processes, settings: Settings):
        self.processes = processes
        self.settings = settings
        self.url = settings.public_url
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.proc = self.processes.start("web", ["-m", "server"], self.settings.to_env())
        try:
            await wait_http(f"{self.url}/healthz", self.proc, timeout=20)
        except RuntimeError as exc:
            raise AssertionError(f"the web server did not come up ({exc}):\n{self.processes.logs()}") from None

    def kill(self) -> None:
        assert self.proc is not None
        self.processes.stop(self.proc, signal.SIGKILL)


@pytest.fixture
async def web(processes: Processes, settings: Settings) -> WebServer:
    port = free_port()
    web_settings = settings.with_(port=port, public_url=f"http://127.0.0.1:{port}")
    processes.workers(web_settings, count=2)
    server = WebServer(processes, web_settings)
    await server.start()
    return server


@pytest.fixture
async def stalled(settings: Settings) -> AsyncIterator[list[tuple[str, str]]]:
    """(service, hash) of requests whose bot stalls on purpose: the bot is told to cancel at the
    end, pass or fail (a stalled call holds a worker and the bot server's shutdown for a minute)."""
    held: list[tuple[str, str]] = []
    yield held
    async with aiohttp.ClientSession() as http:
        for slug, h in held:
            async with http.post(f"{settings.bot_api_url}/services/{slug}/cancel", json={"requestHash": h}) as r:
                assert r.status == 200


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        await b.close()


async def new_page(browser: Browser, web: WebServer, *, locale: str = "en-US", viewport: Any = None) -> Page:
    context: BrowserContext = await browser.new_context(
        base_url=web.url, locale=locale, viewport=viewport or DESKTOP, reduced_motion="reduce"
    )
    await context.add_init_script(INIT_SCRIPT)
    page = await context.new_page()
    page.set_default_timeout(20_000)
    return page


async def shoot(page: Page, name: str, viewport: Any = None) -> None:
    """Screenshot the page (at ``viewport``), after checking nothing sticks out sideways."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if viewport is not None:
        await page.set_viewport_size(viewport)
    # On a phone a page wider than the screen scrolls sideways as a whole: every shot is checked.
    wide, window = await page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert wide <= window, f"{name}: the page is {wide} px wide in a {window} px window"
    path = ARTIFACTS / f"{name}.png"
    path.unlink(missing_ok=True)  # a picture left by an earlier run must not pass for this one
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0, name


async def start_request(page: Page, slug: str, fields: dict[str, str]) -> str:
    await page.goto(f"/services/{slug}")
    for name, value in fields.items():
        await page.fill(f"[name={name}]", value)
    await page.click("#start")
    await page.wait_for_url(re.compile(r"/requests/req_[A-Za-z0-9_-]+$"))
    return page.url.rsplit("/", 1)[1]


class StatusPolls:
    """Records the page's polls of ``GET /api/requests/{hash}``; the first ``errors`` get a 503."""

    def __init__(self, errors: int = 0):
        self.errors = errors
        self.seen: list[tuple[float, int]] = []

    async def install(self, page: Page) -> None:
        await page.route(re.compile(r"/api/requests/req_[A-Za-z0-9_-]+$"), self.handle)

    async def handle(self, route: Route) -> None:
        if route.request.method != "GET":
            await route.continue_()
        elif self.errors:
            self.errors -= 1
            self.seen.append((time.monotonic(), 503))
            await route.fulfill(status=503, json={"error": {"code": "unavailable", "message": "Try again soon."}})
        else:
            self.seen.append((time.monotonic(), 200))
            await route.continue_()


SSE_PATHS = re.compile(r".*/sse/.*")


async def refuse_streams(page: Page) -> list[str]:
    """Answer the page's event streams with 503 (a network that lets no stream through)."""
    refused: list[str] = []

    async def handle(route: Route) -> None:
        refused.append(route.request.url)
        await route.fulfill(status=503, body="no streams here")

    await page.route(SSE_PATHS, handle)
    return refused


async def timeline(page: Page) -> list[str]:
    """The timeline's entries as the page shows them (time, words, note)."""
    texts: list[str] = await page.locator("#timeline li").all_inner_texts()
    return [" ".join(t.split()) for t in texts]


async def seen(page: Page) -> list[int]:
    values: list[int] = await page.evaluate("window.__seen")
    return values


async def time_left(page: Page) -> int:
    """The remaining time the page shows (m:ss, in either language's digits), in seconds."""
    text = (await page.text_content("#eta") or "").strip().translate(str.maketrans("۰۱۲۳۴۵۶۷۸۹", "0123456789"))
    match = re.fullmatch(r"(\d+):(\d\d)", text)
    assert match, f"no time left on the page: {text!r}"
    return int(match[1]) * 60 + int(match[2])


# --------------------------------------------------------------------------- the whole flow


@pytest.mark.parametrize("transport", ["socket", "polling"])
async def test_form_to_result_with_a_wrong_then_right_code(
    browser: Browser, web: WebServer, redis: Redis, settings: Settings, transport: str
) -> None:
    page = await new_page(browser, web)
    blocked: list[str] = []
    polls = StatusPolls(errors=1)
    if transport == "polling":

        async def refuse(ws: WebSocketRoute) -> None:
            blocked.append(ws.url)
            await ws.close()

        await page.route_web_socket(re.compile(r".*/ws/.*"), refuse)
        await refuse_streams(page)  # and the event stream
        await polls.install(page)  # and the first poll fails

    await page.goto("/")
    if transport == "socket":
        await shoot(page, "catalog-en-desktop")
    h = await start_request(page, "credit-score-rating", CREDIT)
    if transport == "polling":
        # the person is in another tab when the bot asks for the code
        await page.evaluate("window.__setHidden(true)")

    otp = page.locator("#otp")
    # polling sees the prompt at the next poll, up to POLL_SECONDS after it came
    await expect(otp).to_be_visible(timeout=(2 * POLL_SECONDS + 5) * 1000)
    values = await seen(page)
    assert values == sorted(values) and values[-1] >= 40, values
    # over the socket, every value the bot reported (at this speed: start and end of login
    # and captcha, 2 20 20 45) after the page's first (the bot may have spoken before the page
    # had loaded: the first was then 2 already); polling sees at least one move
    assert len(set(values)) >= 2, values
    if transport == "socket":
        assert {v for v in (2, 20, 45) if v > values[0]} <= set(values), values
    bar = page.locator("#bar")
    await expect(bar).to_have_attribute("role", "progressbar")
    await expect(page.locator("#otp-input")).to_have_attribute("autocomplete", "one-time-code")
    await expect(page.locator("#otp-dest")).to_have_text("+98 912 *** **67")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live" if transport == "socket" else "polling")

    if transport == "polling":
        assert blocked, "the page never tried the socket"
        # polled at once, and after the error it waited longer than the steady interval
        assert [code for _, code in polls.seen[:2]] == [503, 200], polls.seen
        gap = polls.seen[1][0] - polls.seen[0][0]
        assert gap > POLL_SECONDS + 1, f"the poll after an error came {gap:.1f} s later: no backoff"
        states = await page.evaluate("window.__conn")
        assert states[:2] == ["offline", "polling"], states
        assert (await page.title()).startswith("● Code needed")
        notes = await page.evaluate("window.__notes.map(n => n.title)")
        assert notes == ["Code needed"], notes
        await page.evaluate("window.__setHidden(false)")
        assert not (await page.title()).startswith("●")
    else:
        await expect(page.locator("#resend-wait")).to_contain_text("New code available in")
        await shoot(page, "progress-otp-en-desktop")
        await shoot(page, "progress-otp-en-phone", PHONE)
        await page.set_viewport_size(DESKTOP)

    code = (await outbox(settings.bot_api_url, h))[0]["code"]
    wrong = "000000" if code != "000000" else "111111"
    await page.fill("#otp-input", wrong)  # a full code is sent as soon as it is typed
    error = page.locator("#otp-error")
    await expect(error).to_have_text("The code is not correct.")
    await expect(otp).to_be_visible()
    await expect(page.locator("#otp-attempts")).to_have_text("2 tries left")
    if transport == "socket":
        await shoot(page, "progress-otp-wrong-en-phone", PHONE)
        await page.set_viewport_size(DESKTOP)
        # the result is ready while the person is elsewhere: call them back, then go on
        await page.evaluate("window.__setHidden(true)")

    await page.fill("#otp-input", code)
    if transport == "socket":
        await expect(page).to_have_title(re.compile(r"^● Result ready"))
        assert await page.evaluate("window.__notes.map(n => n.title)") == ["Result ready"]
        assert "favicon-alert" in (await page.get_attribute("#favicon", "href") or "")
        assert "/result" not in page.url  # it waits for the person to come back
        await page.evaluate("window.__setHidden(false)")

    await page.wait_for_url(re.compile(rf"/requests/{h}/result$"))
    await expect(page.locator("#result")).to_contain_text("Credit score")
    assert await page.evaluate("sessionStorage.getItem('progressLoads')") == "1"  # never reloaded
    if transport == "socket":
        await shoot(page, "result-en-desktop")
        await page.goto(f"/demo/outbox/{h}")
        await expect(page.locator(".sms-code").first).to_contain_text(code)
        await shoot(page, "outbox-en-phone", PHONE)
    rec = await wait_status(redis, Keys(settings.key_prefix), h, "completed")
    assert rec["result_data"]["score"] >= 300


# --------------------------------------------------------------------------- any input from the person

# x of the first and last character of the first text inside the element a selector finds
FIRST_AND_LAST_X_OF = """(sel) => {
  const walk = document.createTreeWalker(document.querySelector(sel), NodeFilter.SHOW_TEXT);
  const n = walk.nextNode(), r = document.createRange();
  const x = (i) => { r.setStart(n, i); r.setEnd(n, i + 1); return r.getBoundingClientRect().x; };
  return [x(0), x(n.length - 1)];
}"""


@pytest.mark.prompts
@pytest.mark.parametrize(("transport", "lang"), [("socket", "en"), ("polling", "fa")])
async def test_captcha_then_code_and_which_vehicle_to_the_result(
    browser: Browser,
    web: WebServer,
    redis: Redis,
    settings: Settings,
    stalled: list[tuple[str, str]],
    transport: str,
    lang: str,
) -> None:
    """A person solves the credit bureau's captcha (a wrong answer first), enters the code and
    lands on the report; then picks one of the two vehicles of their national id and lands on
    its fines: over the socket in English on a desktop, and with sockets blocked in Persian on
    a phone. Then, on the same system, a text (English) or a yes/no (Persian)."""
    fa = lang == "fa"
    page = await new_page(browser, web, locale="fa-IR" if fa else "en-US", viewport=PHONE if fa else DESKTOP)
    here, there = (PHONE, DESKTOP) if fa else (DESKTOP, PHONE)
    blocked: list[str] = []
    if transport == "polling":

        async def refuse(ws: WebSocketRoute) -> None:
            blocked.append(ws.url)
            await ws.close()

        await page.route_web_socket(re.compile(r".*/ws/.*"), refuse)
    wait_ms = (2 * POLL_SECONDS + 5) * 1000
    keys = Keys(settings.key_prefix)

    if fa:  # the person is in another tab from the start: the captcha calls them back
        await page.goto("/")
        await page.evaluate(
            "sessionStorage.setItem('notifyPermission', 'granted'); sessionStorage.setItem('startHidden', '1')"
        )
    h = await start_request(page, "credit-score-rating", CREDIT)
    prompt = page.locator("#prompt")
    await expect(prompt).to_be_visible(timeout=wait_ms)
    await expect(prompt).to_have_attribute("data-kind", "captcha")
    if fa:
        await expect(page).to_have_title(re.compile(r"^● پاسخ لازم است"))
        assert await page.evaluate("window.__notes.map(n => n.title)") == ["پاسخ لازم است"]
        await page.evaluate("sessionStorage.removeItem('startHidden'); window.__setHidden(false)")
        assert not (await page.title()).startswith("●")
    await expect(page.locator("#headline")).to_have_text("پاسخ شما لازم است" if fa else "We need your answer")
    await expect(page.locator("#prompt-title")).to_have_text(
        "نویسه‌های تصویر را بنویسید" if fa else "Type the characters in the picture"
    )
    picture = page.locator("#captcha-img")
    assert await picture.evaluate("(img) => img.complete && img.naturalWidth") == 220  # a real PNG, drawn
    assert await picture.get_attribute("alt")
    await expect(page.locator("#eta")).to_have_text("منتظر پاسخ شما" if fa else "Waiting for your answer")
    field = page.locator("#prompt-input")
    assert await field.evaluate("(n) => getComputedStyle(n).direction") == "ltr"  # typed left to right
    await shoot(page, f"prompt-captcha-{lang}-{'phone' if fa else 'desktop'}")
    await shoot(page, f"prompt-captcha-{lang}-{'desktop' if fa else 'phone'}", there)
    await page.set_viewport_size(here)

    await field.fill("WRONG")
    await page.click("#prompt-submit")
    await expect(page.locator("#prompt-error")).to_have_text(
        "این پاسخ پذیرفته نشد. آن را بررسی کنید و دوباره تلاش کنید."
        if fa
        else "The characters did not match; here is a new picture.",
        timeout=wait_ms,
    )
    await expect(page.locator("#prompt-attempts")).to_contain_text("۲ بار دیگر" if fa else "2 tries left")
    await shoot(page, f"prompt-captcha-wrong-{lang}-{'phone' if fa else 'desktop'}")
    answer = await captcha_answer(settings.bot_api_url, h)
    await field.fill(answer)
    await page.click("#prompt-submit")

    await expect(page.locator("#otp")).to_be_visible(timeout=wait_ms)
    await expect(prompt).to_be_hidden()
    first, last = await page.evaluate(FIRST_AND_LAST_X, "otp-dest")
    assert first < last  # "+98 912 *** **67" stays left to right
    code = (await outbox(settings.bot_api_url, h))[-1]["code"]
    await page.fill("#otp-input", code)
    await page.wait_for_url(re.compile(rf"/requests/{h}/result$"), timeout=wait_ms)
    assert (await wait_status(redis, keys, h, "completed"))["result_data"]["score"] >= 300

    h = await start_request(page, "vehicle-fines", {**FINES, "national_id": two_vehicle_national_id()})
    await expect(prompt).to_have_attribute("data-kind", "choice", timeout=wait_ms)
    await expect(prompt).to_be_visible()
    choices = page.locator("#prompt .choice")
    await expect(choices).to_have_count(2)
    await expect(choices.first).to_contain_text("12B345-67")
    first, last = await page.evaluate(FIRST_AND_LAST_X_OF, "#prompt .choice bdi")
    assert first < last  # the plate reads left to right on a right-to-left page too
    await shoot(page, f"prompt-choice-{lang}-{'phone' if fa else 'desktop'}")
    await shoot(page, f"prompt-choice-{lang}-{'desktop' if fa else 'phone'}", there)
    await page.set_viewport_size(here)
    other = (await choices.nth(1).get_attribute("value")) or ""
    await choices.nth(1).click()
    await page.wait_for_url(re.compile(rf"/requests/{h}/result$"), timeout=wait_ms)
    await expect(page.locator("#result")).to_contain_text(other)
    if transport == "polling":
        assert blocked, "the page never tried the socket"
    else:
        assert (await page.evaluate("window.__conn"))[-1:] in (["live"], [])
    assert (await wait_status(redis, keys, h, "completed"))["result_data"]["plate"] == other
    await a_text_or_a_yes_or_no(browser, web, redis, settings, stalled, lang)


async def a_text_or_a_yes_or_no(
    browser: Browser, web: WebServer, redis: Redis, settings: Settings, stalled: list[tuple[str, str]], lang: str
) -> None:
    """The two kinds no demo bot asks, pushed while the bot is at work, built by the page as they
    come, answered (a text refused by the page first, then typed in Persian digits, in English on
    a desktop; "no" in Persian on a phone) and relayed to the bot's /run."""
    life = Lifecycle(RecordStore(redis, Keys(settings.key_prefix)))
    text = {
        "id": "postcode",
        "kind": "text",
        "label": "Your 10-digit postcode",
        "max_length": 10,
        "pattern": "[0-9]{10}",
    }
    confirm = {"id": "pay", "kind": "confirm", "label": "Pay the 120,000 rials fee?"}
    fa = lang == "fa"
    prompt = confirm if fa else text
    await add_fault(settings.bot_api_url, service="credit-score-rating", mode="stall")
    page = await new_page(browser, web, locale="fa-IR" if fa else "en-US", viewport=PHONE if fa else DESKTOP)
    h = await start_request(page, "credit-score-rating", CREDIT)
    stalled.append(("credit-score-rating", h))
    await expect(page.locator("#bar")).to_have_attribute("aria-valuenow", "3")
    await life.ask_input(h, Prompt.parse(prompt))
    box = page.locator("#prompt")
    await expect(box).to_have_attribute("data-kind", prompt["kind"])
    await expect(box).to_be_visible()
    label = page.locator("#prompt-label")
    if fa:  # the title says what to do in Persian; the question is the bot's, left to right
        await expect(label).to_have_text(prompt["label"])
        assert await label.evaluate("(n) => getComputedStyle(n).direction") == "ltr"
        await expect(page.locator("#prompt-title")).to_have_text("برای ادامه تأیید کنید")
        await shoot(page, "prompt-confirm-fa-phone")
        await shoot(page, "prompt-confirm-fa-desktop", DESKTOP)
        await page.click("#prompt button[value=no]")
    else:
        await expect(label).to_have_text(prompt["label"])
        await shoot(page, "prompt-text-en-desktop")
        await page.fill("#prompt-input", "12345")
        await page.click("#prompt-submit")
        await expect(page.locator("#prompt-error")).to_have_text("Check your answer and try again.")
        assert await page.get_attribute("#prompt-input", "aria-invalid") == "true"
        await page.fill("#prompt-input", "۱۲۳۴۵۶۷۸۹۰")  # a Persian keyboard's digits fit [0-9], as on the server
        await page.click("#prompt-submit")

    async def relayed() -> bool:
        return any(":input:" in key for key in await bot_calls(settings.bot_api_url, h))

    await wait_for(relayed, what="the answer relayed to the bot's /run")
    await expect(box).to_be_hidden()
    await page.context.close()


# --------------------------------------------------------------------------- Persian, phone, cancel


async def test_persian_on_a_phone_then_cancel(
    browser: Browser, web: WebServer, redis: Redis, settings: Settings
) -> None:
    page = await new_page(browser, web, locale="fa-IR", viewport=PHONE)
    await page.goto("/services/credit-score-rating")
    assert await page.get_attribute("html", "dir") == "rtl"
    await shoot(page, "form-fa-phone")
    h = await start_request(page, "credit-score-rating", CREDIT)
    await expect(page.locator("#otp")).to_be_visible()
    await expect(page.locator("#headline")).to_have_text("کد تأیید لازم است")
    await expect(page.locator("#otp-attempts")).to_contain_text("۳ بار دیگر")
    # the phone number stays "+98 912 … 67" from left to right inside the right-to-left page
    first, last = await page.evaluate(FIRST_AND_LAST_X, "otp-dest")
    assert first < last
    await shoot(page, "progress-otp-fa-phone")
    await shoot(page, "progress-otp-fa-desktop", DESKTOP)
    await page.set_viewport_size(PHONE)

    await page.click("#cancel summary")
    await page.click("#cancel-yes")
    await expect(page.locator("#cancelled")).to_be_visible()
    await expect(page.locator("#headline")).to_have_text("لغو شد")
    await expect(page.locator("#otp")).to_be_hidden()
    await expect(page.locator("#timeline-title")).to_have_text("آنچه گذشت")
    entries = await timeline(page)
    assert entries[-1].endswith("لغو شد") and re.match(r"^[۰-۹]{2}:[۰-۹]{2}:[۰-۹]{2} ", entries[-1]), entries
    await shoot(page, "progress-cancelled-fa-phone")
    rec = await wait_status(redis, Keys(settings.key_prefix), h, "cancelled")
    assert rec["status"] == "cancelled"


async def test_the_last_wrong_code_ends_the_request_in_the_readers_language(
    browser: Browser, web: WebServer, redis: Redis, settings: Settings
) -> None:
    page = await new_page(browser, web, locale="fa-IR", viewport=PHONE)
    h = await start_request(page, "credit-score-rating", CREDIT)
    await expect(page.locator("#otp")).to_be_visible()
    code = (await outbox(settings.bot_api_url, h))[0]["code"]
    wrong = "000000" if code != "000000" else "111111"
    for left in ("۲", "۱"):
        await page.fill("#otp-input", wrong)
        await expect(page.locator("#otp-attempts")).to_contain_text(f"{left} بار دیگر")
    await page.fill("#otp-input", wrong)
    await expect(page.locator("#failed")).to_be_visible()  # at once, live: no reload, no sweeper
    await expect(page.locator("#error-text")).to_have_text("کدهای نادرست زیادی وارد شد. لطفاً درخواست تازه‌ای ثبت کنید.")
    await expect(page.locator("#otp")).to_be_hidden()
    assert await page.evaluate("sessionStorage.getItem('progressLoads')") == "1"
    rec = await wait_status(redis, Keys(settings.key_prefix), h, "failed")
    assert rec["error"] == "Too many wrong codes. Please start a new request."


# --------------------------------------------------------------------------- the time left, between updates


async def test_the_time_left_counts_down_while_the_bot_is_silent(
    browser: Browser, web: WebServer, settings: Settings, stalled: list[tuple[str, str]]
) -> None:
    # The bot reports once ("Logging in", 3%) and then says nothing at all.
    await add_fault(settings.bot_api_url, service="credit-score-rating", mode="stall")
    page = await new_page(browser, web)
    h = await start_request(page, "credit-score-rating", CREDIT)
    stalled.append(("credit-score-rating", h))
    await expect(page.locator("#bar")).to_have_attribute("aria-valuenow", "3")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    renders = len(await seen(page))  # every record the page applies sets the bar again
    first = await time_left(page)
    await page.wait_for_timeout(1500)  # at least one tick of the once-a-second countdown
    second = await time_left(page)
    assert len(await seen(page)) == renders, "an update arrived: this proves nothing"
    assert first - 5 <= second < first, (first, second)
    await expect(page.locator("#eta-label")).to_have_text("Time left")

    # In Persian (the switch in the header reloads the page), on a phone: the same, in Persian digits.
    await page.click(".langs a[hreflang=fa]")
    await expect(page.locator("html")).to_have_attribute("dir", "rtl")
    await page.set_viewport_size(PHONE)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    renders = len(await seen(page))
    first = await time_left(page)
    await page.wait_for_timeout(1500)
    second = await time_left(page)
    assert len(await seen(page)) == renders, "an update arrived: this proves nothing"
    assert first - 5 <= second < first, (first, second)
    assert re.fullmatch(r"[۰-۹]+:[۰-۹]{2}", (await page.text_content("#eta") or "").strip())
    await shoot(page, "progress-running-fa-phone")


# --------------------------------------------------------------------------- polling, and back to the socket


async def test_the_page_falls_back_socket_stream_polling_and_comes_back_with_a_full_timeline(
    browser: Browser, web: WebServer, redis: Redis, settings: Settings, stalled: list[tuple[str, str]]
) -> None:
    """WebSocket, then SSE, then polling, each tried in turn and retried: the badge says which is
    in use, and the timeline holds every step's message, also those from while it was away."""
    await add_fault(settings.bot_api_url, service="vehicle-fines", mode="stall")
    page = await new_page(browser, web)
    sockets_allowed = False
    refused = 0
    frames: list[dict[str, Any]] = []

    async def sockets(ws: WebSocketRoute) -> None:
        nonlocal refused
        if not sockets_allowed:
            refused += 1
            await ws.close()
            return
        server = ws.connect_to_server()

        def relay(message: str | bytes) -> None:
            frames.append(orjson.loads(message))
            ws.send(message)

        server.on_message(relay)

    await page.route_web_socket(re.compile(r".*/ws/.*"), sockets)
    streams_refused = await refuse_streams(page)
    polls = StatusPolls()
    await polls.install(page)
    h = await start_request(page, "vehicle-fines", FINES)
    stalled.append(("vehicle-fines", h))
    store = RecordStore(redis, Keys(settings.key_prefix))

    # 1. Neither sockets nor streams get through: polling.
    await expect(page.locator("#conn")).to_have_attribute("data-state", "polling")
    await expect(page.locator("#conn")).to_have_attribute("data-transport", "polling")
    assert polls.seen and streams_refused, "no status request, or the stream was never tried"
    await store.update(h, {"progress": 20, "step": "fines", "current_message": "Looking up the plate"})
    await store.update(h, {"progress": 30, "current_message": "Reading the fines"})

    async def tried_again() -> bool:
        return refused >= 2 and len(streams_refused) >= 2

    await wait_for(tried_again, timeout=15, what="the page to try the socket and the stream again")
    assert not frames

    # 2. Streams get through (sockets still not): the next round goes live over SSE and fills in
    # the timeline from the last change it had streamed, polled states in between included.
    await page.unroute(SSE_PATHS)
    await expect(page.locator("#conn")).to_have_attribute("data-transport", "sse", timeout=20_000)
    await expect(page.locator("#conn-text")).to_have_text("Live · event stream")
    polled = len(polls.seen)
    await store.update(h, {"progress": 40, "current_message": "Adding up the fines"})
    await expect(page.locator("#bar")).to_have_attribute("aria-valuenow", "40")
    entries = await timeline(page)
    said = [e for e in entries if "Looking up the plate" in e or "Reading the fines" in e or "Adding up" in e]
    assert len(said) == 3, entries
    assert all(re.match(r"^\d\d:\d\d:\d\d ", e) for e in entries), entries
    assert len(polls.seen) == polled, "still polling with the stream live"
    await shoot(page, "progress-timeline-sse-en-desktop")

    # 3. The server restarts; meanwhile the bot goes on, and the stream is refused again: the
    # page's next round takes the socket, resumes from the last seq it has, and the timeline
    # shows what happened while it was away.
    sockets_allowed = True
    await refuse_streams(page)
    web.kill()
    await store.update(h, {"progress": 50, "current_message": "Checking the payment status"})
    await store.update(h, {"progress": 60, "current_message": "Writing the report"})
    await web.start()
    await expect(page.locator("#conn")).to_have_attribute("data-transport", "ws", timeout=30_000)
    await expect(page.locator("#conn-text")).to_have_text("Live · WebSocket")
    await expect(page.locator("#bar")).to_have_attribute("aria-valuenow", "60")
    entries = await timeline(page)
    # the latest a poll may have caught as the server came back; the one before only the replay has
    assert any("Writing the report" in e for e in entries), entries
    away = [e for e in entries if e.endswith("while you were offline")]
    assert any("Checking the payment status" in e for e in away), entries
    assert frames and frames[0]["type"] == "update" and frames[0]["request"]["hash"] == h, frames[:1]
    assert [f["request"]["seq"] for f in frames if f["type"] == "update"] == sorted(
        {f["request"]["seq"] for f in frames if f["type"] == "update"}
    ), "a change came twice or out of order"
    await shoot(page, "progress-timeline-ws-en-desktop")
    # and actions go over the socket again
    polled = len(polls.seen)
    await page.click("#cancel summary")
    await page.click("#cancel-yes")
    await expect(page.locator("#cancelled")).to_be_visible()
    assert frames[-1]["type"] == "update" and frames[-1]["request"]["status"] == "cancelled", frames[-1]
    assert len(polls.seen) == polled, "still polling with the socket live"
    assert (await timeline(page))[-1].endswith("Cancelled"), await timeline(page)
    assert await page.evaluate("sessionStorage.getItem('progressLoads')") == "1"  # never reloaded


async def test_a_socket_that_goes_silent_without_closing_falls_back_to_polling(
    browser: Browser, processes: Processes, redis: Redis, settings: Settings, stalled: list[tuple[str, str]]
) -> None:
    """The network path dies without a close (a router dropping idle connections, a phone
    changing networks): the socket carries nothing either way and never says so. The page's
    ping goes unanswered, and it falls back to polling at once, not when the browser gives up
    on its close handshake a minute later, still saying "Live" meanwhile."""
    port = free_port()
    quick = settings.with_(port=port, public_url=f"http://127.0.0.1:{port}", socket_heartbeat=2.0)
    processes.workers(quick)
    web = WebServer(processes, quick)
    await web.start()
    await add_fault(quick.bot_api_url, service="vehicle-fines", mode="stall")
    page = await new_page(browser, web)
    dead = False

    async def sockets(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        server.on_message(lambda message: None if dead else ws.send(message))
        ws.on_message(lambda message: None if dead else server.send(message))

    await page.route_web_socket(re.compile(r".*/ws/.*"), sockets)
    await refuse_streams(page)  # so that what it falls back to is polling
    h = await start_request(page, "vehicle-fines", FINES)
    stalled.append(("vehicle-fines", h))
    await expect(page.locator("#conn")).to_have_attribute("data-transport", "ws")
    dead = True
    await RecordStore(redis, Keys(quick.key_prefix)).update(h, {"progress": 45, "current_message": "Reading the fines"})
    # a ping every two heartbeats (4 s), unanswered for 10 s: polling, and the change shows
    await expect(page.locator("#conn")).to_have_attribute("data-state", "polling", timeout=20_000)
    await expect(page.locator("#bar")).to_have_attribute("aria-valuenow", "45", timeout=10_000)


async def test_a_wide_result_table_scrolls_inside_its_card_on_a_phone(
    browser: Browser, web: WebServer, redis: Redis, settings: Settings, stalled: list[tuple[str, str]]
) -> None:
    """A result holding a wide table (a parcel's journey) on a 375 px phone, in Persian: the
    table scrolls inside the card; the page never gets wider than the screen (shoot checks)."""
    await add_fault(settings.bot_api_url, service="vehicle-fines", mode="stall")
    page = await new_page(browser, web, locale="fa-IR", viewport=PHONE)
    h = await start_request(page, "vehicle-fines", FINES)
    stalled.append(("vehicle-fines", h))
    journey = [
        {
            "at": f"2026-12-0{n}T0{n}:15:00Z",
            "place": f"Sorting centre number {n}, Tehran",
            "event": "Arrived and scanned",
        }
        for n in range(1, 6)
    ]
    keys = Keys(settings.key_prefix)
    await wait_status(redis, keys, h, "processing")  # started by the worker: a pending one cannot complete
    done = await Lifecycle(RecordStore(redis, keys)).complete(h, {"plate": "12B345-67", "journey": journey})
    assert done.applied
    await page.wait_for_url(f"**/requests/{h}/result")
    await expect(page.locator("table")).to_be_visible()
    await shoot(page, "result-wide-table-fa-phone")


# --------------------------------------------------------------------------- calling the person back


async def test_notifications_are_asked_for_on_submit_and_bring_the_tab_forward(
    browser: Browser, web: WebServer, settings: Settings
) -> None:
    page = await new_page(browser, web)
    await page.goto("/services/credit-score-rating")
    await page.wait_for_load_state("load")
    assert await page.evaluate("window.__asks()") == []  # not on page load
    for name, value in CREDIT.items():
        await page.fill(f"[name={name}]", value)
    # the person goes to another tab as soon as the request is on its way
    await page.evaluate("sessionStorage.setItem('startHidden', '1')")
    await page.click("#start")
    await page.wait_for_url(re.compile(r"/requests/req_[A-Za-z0-9_-]+$"))
    asks = await page.evaluate("window.__asks()")
    assert asks == [{"path": "/services/credit-score-rating", "event": "submit"}], asks

    # the bot asks for the code while the tab is in the background
    await expect(page).to_have_title(re.compile(r"^● Code needed"))
    assert "favicon-alert" in (await page.get_attribute("#favicon", "href") or "")
    notes = await page.evaluate("window.__notes.map(n => [n.title, n.body])")
    assert len(notes) == 1 and notes[0][0] == "Code needed", notes
    assert "Credit" in notes[0][1], notes
    assert await page.evaluate("window.__asks().length") == 1  # the progress page never asks

    # clicking the notification brings the tab forward and puts it away
    await page.evaluate("window.__notes[0].onclick()")
    assert await page.evaluate("[window.__focusCalls, window.__notes[0].closed]") == [1, True]
    await page.evaluate("window.__setHidden(false)")
    assert not (await page.title()).startswith("●")
    assert "favicon-alert" not in (await page.get_attribute("#favicon", "href") or "")
    await expect(page.locator("#otp-input")).to_be_focused()


# --------------------------------------------------------------------------- the server restarts mid-job


async def test_the_page_recovers_by_itself_when_the_server_restarts(
    browser: Browser, web: WebServer, redis: Redis, settings: Settings
) -> None:
    page = await new_page(browser, web)
    video = {"prompt": "A paper boat crossing a rainy street", "duration_seconds": "10"}
    h = await start_request(page, "video-generation", video)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    await expect(page.locator("#bar")).to_have_attribute("aria-valuenow", re.compile(r"^([1-9]\d)$"))
    await shoot(page, "progress-running-en-desktop")
    await shoot(page, "progress-running-en-phone", PHONE)
    await page.set_viewport_size(DESKTOP)

    web.kill()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "offline")
    before = max(await seen(page))
    await web.start()
    await page.wait_for_url(re.compile(rf"/requests/{h}/result$"), timeout=30_000)
    assert await page.evaluate("sessionStorage.getItem('progressLoads')") == "1"  # no reload
    await expect(page.locator("#result")).to_contain_text("paper boat")
    rec = await wait_status(redis, Keys(settings.key_prefix), h, "completed")
    assert rec["progress"] == 100 and before < 100
