"""HTTP load generators (each runs as its own process, never beside the server it measures).

``python -m bench.httpload get --url URL --duration S --connections C [--header H] --out FILE``
    keep-alive GETs for a fixed time, as many as the server answers: the stand-in
    for ``wrk`` on a machine without it (slower: the figure is then the client's
    limit as much as the server's, which the table says).

``python -m bench.httpload create --url BASE --count N --concurrency C --service SLUG --out FILE``
    ``POST /api/requests`` N times, C at a time; writes when it started, when it
    finished, how many were created, the hashes and its own CPU seconds (it shares
    the cores with the system it loads: the benchmark reports what it took).

Both run on uvloop, the loop ``python -m server`` uses: a client as lean as the
server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import uvloop

from bench.seed import FORMS
from server.devtools.processes import write_json


async def get_load(url: str, duration: float, connections: int, headers: dict[str, str]) -> dict[str, float]:
    ok = bad = 0
    stop_at = time.monotonic() + duration
    connector = aiohttp.TCPConnector(limit=connections)

    async def loop(session: aiohttp.ClientSession) -> None:
        nonlocal ok, bad
        while time.monotonic() < stop_at:
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                if resp.status == 200:
                    ok += 1
                else:
                    bad += 1

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
        await asyncio.gather(*(loop(session) for _ in range(connections)))
    elapsed = time.monotonic() - started
    return {"requests_per_s": (ok + bad) / elapsed, "requests": ok + bad, "non_2xx": bad, "seconds": elapsed}


async def create_load(base: str, count: int, concurrency: int, service: str) -> dict[str, object]:
    body = orjson.dumps({"service": service, "data": FORMS[service]})
    hashes: list[str] = []
    errors: dict[str, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    headers = {"Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            queue.get_nowait()
            try:
                async with session.post(f"{base}/api/requests", data=body, headers=headers) as resp:
                    answer = await resp.read()
                    if resp.status == 201:
                        hashes.append(orjson.loads(answer)["hash"])
                    else:
                        errors[str(resp.status)] = errors.get(str(resp.status), 0) + 1
            except aiohttp.ClientError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    started, cpu = time.time(), time.process_time()
    connector = aiohttp.TCPConnector(limit=concurrency)
    # Each creation is a new visitor (no cookie jar): the session cookie is minted every time.
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return {
        "started": started,
        "finished": time.time(),
        "created": len(hashes),
        "errors": errors,
        "hashes": hashes,
        "cpu_seconds": time.process_time() - cpu,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("get")
    get.add_argument("--url", required=True)
    get.add_argument("--duration", type=float, default=6.0)
    get.add_argument("--connections", type=int, default=64)
    get.add_argument("--header", action="append", default=[])
    get.add_argument("--out", type=Path, required=True)
    create = sub.add_parser("create")
    create.add_argument("--url", required=True)
    create.add_argument("--count", type=int, required=True)
    create.add_argument("--concurrency", type=int, default=16)
    create.add_argument("--service", default="vehicle-fines")
    create.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        if args.command == "get":
            headers = dict(h.split(": ", 1) for h in args.header)
            result: object = runner.run(get_load(args.url, args.duration, args.connections, headers))
        else:
            result = runner.run(create_load(args.url, args.count, args.concurrency, args.service))
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
