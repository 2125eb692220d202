"""The update load: a bot process writing progress at a fixed rate (open loop).

``python -m bench.publish --kind longrun|socketio --targets FILE --rate R --duration S --out FILE``

- ``longrun``: the bot SDK, ``RedisReporter.progress()`` (settings from the
  environment, ``Settings.to_env()``): the atomic update script, which stores,
  bumps ``seq`` and publishes the public record on the request's channel.
- ``socketio``: python-socketio's external emitter,
  ``AsyncRedisManager(write_only=True).emit("update", record, room=hash)``,
  with a record of the same shape and size (``--record``).

Updates go round-robin over the targets at ``R`` per second for ``S``
seconds, whatever the answers do (an update waits only for a free slot among
``--inflight``); each carries ``"bench <CLOCK_MONOTONIC seconds>"`` in
``current_message``, taken just before it is sent. ``--batch`` (Longrun): what is due at
each 2 ms tick goes as one pipeline of update scripts (``RecordStore.update_many``), so the
load generator's CPU per update is not what limits the rate. Writes what it did to
``--out``: start, end, sent, done, errors, achieved rate.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.wsclients import STAMP
from server.devtools.processes import write_json

Send = Callable[[str, str], Awaitable[None]]
#: the targets due at one tick, and the stamp they all carry
SendMany = Callable[[list[str], str], Awaitable[None]]


@dataclass
class _Tally:
    """What a driver sent and what came of it (shared by :func:`drive` and :func:`drive_batched`)."""

    done: int = 0
    errors: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def failed(self, exc: Exception, n: int) -> None:
        self.errors += n
        self.kinds[repr(exc)[:120]] = self.kinds.get(repr(exc)[:120], 0) + n

    def result(self, start: float, finished: float, rate: float, sent: int) -> dict[str, Any]:
        return {
            "start": start,
            "end": finished,
            "rate": rate,
            "sent": sent,
            "done": self.done,
            "errors": self.errors,
            "error_kinds": self.kinds,
            "achieved": self.done / (finished - start),
        }


async def drive(send: Send, hashes: list[str], rate: float, duration: float, inflight: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(inflight)
    tally, sent = _Tally(), 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(h: str) -> None:
        try:
            await send(h, f"{STAMP}{time.monotonic():.6f}")
            tally.done += 1
        except Exception as exc:
            tally.failed(exc, 1)
        finally:
            gate.release()

    start = time.monotonic()
    end = start + duration
    while (now := time.monotonic()) < end:
        for _ in range(int((now - start) * rate) - sent):
            await gate.acquire()
            task = asyncio.create_task(one(hashes[sent % len(hashes)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(0.002)
    finished = time.monotonic()
    await asyncio.gather(*tasks, return_exceptions=True)
    return tally.result(start, finished, rate, sent)


async def drive_batched(
    send_many: SendMany, hashes: list[str], rate: float, duration: float, inflight: int
) -> dict[str, Any]:
    """As :func:`drive`, but what is due at each 2 ms tick goes out as one batch (one
    round trip), at most ``inflight`` batches waiting at once."""
    gate = asyncio.Semaphore(inflight)
    tally, sent = _Tally(), 0
    tasks: set[asyncio.Task[None]] = set()

    async def batch(due: list[str]) -> None:
        try:
            await send_many(due, f"{STAMP}{time.monotonic():.6f}")
            tally.done += len(due)
        except Exception as exc:
            tally.failed(exc, len(due))
        finally:
            gate.release()

    start = time.monotonic()
    end = start + duration
    while (now := time.monotonic()) < end:
        due = int((now - start) * rate) - sent
        if due > 0:
            await gate.acquire()
            task = asyncio.create_task(batch([hashes[(sent + i) % len(hashes)] for i in range(due)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += due
        await asyncio.sleep(0.002)
    finished = time.monotonic()
    await asyncio.gather(*tasks, return_exceptions=True)
    return tally.result(start, finished, rate, sent)


async def longrun(hashes: list[str], rate: float, duration: float, inflight: int, batch: bool) -> dict[str, Any]:
    from bots.sdk import RedisReporter
    from server.requests.lifecycle import progress_patch
    from server.settings import Settings

    progress = dict.fromkeys(hashes, 0)
    async with RedisReporter.connect(Settings.from_env()) as report:

        async def send(h: str, stamp: str) -> None:
            progress[h] = min(99, progress[h] + 1)
            await report.progress(h, progress[h], step="fetch", message=stamp)

        async def send_many(due: list[str], stamp: str) -> None:
            changes = []
            for h in due:
                progress[h] = min(99, progress[h] + 1)
                changes.append((h, progress_patch(progress[h], "fetch", stamp)))
            results = await report.lifecycle.store.update_many(changes)
            refused = [r.outcome for r in results if not r.applied]
            if refused:
                raise RuntimeError(f"updates refused: {refused[:3]}")

        if batch:
            return await drive_batched(send_many, hashes, rate, duration, inflight)
        return await drive(send, hashes, rate, duration, inflight)


async def socketio_emitter(
    hashes: list[str], rate: float, duration: float, inflight: int, redis_url: str, channel: str, record: dict[str, Any]
) -> dict[str, Any]:
    import socketio

    manager = socketio.AsyncRedisManager(redis_url, channel=channel, write_only=True)
    seq = dict.fromkeys(hashes, 0)

    async def send(h: str, stamp: str) -> None:
        seq[h] += 1
        body = {**record, "hash": h, "seq": seq[h], "current_message": stamp}
        await manager.emit("update", body, room=h, namespace="/")

    try:
        return await drive(send, hashes, rate, duration, inflight)
    finally:
        if manager.redis is not None:
            await manager.redis.aclose()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kind", choices=("longrun", "socketio"), required=True)
    parser.add_argument("--targets", type=Path, required=True)
    parser.add_argument("--part", default="0/1", help="i/k: this process sends to every k-th target from i")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--inflight", type=int, default=64, help="below redis-py's default pool of 100")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--batch", action="store_true", help="longrun: what is due per 2 ms tick in one pipeline of update scripts"
    )
    parser.add_argument("--redis-url", help="socketio: where its manager publishes")
    parser.add_argument("--channel", help="socketio: the manager's channel")
    parser.add_argument("--record", type=Path, help="socketio: the record (JSON) every update carries")
    args = parser.parse_args(argv)
    i, k = (int(x) for x in args.part.split("/"))
    hashes = [t["hash"] for t in orjson.loads(args.targets.read_bytes())][i::k]
    if args.kind == "longrun":
        gc.freeze()  # nothing here lives long enough to need the collector's full walks
        result = asyncio.run(longrun(hashes, args.rate, args.duration, args.inflight, args.batch))
    else:
        record = orjson.loads(args.record.read_bytes())
        result = asyncio.run(
            socketio_emitter(hashes, args.rate, args.duration, args.inflight, args.redis_url, args.channel, record)
        )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
