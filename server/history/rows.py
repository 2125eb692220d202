"""The archive: terminal records become history rows for PostgreSQL.

Two parts, used by the archiver process (``jobs.archiver``) and the
benchmark:

- :func:`to_row` turns a stored record (the full JSON the update script
  handed to the archive stream) into an :class:`ArchiveRow`. Pure: no I/O.
  It keeps timings and outcome, never the access token's hash, and drops
  secret-looking keys from the request and result (the OTP is never in a
  record to begin with).
- :meth:`ArchiveRow.binary` and :func:`copy_data` are the rows in COPY's
  binary format; ``to_row`` encodes each row as it makes it, so the
  archiver does that work while PostgreSQL writes the batch before
  (``server.history.writer`` sends it).

How far behind the archive is: ``server.history.backlog``.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from server.domain.errors import ArchiveError
from server.domain.status import TERMINAL_VALUES as _TERMINAL

_HASH = re.compile(r"req_[A-Za-z0-9_-]{8,64}")
#: keys whose values must never rest in the archive, at any depth of request or result data
#: (also any key ending in _token or _secret)
_SECRET_NAMES = frozenset({"otp", "otp_code", "pin", "cvv", "cvv2", "password", "passwd", "secret", "token"})
_MAX_DEPTH = 20
# Most request and result data has nothing to scrub, and its JSON is needed for the COPY anyway:
# one search of that JSON decides whether the slow walk of :func:`scrub` can change anything.
# Conservative: any string (key or value) named like a secret, a NUL, or the one non-ASCII
# character whose lower case is ASCII (KELVIN SIGN, "k") sends the value down the slow path.
# (Searched in the JSON lowered with bytes.lower, ASCII only like IGNORECASE: twice as fast.)
_MAYBE_SECRET = re.compile(
    rb'"(?:' + b"|".join(re.escape(n.encode()) for n in sorted(_SECRET_NAMES)) + rb')"|_(?:token|secret)"'
    rb"|\\u0000|\xe2\x84\xaa"
)
#: times outside 2000-01-01 … 2200-01-01 are a broken record, not history
_EARLIEST, _LATEST = 946_684_800.0, 7_258_118_400.0
MAX_ERROR = 2000

#: the history columns the archive writes, in the order of ArchiveRow's COPY encoding
COLUMNS = (
    "user_id, hash, service_slug, status, created_at, started_at, finished_at, duration, waited, "
    "steps, attempts, error, request_data, result_data, app, user_ref"
)
# COPY's binary format (PostgreSQL docs, "COPY", "Binary Format"): a signature, then per row the
# number of fields and each field as a 32-bit length (-1: NULL) and its bytes; -1 ends the data.
# Timestamps are microseconds since 2000-01-01 UTC, jsonb is a version byte (1) and JSON text.
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_TRAILER = struct.pack("!h", -1)
_FIELDS = struct.pack("!h", COLUMNS.count(",") + 1)
_NULL = struct.pack("!i", -1)
_LEN = struct.Struct("!i")
_TIME = struct.Struct("!iq")
_FLOAT = struct.Struct("!id")
_INT2 = struct.Struct("!ih")
_TIMINGS = struct.Struct("!iqiqiqidid")
_PG_EPOCH = 946_684_800.0


@dataclass(slots=True)
class ArchiveRow:
    """One history row; times are epoch seconds, durations seconds.

    Treat it as immutable: :func:`to_row` keeps the row's COPY encoding with it (make a
    changed copy with ``dataclasses.replace``, which encodes afresh). Not ``frozen``: a
    frozen dataclass sets each field through ``object.__setattr__``, which made building
    rows a tenth of the archiver's time.
    """

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
    #: the application that created it with its API key, and its name for the person
    app: str | None = None
    user_ref: str | None = None

    #: the row in COPY's binary format, encoded by :func:`to_row` (not a column)
    _binary: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def binary(self) -> bytes:
        """The row as one tuple of binary COPY, in ``COLUMNS`` order."""
        if self._binary is not None:
            return self._binary
        result = None if self.result_data is None else _dumps(self.result_data)
        return _encode(self, _dumps(self.steps), _dumps(self.request_data), result)

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
            self.app,
            self.user_ref,
        )


# --------------------------------------------------------------------------- record → row


def _epoch(p: Mapping[str, Any], name: str, rec: Mapping[str, Any], iso_name: str) -> float | None:
    value = p.get(name)
    if type(value) is float or type(value) is int:  # not bool
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
    if isinstance(raw, dict) and raw:
        return sorted([(t, s) for s, t in raw.items() if type(t) is float or type(t) is int])
    public = rec.get("steps")
    if started is not None and isinstance(public, dict):
        # Only the public offsets survive (an older record): rebuild the start times.
        return sorted([(started + o, s) for s, o in public.items() if type(o) is float or type(o) is int])
    return []


def _ms(seconds: float) -> float:
    """Rounded to the millisecond (``round(x, 3)`` goes through decimal digits: five times slower)."""
    return round(seconds * 1000) / 1000


def step_seconds(starts: Sequence[tuple[float, str]], finished: float) -> dict[str, float]:
    """Seconds spent in each step: from its start to the next step's start (the last one to the end)."""
    out: dict[str, float] = {}
    last = len(starts) - 1
    for i, (t, name) in enumerate(starts):
        end = starts[i + 1][0] if i < last else finished
        out[name] = round((end - t) * 1000) / 1000 if end > t else 0.0  # _ms, inline: a hot loop
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
        cleaned = ((k.replace("\x00", ""), v) for k, v in value.items())
        return {k: _clean(v, depth + 1) for k, v in cleaned if not _secret(k)}
    if isinstance(value, list):
        return [_clean(v, depth + 1) for v in value]
    return value


