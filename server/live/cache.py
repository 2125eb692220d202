"""A per-process cache of request records, kept current by the hub's pub/sub.

Polling browsers ask for the same few records every few seconds; each answer
would otherwise cost a Redis round trip. A cached record is a hub watcher like
a socket: the process subscribes to its channel and every published change
replaces the cached copy, so a cached answer is never staler than pub/sub
delivery. An entry is trusted only while the hub is connected in the same
connection generation it was read in (a drop means we may have missed
changes); past the record's own ``expires_at`` it is dropped; idle entries are
forgotten (and unsubscribed) after ``idle``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from server.live.frames import Frame
from server.live.hub import Hub
from server.record import RecordStore, private_view, public_json


def _epoch(iso: object) -> float:
    if not isinstance(iso, str):
        return float("inf")
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("inf")


@dataclass(slots=True, eq=False)  # identity, not value: entries are hub watchers in sets
class Entry:
    """What the status endpoint needs of a record: who may see it and its public JSON."""

    hash: str
    user_id: str | None
    token: str | None
    public: bytes
    expires: float
    generation: int
    #: the application that created it (None: a person's session did)
    app: str | None = None
    used: float = field(default_factory=time.monotonic)
    closed: bool = False
    #: an in-process watcher, not a browser socket (hub watcher protocol)
    is_socket = False

    def offer(self, frame: Frame) -> None:
        """A published change (hub watcher protocol): replace the cached copy."""
        if frame.payload and frame.state:
            self.public = frame.payload
            self.expires = _epoch(orjson.loads(frame.payload).get("expires_at"))


class RecordCache:
    def __init__(self, hub: Hub, store: RecordStore, *, idle: float = 30.0, max_entries: int = 10_000):
        self.hub = hub
        self.store = store
        self.idle = idle
        self.max_entries = max_entries
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self._janitor: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.hits = self.misses = 0

    def start(self) -> None:
        self._janitor = asyncio.create_task(self._forget_idle())

    async def stop(self) -> None:
        self._stopping.set()
        if self._janitor is not None:
            await asyncio.wait({self._janitor}, timeout=3.0)

    def _valid(self, entry: Entry) -> bool:
        return self.hub.connected and entry.generation == self.hub.generation and entry.expires > time.time()

    async def get(self, h: str) -> Entry | None:
        """The record's entry, from memory when it is current, else read (and watched)."""
        entry = self.entries.get(h)
        if entry is not None and self._valid(entry):
            entry.used = time.monotonic()
            self.hits += 1
            return entry
        self.misses += 1
        if entry is not None:
            await self._drop(h)
        return await self._load(h)

    async def _load(self, h: str) -> Entry | None:
        if not self.hub.connected:
            # Without pub/sub we cannot keep a copy current: answer from Redis every time.
            rec = await self.store.get(h)
            return None if rec is None else self._entry(h, rec, generation=-1)
        generation = self.hub.generation
        entry = Entry(h, None, None, b"", 0.0, generation)
        # Watch first, then read, and keep watching with the same entry: a change published
        # at any moment from here on reaches it (the read fills only what is still empty).
        await self.hub.watch(entry)
        rec = await self.store.get(h)
        if rec is None:
            await self.hub.unwatch(entry)
            return None
        read = self._entry(h, rec, generation=generation)
        entry.user_id, entry.token, entry.app = read.user_id, read.token, read.app
        if not entry.public:  # no change was published while we read
            entry.public, entry.expires = read.public, read.expires
        previous = self.entries.pop(h, None)
        if previous is not None and previous is not entry:
            await self.hub.unwatch(previous)
        self.entries[h] = entry
        while len(self.entries) > self.max_entries:
            oldest, _ = self.entries.popitem(last=False)
            await self._unwatch(oldest)
        return entry

    @staticmethod
    def _entry(h: str, rec: dict[str, object], *, generation: int) -> Entry:
        p = private_view(rec)
        token, app = p.get("token"), p.get("app")
        user = rec.get("user_id")
        return Entry(
            hash=h,
            user_id=user if isinstance(user, str) else None,
            token=token if isinstance(token, str) else None,
            public=public_json(rec),
            expires=_epoch(rec.get("expires_at")),
            generation=generation,
            app=app if isinstance(app, str) else None,
        )

    async def _drop(self, h: str) -> None:
        if self.entries.pop(h, None) is not None:
            await self._unwatch(h)

    async def _unwatch(self, h: str) -> None:
        for watcher in list(self.hub.watchers.get(h, ())):
            if isinstance(watcher, Entry):
                await self.hub.unwatch(watcher)

    async def _forget_idle(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(5.0, self.idle)):
                    await self._stopping.wait()
            cutoff = time.monotonic() - self.idle
            for h in [h for h, e in self.entries.items() if e.used < cutoff]:
                await self._drop(h)
