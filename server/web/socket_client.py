"""The web side of the hub: a browser WebSocket as a hub watcher, opened, counted and closed.

- :class:`Client` wraps one ``web.WebSocketResponse``: the hub's listener never awaits a
  socket, it hands each frame to the socket's client, a small bounded queue drained by
  a writer task that exists only while there is something to send. Every change is
  sent, once, in order, however slowly the browser reads: one that falls ``CONFLATE_AT``
  frames behind takes no more live frames, and once it has read what was queued it is
  sent what it missed from the request's log (``Hub.missed``), then live frames again.
  Its memory stays bounded and nothing is dropped; a change older than the log reaches
  (a browser 100 changes behind) comes as a snapshot with ``recovered: false``, as on a
  reconnect. One that stops reading is closed after ``send_timeout``. The SSE stream
  (``server.web.sse``) is the same client writing events instead of frames.
- :func:`refuse_cross_site` and :func:`open_socket`: what every socket endpoint does
  before it speaks (origin check; frame size, prepare, what the upgrade left of HTTP
  dropped, registration with the process's heartbeat); :func:`next_message`: what it
  reads (a ``ws.receive()`` loop that counts every frame as a sign of life and answers
  pings); :func:`forget`: what it does last.
- :func:`close_all`: every open socket is told we are going away (1001) on shutdown so
  the browser reconnects elsewhere.

Liveness is not aiohttp's per-socket heartbeat (a timer, and a ping task, per socket) but the
process's one sweep (``server.web.heartbeat``): :meth:`Client.beat`, :meth:`Client.ping`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from server.domain.errors import Forbidden
from server.domain.protocol import error_frame
from server.infra.counters import DELIVERY_LAG
from server.live.frames import Frame
from server.live.hub import SEND_TIMEOUT, CatchUp
from server.live.resume import Outcome
from server.requests.credentials import TOKEN_EXPIRED
from server.web.access import SOCKET_PROTOCOL, origin_allowed
from server.web.heartbeat import DROP_AFTER, PING_AFTER, Heartbeat
from server.web.typedefs import HEARTBEAT, HUB, SETTINGS
from server.web.upgraded import drop_http_state

log = logging.getLogger("longrun.hub")

#: frames a socket may have waiting before it is considered stuck (past CONFLATE_AT, live changes wait in the log)
MAX_PENDING = 16
#: live frames waiting before a browser is behind: the changes after it are read from the log
#: once it has taken those (without a log to read, a new progress frame replaces the last one)
CONFLATE_AT = 8
#: the largest frame a browser may send (over it the socket closes with 1009)
MAX_FRAME = 4096

#: one delivery in LAG_SAMPLE is timed into the delivery-lag histogram (its percentiles do
#: not need every one, and an observation costs as much as a tenth of the write)
LAG_SAMPLE = 8
_lag_tick = 0


def _sample_lag() -> bool:
    global _lag_tick
    _lag_tick += 1
    return _lag_tick % LAG_SAMPLE == 0


class Feed:
    """One browser's live connection: a bounded queue of frames and a writer that drains it
    (written as WebSocket frames by :class:`Client`, as events by ``sse.EventStream``)."""

    #: a browser connection: counted in the hub's ``stats.sockets`` (hub watcher protocol)
    is_socket = True

    __slots__ = (
        "__weakref__",
        "behind",
        "catch_up",
        "closed",
        "hash",
        "held",
        "last_seq",
        "last_sig",
        "pending",
        "send_timeout",
        "transport",
        "until",
        "writer",
    )

    def __init__(
        self,
        request_hash: str,
        *,
        send_timeout: float = SEND_TIMEOUT,
        transport: asyncio.Transport | None = None,
        catch_up: CatchUp | None = None,
        until: float | None = None,
    ):
        self.send_timeout = send_timeout
        #: when the credential that opened it runs out (a viewer token's expiry, wall clock):
        #: the heartbeat ends the connection then, as a new one would be refused
        self.until = until
        #: reads the changes after a seq from the log (one function for the whole process)
        self.catch_up = catch_up
        #: live changes were left to the log: once the queue is written, they are read from it
        self.behind = False
        # A browser that stopped reading cannot be closed politely (the close frame would
        # wait behind everything else): its connection is aborted instead.
        self.transport = transport
        self.hash = request_hash
        self.pending: list[Frame] = []  # at most MAX_PENDING; a list is 700 B smaller than a deque
        self.writer: asyncio.Task[None] | None = None
        #: the newest state queued (its seq and a digest of its JSON): older or repeated ones are dropped
        self.last_seq = -1
        self.last_sig = 0
        self.closed = False
        # Frames queue up but are not sent until the snapshot is in front of them.
        self.held = True

    def ran_out(self) -> bool:
        """Whether the credential that opened this connection has expired."""
        return self.until is not None and time.time() >= self.until

    def offer(self, frame: Frame) -> None:
        """Queue a frame without waiting (called from the listener)."""
        if self.closed:
            return
        logged = frame.state and frame.seq >= 0
        if logged and not self.held:
            if frame.seq < self.last_seq:
                return  # stale: the browser already has a newer state
            if frame.seq == self.last_seq and (frame.resync or hash(frame.payload) == self.last_sig):
                # the state it has (re-read after a reconnect, or delivered twice: by a resume's
                # replay and by pub/sub). An old bot's edit keeping the seq differs: it goes on.
                return
        if logged and self.catch_up is not None and (self.behind or self._live() >= CONFLATE_AT):
            # Behind: this change and every later one are in the log, and are read from it
            # once the browser has taken what is queued (_read_missed), in order.
            self.behind = True
            return
        if logged and not self.held:
            self.last_seq, self.last_sig = frame.seq, hash(frame.payload)
        if frame.state and len(self.pending) >= CONFLATE_AT and self._behind():
            self.pending[-1] = frame  # no log to read: the newer state supersedes the older progress
        else:
            self.pending.append(frame)
        if len(self.pending) > MAX_PENDING and self._live() > MAX_PENDING:
            self._shed()
        self._kick()

    def _live(self) -> int:
        return sum(1 for f in self.pending if not f.resync)

    def _behind(self) -> bool:
        """Behind by CONFLATE_AT live frames, the last of them progress (may be replaced).

        A resume's replay (``resync`` frames, at most the log's length) is never conflated
        or shed, and does not count: it is what the browser came back for."""
        last = self.pending[-1]
        if last.keep or last.resync:
            return False
        return self._live() >= CONFLATE_AT

    def start(self, frames: list[Frame], seq: int, edge: bytes = b"") -> None:
        """Send ``frames`` first (a snapshot, or the changes a resuming browser missed), then
        whatever arrived meanwhile that is newer than ``seq``, the record's seq they lead to;
        ``edge``: that state as published, if known (so a late pub/sub copy of it is dropped)."""
        for f in frames:
            f.resync = True  # not live: no delivery lag to measure
        self.last_seq, self.last_sig = seq, hash(edge) if edge else 0
        newer = [f for f in self.pending if f.seq < 0 or f.seq > seq]
        self.pending = list(frames)
        self.held = False
        for f in newer:
            self.offer(f)
        self._kick()

    def _kick(self) -> None:
        if self.writer is None and not self.held and not self.closed and self.pending:
            self.writer = asyncio.create_task(self._drain())

    def _shed(self) -> None:
        kept = [f for f in self.pending if f.keep or f.resync]
        latest = self.pending[-1]
        self.pending = kept if latest.keep or latest.resync else [*kept, latest]
        if self._live() > MAX_PENDING:
            # Only OTP prompts and outcomes left and still too many: this browser is not
            # reading. Drop it; it reconnects and gets a fresh snapshot.
            self.abort()

    async def _drain(self) -> None:
        try:
            while not self.closed:
                if not self.pending:
                    if not self.behind or not await self._read_missed():
                        break
                    continue
                frame = self.pending.pop(0)
                async with asyncio.timeout(self.send_timeout):
                    await self._write(frame)
                if frame.published and not frame.resync and _sample_lag():
                    DELIVERY_LAG.observe(max(0.0, time.time() - frame.published))
        except TimeoutError:
            log.info("dropping a socket that stopped reading (%s)", self.hash[:12])
            self.abort()
        except (ConnectionError, RuntimeError):
            self.closed = True
        finally:
            self.writer = None

    async def _read_missed(self) -> bool:
        """Queue what this browser missed while it was behind (the log's changes after the
        last state queued, or a snapshot); False, and the feed aborted, if that cannot be."""
        assert self.catch_up is not None
        self.behind = False
        # What arrives during the read waits behind it, as at a start (start() sorts it out).
        self.held = True
        try:
            async with asyncio.timeout(self.send_timeout):
                answer = await self.catch_up(self.hash, self.last_seq)
        except Exception as exc:  # Redis down or slow: the browser resumes by reconnecting
            log.info("dropping a socket whose missed changes could not be read (%s): %r", self.hash[:12], exc)
            self.abort()
            return False
        if answer.outcome is Outcome.MISSING or self.closed:
            self.abort()
            return False
        self.start(answer.frames, answer.seq, answer.edge)
        return True

    async def _write(self, frame: Frame) -> None:
        raise NotImplementedError

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


class Client(Feed):
    """One browser WebSocket."""

    __slots__ = ("quiet", "ws")

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request_hash: str,
        *,
        send_timeout: float = SEND_TIMEOUT,
        transport: asyncio.Transport | None = None,
        catch_up: CatchUp | None = None,
        until: float | None = None,
    ):
        super().__init__(request_hash, send_timeout=send_timeout, transport=transport, catch_up=catch_up, until=until)
        self.ws = ws
        #: heartbeat visits since the browser last sent anything (:func:`next_message` zeroes it)
        self.quiet = 0

    def beat(self) -> bool:
        """The heartbeat's visit: True when the browser has been quiet long enough to be
        pinged, or its credential has run out (:meth:`ping` then ends it); one that stayed
        quiet a whole period after its ping is dropped."""
        if self.closed:
            return False
        if self.ran_out():
            return True
        self.quiet += 1
        if self.quiet >= DROP_AFTER:
            log.info("dropping a socket that stopped answering pings (%s)", self.hash[:12])
            self.abort()  # its handler sees the connection lost, and ends
            return False
        return self.quiet == PING_AFTER

    async def ping(self) -> None:
        """A WebSocket ping, written at once (never waits: the sweep goes on to the next socket);
        for a socket whose credential ran out, the ``token_expired`` error and the close."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.ran_out():
            self.until = None
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(error_frame("token_expired", TOKEN_EXPIRED))
            await _close(self.ws, WSCloseCode.POLICY_VIOLATION, "token expired")
            return
        if getattr(transport.get_protocol(), "writing_paused", False):
            # Its browser is behind on reading (the write would wait for it): ask at the next
            # visit instead. One that stops reading altogether is dropped by its send_timeout.
            self.quiet -= 1
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.ping()

    async def _write(self, frame: Frame) -> None:
        await send_frame(self.ws, frame)