def scrub(value: Any) -> Any:
    """The value without secret-looking keys (at any depth; nesting past 20 levels is cut off)
    and without NUL characters, which PostgreSQL's text and jsonb refuse."""
    return _clean(value, 0) if _dirty(value, 0) else value


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:  # e.g. an integer past 64 bits
        raise ArchiveError(f"a value PostgreSQL cannot store as JSON: {exc}") from None


def _scrubbed_json(value: Any) -> tuple[Any, bytes]:
    """:func:`scrub` of the value and its JSON, which the COPY needs anyway; the walk over the
    value only when a search of that JSON says it may change something."""
    raw = _dumps(value)
    # At most _MAX_DEPTH brackets (in strings too): not nested past the cut-off.
    if raw.count(b"{") + raw.count(b"[") <= _MAX_DEPTH and _MAYBE_SECRET.search(raw.lower()) is None:
        return value, raw
    clean = scrub(value)
    return clean, raw if clean is value else _dumps(clean)


def _data_columns(request: Any, result: Any) -> tuple[dict[str, Any], bytes, Any, bytes | None]:
    """Request and result data scrubbed, and their JSON: :func:`_scrubbed_json` of both, with
    one search of the two JSON texts together when neither needs scrubbing (most of the time)."""
    request_json = _dumps(request) if isinstance(request, dict) else b"{}"
    result_json = None if result is None else _dumps(result)
    both = request_json if result_json is None else request_json + b"\n" + result_json
    if both.count(b"{") + both.count(b"[") <= _MAX_DEPTH and _MAYBE_SECRET.search(both.lower()) is None:
        return request if isinstance(request, dict) else {}, request_json, result, result_json
    request, request_json = _scrubbed_json(request) if isinstance(request, dict) else ({}, b"{}")
    if result is not None:
        result, result_json = _scrubbed_json(result)
    return request, request_json, result, result_json


def _text(value: str) -> bytes:
    data = value.encode()
    return _LEN.pack(len(data)) + data


_STATUS = {s: _text(s) for s in _TERMINAL}


def _time(epoch: float | None) -> bytes:
    return _NULL if epoch is None else _TIME.pack(8, round((epoch - _PG_EPOCH) * 1_000_000))


def _float(value: float | None) -> bytes:
    return _NULL if value is None else _FLOAT.pack(8, value)


def _jsonb(data: bytes | None) -> bytes:
    return _NULL if data is None else _LEN.pack(len(data) + 1) + b"\x01" + data


def _encode(row: ArchiveRow, steps: bytes, request_data: bytes, result_data: bytes | None) -> bytes:
    """The row as a tuple of binary COPY (the JSON columns given already encoded). Flat, with
    few calls: the archiver encodes every row it stores."""
    user, h, slug = row.user_id.encode(), row.hash.encode(), row.service_slug.encode()
    if row.started is not None and row.duration is not None:
        # The usual case in one call: created, started, finished, duration, waited.
        middle = _TIMINGS.pack(
            8,
            round((row.created - _PG_EPOCH) * 1_000_000),
            8,
            round((row.started - _PG_EPOCH) * 1_000_000),
            8,
            round((row.finished - _PG_EPOCH) * 1_000_000),
            8,
            row.duration,
            8,
            row.waited,
        )
    else:
        middle = b"".join(
            (_time(row.created), _time(row.started), _time(row.finished), _float(row.duration), _float(row.waited))
        )
    return b"".join(
        (
            _FIELDS,
            _LEN.pack(len(user)),
            user,
            _LEN.pack(len(h)),
            h,
            _LEN.pack(len(slug)),
            slug,
            _STATUS.get(row.status) or _text(row.status),
            middle,
            _LEN.pack(len(steps) + 1),
            b"\x01",
            steps,
            _INT2.pack(2, row.attempts),
            _NULL if row.error is None else _text(row.error),
            _LEN.pack(len(request_data) + 1),
            b"\x01",
            request_data,
            _jsonb(result_data),
            _NULL if row.app is None else _text(row.app),
            _NULL if row.user_ref is None else _text(row.user_ref),
        )
    )


