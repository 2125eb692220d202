"""The WebSocket hub: one Redis pub/sub connection per process, fanned out to browsers.

- Channels are reference-counted: the process is subscribed to exactly the
  request channels that have at least one local socket.
- The listener never awaits a socket: it hands each frame to the socket's
  :class:`Client`, a small bounded queue drained by a writer task that exists
  only while there is something to send. A slow browser gets progress frames
  conflated to the latest state (OTP prompts and terminal states are never
  dropped); one that stops reading is closed after ``send_timeout``.
- When the pub/sub connection drops, the listener reconnects with backoff,
  resubscribes, re-reads every watched record and pushes those whose ``seq``
  moved, so no browser stays on a stale state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import WSCloseCode, web
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from server.domain.protocol import snapshot_frame, update_frame
from server.domain.status import TERMINAL_VALUES, Status
from server.infra.connections import AsyncClient, mget
from server.infra.counters import RECONNECTS, RELAYED, RESYNCED, SOCKETS_OPEN
from server.record import Keys, loads_record, public_json

log = logging.getLogger("longrun.hub")

#: frames a socket may have waiting before it is considered stuck (progress is conflated first)
MAX_PENDING = 16
SEND_TIMEOUT = 10.0
SUBSCRIBE_TIMEOUT = 3.0
#: seconds the listener waits for a message before looking around (shutdown, health)
LISTEN_TICK = 0.25
#: seconds spent on each cluster node's connection when polling sharded channels
SHARD_POLL = 0.005
#: seconds before the first reconnect after a drop; doubles (jittered) up to RETRY_MAX while attempts fail
RETRY_FIRST = 0.1
RETRY_MAX = 5.0
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


def reply(text: str) -> Frame:
    """An error or pong frame for one socket."""
    return Frame(text, -1, keep=True, state=False)


class Client:
    """One browser socket: a bounded queue of frames and a writer that drains it."""

    __slots__ = (
        "__weakref__",
        "closed",
        "hash",
        "held",
        "last_seq",
        "pending",
        "send_timeout",
        "transport",
        "writer",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request_hash: str,
        *,
        send_timeout: float = SEND_TIMEOUT,
        transport: asyncio.Transport | None = None,
    ):
        self.ws = ws
        self.send_timeout = send_timeout
        # A browser that stopped reading cannot be closed politely (the close frame would
        # wait behind everything else): its connection is aborted instead.
        self.transport = transport
        self.hash = request_hash
        self.pending: list[Frame] = []  # at most MAX_PENDING; a list is 700 B smaller than a deque
        self.writer: asyncio.Task[None] | None = None
        self.last_seq = -1
        self.closed = False
        # Frames queue up but are not sent until the snapshot is in front of them.
        self.held = True

    def offer(self, frame: Frame) -> None:
        """Queue a frame without waiting (called from the listener)."""
        if self.closed or 0 <= frame.seq < self.last_seq or (frame.resync and 0 <= frame.seq == self.last_seq):
            return  # stale: the browser already has a newer state (or, after a resync, this one)
        if frame.state and self.pending and not self.pending[-1].keep:
            self.pending[-1] = frame  # conflate: the newer state supersedes the older progress
        else:
            self.pending.append(frame)
        if len(self.pending) > MAX_PENDING:
            self._shed()
        self._kick()

    def start(self, snapshot: Frame) -> None:
        """Send ``snapshot`` first, then whatever arrived meanwhile that is not older."""
        newer = [f for f in self.pending if f.seq < 0 or f.seq > snapshot.seq]
        self.pending = [Frame(snapshot.text, snapshot.seq, keep=True), *newer]
        self.held = False
        self._kick()

    def _kick(self) -> None:
        if self.writer is None and not self.held and not self.closed and self.pending:
            self.writer = asyncio.create_task(self._drain())

    def _shed(self) -> None:
        kept = [f for f in self.pending if f.keep]
        latest = self.pending[-1]
        self.pending = kept if latest.keep else [*kept, latest]
        if len(self.pending) > MAX_PENDING:
            # Only OTP prompts and outcomes left and still too many: this browser is not
            # reading. Drop it; it reconnects and gets a fresh snapshot.
            self.abort()

    async def _drain(self) -> None:
        try:
            while self.pending and not self.closed:
                frame = self.pending.pop(0)
                if 0 <= frame.seq < self.last_seq:
                    continue
                async with asyncio.timeout(self.send_timeout):
                    await self.ws.send_str(frame.text)
                if frame.seq >= 0:
                    self.last_seq = max(self.last_seq, frame.seq)
        except TimeoutError:
            log.info("dropping a socket that stopped reading (%s)", self.hash[:12])
            self.abort()
        except (ConnectionError, RuntimeError):
            self.closed = True
        finally:
            self.writer = None

    async def flush(self, timeout: float = 1.0) -> None:
        """Wait (bounded) until what is queued has been written."""
        writer = self.writer
        if writer is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(timeout):
                    await asyncio.shield(writer)

    def abort(self) -> None:
        self.closed = True
        self.pending.clear()
        if self.transport is not None:
            self.transport.abort()


async def _close(ws: web.WebSocketResponse, code: int, message: str) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            await ws.close(code=code, message=message.encode())


def frame_for(payload: bytes | str, *, snapshot: bool = False) -> Frame | None:
    """A frame for a published record; old bots' payloads (with private fields, no seq) are cleaned."""
    rec = loads_record(payload)
    if rec is None:
        return None
    if "_p" in rec or "seq" not in rec or "status" not in rec:
        payload = public_json(rec)
    seq = rec.get("seq")
    raw = payload.encode() if isinstance(payload, str) else payload
    text = snapshot_frame(raw) if snapshot else update_frame(raw)
    status = rec.get("status")
    keep = isinstance(status, str) and status in _KEEP  # old bots may write anything here
    return Frame(text, seq if isinstance(seq, int) else -1, keep, payload=raw)


