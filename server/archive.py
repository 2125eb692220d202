"""The archive: terminal records become history rows in PostgreSQL.

Three parts, used by the archiver process (``jobs/archiver.py``), the
benchmark and the dashboard:

- :func:`to_row` turns a stored record (the full JSON the update script
  handed to the archive stream) into an :class:`ArchiveRow`. Pure: no I/O.
  It keeps timings and outcome, never the access token's hash, and drops
  secret-looking keys from the request and result (the OTP is never in a
  record to begin with).
- :func:`write_rows` stores a batch with one binary ``COPY`` in one
  transaction; a record delivered twice (the archiver died between commit
  and acknowledgement) is archived once, through a staging table and
  ``INSERT … ON CONFLICT`` (an outcome replaces an older one).
- :func:`archive_status` reads the backlog and lag from Redis alone, so a
  dashboard can poll it without touching PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from psycopg import AsyncConnection, AsyncCursor
from psycopg.errors import UniqueViolation
from psycopg.types.json import set_json_dumps
from redis.exceptions import ResponseError

from server.connections import AsyncClient
from server.errors import ArchiveError
from server.record import ARCHIVE_GROUP, SHARDS, Keys, private_view, text
from server.status import TERMINAL

_TERMINAL = frozenset(s.value for s in TERMINAL)
_HASH = re.compile(r"req_[A-Za-z0-9_-]{8,64}")
#: keys whose values must never rest in the archive, at any depth of request or result data
#: (also any key ending in _token or _secret)
_SECRET_NAMES = frozenset({"otp", "otp_code", "pin", "cvv", "cvv2", "password", "passwd", "secret", "token"})
_MAX_DEPTH = 20
#: times outside 2000-01-01 … 2200-01-01 are a broken record, not history
_EARLIEST, _LATEST = 946_684_800.0, 7_258_118_400.0
MAX_ERROR = 2000

_COLUMNS = (
    "user_id, hash, service_slug, status, created_at, started_at, finished_at, duration, waited, "
    "steps, attempts, error, request_data, result_data"
)
#: the PostgreSQL types of _COLUMNS, for binary COPY
_TYPES = (
    "text", "text", "text", "text", "timestamptz", "timestamptz", "timestamptz",
    "float8", "float8", "jsonb", "int2", "text", "jsonb", "jsonb",
)  # fmt: skip
_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS history_stage (
    user_id text, hash text, service_slug text, status text,
    created_at timestamptz, started_at timestamptz, finished_at timestamptz,
    duration double precision, waited double precision, steps jsonb, attempts smallint,
    error text, request_data jsonb, result_data jsonb
) ON COMMIT DELETE ROWS
"""
# A record delivered again is the same row (same finished_at): nothing changes. A request an
# operator retried after it failed finishes again later: its new outcome replaces the old.
_UPSERT = (
    "ON CONFLICT (user_id, hash) DO UPDATE SET ("
    + _COLUMNS
    + ") = ROW("
    + ", ".join(f"EXCLUDED.{c.strip()}" for c in _COLUMNS.split(","))
    + ") WHERE history.finished_at < EXCLUDED.finished_at"
)
_MERGE = f"INSERT INTO history ({_COLUMNS}) SELECT {_COLUMNS} FROM history_stage {_UPSERT}"
_INSERT_ONE = f"""
INSERT INTO history ({_COLUMNS})
VALUES (%s, %s, %s, %s, to_timestamp(%s), to_timestamp(%s), to_timestamp(%s), %s, %s, %s::jsonb, %s, %s,
        %s::jsonb, %s::jsonb)
{_UPSERT}
"""


def _json_bytes(value: Any) -> bytes:
    return orjson.dumps(value)


