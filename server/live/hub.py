"""The hub: one Redis pub/sub connection per process, fanned out to its watchers.

- Channels are reference-counted: the process is subscribed to exactly the
  request channels that have at least one local watcher (a browser socket, a
  cached record: anything with the :class:`Watcher` protocol).
- The listener never awaits a watcher: it hands each :class:`~server.live.frames.Frame`
  to ``offer``, which must not block (a browser socket queues it and drains the
  queue from its own writer task; see ``server.web.socket_client``).
- When the pub/sub connection drops, the listener reconnects with backoff,
  resubscribes, re-reads every watched record and, for those whose ``seq`` moved,
  replays the changes it missed from the request's log (``server.live.resume``; a
  snapshot when the log does not reach back), so every watcher sees every change,
  in order, once.

The hub knows no web framework: opening, counting and closing browser sockets is
the web edge's side (``server.web.socket_client``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from server.infra.backoff import Backoff
from server.infra.connections import AsyncClient, mget
from server.infra.counters import RECONNECTS, RELAYED, RESUMES, RESYNCED, SOCKETS_OPEN
from server.live.frames import Frame, frame_for
from server.live.resume import Outcome, Resume, resume
from server.record import Keys, RecordStore

log = logging.getLogger("longrun.hub")

#: reads what a watcher missed after a seq: ``(hash, since) -> Resume`` (see Hub.missed)
CatchUp = Callable[[str, int], Awaitable[Resume]]

#: seconds a socket may take to accept one frame before it is closed as stuck (the default of Hub.send_timeout)
SEND_TIMEOUT = 10.0
SUBSCRIBE_TIMEOUT = 3.0
#: seconds the listener waits for a message before looking around (shutdown, health)
LISTEN_TICK = 0.25
#: seconds spent on each cluster node's connection when polling sharded channels
SHARD_POLL = 0.005
#: seconds before the first reconnect after a drop; doubles (jittered) up to RETRY_MAX while attempts fail
RETRY_FIRST = 0.1
RETRY_MAX = 5.0


class Watcher(Protocol):
    """Anything the hub relays a request's updates to: a browser socket, the record cache."""

    hash: str
    closed: bool

    @property
    def is_socket(self) -> bool:
        """A browser socket (counted in ``HubStats.sockets``), not an in-process watcher."""
        ...

    def offer(self, frame: Frame) -> None: ...


@dataclass
class HubStats:
    sockets: int = 0
    relayed: int = 0
    reconnects: int = 0
    subscribed: int = 0
    #: watched records re-read after a reconnect and pushed: newer than anything relayed for them
    resynced: int = 0
    #: of those, the ones whose missed changes were all replayed from the log
    replayed: int = 0


