"""Writing the archive: history rows into PostgreSQL.

- :func:`write_rows` (:func:`write_batch`: the batch already encoded) stores a
  batch with one binary ``COPY`` straight into ``history``, in one transaction (the rows come encoded by
  :func:`server.history.rows.to_row`). A record delivered twice (the archiver died
  between commit and acknowledgement) is archived once: the primary key
  refuses that COPY, and the batch goes again through a temporary staging
  table and ``INSERT … ON CONFLICT DO UPDATE`` that keeps the newer outcome.
- :func:`insert_rows_one_by_one` is the naive way, one INSERT per row: the
  benchmark's baseline.
- :func:`delete_expired` is retention, in short batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, AsyncCursor
from psycopg.errors import UniqueViolation

from server.history.rows import COLUMNS, ArchiveRow, CopyBatch, copy_batch

_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS history_stage (
    user_id text, hash text, service_slug text, status text,
    created_at timestamptz, started_at timestamptz, finished_at timestamptz,
    duration double precision, waited double precision, steps jsonb, attempts smallint,
    error text, request_data jsonb, result_data jsonb, app text, user_ref text
) ON COMMIT DELETE ROWS
"""
# A record delivered again is the same row (same finished_at): nothing changes. A request an
# operator retried after it failed finishes again later: its new outcome replaces the old.
_UPSERT = (
    "ON CONFLICT (user_id, hash) DO UPDATE SET ("
    + COLUMNS
    + ") = ROW("
    + ", ".join(f"EXCLUDED.{c.strip()}" for c in COLUMNS.split(","))
    + ") WHERE history.finished_at < EXCLUDED.finished_at"
)
_MERGE = f"INSERT INTO history ({COLUMNS}) SELECT {COLUMNS} FROM history_stage {_UPSERT}"
_INSERT_ONE = f"""
INSERT INTO history ({COLUMNS})
VALUES (%s, %s, %s, %s, to_timestamp(%s), to_timestamp(%s), to_timestamp(%s), %s, %s, %s::jsonb, %s, %s,
        %s::jsonb, %s::jsonb, %s, %s)
{_UPSERT}
"""


async def _copy(cur: AsyncCursor[Any], table: str, data: bytes) -> None:
    async with cur.copy(f"COPY {table} ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        await copy.write(data)


async def write_rows(conn: AsyncConnection[Any], rows: Sequence[ArchiveRow]) -> int:
    """Archive a batch in one transaction with binary COPY; returns the rows added (or replaced).

    Rows already archived are skipped, so writing a batch twice adds nothing the second time.
    The batch is copied straight into ``history``: that is what happens every time but one in
    a million, and it costs PostgreSQL about half of going through a staging table. A record
    already archived only comes back after an archiver died between commit and
    acknowledgement; the primary key then refuses the COPY (the transaction rolls back), and
    the batch goes again through the temporary staging table with ``INSERT … ON CONFLICT DO
    UPDATE``, which keeps whichever outcome finished later.
    """
    return await write_batch(conn, copy_batch(rows)) if rows else 0


async def write_batch(conn: AsyncConnection[Any], batch: CopyBatch) -> int:
    """:func:`write_rows` of a batch already encoded (by the archiver's parser processes)."""
    if not batch.count:
        return 0
    data = batch.data
    async with conn.cursor() as cur:
        try:
            async with conn.transaction():
                await _copy(cur, "history", data)
            return batch.count
        except UniqueViolation:
            pass
        async with conn.transaction():
            await cur.execute(_STAGE)
            await _copy(cur, "history_stage", data)
            await cur.execute(_MERGE)
            return max(0, cur.rowcount)


async def insert_rows_one_by_one(conn: AsyncConnection[Any], rows: Sequence[ArchiveRow]) -> int:
    """The naive way, one INSERT … ON CONFLICT per row, the batch in one transaction:
    the benchmark's baseline."""
    added = 0
    async with conn.transaction(), conn.cursor() as cur:
        for row in rows:
            await cur.execute(_INSERT_ONE, row.params())
            added += max(0, cur.rowcount)
    return added


async def delete_expired(conn: AsyncConnection[Any], days: int, *, batch: int = 5000, max_batches: int = 100) -> int:
    """Delete history older than ``days`` in batches (one short transaction each); returns rows deleted.

    Partitions are by user, not time, so old data cannot be dropped as a partition; small
    batches keep locks and WAL bursts short. At most ``max_batches`` per call: the archiver
    calls again later for the rest.
    """
    if days <= 0:
        return 0
    deleted = 0
    for _ in range(max_batches):
        async with conn.transaction(), conn.cursor() as cur:
            await cur.execute(
                "DELETE FROM history WHERE (user_id, hash) IN (SELECT user_id, hash FROM history "
                "WHERE finished_at < now() - make_interval(days => %s) LIMIT %s)",
                [days, batch],
            )
            n = max(0, cur.rowcount)
        deleted += n
        if n < batch:
            break
    return deleted
