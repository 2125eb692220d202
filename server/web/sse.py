"""``GET /sse/requests/{hash}``: the live record as Server-Sent Events (DESIGN.md, "Streams
that resume without a gap"), for networks that block WebSockets but let HTTP stream.

Same access rule as the API (404 otherwise, before anything is streamed). Events are
``event: snapshot|update``, ``id: <seq>``, ``data: <public record>``; a browser that
reconnects sends ``Last-Event-ID`` (or, on a first connection, ``?since=``) and gets what it
missed from the request's log (``server.live.resume``), or a fresh snapshot when the log
does not reach back. The stream is a hub watcher like a socket (:class:`EventStream`: the
same bounded queue, written as events). The process's heartbeat (``server.web.heartbeat``)
visits it every ``SOCKET_HEARTBEAT`` seconds: a ``keepalive`` event keeps proxies from timing it
out and tells the page the stream is alive, and a stream whose browser left is ended (no timer
per stream). On shutdown every stream
ends, and the browser's ``EventSource`` reconnects (to another process) by itself.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from server.domain.protocol import sse_event
from server.live.frames import Frame, reply
from server.web.access import caller
from server.web.edge import add_headers
from server.web.socket_client import Feed
from server.web.sockets import since_of, start
from server.web.typedefs import HEARTBEAT, HUB, SERVICE

routes = web.RouteTableDef()

#: milliseconds a browser waits before reconnecting a dropped stream (the ``retry:`` field)
RETRY_MS = 2000
#: what a stream gets at every heartbeat visit: an event (a comment would keep proxies from
#: timing the stream out too, but a page's EventSource never sees one, and the page must tell
#: a quiet stream from a dead one); one frame, its bytes encoded once
_KEEPALIVE = reply("event: keepalive\ndata: {}\n\n")


class EventStream(Feed):
    """One browser's event stream: the socket's queue, written as Server-Sent Events."""

    __slots__ = ("done", "response")

    def __init__(self, response: web.StreamResponse, request_hash: str, **kwargs: object):
        super().__init__(request_hash, **kwargs)  # type: ignore[arg-type]
        self.response = response
        #: resolved when the stream ends (a bare future: an Event carries a deque of its own)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def _write(self, frame: Frame) -> None:
        if frame.state and frame.payload:
            await self.response.write(sse_event("snapshot" if frame.snapshot else "update", frame.seq, frame.payload))
        else:
            await self.response.write(frame.data)

    def end(self) -> None:
        self.closed = True
        if not self.done.done():
            self.done.set_result(None)

    def abort(self) -> None:
        super().abort()
        self.end()

    def beat(self) -> bool:
        """The heartbeat's visit: a keepalive event, or the end of a stream whose browser left
        or whose viewer token ran out (its reconnect is then refused: 401 token_expired)."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing() or self.ran_out():
            self.end()
        else:
            self.offer(_KEEPALIVE)
        return False

    async def ping(self) -> None:
        """Never asked (:meth:`beat` answers False): the keepalive event is the stream's ping."""


@routes.get("/sse/requests/{hash}")
async def request_stream(request: web.Request) -> web.StreamResponse:
    h = request.match_info["hash"]
    since = since_of(request, request.headers.get("Last-Event-ID") or request.query.get("since"))
    who = await caller(request)
    await request.app[SERVICE].visible(who, h)
    hub = request.app[HUB]
    heartbeat = request.app[HEARTBEAT]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # a proxy (nginx) must not hold events back
        }
    )
    stream = EventStream(
        response,
        h,
        send_timeout=hub.send_timeout,
        transport=request.transport,
        catch_up=hub.catch_up,
        until=who.expires_at,
    )
    try:
        # Subscribed before the record is read, so nothing published in between is lost; the
        # stream is held (queued, unsent) until the resume's frames are in front.
        await hub.watch(stream)
        add_headers(request, response)  # prepared here, so sent before the edge sees it
        await response.prepare(request)
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
        if not await start(request, stream, since, "sse"):
            return response  # expired since the access check: the reconnect gets the 404
        heartbeat.add(stream)
        await stream.done
    finally:
        heartbeat.discard(stream)
        await hub.unwatch(stream)
        stream.end()
    return response


async def end_all(app: web.Application) -> None:
    """Shutdown: end every stream (the browser reconnects, to another process, and resumes)."""
    heartbeat = app.get(HEARTBEAT)
    for peer in list(heartbeat.peers if heartbeat is not None else ()):
        if isinstance(peer, EventStream):
            peer.end()


def setup(app: web.Application) -> None:
    app.on_shutdown.append(end_all)
    app.add_routes(routes)
