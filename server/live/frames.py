"""Frames: what the hub relays to its watchers (a record state, or a reply to one socket).

A frame carries its text as sent to a browser, the record's ``seq`` (stale frames are
skipped), and whether it may be conflated away (progress) or must be kept (an OTP
prompt, a final state, a reply).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from server.domain.protocol import snapshot_frame, update_frame
from server.domain.status import TERMINAL_VALUES, Status
from server.record import loads_record, public_json

_KEEP = frozenset({Status.WAITING_OTP.value, *TERMINAL_VALUES})


@dataclass(slots=True)
class Frame:
    text: str
    seq: int
    #: an OTP prompt, a final state or a reply (error, pong): never conflated away
    keep: bool
    #: a record state (snapshot or update) rather than a reply
    state: bool = True
    #: the public record JSON the frame wraps (for watchers that are not sockets)
    payload: bytes = b""
    #: re-read after a reconnect, not published: news only to a socket that has not sent this seq
    resync: bool = False
    #: a snapshot (the whole state, replacing the page's) rather than an update
    snapshot: bool = False
    #: when the record was published (its ``updated_at``, epoch seconds; 0 unknown): delivery lag
    published: float = 0.0
    _data: bytes | None = None

    @property
    def data(self) -> bytes:
        """The text as UTF-8, encoded once for every socket the frame goes to."""
        data = self._data
        if data is None:
            data = self._data = self.text.encode()
        return data


def reply(text: str) -> Frame:
    """An error or pong frame for one socket."""
    return Frame(text, -1, keep=True, state=False)


def _epoch(iso: object) -> float:
    if not isinstance(iso, str):
        return 0.0
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return 0.0


def frame_for(payload: bytes | str, *, snapshot: bool = False, recovered: bool = True) -> Frame | None:
    """A frame for a published record; old bots' payloads (with private fields, no seq) are cleaned.

    ``recovered=False``: a snapshot sent to a resuming page in place of changes no longer logged.
    """
    rec = loads_record(payload)
    if rec is None:
        return None
    if "_p" in rec or "seq" not in rec or "status" not in rec:
        payload = public_json(rec)
    seq = rec.get("seq")
    raw = payload.encode() if isinstance(payload, str) else payload
    text = snapshot_frame(raw, recovered=recovered) if snapshot else update_frame(raw)
    status = rec.get("status")
    keep = isinstance(status, str) and status in _KEEP  # old bots may write anything here
    seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else -1
    return Frame(text, seq, keep, payload=raw, snapshot=snapshot, published=_epoch(rec.get("updated_at")))
