"""How far behind the archive is: backlog and lag of the archive streams, from Redis alone.

A dashboard can poll it without touching PostgreSQL (the archiver deletes what it
archived from the streams, so what is left is exactly what waits).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from redis.exceptions import ResponseError

from server.infra.connections import AsyncClient
from server.record import ARCHIVE_GROUP, SHARDS, Keys, text


@dataclass(frozen=True)
class ArchiveStatus:
    """How far behind the archive is, from Redis alone (for the dashboard)."""

    #: terminal records in the streams not yet archived (read or not)
    backlog: int
    #: of those, delivered to an archiver and not yet acknowledged
    in_progress: int
    #: seconds the oldest of them has waited; None when there is no backlog
    oldest_age: float | None
    #: epoch seconds of the last batch committed to PostgreSQL
    last_archived_at: float | None
    #: records archived since the counter started
    archived_total: int
    #: the last PostgreSQL error the archiver met, cleared by the next good batch
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def archive_status(redis: AsyncClient, keys: Keys) -> ArchiveStatus:
    """Backlog and lag: XLEN and the oldest entry id of every shard stream (archived entries are
    deleted from the stream, so what is left is exactly what waits), plus the archiver's notes."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.hgetall(keys.archiver_state())
        for shard in range(SHARDS):
            stream = keys.archive(shard)
            pipe.xlen(stream)
            pipe.xrange(stream, count=1)
            pipe.xpending(stream, ARCHIVE_GROUP)
        replies = await pipe.execute(raise_on_error=False)
    seconds, micros = replies[0]
    now = int(seconds) + int(micros) / 1e6
    state = {text(k): text(v) for k, v in (replies[1] or {}).items()}
    backlog = in_progress = 0
    oldest_ms: int | None = None
    for i in range(SHARDS):
        length, first, pending = replies[2 + 3 * i : 5 + 3 * i]
        backlog += int(length)
        if first:
            ms = int(text(first[0][0]).split("-")[0])
            oldest_ms = ms if oldest_ms is None else min(oldest_ms, ms)
        if not isinstance(pending, ResponseError) and pending:
            in_progress += int(pending.get("pending", 0))
    last = state.get("last_archived_at")
    return ArchiveStatus(
        backlog=backlog,
        in_progress=in_progress,
        oldest_age=None if oldest_ms is None else max(0.0, round(now - oldest_ms / 1000, 3)),
        last_archived_at=float(last) if last else None,
        archived_total=int(state.get("archived", 0) or 0),
        last_error=state.get("last_error") or None,
    )
