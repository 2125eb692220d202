"""Requests for the benchmarks to watch, poll and update.

:func:`create_over_http` makes them the way a browser does (``POST /api/requests``:
validation, session, the create script, the RQ job). :func:`create_direct` makes
many at once through the same create script (``RecordStore.create``) without
enqueuing a job, for benchmarks that only need records to exist (sockets,
fan-out), and marks them running the way a worker does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from server.domain.status import Status
from server.record import RecordStore, new_record, token_digest
from server.requests.caller import new_access_token

#: a form each demo service accepts
FORMS: dict[str, dict[str, Any]] = {
    "vehicle-fines": {"plate": "12B345-67", "national_id": "0012345678"},
    "credit-score-rating": {"national_id": "0012345678", "mobile": "09121234567"},
    "video-generation": {"prompt": "A paper boat crossing a rainy street", "duration_seconds": 15},
}


@dataclass(frozen=True)
class Target:
    """A request and what lets a client see it."""

    hash: str
    token: str

    def as_dict(self) -> dict[str, str]:
        return {"hash": self.hash, "token": self.token}


async def create_over_http(
    base_url: str, count: int, service: str = "vehicle-fines", *, concurrency: int = 16
) -> list[Target]:
    """``count`` requests through the JSON API; raises on any answer but 201."""
    body = orjson.dumps({"service": service, "data": FORMS[service]})
    out: list[Target] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(session: aiohttp.ClientSession) -> None:
        async with (
            gate,
            session.post(
                f"{base_url}/api/requests", data=body, headers={"Content-Type": "application/json"}
            ) as resp,
        ):
            answer = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"POST /api/requests answered {resp.status}: {answer}")
            out.append(Target(answer["hash"], answer["access_token"]))

    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        await asyncio.gather(*(one(session) for _ in range(count)))
    return out


async def create_direct(
    store: RecordStore, count: int, service: str = "vehicle-fines", *, running: bool = True, concurrency: int = 64
) -> list[Target]:
    """``count`` records through the create script (no job), each made ``processing`` when ``running``."""
    gate = asyncio.Semaphore(concurrency)
    out: list[Target] = []

    async def one(i: int) -> None:
        async with gate:
            token = new_access_token()
            h = store.keys.new_hash()
            record = new_record(
                request_hash=h,
                service_slug=service,
                request_data=FORMS[service],
                user_id=f"u_bench{i % 500}",
                token_hash=token_digest(token),
                estimated_duration=20,
                priority="high",
                first_step="login",
            )
            if await store.create(record) is None:
                raise RuntimeError("hash clash")
            if running:
                # As a worker's start would, without a deadline: nothing sweeps these records.
                await store.update(h, {"status": Status.PROCESSING.value}, heartbeat=3600)
            out.append(Target(h, token))

    await asyncio.gather(*(one(i) for i in range(count)))
    return out
