"""Logs: a real request (with a code) through a real worker logs one line per job phase,
with the request hash shortened, and never the person's data, their token or their code."""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from server.devtools.processes import Processes
from server.infra.logs import short
from server.record import Keys
from server.settings import Settings
from tests.helpers import outbox, wait_status

CREDIT = {"national_id": "0012345678", "mobile": "09121234567"}


async def test_a_job_logs_its_phases_with_the_hash_short_and_no_secrets(
    make_client: Any, settings: Settings, processes: Processes, redis: Redis
) -> None:
    json_logs = settings.with_(log_format="json")
    client: TestClient[Any, Any] = await make_client(json_logs)
    keys = Keys(json_logs.key_prefix)
    worker = processes.workers(json_logs)
    resp = await client.post("/api/requests", json={"service": "credit-score-rating", "data": CREDIT})
    created = await resp.json()
    h, token = created["hash"], created["access_token"]
    await wait_status(redis, keys, h, "waiting_otp", timeout=30)
    [message] = await outbox(json_logs.bot_api_url, h)
    code = message["code"]
    assert (await client.post(f"/api/requests/{h}/otp", json={"otp": code})).status == 202
    await wait_status(redis, keys, h, "completed", timeout=30)
    processes.stop(worker)  # a warm shutdown: everything it had to say is written

    text = processes.output(worker)
    entries = [orjson.loads(line) for line in text.splitlines()]  # structured: every line is JSON
    assert entries and all({"event", "level", "logger", "timestamp"} <= e.keys() for e in entries)
    jobs = [e["event"] for e in entries if e["logger"] == "longrun.jobs"]
    mine = [line for line in jobs if short(h) in line]
    # one line per phase: the run (which ends asking for the code), then relaying the code
    assert [line.split()[0] for line in mine] == ["run", "relaying"], jobs
    assert mine[0] == f"run {short(h)} on credit-score-rating (attempt 1 of 4)"
    assert mine[1] == f"relaying a code for {short(h)}"
    # RQ's own lines name the jobs by id, hash shortened too
    assert any(e["logger"] == "rq.worker" and short(h) in e["event"] for e in entries)

    # never the full hash, the token, the person's data or the code (timestamps aside: a
    # six-digit code could be some microsecond)
    without_times = orjson.dumps([{k: v for k, v in e.items() if k != "timestamp"} for e in entries]).decode()
    for secret in (h, token, CREDIT["national_id"], CREDIT["mobile"]):
        assert secret not in text
    assert not re.search(rf"(?<!\d){code}(?!\d)", without_times)
