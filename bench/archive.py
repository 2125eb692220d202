"""Archive benchmark: 100,000 terminal records into PostgreSQL, COPY path vs row-by-row INSERT.

``python -m bench.archive [--records 100000] [--baseline 100000] [--batch N]``

1. Puts ``--records`` terminal records (full records, as the update script hands
   them over) into the 16 archive streams of a private key prefix.
2. The archiver (``jobs.archiver.Archiver.drain``) moves them all: XREADGROUP,
   parse, COPY into staging + ``INSERT … ON CONFLICT DO NOTHING``, XACK+XDEL.
   Reported as end-to-end records per second.
3. The same rows again, written only (no Redis), in the archiver's batch size:
   once with the COPY path (``write_rows``), once the naive way, one INSERT per
   row (``insert_rows_one_by_one``), each batch one transaction. The ratio is
   the speed-up COPY buys.

Everything lives in a schema and key prefix of its own, dropped afterwards.
Uses ``DATABASE_URL`` (else the machine's PostgreSQL, else an embedded one) and
``REDIS_URL`` (else the machine's Redis). :func:`run` returns the numbers as a
dict for ``python -m bench`` (a coroutine, for a runner with its own loop); :func:`main`
runs it, prints one row and returns the same dict.
"""

from __future__ import annotations

import argparse
import asyncio
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
from server.archive import ArchiveRow, insert_rows_one_by_one, to_row, write_rows
from server.db import connect, migrate
from server.embedded import LOCAL_POSTGRES, LOCAL_REDIS, EmbeddedPostgres, postgres_answers
from server.record import Keys
from server.settings import Settings, new_webhook_secret

SERVICES = ("credit-score-rating", "vehicle-fines", "video-generation")
STATUSES = ("completed",) * 8 + ("failed", "cancelled")


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


async def fill_streams(redis: Redis, keys: Keys, records: int) -> list[ArchiveRow]:
    """XADD the records into their shard streams; returns the rows they should become."""
    now = time.time()
    rows: list[ArchiveRow] = []
    for start in range(0, records, 2000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(records, start + 2000)):
                rec = fake_record(keys, i, now)
                rows.append(to_row(rec))
                pipe.xadd(keys.archive(keys.shard(rec["hash"])), {"r": orjson.dumps(rec)})
            await pipe.execute()
    return rows


async def truncate(settings: Settings) -> None:
    conn = await connect(settings, statement_timeout=60, application="bench")
    try:
        await conn.execute("TRUNCATE history")
    finally:
        await conn.close()


async def timed_writes(settings: Settings, rows: Sequence[ArchiveRow], batch: int, *, copy: bool) -> float:
    """Seconds to write ``rows`` in batches, each one transaction, with COPY or one INSERT per row."""
    await truncate(settings)
    conn = await connect(settings, statement_timeout=300, application="bench")
    try:
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            added = await (write_rows(conn, chunk) if copy else insert_rows_one_by_one(conn, chunk))
            assert added == len(chunk), (added, len(chunk))
        return time.perf_counter() - started
    finally:
        await conn.close()


async def run(records: int = 100_000, baseline: int | None = None, batch: int | None = None) -> dict[str, Any]:
    """The benchmark; returns its numbers (records per second and the COPY / INSERT ratio).

    ``batch`` defaults to the archiver's own (``ARCHIVE_BATCH``'s default).
    """
    baseline = records if baseline is None else min(baseline, records)
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
    batch = settings.archive_batch
    keys = Keys(settings.key_prefix)
    redis = Redis.from_url(redis_url, socket_timeout=60)
    try:
        await migrate(settings)
        rows = await fill_streams(redis, keys, records)

        archiver = Archiver(settings, redis, consumer="bench")
        try:
            assert await archiver.prepare()
            started = time.perf_counter()
            archived = await archiver.drain()
            e2e = time.perf_counter() - started
        finally:
            await archiver.close()
        assert archived == records, (archived, records)

        copy_s = await timed_writes(settings, rows, batch, copy=True)
        insert_s = await timed_writes(settings, rows[:baseline], batch, copy=False)
        copy_rate = records / copy_s
        insert_rate = baseline / insert_s
        return {
            "name": "archive",
            "records": records,
            "batch": batch,
            "archiver_records_per_s": round(records / e2e),
            "copy_records_per_s": round(copy_rate),
            "insert_records_per_s": round(insert_rate),
            "insert_records": baseline,
            "speedup": round(copy_rate / insert_rate, 1),
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
    parser.add_argument("--baseline", type=int, default=None, help="rows for the INSERT baseline (default: all)")
    parser.add_argument("--batch", type=int, default=None, help="records per transaction (default: the archiver's)")
    args = parser.parse_args(list(argv))
    result = asyncio.run(run(args.records, args.baseline, args.batch))
    print(
        f"archive  {result['records']:>7} records  archiver {result['archiver_records_per_s']:>7}/s  "
        f"COPY {result['copy_records_per_s']:>7}/s  row-by-row INSERT {result['insert_records_per_s']:>6}/s "
        f"({result['insert_records']} rows)  COPY/INSERT {result['speedup']}× (target ≥ {result['target_speedup']}×)"
    )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