async def send_frame(ws: web.WebSocketResponse, frame: Frame) -> None:
    """``frame`` as a text message, its bytes encoded once for all the sockets it goes to."""
    await ws.send_frame(frame.data, WSMsgType.TEXT)


def refuse_cross_site(request: web.Request) -> None:
    """A socket opened from another site's page is refused (403 ``bad_origin``)."""
    if not origin_allowed(request):
        raise Forbidden("Sockets from other sites are refused.", code="bad_origin")


async def open_socket(request: web.Request, key: str, until: float | None = None) -> Client:
    """Upgrade ``request`` to a WebSocket and wrap it in a :class:`Client` for ``key``; the
    handler reads it with :func:`next_message` and ends with :func:`forget`."""
    # "longrun" is chosen when the page offers it beside its "bearer.<token>" (access.socket_token).
    # No aiohttp heartbeat (one timer per socket) and no autoping: next_message answers pings,
    # and the process's heartbeat pings the quiet ones.
    ws = web.WebSocketResponse(
        heartbeat=None, autoping=False, compress=False, max_msg_size=MAX_FRAME, protocols=(SOCKET_PROTOCOL,)
    )
    await ws.prepare(request)  # the 101: no security headers (server.web.edge.add_headers)
    drop_http_state(request, ws)
    hub = request.app[HUB]
    client = Client(
        ws, key, send_timeout=hub.send_timeout, transport=request.transport, catch_up=hub.catch_up, until=until
    )
    request.app[HEARTBEAT].add(client)
    return client


