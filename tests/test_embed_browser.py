"""``<longrun-progress>`` inside another site's page, in headless Chromium, end to end.

The demo host app (``server.devtools.hostapp``) runs in this process on http://localhost:N —
another site than Longrun's http://127.0.0.1:M (a web process, real workers, the demo bots).
Its backend creates the request with its API key; its page, under a strict CSP that allows
Longrun's origin only, shows the element with a viewer token. Screenshots land in
``tests/artifacts/embed-*.png``.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, ConsoleMessage, Page, expect
from redis.asyncio import Redis

from server.devtools.hostapp import DEMO_USER, HostConfig, create_host_app
from server.devtools.processes import Processes, free_port
from server.domain.prompts import Prompt
from server.record import Keys, RecordStore, loads_record
from server.requests.caller import app_user_id
from server.requests.credentials import ViewerTokens, digest
from server.requests.lifecycle import Lifecycle
from server.settings import Settings
from tests.helpers import add_fault, bot_calls, captcha_answer, outbox, wait_for, wait_status
from tests.test_browser import BOT_SPEED, DESKTOP, PHONE, WebServer, browser, shoot

pytestmark = pytest.mark.browser
__all__ = ["browser"]  # the fixture, shared with test_browser

HOST_KEY = "lrk_hostapp_test_" + "k" * 32


@pytest.fixture
def base_settings(base_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    prompts = request.node.get_closest_marker("prompts") is not None
    return base_settings.with_(bot_speed=BOT_SPEED, demo_prompts=prompts)


class Embedding:
    """Longrun (a web process) and the host app (in this process), on two sites."""

    def __init__(self, longrun: WebServer, host_url: str):
        self.longrun = longrun
        self.host_url = host_url


@pytest.fixture
async def embedding(processes: Processes, settings: Settings) -> AsyncIterator[Embedding]:
    port, host_port = free_port(), free_port()
    host_url = f"http://localhost:{host_port}"
    web_settings = settings.with_(
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        app_api_keys=(("hostapp", digest(HOST_KEY)),),
        embed_origins=(host_url,),
    )
    processes.workers(web_settings, count=2)
    longrun = WebServer(processes, web_settings)
    await longrun.start()
    runner = web.AppRunner(create_host_app(HostConfig(longrun=longrun.url, api_key=HOST_KEY)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", host_port).start()
    yield Embedding(longrun, host_url)
    await runner.cleanup()


async def host_page(browser: Browser, embedding: Embedding, viewport: Any = None) -> tuple[Page, list[str]]:
    """A page of the host app, and the console messages it logs (CSP refusals show there)."""
    context = await browser.new_context(
        base_url=embedding.host_url, viewport=viewport or DESKTOP, reduced_motion="reduce"
    )
    page = await context.new_page()
    page.set_default_timeout(20_000)
    console: list[str] = []

    def note(message: ConsoleMessage) -> None:
        console.append(f"{message.type}: {message.text}")

    page.on("console", note)
    page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
    return page, console


async def start_inquiry(page: Page, lang: str = "en") -> str:
    await page.goto(f"/?lang={lang}")
    await page.click("form.start button")
    await page.wait_for_url(re.compile(r"/inquiries/req_[A-Za-z0-9_-]+"))
    return page.url.split("/inquiries/")[1].split("?")[0]


async def test_a_host_page_embeds_the_element_to_the_result_and_in_persian_to_a_cancel(
    browser: Browser, embedding: Embedding, redis: Redis, settings: Settings
) -> None:
    """One Longrun and one host app for both (each costs a web process and workers)."""
    await english_over_the_socket_to_the_result(browser, embedding, redis, settings)
    await persian_on_a_phone_over_polling_then_cancel(browser, embedding, redis)


async def english_over_the_socket_to_the_result(
    browser: Browser, embedding: Embedding, redis: Redis, settings: Settings
) -> None:
    page, console = await host_page(browser, embedding)
    await page.goto("/")
    await expect(page.locator("h2")).to_have_text("Your inquiries")
    h = await start_inquiry(page)
    element = page.locator("longrun-progress")
    # Over the socket, from another site, with the viewer token (never a cookie).
    await expect(element.locator(".conn")).to_have_attribute("data-state", "live")
    await expect(element.locator(".title")).to_have_text("Credit score report")
    prompt = element.locator("form.prompt[data-kind=code]")
    await expect(prompt).to_be_visible()
    await expect(element.locator(".headline")).to_have_text("We need your code")
    await expect(element.locator(".step-current")).to_contain_text("Confirming with your code")
    await shoot(page, "embed-code-prompt")

    # A wrong code is said in the prompt; the right one goes through.
    await prompt.locator("input").fill("000000")
    await prompt.locator("button[type=submit]").click()
    await expect(element.locator("form.prompt .error")).to_be_visible()
    await expect(element.locator("form.prompt")).to_contain_text("2 tries left")
    code = (await wait_for(lambda: outbox(settings.bot_api_url, h), what="the SMS"))[-1]["code"]
    await element.locator("form.prompt input").fill(code)
    await element.locator("form.prompt button[type=submit]").click()

    # The host page hears `completed` with the result and says so in its own words.
    await expect(page.locator("#saved")).to_be_visible(timeout=30_000)
    rec = await wait_status(redis, Keys(embedding.longrun.settings.key_prefix), h, "completed")
    score = rec["result_data"]["score"]
    await expect(page.locator("#saved")).to_have_text(f"Saved to your account: score {score}.")
    await expect(element.locator(".headline")).to_have_text("Done")
    await expect(element.locator(".result dd").first).to_have_text(f"{score:,}")
    await expect(element.locator(".bar")).to_have_attribute("aria-valuenow", "100")
    await expect(element.locator("button.danger")).to_be_hidden()
    await shoot(page, "embed-completed")
    # Archived under the app's name for the person; the host lists it on the account page.
    assert rec["user_id"] == app_user_id("hostapp", DEMO_USER) and rec["_p"]["app"] == "hostapp"
    await page.goto("/")
    await expect(page.locator("main li")).to_contain_text("Done")
    await shoot(page, "embed-host-account")
    assert not [m for m in console if "Content Security Policy" in m or m.startswith(("error", "pageerror"))], console

    # A viewer token that ran out: the element says so and fires token-expired, the host page
    # reloads, and its backend hands the element a fresh token.
    await page.goto(f"/inquiries/{h}")
    await expect(element.locator(".headline")).to_have_text("Done")
    expired, _ = ViewerTokens(embedding.longrun.settings.secret_key, 60).mint(h, now=time.time() - 120)
    async with page.expect_navigation():
        await element.evaluate("(e, token) => e.setAttribute('token', token)", expired)
    await expect(element.locator(".headline")).to_have_text("Done")
    assert await element.get_attribute("token") != expired


async def persian_on_a_phone_over_polling_then_cancel(browser: Browser, embedding: Embedding, redis: Redis) -> None:
    page, console = await host_page(browser, embedding, viewport=PHONE)
    blocked: list[str] = []

    async def refuse(ws: Any) -> None:
        blocked.append(ws.url)
        await ws.close()

    await page.route_web_socket(re.compile(r".*/ws/requests/.*"), refuse)
    await page.route(re.compile(r".*/sse/requests/.*"), lambda route: route.abort())  # and the event stream
    h = await start_inquiry(page, "fa")
    element = page.locator("longrun-progress")
    await expect(element.locator(".root")).to_have_attribute("dir", "rtl")
    await expect(element.locator(".conn")).to_have_attribute("data-state", "polling")
    # Polling: the prompt shows with the next poll (every 5 s).
    await expect(element.locator(".headline")).to_have_text("کد تأیید لازم است", timeout=15_000)
    await expect(element.locator("form.prompt")).to_contain_text("۳ بار دیگر")
    # The phone number stays left to right inside the right-to-left element.
    hint = element.locator("form.prompt .ltr")
    box = await hint.evaluate(
        "(n) => { const r = document.createRange(), t = n.firstChild;"
        " const x = (i) => { r.setStart(t, i); r.setEnd(t, i + 1); return r.getBoundingClientRect().x; };"
        " return [x(0), x(t.length - 1)]; }"
    )
    assert box[0] < box[1]
    await shoot(page, "embed-code-prompt-fa-phone")

    # A text the bot asks with a pattern of 0-9, answered on a Persian keyboard: a short one
    # is refused in Persian, the full one fits (as on the server) and is relayed to the bot.
    longrun = embedding.longrun.settings
    await add_fault(longrun.bot_api_url, service="credit-score-rating", mode="stall", phase="any")
    postcode = {"id": "postcode", "kind": "text", "label": "Postcode", "max_length": 10, "pattern": "[0-9]{10}"}
    await Lifecycle(RecordStore(redis, Keys(longrun.key_prefix))).ask_input(h, Prompt.parse(postcode))
    text = element.locator("form.prompt[data-kind=text]")
    await expect(text).to_be_visible(timeout=15_000)
    await text.locator("input").fill("۱۲۳")
    await text.locator("button[type=submit]").click()
    await expect(text.locator(".error")).to_have_text("پاسخ خود را بررسی کنید و دوباره تلاش کنید.")
    await shoot(page, "embed-text-refused-fa-phone")
    await text.locator("input").fill("۱۲۳۴۵۶۷۸۹۰")
    await text.locator("button[type=submit]").click()

    async def relayed() -> bool:
        return any(":input:" in key for key in await bot_calls(longrun.bot_api_url, h))

    await wait_for(relayed, what="the answer relayed to the bot's /run")
    await element.locator("button.danger").click()
    await expect(element.locator(".confirm")).to_contain_text("متوقف شود")
    await element.locator(".confirm button.danger").click()
    await expect(element.locator(".headline")).to_have_text("لغو شد")
    await expect(element.locator(".notice")).to_have_text("این درخواست را متوقف کردید.")
    await shoot(page, "embed-cancelled-fa-phone")
    rec = await wait_status(redis, Keys(embedding.longrun.settings.key_prefix), h, "cancelled")
    assert rec["status"] == "cancelled" and blocked
    stored = loads_record(await redis.get(Keys(embedding.longrun.settings.key_prefix).record(h)))
    assert stored is not None and stored["_p"]["user_ref"] == DEMO_USER
    assert not [m for m in console if "Content Security Policy" in m or m.startswith("pageerror")], console


@pytest.mark.prompts
async def test_the_element_over_the_event_stream_solves_the_captcha_then_the_code_to_the_result(
    browser: Browser, embedding: Embedding, redis: Redis, settings: Settings
) -> None:
    """With the bots' prompts on and WebSockets blocked: the element goes over the event stream
    (fetch with the bearer token, across sites), shows the credit bureau's captcha, takes a
    wrong answer then the right one, then the code, and reaches the result."""
    page, console = await host_page(browser, embedding)
    blocked: list[str] = []

    async def refuse(ws: Any) -> None:
        blocked.append(ws.url)
        await ws.close()

    await page.route_web_socket(re.compile(r".*/ws/requests/.*"), refuse)
    h = await start_inquiry(page)
    element = page.locator("longrun-progress")
    conn = element.locator(".conn")
    await expect(conn).to_have_attribute("data-transport", "sse")
    await expect(conn).to_have_attribute("data-state", "live")
    await expect(conn).to_have_text("Live · event stream")
    prompt = element.locator("form.prompt[data-kind=captcha]")
    await expect(prompt).to_be_visible(timeout=30_000)
    await expect(element.locator(".headline")).to_have_text("We need your answer")
    await expect(prompt.locator("h3")).to_have_text("Type the characters in the picture")
    await expect(element.locator(".eta")).to_have_text("Waiting for your answer")
    picture = prompt.locator("img.captcha")
    assert await picture.evaluate("(img) => img.complete && img.naturalWidth") == 220  # a real PNG, drawn
    field = prompt.locator("input")
    assert await field.evaluate("(n) => getComputedStyle(n).direction") == "ltr"
    await shoot(page, "embed-captcha-sse")

    await field.fill("WRONG")
    await prompt.locator("button[type=submit]").click()
    await expect(element.locator("form.prompt[data-kind=captcha] .error")).to_be_visible(timeout=30_000)
    await expect(element.locator("form.prompt[data-kind=captcha]")).to_contain_text("2 tries left")
    answer = await captcha_answer(settings.bot_api_url, h)
    await element.locator("form.prompt[data-kind=captcha] input").fill(answer)
    await element.locator("form.prompt[data-kind=captcha] button[type=submit]").click()

    code_prompt = element.locator("form.prompt[data-kind=code]")
    await expect(code_prompt).to_be_visible(timeout=30_000)
    code = (await wait_for(lambda: outbox(settings.bot_api_url, h), what="the SMS"))[-1]["code"]
    await code_prompt.locator("input").fill(code)
    await code_prompt.locator("button[type=submit]").click()
    await expect(page.locator("#saved")).to_be_visible(timeout=30_000)
    rec = await wait_status(redis, Keys(embedding.longrun.settings.key_prefix), h, "completed")
    await expect(element.locator(".headline")).to_have_text("Done")
    await expect(element.locator(".result dd").first).to_have_text(f"{rec['result_data']['score']:,}")
    await shoot(page, "embed-completed-sse")
    assert blocked, "the element never tried the socket"
    assert await conn.get_attribute("data-transport") == "sse"  # never fell back to polling
    assert not [m for m in console if "Content Security Policy" in m or m.startswith(("error", "pageerror"))], console
