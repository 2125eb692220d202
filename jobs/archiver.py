"""The archiver: ``python -m jobs.archiver [--name NAME] [--drain]``.

Moves terminal records from the 16 archive streams (where the update script
put them, in the same atomic step as the terminal transition) into the
PostgreSQL history table, and keeps the learned estimates fresh.

- Reads every shard stream with the consumer group ``ARCHIVE_GROUP``, in
  batches (``ARCHIVE_BATCH``), one pipelined non-blocking XREADGROUP per shard
  (one command per stream keeps it cluster-ready; an idle archiver polls
  every quarter second). The next batch is read and parsed while the current
  one is written.
- Writes a batch with one binary COPY straight into ``history`` in one
  transaction (``server.history.writer.write_rows``: should a record be there
  already, the batch goes again through a staging table and ``INSERT … ON
  CONFLICT DO UPDATE``, keeping the newer outcome), and only after the commit
  acknowledges and deletes the entries (one script per shard). Dying anywhere
  in between is harmless: unacknowledged entries stay pending, a restart
  reads its own pending entries first, and a record archived twice is stored
  once.
- On a schedule, busy or idle: claims entries a dead archiver left pending,
  recomputes every service's estimate, and deletes history older than
  ``ARCHIVE_RETENTION_DAYS`` (every ``ARCHIVE_RETENTION_INTERVAL``, a bounded
  number of rows a run).
- PostgreSQL down: the batch in hand is retried with capped backoff and
  nothing is read beyond the one batch read ahead, so the backlog waits in
  the streams (see ``server.history.rows.archive_status``). Entries another
  archiver left pending for a minute (it died for good) are claimed every
  30 s.
- A record that can never be stored (not JSON, no hash, not terminal, a
  value PostgreSQL refuses) is logged and dropped rather than blocking the
  stream forever.

Without ``DATABASE_URL`` it logs that the archive is off and idles until
stopped (honcho stops every process when one exits).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import suppress
from typing import Any

import psycopg
from psycopg import AsyncConnection
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from server.domain.catalog import SERVICES
from server.domain.errors import ArchiveError
from server.history import db, estimates
from server.history.rows import ArchiveRow, to_row
from server.history.writer import delete_expired, write_rows
from server.infra import logs
from server.infra.connections import AsyncClient, async_client
from server.record import ACK_ARCHIVED_SCRIPT, ARCHIVE_GROUP, SHARDS, Keys, loads_record, text
from server.settings import Settings

log = logging.getLogger("longrun.archiver")

#: (shard, stream entry id, record JSON or None when the entry is gone from the stream)
Entry = tuple[int, str, bytes | None]

REDIS_DOWN = (RedisError, OSError)
#: either store out of reach: wait and try again
STORES_DOWN: tuple[type[BaseException], ...] = (*db.DB_DOWN, *REDIS_DOWN)
#: what PostgreSQL says about a row it will not store (anything else is retried)
ROW_REFUSED = (psycopg.DataError, psycopg.IntegrityError)
#: a batch meeting these waits and goes again: PostgreSQL down, schema missing, …
RETRY_LATER: tuple[type[BaseException], ...] = (*db.DB_DOWN, psycopg.Error)
#: ids per acknowledgement script call (Lua's unpack has a limit of a few thousand)
ACK_CHUNK = 1000
#: records parsed between two chances for a COPY under way to send data
PARSE_SLICE = 100
#: rows a retention run deletes at most, in transactions of RETENTION_BATCH rows
RETENTION_ROWS = 20_000
RETENTION_BATCH = 5000


class Archiver:
    """One archiver: a consumer in the group, a PostgreSQL connection it reconnects itself.

    The pool's reconnect backoff grows without a cap, so after a long outage it would
    come back late; a single writer needs no pool, and its own backoff is capped.
    """

    def __init__(
        self,
        settings: Settings,
        redis: AsyncClient,
        *,
        consumer: str,
        batch: int | None = None,
        idle_poll: float = 0.25,
        max_backoff: float = 5.0,
        claim_every: float = 30.0,
        claim_idle: float = 60.0,
        estimate_every: float = 300.0,
        estimate_gap: float = 1.0,
        retention_every: float | None = None,
        retention_catchup: float = 5.0,
        write_timeout: float = 60.0,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = Keys(settings.key_prefix)
        self.consumer = consumer
        self.batch = max(1, batch or settings.archive_batch)
        self.per_shard = max(1, -(-self.batch // SHARDS))
        self.idle_poll = idle_poll
        self.max_backoff = max_backoff
        self.claim_every = claim_every
        self.claim_idle = claim_idle
        self.estimate_every = estimate_every
        self.estimate_gap = estimate_gap
        self.retention_every = settings.archive_retention_interval if retention_every is None else retention_every
        self.retention_catchup = retention_catchup
        self.write_timeout = write_timeout
        self.stop = asyncio.Event()
        self.conn: AsyncConnection[Any] | None = None
        self.archived = 0
        self.dropped = 0
        self._ack = redis.register_script(ACK_ARCHIVED_SCRIPT)
        self._next_claim = 0.0
        self._next_estimates = 0.0
        self._next_retention = 0.0
        # services with new completions whose estimate is not recomputed yet, and when each was
        self._stale: set[str] = set()
        self._refreshed: dict[str, float] = {}

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Archive until :attr:`stop` is set."""
        if not await self.prepare():
            return
        await self.drain_own_pending()
        now = time.monotonic()
        self._next_claim = now + self.claim_every
        self._next_retention = now + min(60.0, self.retention_every)
        while not self.stop.is_set():
            await self.pump(upkeep=True)
            if self.stop.is_set():
                break
            await self.refresh_stale(force=True)  # idle: estimates still owed
            await self.upkeep()
            await self._sleep(self.idle_poll)

    async def drain(self) -> int:
        """Archive everything waiting now (own pending entries, then new ones) and return how
        many records were archived; for ``--drain``, tests and the benchmark."""
        before = self.archived
        if not await self.prepare():
            return 0
        await self.drain_own_pending()
        await self.pump(upkeep=False)
        await self.refresh_stale(force=True)
        return self.archived - before

    async def pump(self, *, upkeep: bool) -> None:
        """Archive new entries until none are left (or :attr:`stop`), as a pipeline: batch N+1
        is read and parsed while batch N is written, and batch N is acknowledged while batch
        N+1 is written, so the archiver's Python work, PostgreSQL's and Redis's overlap.

        Each batch is still acknowledged only after its own commit, and only once the batch
        before it is acknowledged. One batch is read ahead at most: with PostgreSQL down it
        waits in memory besides the one retried, both pending in the group, so a stop or a
        crash loses nothing (the next start re-reads them).

        ``upkeep``: between batches, run what is due on a schedule (:meth:`upkeep`), so that
        sustained load does not put off claims, estimates and retention.
        """
        ahead: asyncio.Task[tuple[list[Entry], list[ArchiveRow]]] | None = asyncio.create_task(self._read_parsed())
        acking: asyncio.Task[bool] | None = None
        try:
            while ahead is not None:
                entries, rows = await ahead
                ahead = None
                if not entries or self.stop.is_set():
                    return
                ahead = asyncio.create_task(self._read_parsed())
                added = await self.write(rows)
                if added is None:
                    return
                if acking is not None and not await acking:
                    return
                acking = asyncio.create_task(self.acknowledge(entries, added))
                await self.archived_batch(rows, added)
                if upkeep:
                    await self.upkeep()
        finally:
            # Both are short, or return at once when stopped; what they leave is pending, and
            # re-read on the next start.
            for task in (ahead, acking):
                if task is not None:
                    await asyncio.wait([task])
                    if not task.cancelled() and task.exception() is not None:
                        log.warning("archiver pipeline: %s", task.exception())

    async def _read_parsed(self) -> tuple[list[Entry], list[ArchiveRow]]:
        entries = await self.read_new()
        rows: list[ArchiveRow] = []
        for i in range(0, len(entries), PARSE_SLICE):
            rows += self.parse(entries[i : i + PARSE_SLICE])
            # A COPY under way sends more of its data now: PostgreSQL's socket buffers hold a
            # fraction of a batch, and without these pauses it would wait for the whole parse.
            await asyncio.sleep(0)
        return entries, rows

    async def prepare(self) -> bool:
        """Migrations (waiting for PostgreSQL), consumer groups and warm estimates; False if
        stopped first."""
        delay = 0.5
        while not self.stop.is_set():
            try:
                await db.migrate(self.settings)
                await self.ensure_groups()
            except STORES_DOWN as exc:
                log.warning("archiver waiting for its stores (%s); retrying in %.1f s", exc, delay)
                await self._sleep(delay)
                delay = min(self.max_backoff, delay * 2)
                continue
            await self.refresh_estimates(s.slug for s in SERVICES)
            self._next_estimates = time.monotonic() + self.estimate_every
            return True
        return False

    async def ensure_groups(self) -> None:
        for shard in range(SHARDS):
            try:
                # From id 0: records handed over before the first archiver ran are archived too.
                await self.redis.xgroup_create(self.keys.archive(shard), ARCHIVE_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def close(self) -> None:
        if self.conn is not None:
            with suppress(*db.DB_DOWN):
                await self.conn.close()
            self.conn = None

    # ------------------------------------------------------------------ reading

    async def _read(self, ids: dict[int, str]) -> list[Entry]:
        """One XREADGROUP per shard (``>`` for new entries, an id for own pending ones)."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for shard, start in ids.items():
                    pipe.xreadgroup(
                        ARCHIVE_GROUP, self.consumer, {self.keys.archive(shard): start}, count=self.per_shard
                    )
                replies = await pipe.execute()
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                # A stream (and its group) was deleted under us: make them again, read next time.
                log.warning("archive stream or group missing; recreating: %s", exc)
                with suppress(*REDIS_DOWN):
                    await self.ensure_groups()
                return []
            log.warning("archiver cannot read from redis: %s", exc)
            await self._sleep(self.max_backoff)
            return []
        except REDIS_DOWN as exc:
            log.warning("archiver cannot read from redis: %s", exc)
            await self._sleep(self.max_backoff)
            return []
        entries: list[Entry] = []
        for shard, reply in zip(ids, replies, strict=True):
            for _stream, items in reply or []:
                for entry_id, fields in items:
                    entries.append((shard, text(entry_id), (fields or {}).get(b"r")))
        return entries

    async def read_new(self) -> list[Entry]:
        return await self._read(dict.fromkeys(range(SHARDS), ">"))

    async def drain_own_pending(self) -> None:
        """Entries this consumer read before it stopped or died and never acknowledged."""
        after = dict.fromkeys(range(SHARDS), "0")
        while after and not self.stop.is_set():
            entries = await self._read(after)
            if not entries:
                return
            for shard in list(after):
                ids = [e[1] for e in entries if e[0] == shard]
                if ids:
                    after[shard] = ids[-1]
                else:
                    del after[shard]
            log.info("re-processing %d entries left pending by an earlier run", len(entries))
            await self.process(entries)

    async def claim_stale(self) -> list[Entry]:
        """Entries pending with another consumer for longer than ``claim_idle`` (it died)."""
        entries: list[Entry] = []
        try:
            for shard in range(SHARDS):
                reply = await self.redis.xautoclaim(
                    self.keys.archive(shard),
                    ARCHIVE_GROUP,
                    self.consumer,
                    min_idle_time=int(self.claim_idle * 1000),
                    start_id="0-0",
                    count=self.per_shard,
                )
                for entry_id, fields in reply[1]:
                    entries.append((shard, text(entry_id), (fields or {}).get(b"r")))
        except REDIS_DOWN as exc:
            log.warning("archiver cannot claim stale entries: %s", exc)
        if entries:
            log.info("claimed %d entries another archiver left pending", len(entries))
        return entries

    # ------------------------------------------------------------------ one batch

    def parse(self, entries: Iterable[Entry]) -> list[ArchiveRow]:
        rows: list[ArchiveRow] = []
        for shard, entry_id, raw in entries:
            if raw is None:
                continue
            try:
                rec = loads_record(raw)
                if rec is None:
                    raise ArchiveError("not a JSON object")
                rows.append(to_row(rec))
            except ArchiveError as exc:
                self.dropped += 1
                log.warning("dropping archive entry %s (shard %d): %s", entry_id, shard, exc)
        return rows

    async def process(self, entries: Sequence[Entry], rows: Sequence[ArchiveRow] | None = None) -> bool:
        """Archive (``rows``: the entries already parsed), then acknowledge. False if stopped
        before the batch was committed (its entries stay pending and are re-read on the next
        start)."""
        if rows is None:
            rows = self.parse(entries)
        added = await self.write(rows)
        if added is None:
            return False
        if not await self.acknowledge(entries, added):
            return False
        await self.archived_batch(rows, added)
        return True

    async def archived_batch(self, rows: Sequence[ArchiveRow], added: int) -> None:
        """Count a committed batch; recompute the estimates its completions change."""
        self.archived += added
        self._stale |= {r.service_slug for r in rows if r.status == "completed"}
        await self.refresh_stale()

    async def connection(self) -> AsyncConnection[Any]:
        if self.conn is None or self.conn.closed:
            self.conn = None
            async with asyncio.timeout(10):
                self.conn = await db.connect(
                    self.settings, statement_timeout=self.write_timeout, application="longrun-archiver"
                )
        return self.conn

    async def write(self, rows: Sequence[ArchiveRow]) -> int | None:
        """Commit the rows; the number added, or None if stopped first.

        PostgreSQL down (or the schema missing, or any error that is not about the data):
        retried with capped backoff, never dropped. A row PostgreSQL refuses as data (an
        impossible value): the batch is stored row by row and only the refused rows are
        dropped, rather than blocking the stream forever.
        """
        delay = 0.5
        one_by_one = False
        while True:
            try:
                conn = await self.connection()
                async with asyncio.timeout(self.write_timeout + 10):
                    if one_by_one:
                        return await self._write_one_by_one(conn, rows)
                    return await write_rows(conn, rows)
            except ROW_REFUSED as exc:
                log.warning("batch refused (%s); storing its %d rows one by one", exc, len(rows))
                one_by_one = True
                continue
            except RETRY_LATER as exc:
                await self.close()
                await self._note_error(exc)
                if self.stop.is_set():
                    return None
                if isinstance(exc, psycopg.errors.UndefinedTable):
                    with suppress(*db.DB_DOWN, psycopg.Error):
                        await db.migrate(self.settings)  # the schema went away: build it again
                log.warning("cannot archive (%s); batch of %d waits %.1f s", exc, len(rows), delay)
                await self._sleep(delay)
                delay = min(self.max_backoff, delay * 2)

    async def _write_one_by_one(self, conn: AsyncConnection[Any], rows: Sequence[ArchiveRow]) -> int:
        added = 0
        for row in rows:
            try:
                added += await write_rows(conn, [row])
            except ROW_REFUSED as exc:
                self.dropped += 1
                log.warning("dropping %s: postgresql refused it (%s)", row.hash, exc)
        return added

    async def acknowledge(self, entries: Sequence[Entry], added: int) -> bool:
        """XACK + XDEL the entries (they are committed) and note the progress; retried while
        Redis is down. False if stopped first (re-delivery is harmless)."""
        by_shard: dict[int, list[str]] = {}
        for shard, entry_id, _ in entries:
            by_shard.setdefault(shard, []).append(entry_id)
        delay = 0.5
        while True:
            try:
                clustered = isinstance(self.redis, RedisCluster)
                async with self.redis.pipeline(transaction=False) as pipe:
                    for shard, ids in by_shard.items():
                        for i in range(0, len(ids), ACK_CHUNK):
                            # A cluster pipeline cannot carry scripts: one call per chunk there.
                            await self._ack(
                                keys=[self.keys.archive(shard)],
                                args=[ARCHIVE_GROUP, *ids[i : i + ACK_CHUNK]],
                                client=None if clustered else pipe,  # type: ignore[arg-type]
                            )
                    state = self.keys.archiver_state()
                    pipe.hset(state, mapping={"last_archived_at": f"{time.time():.3f}", "consumer": self.consumer})
                    pipe.hincrby(state, "archived", added)
                    pipe.hdel(state, "last_error", "last_error_at")
                    await pipe.execute()
                return True
            except REDIS_DOWN as exc:
                if self.stop.is_set():
                    return False
                log.warning("cannot acknowledge archived entries (%s); retrying in %.1f s", exc, delay)
                await self._sleep(delay)
                delay = min(self.max_backoff, delay * 2)

    # ------------------------------------------------------------------ upkeep

    async def refresh_stale(self, *, force: bool = False) -> None:
        """Recompute the estimates of services with new completions: after each batch, but
        for one service at most once every ``estimate_gap`` seconds (a burst of batches
        would otherwise query the archive after every one); while idle, all that are left."""
        now = time.monotonic()
        due = {s for s in self._stale if force or now - self._refreshed.get(s, -1e9) >= self.estimate_gap}
        if due and await self.refresh_estimates(due):
            self._stale -= due
            self._refreshed.update(dict.fromkeys(due, now))

    async def refresh_estimates(self, slugs: Iterable[str]) -> bool:
        """Recompute these services' estimates; failures only log (False: tried again later)."""
        try:
            conn = await self.connection()
            async with asyncio.timeout(self.write_timeout):
                await estimates.refresh(conn, self.redis, self.keys, slugs)
            return True
        except db.DB_DOWN as exc:
            await self.close()
            log.warning("could not refresh estimates: %s", exc)
        except (psycopg.Error, *REDIS_DOWN) as exc:
            log.warning("could not refresh estimates: %s", exc)
        return False

    async def upkeep(self) -> None:
        """What runs on a schedule, busy or idle: entries a dead archiver left pending, every
        service's estimate, retention."""
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self.claim_every
            claimed = await self.claim_stale()
            if claimed:
                await self.process(claimed)
        if now >= self._next_estimates:
            self._next_estimates = now + self.estimate_every
            await self.refresh_estimates(s.slug for s in SERVICES)
        if now >= self._next_retention and self.settings.archive_retention_days > 0:
            self._next_retention = now + self.retention_every
            await self.retention()

    async def retention(self) -> int:
        """Delete expired history, at most ``RETENTION_ROWS`` rows a run (in short transactions,
        so a run holds up archiving for moments); when more are left, the next run comes after
        ``retention_catchup`` seconds instead of a full interval. Returns rows deleted."""
        days = self.settings.archive_retention_days
        try:
            conn = await self.connection()
            deleted = await delete_expired(
                conn, days, batch=RETENTION_BATCH, max_batches=RETENTION_ROWS // RETENTION_BATCH
            )
        except db.DB_DOWN as exc:
            await self.close()
            log.warning("retention skipped: %s", exc)
            return 0
        except psycopg.Error as exc:
            log.warning("retention failed: %s", exc)
            return 0
        if deleted >= RETENTION_ROWS:
            self._next_retention = min(self._next_retention, time.monotonic() + self.retention_catchup)
        if deleted:
            log.info("retention: deleted %d rows older than %d days", deleted, days)
        return deleted

    async def _note_error(self, exc: BaseException) -> None:
        with suppress(*REDIS_DOWN):
            await self.redis.hset(
                self.keys.archiver_state(),
                mapping={"last_error": f"{exc.__class__.__name__}: {exc}"[:300], "last_error_at": f"{time.time():.3f}"},
            )

    async def _sleep(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)


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
    parser = argparse.ArgumentParser(description="Longrun archiver: terminal records → PostgreSQL history")
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


if __name__ == "__main__":
    sys.exit(main())
