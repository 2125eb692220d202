"""Memory per idle socket: RSS growth of one server process from 0 to N idle sockets.

``python -m bench.sockets_memory [--sockets 10000]``

For Longrun (``python -m server``, one process), python-socketio
(``bench/sio_server.py``) and Longrun on two web processes sharing the port
(``WEB_CONCURRENCY=2``: the sockets spread over both, the RSS of both counted),
in the same run:

1. start the server; open and close a few sockets so that everything loaded
   lazily is loaded; note its RSS;
2. a client process (``bench/wsclients.py --idle``) opens ``--sockets``
   WebSockets, one per request (Longrun: ``/ws/requests/{hash}`` with the
   request's token, so the hub also holds one channel subscription per socket;
   socket.io: one room per socket), and holds them without traffic;
3. two seconds later, the server's RSS again: (after − before) / N.

The same for Longrun's event stream (``longrun-sse``: ``GET /sse/requests/{hash}``, one
process), reported beside the socket's.

The open-files limit is raised to its hard limit (20,000 on the reference
machine) in every process we start; the server inherits it from us.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from bench.common import Result, Row, bench_settings, cleanup, processes, raise_fd_limit, rss
from bench.fanout import RUNS, kind_of, open_clients, start_server
from bench.seed import create_direct
from server.record import Keys, RecordStore

TARGET_KB = 16.0
WARMUP_SOCKETS = 50
#: Longrun's Server-Sent Events stream, measured like a socket (one web process)
SSE = "longrun-sse"


def client_kind(system: str) -> str:
    return "sse" if system == SSE else kind_of(system)


async def run(sockets: int = 10_000, settle: float = 2.0, systems: Sequence[str] = (*RUNS, SSE)) -> Result:
    limit = raise_fd_limit()
    if limit < sockets + 500:
        raise RuntimeError(f"open-files limit {limit} is too low for {sockets} sockets (ulimit -n)")
    settings = bench_settings()
    work = Path(tempfile.mkdtemp(prefix="longrun-bench-sockets-"))
    figures: dict[str, Any] = {"sockets": sockets}
    redis = Redis.from_url(settings.redis_url)
    try:
        store = RecordStore(redis, Keys(settings.key_prefix), ttl=settings.request_ttl)
        targets = work / "targets.json"
        targets.write_bytes(orjson.dumps([t.as_dict() for t in await create_direct(store, sockets, running=False)]))
        with processes("sockets") as procs:
            for system in systems:
                server, base = await start_server(procs, settings, system)
                warm_out = work / f"{system}-warm"
                kind = client_kind(system)
                warm, _ = await open_clients(procs, kind, base, targets, WARMUP_SOCKETS, warm_out, idle=True)
                procs.stop(warm)
                await asyncio.sleep(settle / 2)
                # every web process (a supervisor forks them when there are several)
                before = rss(server.pid, children=True)
                clients, opened = await open_clients(
                    procs, kind, base, targets, sockets, work / f"{system}-idle", idle=True
                )
                await asyncio.sleep(settle)
                procs.check_alive(server)
                after = rss(server.pid, children=True)
                procs.stop(clients)
                await asyncio.sleep(settle)
                closed = rss(server.pid, children=True)
                procs.stop(server)
                figures[system] = {
                    "rss_before_mib": round(before / 2**20, 1),
                    "rss_after_mib": round(after / 2**20, 1),
                    "rss_after_close_mib": round(closed / 2**20, 1),
                    "kib_per_socket": round((after - before) / sockets / 1024, 2),
                    "open_seconds": opened["seconds"],
                }
    finally:
        await cleanup(settings)
        await redis.aclose()
        shutil.rmtree(work, ignore_errors=True)
    return Result("sockets", figures, rows(figures))


def rows(figures: dict[str, Any]) -> list[Row]:
    out = []
    for system in ("longrun", "longrun×2"):
        if system not in figures:
            continue
        ours, peer = figures[system], figures["socketio"]
        per, peer_per = ours["kib_per_socket"], peer["kib_per_socket"]
        met = per <= TARGET_KB
        note = (
            f"RSS {ours['rss_before_mib']} → {ours['rss_after_mib']} MiB "
            f"({ours['rss_after_close_mib']} MiB after the sockets closed); opened in {ours['open_seconds']} s"
        )
        if not met:
            note = f"missed by {per - TARGET_KB:.1f} KiB ({per / TARGET_KB:.0%} of target); " + note
        web = RUNS[system]
        if system == "longrun" and SSE in figures:
            sse = figures[SSE]
            note = (
                f"memory per idle SSE stream, the same way: {sse['kib_per_socket']:.1f} KiB/stream "
                f"(RSS {sse['rss_before_mib']} → {sse['rss_after_mib']} MiB); " + note
            )
        out.append(
            Row(
                what="memory per idle socket" + (f", {web} web processes" if web > 1 else ""),
                how=f"RSS growth of the web process{'es' if web > 1 else ''}, 0 → {figures['sockets']:,} "
                "idle sockets (one request each)",
                ours=f"{per:.1f} KiB/socket",
                peer=f"python-socketio (1 process) {peer_per:.1f} KiB/socket",
                ratio=f"{per / peer_per:.2f}" if peer_per > 0 else "—",
                target=f"≤ {TARGET_KB:g} KiB",
                met=met,
                note=note,
            )
        )
    return out


def main(argv: Sequence[str] = ()) -> Result:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sockets", type=int, default=10_000)
    args = parser.parse_args(list(argv))
    result = asyncio.run(run(args.sockets))
    return result.show()


if __name__ == "__main__":
    main(sys.argv[1:])