class Watcher(Protocol):
    """Anything the hub relays a request's updates to: a browser socket, the record cache."""

    hash: str
    closed: bool

    def offer(self, frame: Frame) -> None: ...


@dataclass
class HubStats:
    sockets: int = 0
    relayed: int = 0
    reconnects: int = 0
    subscribed: int = 0
    #: watched records re-read after a reconnect and pushed: newer than anything relayed for them
    resynced: int = 0


@dataclass
class Hub:
    """Fan-out of record updates from Redis pub/sub to this process's sockets."""

    #: the pub/sub connection's client (no silent reconnects)
    redis: AsyncClient
    keys: Keys
    #: the process's main client, for reading records on resync
    main: AsyncClient | None = None
    watchers: dict[str, set[Watcher]] = field(default_factory=dict)
    sockets: weakref.WeakSet[web.WebSocketResponse] = field(default_factory=weakref.WeakSet)
    stats: HubStats = field(default_factory=HubStats)
    #: seconds a socket may take to accept one frame before it is closed as stuck
    send_timeout: float = SEND_TIMEOUT
    #: Redis Cluster: listen on each request's shard channel (SSUBSCRIBE) instead of its
    #: classic channel, so subscriptions live on the node that owns the request's slot
    sharded: bool = False
    #: backoff of the pub/sub reconnects: the first wait after a drop, and the ceiling
    retry_first: float = RETRY_FIRST
    retry_max: float = RETRY_MAX
    _pubsub: PubSub | None = None
    _task: asyncio.Task[None] | None = None
    _confirmed: dict[str, asyncio.Event] = field(default_factory=dict)
    _connected: asyncio.Event = field(default_factory=asyncio.Event)
    _seq: dict[str, int] = field(default_factory=dict)
    _closing: bool = False
    #: bumped on every (re)connect of the pub/sub connection
    generation: int = 0

    @property
    def connected(self) -> bool:
        """Subscribed and listening: what watchers hold is being kept current."""
        return self._connected.is_set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="hub-listener")

    async def stop(self) -> None:
        # The listener checks _closing at least every LISTEN_TICK and leaves by itself;
        # cancelling it is only the fallback (a cancellation can be lost inside redis-py).
        self._closing = True
        await self.close_all(WSCloseCode.GOING_AWAY, "server shutdown")
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=LISTEN_TICK * 3)
            if not done:
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=2.0)

    async def close_all(self, code: int, message: str) -> None:
        await asyncio.gather(*(_close(ws, code, message) for ws in list(self.sockets)), return_exceptions=True)

    # ------------------------------------------------------------------ watchers

    async def watch(self, client: Watcher) -> None:
        """Start relaying a request's updates to ``client``; subscribes on the first watcher."""
        h = client.hash
        group = self.watchers.setdefault(h, set())
        if client not in group and isinstance(client, Client):
            self._count_sockets(+1)
        group.add(client)
        if len(group) == 1:
            await self._subscribe([h])
        event = self._confirmed.get(h)
        if event is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                    await event.wait()

    async def unwatch(self, client: Watcher) -> None:
        h = client.hash
        group = self.watchers.get(h)
        if group is None or client not in group:
            return
        group.discard(client)
        if isinstance(client, Client):
            self._count_sockets(-1)
        client.closed = True
        if not group:
            del self.watchers[h]
            self._seq.pop(h, None)
            self._confirmed.pop(h, None)
            if self._pubsub is not None:
                with contextlib.suppress(RedisError, OSError):
                    if self.sharded:
                        await self._pubsub.sunsubscribe(self.keys.shard_channel(h))
                    else:
                        await self._pubsub.unsubscribe(self.keys.channel(h))

    def _count_sockets(self, change: int) -> None:
        self.stats.sockets += change
        SOCKETS_OPEN.set(self.stats.sockets)

    async def _subscribe(self, hashes: Iterable[str]) -> None:
        batch = [h for h in hashes if h in self.watchers]
        for h in batch:
            self._confirmed.setdefault(h, asyncio.Event())
        if self._pubsub is None or not batch:
            return  # the listener subscribes everything watched when it (re)connects
        try:
            if self.sharded:
                await self._pubsub.ssubscribe(*(self.keys.shard_channel(h) for h in batch))
            else:
                await self._pubsub.subscribe(*(self.keys.channel(h) for h in batch))
        except (RedisError, OSError) as exc:
            log.warning("subscribe failed (%s); the listener will resubscribe", exc.__class__.__name__)

    # ------------------------------------------------------------------ listener

    async def _listen(self) -> None:
        delay = self.retry_first
        while not self._closing:
            generation = self.generation
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.stats.reconnects += 1
                RECONNECTS.inc()
                log.warning("pub/sub connection lost (%s); reconnecting in %.1f s", exc.__class__.__name__, delay)
            except Exception:
                self.stats.reconnects += 1
                RECONNECTS.inc()
                log.exception("pub/sub listener failed; reconnecting in %.1f s", delay)
            finally:
                self._connected.clear()
                pubsub, self._pubsub = self._pubsub, None
                for event in self._confirmed.values():
                    event.clear()
                if pubsub is not None:
                    # Bounded: on a dead connection a polite close can wait forever.
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(1.0):
                            await pubsub.aclose()
            if self.generation != generation:
                # The session had been up: a fresh drop waits the shortest time again, however
                # many drops the process has seen before (only failing attempts back off).
                delay = self.retry_first
            if not self._closing:
                await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.retry_max)

    async def _session(self) -> None:
        if isinstance(self.redis, RedisCluster):
            await self.redis.initialize()  # the slot map, before any SSUBSCRIBE is routed
        pubsub = self.redis.pubsub()
        if not self.sharded:
            # Subscribe to a private channel first so the connection exists before anything else.
            await pubsub.subscribe(self.keys.channel("_hub"))
        self._pubsub = pubsub
        watched = list(self.watchers)
        for i in range(0, len(watched), 500):
            await self._subscribe(watched[i : i + 500])
        # Re-read every watched record before declaring the connection good: a failed resync
        # fails the session, and the listener reconnects and resyncs again.
        await self._resync(watched)
        self.generation += 1
        self._connected.set()
        prefix = self.keys.channel_prefix()
        try:
            while not self._closing:
                message = await self._next_message(pubsub)
                if message is None:
                    continue
                kind = message["type"]
                channel = message["channel"].decode() if isinstance(message["channel"], bytes) else ""
                if self.sharded:
                    h = self.keys.hash_of_shard_channel(channel)
                else:
                    h = channel[len(prefix) :] if channel.startswith(prefix) else ""
                if kind in ("message", "smessage"):
                    self._dispatch(h, message["data"])
                elif kind in ("subscribe", "ssubscribe"):
                    # Confirmed: the watcher waiting on it wakes; nothing else needs it again.
                    event = self._confirmed.pop(h, None)
                    if event is not None:
                        event.set()
        finally:
            self._connected.clear()

    async def _next_message(self, pubsub: Any) -> dict[str, Any] | None:
        if not self.sharded:
            message: dict[str, Any] | None = await pubsub.get_message(timeout=LISTEN_TICK)
            return message
        # Redis Cluster: one connection per node holding our shard channels; redis-py reads
        # them in turn and moves subscriptions when slots migrate ("following the cluster").
        if not pubsub.node_pubsub_mapping:
            await asyncio.sleep(LISTEN_TICK)
            return None
        sharded: dict[str, Any] | None = await pubsub.get_sharded_message(timeout=SHARD_POLL)
        return sharded

    def _dispatch(self, h: str, payload: bytes | str, *, resync: bool = False) -> None:
        group = self.watchers.get(h)
        if not group:
            return
        try:
            frame = frame_for(payload)
        except Exception:  # a bot's odd JSON must not take the listener down for everyone
            log.warning("ignoring an unreadable update for %s", h[:12], exc_info=True)
            return
        if frame is None:
            return
        frame.resync = resync
        if frame.seq >= 0:
            self._seq[h] = max(self._seq.get(h, -1), frame.seq)
        for client in list(group):
            client.offer(frame)
        self.stats.relayed += len(group)
        RELAYED.inc(len(group))

    async def _resync(self, hashes: list[str]) -> None:
        """After a reconnect: push every watched record whose seq moved while we were away."""
        for i in range(0, len(hashes), 200):
            chunk = [h for h in hashes[i : i + 200] if h in self.watchers]
            if not chunk:
                continue
            raws = await mget(self.main or self.redis, [self.keys.record(h) for h in chunk])
            for h, raw in zip(chunk, raws, strict=True):
                if raw is None:
                    continue
                frame = frame_for(raw)
                if frame is None or (frame.seq >= 0 and frame.seq <= self._seq.get(h, -1)):
                    continue
                self.stats.resynced += 1
                RESYNCED.inc()
                self._dispatch(h, raw, resync=True)
