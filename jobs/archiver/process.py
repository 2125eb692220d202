"""The archiver process: signals, ``--drain``, and the archive-off mode without ``DATABASE_URL``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import socket
import time
from contextlib import suppress

from jobs.archiver.archiving import Archiver
from jobs.archiver.streams import REDIS_DOWN
from server.infra import logs
from server.infra.connections import async_client
from server.record import SHARDS, Keys
from server.settings import Settings

log = logging.getLogger("longrun.archiver")


async def serve(settings: Settings, consumer: str, *, drain: bool = False) -> int:
    redis = async_client(settings, socket_connect_timeout=2, socket_timeout=10)
    # Leave what start-up made (modules, clients: ~100k objects) out of every later full
    # collection: the records of a batch outlive the young generations, so full collections
    # come often, and walking start-up's objects each time cost a tenth of the archiver's CPU.
    gc.collect()
    gc.freeze()
    archiver = Archiver(settings, redis, consumer=consumer)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, archiver.stop.set)
    try:
        if drain:
            n = await archiver.drain()
            log.info("drained: %d records archived, %d dropped", n, archiver.dropped)
        else:
            log.info("archiver %s started (batch %d)", consumer, archiver.batch)
            await archiver.run()
    finally:
        await archiver.close()
        await redis.aclose()
    return 0


async def idle_without_database(settings: Settings, every: float = 60.0) -> int:
    """No archive: keep the streams from holding finished records (and the personal data in
    them) longer than the records themselves live — trim what is older than REQUEST_TTL."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    redis = async_client(settings, socket_connect_timeout=2, socket_timeout=10)
    keys = Keys(settings.key_prefix)
    try:
        while not stop.is_set():
            oldest = int((time.time() - settings.request_ttl) * 1000)
            try:
                for shard in range(SHARDS):
                    await redis.xtrim(keys.archive(shard), minid=f"{oldest}-0", approximate=False)
            except REDIS_DOWN as exc:
                log.warning("cannot trim the archive streams: %s", exc)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
    finally:
        await redis.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.archiver", description="Longrun archiver: terminal records → PostgreSQL history"
    )
    parser.add_argument(
        "--name",
        default=f"archiver-{socket.gethostname()}",
        help="consumer name; keep it stable across restarts so pending entries are picked up again",
    )
    parser.add_argument("--drain", action="store_true", help="archive what is waiting now, then exit")
    args = parser.parse_args(argv)
    settings = Settings.from_env_or_exit("longrun archiver")
    logs.configure(settings)
    if not settings.database_url:
        log.warning("DATABASE_URL is not set: the archive is off (terminal records stay in the streams)")
        return asyncio.run(idle_without_database(settings))
    return asyncio.run(serve(settings, args.name, drain=args.drain))