async def next_message(client: Client) -> WSMessage | None:
    """The browser's next text or binary frame; None once the socket is closing or closed.

    Anything heard (a pong too) is a sign of life for the heartbeat; pings are answered here."""
    ws = client.ws
    while True:
        msg = await ws.receive()
        client.quiet = 0
        kind = msg.type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            return msg
        if kind is WSMsgType.PING:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.pong(msg.data)
        elif kind is not WSMsgType.PONG:
            return None  # close, closing, closed or error


def forget(app: web.Application, client: Client) -> None:
    """The socket's handler is ending: out of the heartbeat (and the shutdown's list)."""
    app[HEARTBEAT].discard(client)


async def _close(ws: web.WebSocketResponse, code: int, message: str) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            await ws.close(code=code, message=message.encode())


async def close_all(app: web.Application, code: int = WSCloseCode.GOING_AWAY, message: str = "server shutdown") -> None:
    """Close every open socket (bounded per socket); by default: going away, server shutdown."""
    heartbeat = app.get(HEARTBEAT)
    if heartbeat is None:
        return
    sockets = [peer.ws for peer in list(heartbeat.peers) if isinstance(peer, Client)]
    await asyncio.gather(*(_close(ws, code, message) for ws in sockets), return_exceptions=True)


async def _heartbeat_ctx(app: web.Application) -> AsyncIterator[None]:
    """The heartbeat's task, for the life of the app."""
    stopping = asyncio.Event()
    task = asyncio.create_task(app[HEARTBEAT].run(stopping), name="heartbeat")
    yield
    stopping.set()
    await asyncio.wait({task}, timeout=2.0)
    task.cancel()


def setup(app: web.Application) -> None:
    """The process's heartbeat over its open sockets and streams (its task runs while the app
    does), and 1001 for every socket when the server shuts down."""
    app[HEARTBEAT] = Heartbeat(app[SETTINGS].socket_heartbeat)
    app.cleanup_ctx.append(_heartbeat_ctx)
    app.on_shutdown.append(close_all)
