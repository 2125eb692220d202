"""``WEB_CONCURRENCY=2``: two web processes on one port, behaving as one web tier."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from server.devtools.processes import Processes, free_port, wait_http
from server.settings import Settings

FINES = {"plate": "12B345-67", "national_id": "0012345678"}


async def test_two_processes_share_the_port_and_the_updates(settings: Settings, processes: Processes) -> None:
    port = free_port()
    web = settings.with_(port=port, public_url=f"http://127.0.0.1:{port}", web_concurrency=2)
    supervisor = processes.start("web", ["-m", "server"], web.to_env())
    await wait_http(f"{web.public_url}/healthz", supervisor)
    processes.workers(web)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        pids = set()
        for _ in range(40):  # new connections: the kernel spreads them over both processes
            async with http.get(f"{web.public_url}/api/services") as r:
                assert r.status == 200
            pids |= {int(line.split()[0]) for line in (await asyncio.to_thread(_children, supervisor.pid))}
        async with http.post(f"{web.public_url}/api/requests", json={"service": "vehicle-fines", "data": FINES}) as r:
            created = await r.json()
        h, auth = created["hash"], {"Authorization": f"Bearer {created['access_token']}"}
        sockets = [await http.ws_connect(f"{web.public_url.replace('http', 'ws')}/ws/requests/{h}", headers=auth)
                   for _ in range(6)]  # fmt: skip
        for ws in sockets:  # every socket, on whichever process, ends on the result
            async with asyncio.timeout(20):
                while True:
                    frame = orjson.loads((await ws.receive()).data)
                    if frame["request"]["status"] == "completed":
                        break
            await ws.close()
        async with http.get(f"{web.public_url}/metrics") as r:
            text = await r.text()
    served = sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "longrun_http_requests_total" and s.labels.get("route") == "/api/services"
    )
    assert served == 40  # either process reports the whole tier (multiprocess mode)
    assert len(_children(supervisor.pid)) == 2
    os.kill(supervisor.pid, signal.SIGTERM)
    assert await asyncio.to_thread(supervisor.wait, 15) == 0


def _children(pid: int) -> list[str]:
    from pathlib import Path

    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
