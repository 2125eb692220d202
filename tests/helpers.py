"""Small helpers the tests share: waiting for a condition, reading the demo outbox."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import orjson
from redis.asyncio import Redis

from server.devtools.processes import ROOT
from server.record import Keys, RecordStore, loads_record, new_record, token_digest

T = TypeVar("T")


async def wait_for(
    probe: Callable[[], Awaitable[T]], *, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


async def record(redis: Redis, keys: Keys, h: str) -> dict[str, Any]:
    rec = loads_record(await redis.get(keys.record(h)))
    assert rec is not None, f"no record for {h}"
    return rec


async def create_record(
    store: RecordStore,
    h: str | None = None,
    *,
    service_slug: str = "credit-score-rating",
    request_data: dict[str, Any] | None = None,
) -> str:
    """A new pending record (its token is ``"tok"``), straight through the store; its hash."""
    h = h or store.keys.new_hash()
    rec = new_record(
        request_hash=h,
        service_slug=service_slug,
        request_data=request_data or {"national_id": "0012345678"},
        user_id="u_test",
        token_hash=token_digest("tok"),
        estimated_duration=60,
        priority="default",
        first_step="login",
    )
    assert await store.create(rec) is not None
    return h


async def wait_status(redis: Redis, keys: Keys, h: str, *statuses: str, timeout: float = 20.0) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        rec = loads_record(await redis.get(keys.record(h)))
        return rec if rec and rec.get("status") in statuses else None

    return await wait_for(probe, timeout=timeout, what=f"{h[:12]} to be {'/'.join(statuses)}")


async def outbox(bot_url: str, h: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(f"{bot_url}/demo/outbox", params={"requestHash": h}) as r:
        body = await r.json()
        messages: list[dict[str, Any]] = body["messages"]
        return messages


async def bot_calls(bot_url: str, h: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as s, s.get(f"{bot_url}/demo/calls", params={"requestHash": h}) as r:
        calls: dict[str, int] = (await r.json())["calls"]
        return calls


async def add_fault(bot_url: str, **fault: Any) -> None:
    async with aiohttp.ClientSession() as s, s.post(f"{bot_url}/demo/faults", data=orjson.dumps(fault)) as r:
        assert r.status == 201, await r.text()


def npm_ci() -> None:
    """The Node SDK's packages (bots/js), exactly as its package-lock.json says; once per
    checkout state (``npm ci`` wipes node_modules first, so it is not run again for nothing)."""
    js = ROOT / "bots" / "js"
    stamp = js / "node_modules" / ".package-lock.json"
    lock = js / "package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=js, check=True, timeout=300)


class EventReader:
    """Server-Sent Events off an open response: ``await next_event()`` → (event, id, data JSON)."""

    def __init__(self, resp: aiohttp.ClientResponse):
        self.resp = resp

    async def next_event(self, timeout: float = 10.0) -> tuple[str, str | None, dict[str, Any]]:
        event, ident, data = "message", None, b""
        async with asyncio.timeout(timeout):
            while True:
                line = await self.resp.content.readline()
                if not line:
                    raise ConnectionResetError("the stream ended")
                line = line.rstrip(b"\r\n")
                if not line:
                    if data:
                        return event, ident, orjson.loads(data)
                    event, ident, data = "message", None, b""  # a comment or retry: no event
                    continue
                name, _, value = line.partition(b":")
                value = value[1:] if value.startswith(b" ") else value
                if name == b"event":
                    event = value.decode()
                elif name == b"id":
                    ident = value.decode()
                elif name == b"data":
                    data += value


async def captcha_answer(bot_url: str, h: str) -> str:
    """What the demo captcha shown for ``h`` says (``GET /demo/captcha``)."""
    async with aiohttp.ClientSession() as s, s.get(f"{bot_url}/demo/captcha", params={"requestHash": h}) as r:
        assert r.status == 200, await r.text()
        answer: str = (await r.json())["answer"]
        return answer


def two_vehicle_national_id() -> str:
    """A national id to which the demo traffic portal (DEMO_PROMPTS) gives two vehicles."""
    from bots.demo.scenarios import vehicles_of

    return next(f"{n:010d}" for n in range(12345678, 12345778) if len(vehicles_of(f"{n:010d}", "12B345-67")) == 2)
