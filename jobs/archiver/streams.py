"""The archive streams as one consumer of ``ARCHIVE_GROUP`` sees them: read, parse, claim, acknowledge.

One command per shard stream (pipelined where Redis allows it) keeps this cluster-ready.
Nothing here retries or waits: the :class:`~jobs.archiver.archiving.Archiver` decides that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from contextlib import suppress

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from server.domain.errors import ArchiveError
from server.history.rows import ArchiveRow, to_row
from server.infra.connections import AsyncClient
from server.record import ACK_ARCHIVED_SCRIPT, ARCHIVE_GROUP, SHARDS, Keys, loads_record, text

log = logging.getLogger("longrun.archiver")

#: (shard, stream entry id, record JSON or None when the entry is gone from the stream)
Entry = tuple[int, str, bytes | None]

REDIS_DOWN = (RedisError, OSError)
#: ids per acknowledgement script call (Lua's unpack has a limit of a few thousand)
ACK_CHUNK = 1000


def parse_entries(entries: Iterable[Entry]) -> tuple[list[ArchiveRow], list[str]]:
    """The history rows of the entries, and why each entry dropped was (a record that can never
    be stored: not JSON, no hash, not terminal) rather than left to block the stream forever.
    The caller logs the reasons (:func:`log_dropped`): a parser process hands them back."""
    rows: list[ArchiveRow] = []
    dropped: list[str] = []
    for shard, entry_id, raw in entries:
        if raw is None:
            continue
        try:
            rec = loads_record(raw)
            if rec is None:
                raise ArchiveError("not a JSON object")
            rows.append(to_row(rec))
        except ArchiveError as exc:
            dropped.append(f"archive entry {entry_id} (shard {shard}): {exc}")
    return rows, dropped


def log_dropped(dropped: Iterable[str]) -> None:
    for reason in dropped:
        log.warning("dropping %s", reason)


class ArchiveStreams:
    """The shard streams, read by ``consumer`` at most ``per_shard`` entries per shard a call."""

    def __init__(self, redis: AsyncClient, keys: Keys, consumer: str, per_shard: int) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self.per_shard = per_shard
        self._ack = redis.register_script(ACK_ARCHIVED_SCRIPT)

    async def ensure_groups(self) -> None:
        for shard in range(SHARDS):
            try:
                # From id 0: records handed over before the first archiver ran are archived too.
                await self.redis.xgroup_create(self.keys.archive(shard), ARCHIVE_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(self, ids: dict[int, str]) -> list[Entry] | None:
        """One XREADGROUP per shard (``>`` for new entries, an id for own pending ones); None when
        Redis could not be read (the caller waits before trying again)."""
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
            return None
        except REDIS_DOWN as exc:
            log.warning("archiver cannot read from redis: %s", exc)
            return None
        entries: list[Entry] = []
        for shard, reply in zip(ids, replies, strict=True):
            for _stream, items in reply or []:
                for entry_id, fields in items:
                    entries.append((shard, text(entry_id), (fields or {}).get(b"r")))
        return entries

    async def claim(self, min_idle: float) -> list[Entry]:
        """Entries pending with another consumer for longer than ``min_idle`` seconds (it died)."""
        entries: list[Entry] = []
        try:
            for shard in range(SHARDS):
                reply = await self.redis.xautoclaim(
                    self.keys.archive(shard),
                    ARCHIVE_GROUP,
                    self.consumer,
                    min_idle_time=int(min_idle * 1000),
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

    async def acknowledge(self, entries: Sequence[Entry], added: int) -> None:
        """XACK + XDEL the entries (they are committed) and note the progress, in one round
        trip where Redis allows it; raises what Redis raises."""
        by_shard: dict[int, list[str]] = {}
        for shard, entry_id, _ in entries:
            by_shard.setdefault(shard, []).append(entry_id)
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

    async def note_error(self, exc: BaseException) -> None:
        """Why the archiver waits, for the dashboard and ``archive_status`` (best effort)."""
        with suppress(*REDIS_DOWN):
            await self.redis.hset(
                self.keys.archiver_state(),
                mapping={"last_error": f"{exc.__class__.__name__}: {exc}"[:300], "last_error_at": f"{time.time():.3f}"},
            )