@dataclass
class Hub:
    """Fan-out of record updates from Redis pub/sub to this process's watchers."""

    #: the pub/sub connection's client (no silent reconnects)
    redis: AsyncClient
    keys: Keys
    #: the process's record store (its main client), for reading records and logs on resync
    store: RecordStore | None = None
    watchers: dict[str, set[Watcher]] = field(default_factory=dict)
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
    #: relayed frames not yet added to the Prometheus counter (see _count_relayed)
    _relayed_uncounted: int = 0
    #: bumped on every (re)connect of the pub/sub connection
    generation: int = 0
    #: what a watcher that fell behind calls to be sent the changes it has not been: :meth:`missed`,
    #: bound once for every browser feed of the process to share (None without a store: it then
    #: conflates progress instead)
    catch_up: CatchUp | None = field(default=None, init=False, repr=False)
    #: the classic channels' common prefix (str, and bytes for hiredis' replies)
    _prefix: str = field(default="", init=False, repr=False)
    _prefix_b: bytes = field(default=b"", init=False, repr=False)

    def __post_init__(self) -> None:
        self.catch_up = self.missed if self.store is not None else None
        self._prefix = self.keys.channel_prefix()
        self._prefix_b = self._prefix.encode()

    async def missed(self, h: str, since: int) -> Resume:
        """The changes of ``h`` after ``since``, from the request's log: for a browser that
        stopped taking live frames while it was behind (counted as ``via="behind"``)."""
        assert self.store is not None
        answer = await resume(self.store, h, since)
        RESUMES.labels("behind", answer.outcome.value).inc()
        return answer

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
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=LISTEN_TICK * 3)
            if not done:
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=2.0)

    # ------------------------------------------------------------------ watchers

    async def watch(self, client: Watcher) -> None:
        """Start relaying a request's updates to ``client``; subscribes on the first watcher."""
        h = client.hash
        group = self.watchers.setdefault(h, set())
        if client not in group and client.is_socket:
            self._count_sockets(+1)
        group.add(client)
        if len(group) == 1:
            await self._subscribe([h])
        event = self._confirmed.get(h)
        if event is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                    await event.wait()

    def started(self, h: str, seq: int) -> None:
        """A watcher of ``h`` now stands at ``seq`` (read after it was subscribed): should the
        pub/sub connection drop before anything is relayed, the resync replays from there."""
        if h in self.watchers and seq >= 0:
            self._seq.setdefault(h, seq)

    async def unwatch(self, client: Watcher) -> None:
        h = client.hash
        group = self.watchers.get(h)
        if group is None or client not in group:
            return
        group.discard(client)
        if client.is_socket:
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
        backoff = Backoff(self.retry_first, self.retry_max, jitter=True)
        while not self._closing:
            generation = self.generation
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.stats.reconnects += 1
                RECONNECTS.inc()
                log.warning("pub/sub connection lost (%s); reconnecting", exc.__class__.__name__)
            except Exception:
                self.stats.reconnects += 1
                RECONNECTS.inc()
                log.exception("pub/sub listener failed; reconnecting")
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
                backoff = Backoff(self.retry_first, self.retry_max, jitter=True)
            wait = next(backoff)
            if not self._closing:
                log.info("pub/sub reconnect in %.1f s", wait)
                await asyncio.sleep(wait)

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
        try:
            while not self._closing:
                message = await self._next_message(pubsub)
                if message is not None:
                    self._handle(message)
                    if not self.sharded:
                        await self._drain_buffered(pubsub)
                self._count_relayed()
        finally:
            self._connected.clear()
            self._count_relayed()

    def _handle(self, message: dict[str, Any]) -> None:
        """One message as redis-py parses it: an update relayed, or a subscription confirmed."""
        kind = message["type"]
        channel = message["channel"].decode() if isinstance(message["channel"], bytes) else ""
        if self.sharded:
            h = self.keys.hash_of_shard_channel(channel)
        else:
            prefix = self._prefix
            h = channel[len(prefix) :] if channel.startswith(prefix) else ""
        if kind in ("message", "smessage"):
            self._dispatch(h, message["data"])
        elif kind in ("subscribe", "ssubscribe"):
            # Confirmed: the watcher waiting on it wakes; nothing else needs it again.
            event = self._confirmed.pop(h, None)
            if event is not None:
                event.set()

    async def _drain_buffered(self, pubsub: Any) -> None:
        """Relay every message already read from the socket and parsed by hiredis, without
        going back through ``get_message`` (a health check, a read and an await per message):
        under load one socket read carries dozens of them.

        Relies on redis-py's private ``connection._parser._reader`` (the hiredis reader); where
        it is missing (no hiredis, another redis-py), messages are read one by one as before."""
        reader = getattr(getattr(getattr(pubsub, "connection", None), "_parser", None), "_reader", None)
        gets = getattr(reader, "gets", None)
        if gets is None:
            return
        prefix = self._prefix_b
        cut = len(prefix)
        while not self._closing:
            reply = gets()
            if isinstance(reply, list):
                if len(reply) == 3 and reply[0] == b"message" and isinstance(reply[1], bytes):
                    channel = reply[1]
                    self._dispatch(channel[cut:].decode() if channel.startswith(prefix) else "", reply[2])
                    continue
                # (un)subscribe confirmations and the like: redis-py keeps its books on them
                message = await pubsub.handle_message(reply)
                if message is not None:
                    self._handle(message)
            elif isinstance(reply, bytes | str):
                await pubsub.handle_message(reply)  # a PONG from the health check
            elif isinstance(reply, Exception):
                raise reply
            else:
                return  # nothing complete left in the buffer

    def _count_relayed(self) -> None:
        """The Prometheus counter, once per batch of messages rather than once per update."""
        if self._relayed_uncounted:
            RELAYED.inc(self._relayed_uncounted)
            self._relayed_uncounted = 0

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

    def _dispatch(self, h: str, payload: bytes | str) -> None:
        group = self.watchers.get(h)
        if not group:
            return
        try:
            frame = frame_for(payload)
        except Exception:  # a bot's odd JSON must not take the listener down for everyone
            log.warning("ignoring an unreadable update for %s", h[:12], exc_info=True)
            return
        if frame is not None:
            self._relay(h, group, frame)

    def _relay(self, h: str, group: set[Watcher], frame: Frame) -> None:
        if frame.seq >= 0:
            self._seq[h] = max(self._seq.get(h, -1), frame.seq)
        for client in list(group):
            client.offer(frame)
        self.stats.relayed += len(group)
        self._relayed_uncounted += len(group)

    async def _resync(self, hashes: list[str]) -> None:
        """After a reconnect: replay to every watched record's watchers what changed while we were away."""
        main = self.store.redis if self.store is not None else self.redis
        for i in range(0, len(hashes), 200):
            chunk = [h for h in hashes[i : i + 200] if h in self.watchers]
            if not chunk:
                continue
            raws = await mget(main, [self.keys.record(h) for h in chunk])
            moved = []
            for h, raw in zip(chunk, raws, strict=True):
                frame = frame_for(raw) if raw is not None else None
                if frame is not None and (frame.seq < 0 or frame.seq > self._seq.get(h, -1)):
                    moved.append((h, frame))
            if moved:
                await asyncio.gather(*(self._catch_up(h, frame) for h, frame in moved))

    async def _catch_up(self, h: str, latest: Frame) -> None:
        """Replay one record's missed changes (or, when they are not all logged, its latest state)."""
        known = self._seq.get(h, -1)
        frames = [latest]
        if self.store is not None and known >= 0 and latest.seq > known:
            answer = await resume(self.store, h, known)
            RESUMES.labels("hub", answer.outcome.value).inc()
            if answer.outcome is Outcome.REPLAYED:
                frames = answer.frames
                self.stats.replayed += 1
            elif answer.outcome is Outcome.SNAPSHOT:
                frames = answer.frames
        group = self.watchers.get(h)
        if not group:
            return
        self.stats.resynced += 1
        RESYNCED.inc()
        for frame in frames:
            frame.resync = True
            self._relay(h, group, frame)
