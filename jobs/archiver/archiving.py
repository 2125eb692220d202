"""The :class:`Archiver`: batches from the archive streams into the PostgreSQL history.

Read ahead, parse, write (one COPY a batch, retried while PostgreSQL is down), acknowledge
only after the commit, and upkeep on a schedule (claims, estimates, retention). The
package docstring (``jobs.archiver``) tells the whole story.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from contextlib import suppress
from typing import Any

import psycopg
from psycopg import AsyncConnection

from jobs.archiver.parsers import ParserPool
from jobs.archiver.streams import REDIS_DOWN, ArchiveStreams, Entry, log_dropped, parse_entries
from server.domain.catalog import SERVICES
from server.history import db, estimates
from server.history.rows import ArchiveRow, CopyBatch, completed_services
from server.history.writer import delete_expired, write_batch, write_rows
from server.infra.backoff import Backoff
from server.infra.connections import AsyncClient
from server.record import SHARDS, Keys
from server.settings import Settings

log = logging.getLogger("longrun.archiver")

#: either store out of reach: wait and try again
STORES_DOWN: tuple[type[BaseException], ...] = (*db.DB_DOWN, *REDIS_DOWN)
#: what PostgreSQL says about a row it will not store (anything else is retried)
ROW_REFUSED = (psycopg.DataError, psycopg.IntegrityError)
#: a batch meeting these waits and goes again: PostgreSQL down, schema missing, …
RETRY_LATER: tuple[type[BaseException], ...] = (*db.DB_DOWN, psycopg.Error)
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
        parsers: int | None = None,
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
        self.parsers = ParserPool(settings.archive_parsers if parsers is None else parsers)
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
        self.streams = ArchiveStreams(redis, self.keys, consumer, self.per_shard)
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
        if self.parsers.processes:
            return await self._pump_parsed_apart(upkeep=upkeep)
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
                await self.archived_batch(completed_services(rows), added)
                if upkeep:
                    await self.upkeep()
        finally:
            # Both are short, or return at once when stopped; what they leave is pending, and
            # re-read on the next start.
            await _settle([task for task in (ahead, acking) if task is not None])

    async def _pump_parsed_apart(self, *, upkeep: bool) -> None:
        """:meth:`pump` with the parsing in the parser processes: one task reads batches, in
        order, and hands each to a parser, up to ``processes + 1`` batches ahead of the one
        written; this one writes them in the order read and acknowledges each after its commit
        (and after the one before it). The batches read ahead are pending in the group: a stop
        or a crash loses nothing, and the reader stops only once a read finds nothing, so no
        batch read is left behind when the streams run dry."""
        queue: asyncio.Queue[tuple[list[Entry], asyncio.Task[tuple[CopyBatch, list[str]]]] | None] = asyncio.Queue(
            self.parsers.processes + 1
        )

        async def reader() -> None:
            while not self.stop.is_set():
                entries = await self.read_new()
                if not entries:
                    break
                await queue.put((entries, asyncio.create_task(self.parsers.parse(entries))))
            await queue.put(None)

        reading = asyncio.create_task(reader())
        acking: asyncio.Task[bool] | None = None
        item = None
        try:
            while (item := await queue.get()) is not None and not self.stop.is_set():
                entries, parsing = item
                batch, dropped = await parsing
                self._count_dropped(dropped)
                added = await self.write(batch, entries)
                if added is None:
                    return
                if acking is not None and not await acking:
                    return
                acking = asyncio.create_task(self.acknowledge(entries, added))
                await self.archived_batch(batch.completed, added)
                if upkeep:
                    await self.upkeep()
        finally:
            reading.cancel()
            tasks = [reading, *([acking] if acking else []), *([item[1]] if item else [])]
            while not queue.empty():
                left = queue.get_nowait()
                if left is not None:
                    tasks.append(left[1])
            await _settle(tasks)

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
        backoff = Backoff(0.5, self.max_backoff)
        while not self.stop.is_set():
            try:
                await db.migrate(self.settings)
                await self.streams.ensure_groups()
            except STORES_DOWN as exc:
                log.warning("archiver waiting for its stores (%s); retrying in %.1f s", exc, backoff.delay)
                await self._sleep(next(backoff))
                continue
            await self.refresh_estimates(s.slug for s in SERVICES)
            self._next_estimates = time.monotonic() + self.estimate_every
            return True
        return False

    async def close(self) -> None:
        """The connection and the parser processes."""
        self.parsers.close()
        await self._disconnect()

    async def _disconnect(self) -> None:
        if self.conn is not None:
            with suppress(*db.DB_DOWN):
                await self.conn.close()
            self.conn = None

    # ------------------------------------------------------------------ reading

    async def _read(self, ids: dict[int, str]) -> list[Entry]:
        """One XREADGROUP per shard (``>`` for new entries, an id for own pending ones); nothing
        (after a pause) while Redis cannot be read."""
        entries = await self.streams.read(ids)
        if entries is None:
            await self._sleep(self.max_backoff)
            return []
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
        return await self.streams.claim(self.claim_idle)

    # ------------------------------------------------------------------ one batch

    def parse(self, entries: Iterable[Entry]) -> list[ArchiveRow]:
        rows, dropped = parse_entries(entries)
        self._count_dropped(dropped)
        return rows

    def _count_dropped(self, dropped: list[str]) -> None:
        self.dropped += len(dropped)
        log_dropped(dropped)

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
        await self.archived_batch(completed_services(rows), added)
        return True

    async def archived_batch(self, completed: Iterable[str], added: int) -> None:
        """Count a committed batch; recompute the estimates of the services it completed
        requests of."""
        self.archived += added
        self._stale.update(completed)
        await self.refresh_stale()

    async def connection(self) -> AsyncConnection[Any]:
        if self.conn is None or self.conn.closed:
            self.conn = None
            async with asyncio.timeout(10):
                self.conn = await db.connect(
                    self.settings, statement_timeout=self.write_timeout, application="longrun-archiver"
                )
        return self.conn

    async def write(self, rows: Sequence[ArchiveRow] | CopyBatch, entries: Sequence[Entry] = ()) -> int | None:
        """Commit the rows (or a batch a parser encoded, from ``entries``); the number added,
        or None if stopped first.

        PostgreSQL down (or the schema missing, or any error that is not about the data):
        retried with capped backoff, never dropped. A row PostgreSQL refuses as data (an
        impossible value): the batch is stored row by row and only the refused rows are
        dropped, rather than blocking the stream forever.
        """
        backoff = Backoff(0.5, self.max_backoff)
        one_by_one: Sequence[ArchiveRow] | None = None
        while True:
            try:
                conn = await self.connection()
                async with asyncio.timeout(self.write_timeout + 10):
                    if one_by_one is not None:
                        return await self._write_one_by_one(conn, one_by_one)
                    if isinstance(rows, CopyBatch):
                        return await write_batch(conn, rows)
                    return await write_rows(conn, rows)
            except ROW_REFUSED as exc:
                # rare: a parser's batch is parsed again here for its rows (its drops counted once)
                one_by_one = parse_entries(entries)[0] if isinstance(rows, CopyBatch) else rows
                log.warning("batch refused (%s); storing its %d rows one by one", exc, len(one_by_one))
                continue
            except RETRY_LATER as exc:
                await self._disconnect()
                await self._note_error(exc)
                if self.stop.is_set():
                    return None
                if isinstance(exc, psycopg.errors.UndefinedTable):
                    with suppress(*db.DB_DOWN, psycopg.Error):
                        await db.migrate(self.settings)  # the schema went away: build it again
                log.warning(
                    "cannot archive (%s); batch of %d waits %.1f s",
                    exc,
                    rows.count if isinstance(rows, CopyBatch) else len(rows),
                    backoff.delay,
                )
                await self._sleep(next(backoff))

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
        backoff = Backoff(0.5, self.max_backoff)
        while True:
            try:
                await self.streams.acknowledge(entries, added)
                return True
            except REDIS_DOWN as exc:
                if self.stop.is_set():
                    return False
                log.warning("cannot acknowledge archived entries (%s); retrying in %.1f s", exc, backoff.delay)
                await self._sleep(next(backoff))

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
            await self._disconnect()
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
            await self._disconnect()
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
        await self.streams.note_error(exc)

    async def _sleep(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)


async def _settle(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Wait for each of the pipeline's tasks to end, logging what failed."""
    for task in tasks:
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.warning("archiver pipeline: %s", task.exception())
