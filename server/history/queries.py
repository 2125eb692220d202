"""Reading the archive: one person's past requests, newest first, a page at a time.

Keyset pagination on ``(finished_at, hash)``: a page is "the next ``limit``
rows strictly older than the last row of the previous page", so rows
archived while someone pages never shift, repeat or hide the rows they have
not seen yet (an OFFSET would). Every query names the user, so PostgreSQL
reads one of the 16 partitions, through ``history_user_finished`` (filters
walk the same index).

The cursor is opaque to clients: base64url of the last row's ``finished_at``
(whole microseconds since the epoch, exact) and hash. No aiohttp here.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from server.domain.errors import ValidationFailed
from server.domain.status import TERMINAL

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
STATUSES = tuple(sorted(s.value for s in TERMINAL))
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_HASH = re.compile(r"req_[A-Za-z0-9_-]{8,64}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

_LIST_COLUMNS = (
    "hash, service_slug, status, created_at, started_at, finished_at, duration, waited, steps, attempts, "
    "error, request_data, app, user_ref"
)

_ENTRY = "SELECT " + _LIST_COLUMNS + ", result_data, archived_at FROM history WHERE user_id = %s AND hash = %s"


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 UTC with milliseconds, as the live record writes its times."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: strictly after this row in (finished_at, hash) descending."""

    finished_at: datetime
    hash: str

    def encode(self) -> str:
        micros = (self.finished_at - _EPOCH) // _MICRO
        return base64.urlsafe_b64encode(orjson.dumps([micros, self.hash])).decode().rstrip("=")

    @classmethod
    def decode(cls, raw: str) -> Cursor:
        """Parse a cursor from a query string; 422 naming ``cursor`` if it is not one of ours."""
        try:
            if len(raw) > 200:
                raise ValueError("too long")
            micros, h = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
            if not isinstance(micros, int) or isinstance(micros, bool) or not isinstance(h, str):
                raise ValueError("wrong shape")
            if not _HASH.fullmatch(h):
                raise ValueError("bad hash")
            return cls(_EPOCH + micros * _MICRO, h)
        except (ValueError, TypeError, binascii.Error, OverflowError, orjson.JSONDecodeError):
            raise ValidationFailed(
                "The cursor is not valid; start again from the first page.",
                fields={"cursor": "Use the next_cursor value of a previous page, unchanged."},
            ) from None


@dataclass(frozen=True)
class HistoryQuery:
    """One page of one person's history, with optional filters."""

    user_id: str
    service: str | None = None
    status: str | None = None
    limit: int = DEFAULT_LIMIT
    after: Cursor | None = None

    @classmethod
    def from_params(cls, user_id: str, params: Mapping[str, str]) -> HistoryQuery:
        """From query parameters ``service``, ``status``, ``limit``, ``cursor``; 422 with a
        message per bad parameter."""
        errors: dict[str, str] = {}
        service = (params.get("service") or "").strip() or None
        if service is not None and not _SLUG.fullmatch(service):
            errors["service"] = "Use a service slug, e.g. credit-score-rating."
        status = (params.get("status") or "").strip() or None
        if status is not None and status not in STATUSES:
            errors["status"] = f"Use one of {', '.join(STATUSES)}."
        limit = DEFAULT_LIMIT
        raw_limit = (params.get("limit") or "").strip()
        if raw_limit:
            try:
                limit = int(raw_limit)
            except ValueError:
                limit = 0
            if not 1 <= limit <= MAX_LIMIT:
                errors["limit"] = f"Use a whole number from 1 to {MAX_LIMIT}."
        after = None
        raw_cursor = (params.get("cursor") or "").strip()
        if raw_cursor:
            try:
                after = Cursor.decode(raw_cursor)
            except ValidationFailed as exc:
                errors.update(exc.fields)
        if errors:
            raise ValidationFailed("Some parameters are not valid.", fields=errors)
        return cls(user_id, service, status, limit, after)


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"items": self.items, "next_cursor": self.next_cursor}


def _item(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for name in ("created_at", "started_at", "finished_at"):
        out[name] = iso(row.get(name))
    return out


async def page(conn: AsyncConnection[Any], q: HistoryQuery) -> Page:
    """The requested page, newest first, and the cursor of the next one (None on the last page)."""
    where = [sql.SQL("user_id = %(user)s")]
    if q.service is not None:
        where.append(sql.SQL("service_slug = %(service)s"))
    if q.status is not None:
        where.append(sql.SQL("status = %(status)s"))
    if q.after is not None:
        where.append(sql.SQL("(finished_at, hash) < (%(after_at)s, %(after_hash)s)"))
    query = sql.SQL(
        "SELECT {columns} FROM history WHERE {where} ORDER BY finished_at DESC, hash DESC LIMIT %(limit)s"
    ).format(columns=sql.SQL(_LIST_COLUMNS), where=sql.SQL(" AND ").join(where))
    params: dict[str, Any] = {"user": q.user_id, "service": q.service, "status": q.status, "limit": q.limit + 1}
    if q.after is not None:
        params["after_at"] = q.after.finished_at
        params["after_hash"] = q.after.hash
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    next_cursor = Cursor(rows[-1]["finished_at"], rows[-1]["hash"]).encode() if more and rows else None
    return Page([_item(r) for r in rows], next_cursor)


async def entry(conn: AsyncConnection[Any], user_id: str, request_hash: str) -> dict[str, Any] | None:
    """One archived request with its stored result, if it is this user's (None otherwise)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_ENTRY, [user_id, request_hash])
        row = await cur.fetchone()
    if row is None:
        return None
    out = _item(row)
    out["archived_at"] = iso(row.get("archived_at"))
    return out