def to_row(rec: Mapping[str, Any]) -> ArchiveRow:
    """The history row for a terminal record, already encoded for COPY; raises
    :class:`ArchiveError` naming the bad field."""
    h = rec.get("hash")
    if not isinstance(h, str) or not _HASH.fullmatch(h):
        raise ArchiveError(f"hash is missing or malformed: {str(h)[:40]!r}")
    status = rec.get("status")
    if not isinstance(status, str) or status not in _TERMINAL:
        raise ArchiveError(f"{h}: status {str(status)[:20]!r} is not terminal")
    slug = rec.get("service_slug")
    if not isinstance(slug, str) or not slug or len(slug) > 100:
        raise ArchiveError(f"{h}: service_slug is missing or malformed")
    p = rec.get("_p")
    if not isinstance(p, dict):
        p = {}
    finished = _epoch(p, "finished", rec, "finished_at")
    if finished is None:
        raise ArchiveError(f"{h}: finished_at is missing")
    created = _epoch(p, "created", rec, "created_at")
    started = _epoch(p, "started", rec, "started_at")
    waited_raw = p.get("waited")
    waited = _ms(float(waited_raw)) if isinstance(waited_raw, (int, float)) and 0 < waited_raw < _LATEST else 0.0
    duration = None if started is None else _ms(max(0.0, finished - started - waited))
    attempt = rec.get("attempt")
    attempts = attempt if isinstance(attempt, int) and not isinstance(attempt, bool) and 0 < attempt < 1000 else 1
    error = rec.get("error")
    user = rec.get("user_id")
    steps = step_seconds(_step_starts(rec, p, started), finished)
    steps_json = _dumps(steps)
    if b"\\u0000" in steps_json:  # a step named with a NUL (an old bot's): PostgreSQL refuses it
        steps = {k.replace("\x00", ""): v for k, v in steps.items()}
        steps_json = _dumps(steps)
    request_data, request_json, result_data, result_json = _data_columns(
        rec.get("request_data"), rec.get("result_data")
    )
    row = ArchiveRow(
        user_id=user.replace("\x00", "") if isinstance(user, str) else "",
        hash=h,
        service_slug=slug,
        status=status,
        created=created if created is not None else finished,
        started=started,
        finished=finished,
        duration=duration,
        waited=waited,
        steps=steps,
        attempts=attempts,
        error=None if error is None else scrub(str(error)[:MAX_ERROR]),
        request_data=request_data,
        result_data=result_data,
        app=_short_text(p.get("app")),
        user_ref=_short_text(p.get("user_ref")),
    )
    row._binary = _encode(row, steps_json, request_json, result_json)
    return row


def _short_text(value: Any) -> str | None:
    """An app name or user reference from ``_p`` (bounded, NUL-free), or None."""
    return value.replace("\x00", "")[:200] if isinstance(value, str) else None


def copy_data(rows: Iterable[ArchiveRow]) -> bytes:
    """The rows in COPY's binary format, signature to trailer, for one ``COPY … FROM STDIN``."""
    return b"".join((_SIGNATURE, *(row.binary() for row in rows), _TRAILER))


@dataclass(frozen=True, slots=True)
class CopyBatch:
    """A batch ready for one ``COPY``: one row per request, in the order written, encoded.

    Small to pickle (bytes and a few names), so the archiver's parser processes hand it back
    instead of the rows.
    """

    #: the rows in COPY's binary format, signature to trailer
    data: bytes
    #: rows in ``data``
    count: int
    #: services with a completed request in the batch (their estimates change)
    completed: frozenset[str]


def unique_rows(rows: Iterable[ArchiveRow]) -> list[ArchiveRow]:
    """One row per request, the latest outcome (a retried request can finish twice), grouped
    by user: consecutive rows land in the same partition and index pages."""
    seen: dict[tuple[str, str], ArchiveRow] = {}
    for row in rows:
        key = (row.user_id, row.hash)
        if key not in seen or row.finished > seen[key].finished:
            seen[key] = row
    return [seen[key] for key in sorted(seen)]


def completed_services(rows: Iterable[ArchiveRow]) -> frozenset[str]:
    """The services the rows completed requests of (their learned estimates are due)."""
    return frozenset(r.service_slug for r in rows if r.status == "completed")


def copy_batch(rows: Iterable[ArchiveRow]) -> CopyBatch:
    """The rows as one :class:`CopyBatch` (:func:`unique_rows`, encoded)."""
    ordered = unique_rows(rows)
    return CopyBatch(copy_data(ordered), len(ordered), completed_services(ordered))
