"""Archive benchmark: 100,000 terminal records from the Redis streams into PostgreSQL, the
archiver against a row-by-row INSERT baseline doing the same job.

``python -m bench.archive [--records 100000] [--baseline 100000] [--batch N] [--parsers N]``

1. Puts ``--records`` terminal records (full records, as the update script hands
   them over) into the 16 archive streams of a private key prefix.
2. **The archiver** (``jobs.archiver.Archiver.drain``) moves them all: XREADGROUP,
   parse (in ``--parsers`` forked parser processes, ``ARCHIVE_PARSERS``' default),
   one binary ``COPY`` per batch straight into ``history``, commit, then XACK + XDEL,
   batches read ahead while one is written. Records per second from the first read
   to the last acknowledgement: the headline figure. Then the same again with the
   archiver parsing in its own process (``ARCHIVE_PARSERS=0``), for comparison.
3. **The baseline** does the same job the naive way: the same records put into the
   streams again (``--baseline`` of them), the same archiver reading, parsing and
   acknowledging them in the same batches, one batch after the other, but writing
   each row with its own ``INSERT … ON CONFLICT`` statement (one round trip per row;
   each batch still one transaction). The ratio archiver / baseline is the figure the
   target is about.
4. For context only, the COPY writes alone (no Redis, rows already parsed): what
   PostgreSQL takes for the same batches, the ceiling the archiver approaches.

Everything lives in a schema and key prefix of its own, dropped afterwards.
Uses ``DATABASE_URL`` (else the machine's PostgreSQL, else an embedded one) and
``REDIS_URL`` (else the machine's Redis). :func:`run` returns the numbers as a
dict for ``python -m bench`` (a coroutine, for a runner with its own loop); :func:`main`
runs it, prints one row and returns the same dict.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql
from redis.asyncio import Redis

from jobs.archiver import Archiver
from server.devtools.embedded import LOCAL_POSTGRES, LOCAL_REDIS, EmbeddedPostgres, postgres_answers
from server.history.db import connect, migrate
from server.history.rows import ArchiveRow, to_row
from server.history.writer import insert_rows_one_by_one, write_rows
from server.record import Keys
from server.settings import Settings, new_webhook_secret

SERVICES = ("credit-score-rating", "vehicle-fines", "video-generation")
STATUSES = ("completed",) * 8 + ("failed", "cancelled")

#: (stream, record JSON) as the update script XADDs it
Entry = tuple[str, bytes]


def fake_record(keys: Keys, i: int, now: float) -> dict[str, Any]:
    """A terminal record shaped like the ones the update script writes (private part included)."""
    h = keys.new_hash()
    status = STATUSES[i % len(STATUSES)]
    created = now - 3600 + i * 0.01
    started = created + 0.5
    steps = {"login": started, "captcha": started + 2.1, "otp": started + 4.8, "report": started + 19.0}
    finished = started + 25.0 + (i % 17)
    iso = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(finished))
    return {
        "hash": h,
        "service_slug": SERVICES[i % len(SERVICES)],
        "status": status,
        "step": "report",
        "progress": 100 if status == "completed" else 60,
        "current_message": "Done.",
        "estimated_duration": 60,
        "estimated_remaining_time": 0,
        "requires_otp": False,
        "otp_data": None,
        "request_data": {"national_id": f"{i:010d}", "mobile": "09121234567"},
        "result_data": {"score": 300 + i % 550, "grade": "B", "loans": [{"bank": "Melli", "amount": 1200}]}
        if status == "completed"
        else None,
        "error": "The portal said no." if status == "failed" else None,
        "user_id": f"u_{i % 5000}",
        "priority": "default",
        "attempt": 1,
        "created_at": iso,
        "started_at": iso,
        "finished_at": iso,
        "updated_at": iso,
        "expires_at": iso,
        "seq": 14,
        "steps": {k: round(v - started, 1) for k, v in steps.items()},
        "_p": {
            "token": secrets.token_hex(32),
            "created": created,
            "started": started,
            "finished": finished,
            "waited": 6.5,
            "steps": steps,
        },
    }


def fake_entries(keys: Keys, records: int) -> list[Entry]:
    now = time.time()
    out = []
    for i in range(records):
        rec = fake_record(keys, i, now)
        out.append((keys.archive(keys.shard(rec["hash"])), orjson.dumps(rec)))
    return out


async def fill_streams(redis: Redis, entries: Sequence[Entry]) -> None:
    """XADD the records into their shard streams."""
    for start in range(0, len(entries), 2000):
        async with redis.pipeline(transaction=False) as pipe:
            for stream, raw in entries[start : start + 2000]:
                pipe.xadd(stream, {"r": raw})
            await pipe.execute()


class RowByRowArchiver(Archiver):
    """The baseline: the archiver (reading, parsing, acknowledging, retries), but writing each
    row of a batch with its own INSERT statement, one batch after the other. Not pipelined:
    reading ahead only slows it down (a slice of parsing runs between two of its INSERTs'
    round trips), and a baseline should not be handicapped."""

    async def pump(self, *, upkeep: bool) -> None:
        while not self.stop.is_set():
            entries = await self.read_new()
            if not entries or not await self.process(entries):
                return

    async def write(self, rows: Sequence[ArchiveRow]) -> int | None:
        return await insert_rows_one_by_one(await self.connection(), rows)


async def truncate(settings: Settings) -> None:
    conn = await connect(settings, statement_timeout=60, application="bench")
    try:
        await conn.execute("TRUNCATE history")
        await conn.commit()
    finally:
        await conn.close()


async def timed_drain(settings: Settings, redis: Redis, archiver: Archiver, records: int) -> float:
    """Seconds for ``archiver`` to archive the ``records`` waiting in the streams (an empty table)."""
    await truncate(settings)
    # As ``jobs.archiver.serve`` does at start: what exists now stays out of full collections.
    gc.collect()
    gc.freeze()
    try:
        assert await archiver.prepare()
        started = time.perf_counter()
        archived = await archiver.drain()
        elapsed = time.perf_counter() - started
    finally:
        gc.unfreeze()
        await archiver.close()
    assert archived == records, (archived, records)
    return elapsed


async def timed_copies(settings: Settings, rows: Sequence[ArchiveRow], batch: int) -> float:
    """Seconds to write ``rows`` with the COPY path alone, in batches, each one transaction."""
    await truncate(settings)
    conn = await connect(settings, statement_timeout=300, application="bench")
    try:
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            added = await write_rows(conn, chunk)
            assert added == len(chunk), (added, len(chunk))
        return time.perf_counter() - started
    finally:
        await conn.close()


async def run(
    records: int = 100_000, baseline: int | None = None, batch: int | None = None, parsers: int | None = None
) -> dict[str, Any]:
    """The benchmark; returns its numbers (records per second and the archiver / baseline ratio).

    ``baseline`` records go through the row-by-row baseline (default: all of them);
    ``batch`` defaults to the archiver's own (``ARCHIVE_BATCH``'s default).
    """
    baseline = records if baseline is None else max(1, min(baseline, records))
    redis_url = os.environ.get("REDIS_URL") or LOCAL_REDIS
    database_url = os.environ.get("DATABASE_URL") or LOCAL_POSTGRES
    embedded: EmbeddedPostgres | None = None
    if not postgres_answers(database_url):
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="longrun-bench-")) / "pg", keep=False)
        database_url = embedded.start()
    tag = secrets.token_hex(4)
    settings = Settings(
        secret_key=secrets.token_urlsafe(32),
        webhook_secrets=(new_webhook_secret(),),
        redis_url=redis_url,
        database_url=database_url,
        database_schema=f"bench_{tag}",
        key_prefix=f"bench{tag}_",
    )
    if batch is not None:
        settings = settings.with_(archive_batch=batch)
    if parsers is not None:
        settings = settings.with_(archive_parsers=parsers)
    batch, parsers = settings.archive_batch, settings.archive_parsers
    keys = Keys(settings.key_prefix)
    redis = Redis.from_url(redis_url, socket_timeout=60)
    try:
        await migrate(settings)
        entries = fake_entries(keys, records)

        await fill_streams(redis, entries)
        archiver_s = await timed_drain(settings, redis, Archiver(settings, redis, consumer="bench"), records)

        await fill_streams(redis, entries)
        in_process = Archiver(settings, redis, consumer="bench-in-process", parsers=0)
        in_process_s = await timed_drain(settings, redis, in_process, records)

        await fill_streams(redis, entries[:baseline])
        baseline_s = await timed_drain(
            settings, redis, RowByRowArchiver(settings, redis, consumer="bench-baseline"), baseline
        )

        rows = [to_row(orjson.loads(raw)) for _, raw in entries]
        copy_s = await timed_copies(settings, rows, batch)
        archiver_rate = records / archiver_s
        baseline_rate = baseline / baseline_s
        return {
            "name": "archive",
            "records": records,
            "batch": batch,
            "parsers": parsers,
            "archiver_records_per_s": round(archiver_rate),
            "in_process_records_per_s": round(records / in_process_s),
            "baseline_records_per_s": round(baseline_rate),
            "baseline_records": baseline,
            "copy_only_records_per_s": round(records / copy_s),
            "speedup": round(archiver_rate / baseline_rate, 1),
            "target_speedup": 10,
        }
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(settings.database_schema)))
        stale = [k async for k in redis.scan_iter(match=f"{settings.key_prefix}*", count=1000)]
        for i in range(0, len(stale), 500):
            await redis.delete(*stale[i : i + 500])
        await redis.aclose()
        if embedded is not None:
            embedded.stop()


def main(argv: Sequence[str] = ()) -> dict[str, Any]:
    """Run with defaults (or command-line ``argv``), print one row, return the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=None, help="records for the row-by-row baseline (default: all)")
    parser.add_argument("--batch", type=int, default=None, help="records per transaction (default: the archiver's)")
    parser.add_argument("--parsers", type=int, default=None, help="parser processes (default: the archiver's)")
    args = parser.parse_args(list(argv))
    result = asyncio.run(run(args.records, args.baseline, args.batch, args.parsers))
    print(
        f"archive  {result['records']:>7} records  archiver {result['archiver_records_per_s']:>7}/s "
        f"({result['parsers']} parsers; parsing in-process {result['in_process_records_per_s']}/s)  "
        f"row-by-row INSERT baseline {result['baseline_records_per_s']:>6}/s ({result['baseline_records']} records)  "
        f"ratio {result['speedup']}× (target ≥ {result['target_speedup']}×)  "
        f"[COPY writes alone {result['copy_only_records_per_s']}/s]"
    )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
