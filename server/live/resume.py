"""Resuming a stream from a seq: what a reconnecting page, or the hub after a pub/sub drop, missed.

The one owner of "since → replay or snapshot" (DESIGN.md, "Streams that resume without a
gap"), used by the WebSocket (``?since=``), the SSE stream (``Last-Event-ID``) and the
hub's resync:

- no seq given: the record as a ``snapshot`` (a first connection);
- the request's log holds every change after the seq, contiguously (each save bumps
  ``seq`` by one), up to the record's own seq: those changes as ``update`` frames, oldest
  first, and nothing else (none at all when nothing changed);
- otherwise (the log was trimmed past it, a change was written without the log, the seq is
  from the future): a ``snapshot`` with ``"recovered": false``.

The record and the log are read in one atomic script, so nothing slips in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import orjson

from server.live.frames import Frame, frame_for
from server.record import RecordStore


class Outcome(StrEnum):
    """How a stream (re)started (the label of the resumes counter)."""

    #: no seq given: a snapshot
    FRESH = "fresh"
    #: every change after the seq, from the log
    REPLAYED = "replayed"
    #: the log did not reach back: a snapshot with ``recovered: false``
    SNAPSHOT = "not_recovered"
    #: the record is gone (expired)
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class Resume:
    outcome: Outcome
    #: what to send, in order
    frames: list[Frame]
    #: the record's seq: where the receiver stands once the frames are sent
    seq: int
    #: the state the receiver then holds, as published (b"" unknown): the same change arriving
    #: once more through pub/sub is recognised and not sent twice
    edge: bytes = b""


def _contiguous(since: int, seqs: list[int], current: int) -> bool:
    expected = since
    for seq in seqs:
        if seq != expected + 1:
            return False
        expected = seq
    return expected == current


async def resume(store: RecordStore, h: str, since: int | None) -> Resume:
    """The frames that bring a receiver at ``since`` (None: nothing yet) to the current state."""
    read = await store.read_log(h, since)
    current = frame_for(read.raw, snapshot=True, recovered=since is None) if read.raw is not None else None
    if current is None:
        return Resume(Outcome.MISSING, [], -1)
    if since is None:
        newest = frame_for(read.entries[-1], snapshot=True) if read.entries else None
        if (
            newest is not None
            and newest.seq == current.seq
            and orjson.loads(newest.payload) == orjson.loads(current.payload)
        ):
            # the snapshot as it was published (the stored record carries private fields); not
            # when an old-style bot rewrote the record since (GET, edit, SET: the same seq)
            return Resume(Outcome.FRESH, [newest], newest.seq, newest.payload)
        return Resume(Outcome.FRESH, [current], current.seq)
    logged = [frame_for(e) for e in read.entries]
    frames = [f for f in logged if f is not None]
    edge = b""
    if frames and frames[0].seq == since:
        edge = frames[0].payload  # what the receiver already has
        frames = frames[1:]
    if (
        len(frames) + bool(edge) == len(logged)
        and current.seq >= 0
        and _contiguous(since, [f.seq for f in frames], current.seq)
    ):
        last = frames[-1].payload if frames else edge
        # an old-style bot rewrote the record since its last logged change (GET, edit, SET:
        # the same seq, no log entry): the receiver gets that state too
        if (
            last
            and orjson.loads(last) != orjson.loads(current.payload)
            and read.raw is not None
            and (rewritten := frame_for(read.raw)) is not None
        ):
            frames, last = [*frames, rewritten], rewritten.payload
        return Resume(Outcome.REPLAYED, frames, current.seq, last)
    return Resume(Outcome.SNAPSHOT, [current], current.seq)