def _moment(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


@dataclass(frozen=True, slots=True)
class ArchiveRow:
    """One history row; times are epoch seconds, durations seconds."""

    user_id: str
    hash: str
    service_slug: str
    status: str
    created: float
    started: float | None
    finished: float
    #: seconds of work (finished - started - waited); None if it never started
    duration: float | None
    #: seconds spent waiting for the person
    waited: float
    #: {step: seconds spent in it}
    steps: dict[str, float]
    attempts: int
    error: str | None
    request_data: dict[str, Any]
    result_data: Any

    def typed(self) -> tuple[Any, ...]:
        """The row as binary COPY writes it, in ``_COLUMNS`` order (JSON columns as objects)."""
        return (
            self.user_id,
            self.hash,
            self.service_slug,
            self.status,
            _moment(self.created),
            _moment(self.started),
            _moment(self.finished),
            self.duration,
            self.waited,
            self.steps,
            self.attempts,
            self.error,
            self.request_data,
            self.result_data,
        )

    def params(self) -> tuple[Any, ...]:
        """The row as query parameters of the row-by-row INSERT (epoch seconds, JSON text)."""
        return (
            self.user_id,
            self.hash,
            self.service_slug,
            self.status,
            self.created,
            self.started,
            self.finished,
            self.duration,
            self.waited,
            orjson.dumps(self.steps).decode(),
            self.attempts,
            self.error,
            orjson.dumps(self.request_data).decode(),
            None if self.result_data is None else orjson.dumps(self.result_data).decode(),
        )


# --------------------------------------------------------------------------- record → row


def _epoch(p: Mapping[str, Any], name: str, rec: Mapping[str, Any], iso_name: str) -> float | None:
    value = p.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        moment = float(value)
    else:
        iso = rec.get(iso_name)
        if not isinstance(iso, str) or not iso:
            return None
        try:
            moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise ArchiveError(f"{iso_name} is not an ISO 8601 time: {iso[:40]!r}") from None
    if not _EARLIEST <= moment <= _LATEST:  # also refuses NaN
        raise ArchiveError(f"{iso_name} is out of range: {moment!r}")
    return moment


def _step_starts(rec: Mapping[str, Any], p: Mapping[str, Any], started: float | None) -> list[tuple[float, str]]:
    raw = p.get("steps")
    starts: list[tuple[float, str]] = []
    if isinstance(raw, dict) and raw:
        starts = [(float(t), str(s)) for s, t in raw.items() if isinstance(t, int | float)]
    elif started is not None and isinstance(rec.get("steps"), dict):
        # Only the public offsets survive (an older record): rebuild the start times.
        starts = [(started + float(o), str(s)) for s, o in rec["steps"].items() if isinstance(o, int | float)]
    return sorted(starts)


def step_seconds(starts: Sequence[tuple[float, str]], finished: float) -> dict[str, float]:
    """Seconds spent in each step: from its start to the next step's start (the last one to the end)."""
    out: dict[str, float] = {}
    for i, (t, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else finished
        out[name] = round(max(0.0, end - t), 3)
    return out


def _secret(key: str) -> bool:
    k = key.lower()
    return k in _SECRET_NAMES or k.endswith(("_token", "_secret"))


def _dirty(value: Any, depth: int) -> bool:
    """Whether :func:`scrub` would change anything (most data has nothing to remove)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return depth >= _MAX_DEPTH or any(_secret(k) or "\x00" in k or _dirty(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return depth >= _MAX_DEPTH or any(_dirty(v, depth + 1) for v in value)
    return False


def _clean(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if depth >= _MAX_DEPTH and isinstance(value, dict | list):
        return None
    if isinstance(value, dict):
        return {k.replace("\x00", ""): _clean(v, depth + 1) for k, v in value.items() if not _secret(k)}
    if isinstance(value, list):
        return [_clean(v, depth + 1) for v in value]
    return value


def scrub(value: Any) -> Any:
    """The value without secret-looking keys (at any depth; nesting past 20 levels is cut off)
    and without NUL characters, which PostgreSQL's text and jsonb refuse."""
    return _clean(value, 0) if _dirty(value, 0) else value


def to_row(rec: Mapping[str, Any]) -> ArchiveRow:
    """The history row for a terminal record; raises :class:`ArchiveError` naming the bad field."""
    h = rec.get("hash")
    if not isinstance(h, str) or not _HASH.fullmatch(h):
        raise ArchiveError(f"hash is missing or malformed: {str(h)[:40]!r}")
    status = rec.get("status")
    if status not in _TERMINAL:
        raise ArchiveError(f"{h}: status {str(status)[:20]!r} is not terminal")
    slug = rec.get("service_slug")
    if not isinstance(slug, str) or not slug or len(slug) > 100:
        raise ArchiveError(f"{h}: service_slug is missing or malformed")
    p = private_view(rec)
    finished = _epoch(p, "finished", rec, "finished_at")
    if finished is None:
        raise ArchiveError(f"{h}: finished_at is missing")
    created = _epoch(p, "created", rec, "created_at")
    started = _epoch(p, "started", rec, "started_at")
    waited_raw = p.get("waited")
    waited = round(float(waited_raw), 3) if isinstance(waited_raw, int | float) and waited_raw > 0 else 0.0
    duration = None if started is None else round(max(0.0, finished - started - waited), 3)
    attempt = rec.get("attempt")
    attempts = attempt if isinstance(attempt, int) and not isinstance(attempt, bool) and 0 < attempt < 1000 else 1
    error = rec.get("error")
    request_data = rec.get("request_data")
    user = rec.get("user_id")
    return ArchiveRow(
        user_id=scrub(user) if isinstance(user, str) else "",
        hash=h,
        service_slug=slug,
        status=str(status),
        created=created if created is not None else finished,
        started=started,
        finished=finished,
        duration=duration,
        waited=waited,
        steps=step_seconds(_step_starts(rec, p, started), finished),
        attempts=attempts,
        error=None if error is None else scrub(str(error)[:MAX_ERROR]),
        request_data=scrub(request_data) if isinstance(request_data, dict) else {},
        result_data=scrub(rec.get("result_data")),
    )


# --------------------------------------------------------------------------- rows → PostgreSQL


def _unique(rows: Iterable[ArchiveRow]) -> list[ArchiveRow]:
    """One row per request: the latest outcome (a retried request can finish twice)."""
    seen: dict[tuple[str, str], ArchiveRow] = {}
    for row in rows:
        key = (row.user_id, row.hash)
        if key not in seen or row.finished > seen[key].finished:
            seen[key] = row
    return list(seen.values())


async def _copy(cur: AsyncCursor[Any], table: str, rows: Sequence[ArchiveRow]) -> None:
    async with cur.copy(f"COPY {table} ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(_TYPES))
        for row in rows:
            await copy.write_row(row.typed())


async def write_rows(conn: AsyncConnection[Any], rows: Sequence[ArchiveRow]) -> int:
    """Archive a batch in one transaction with binary COPY; returns the rows added.

    Rows already archived are skipped, so writing a batch twice adds nothing the second time.
    The batch is copied straight into ``history`` under a savepoint: that is what happens
    every time but one in a million, and it costs PostgreSQL about half of going through a
    staging table. A record already archived only comes back after an archiver died between
    commit and acknowledgement; the primary key then refuses the COPY, and the batch goes
    again through the temporary staging table with ``INSERT … ON CONFLICT`` keeping the latest outcome.
    """
    if not rows:
        return 0
    # Grouped by user: consecutive rows land in the same partition and index pages.
    ordered = sorted(_unique(rows), key=lambda r: (r.user_id, r.hash))
    async with conn.transaction(), conn.cursor() as cur:
        set_json_dumps(_json_bytes, cur)
        try:
            async with conn.transaction():
                await _copy(cur, "history", ordered)
            return len(ordered)
        except UniqueViolation:
            pass
        await cur.execute(_STAGE)
        await _copy(cur, "history_stage", ordered)
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


# --------------------------------------------------------------------------- lag and backlog


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
