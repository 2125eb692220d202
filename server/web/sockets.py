"""``GET /ws/requests/{hash}``: the browser's live connection (DESIGN.md, "WebSocket").

Same access rule as the API (404 otherwise); a cross-site ``Origin`` is
refused; ``?since=N`` resumes after seq N (``server.live.resume``: the missed changes,
or a snapshot with ``"recovered": false``); frames are small (over
``socket_client.MAX_FRAME`` the socket closes with 1009) and rate-limited per socket;
a refused frame gets an ``error`` frame, not a dropped socket. Every send goes through
the socket's :class:`Client` queue, so replies and updates never interleave.
"""

from __future__ import annotations

import time

from aiohttp import WSCloseCode, WSMsgType, web
from redis.exceptions import RedisError

from server.domain.errors import ApiError, BadRequest, ProtocolError
from server.domain.protocol import (
    PONG_FRAME,
    CancelFrame,
    InputFrame,
    OtpFrame,
    PingFrame,
    ResendOtpFrame,
    error_frame,
    parse_client_frame,
    parse_since,
)
from server.infra.counters import RESUMES
from server.live.frames import reply
from server.live.resume import Outcome, resume
from server.web.access import caller
from server.web.socket_client import CONFLATE_AT, Client, Feed, forget, next_message, open_socket, refuse_cross_site
from server.web.typedefs import HUB, SERVICE, STORE

routes = web.RouteTableDef()

#: per socket: a burst of this many frames, refilled at RATE per second
BURST = 20
RATE = 10.0
#: frames refused for rate before the socket is closed as abusive
MAX_REFUSED = 100


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@routes.get("/ws/requests/{hash}")
async def request_socket(request: web.Request) -> web.StreamResponse:
    h = request.match_info["hash"]
    refuse_cross_site(request)
    since = since_of(request, request.query.get("since"))
    who = await caller(request)
    await request.app[SERVICE].visible(who, h)
    client = await open_socket(request, h, until=who.expires_at)
    ws = client.ws
    hub = request.app[HUB]
    try:
        await hub.watch(client)
        if await start(request, client, since, "ws"):
            await _read(request, ws, client)
        else:
            await ws.send_str(error_frame("not_found", "This request has expired."))
            await ws.close()
    finally:
        forget(request.app, client)
        await hub.unwatch(client)
    return ws


def since_of(request: web.Request, value: str | None) -> int | None:
    """The seq a resuming client has (400 ``bad_since`` when it is not one)."""
    try:
        return parse_since(value)
    except ProtocolError as exc:
        raise BadRequest(str(exc), code="bad_since") from None


async def start(request: web.Request, client: Feed, since: int | None, via: str) -> bool:
    """Queue the snapshot (or, resuming, the missed changes) ahead of anything that arrived
    meanwhile; False if the record is gone.

    Its own function so the record and the frames are not held by the frame of a
    socket that stays open for minutes (a quarter of an idle socket's memory otherwise).
    """
    answer = await resume(request.app[STORE], client.hash, since)
    if since is not None:
        RESUMES.labels(via, answer.outcome.value).inc()
    if answer.outcome is Outcome.MISSING:
        return False
    client.start(answer.frames, answer.seq, answer.edge)
    request.app[HUB].started(client.hash, answer.seq)
    return True


async def _read(request: web.Request, ws: web.WebSocketResponse, client: Client) -> None:
    # The bucket is made when the browser first speaks: most sockets never send a frame.
    bucket: TokenBucket | None = None
    refused = 0
    while (msg := await next_message(client)) is not None:
        if msg.type is WSMsgType.TEXT:
            if bucket is None:
                bucket = TokenBucket(RATE, BURST)
            if not bucket.take():
                refused += 1
                if refused == 1 or refused % 50 == 0:
                    client.offer(reply(error_frame("rate_limited", "Too many frames; slow down.")))
                if refused >= MAX_REFUSED:
                    client.offer(reply(error_frame("rate_limited", "Too many frames; closing.")))
                    await client.flush()
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many frames")
                    return
                continue
            await _handle(request, client, msg.data)
            if len(client.pending) >= CONFLATE_AT:
                # Back-pressure: a browser's own frames are read no faster than their replies
                # are written. Frames already buffered are read without yielding, so a burst
                # would otherwise queue its replies past MAX_PENDING and abort the socket.
                await client.flush()
        else:  # binary
            client.offer(reply(error_frame("bad_frame", "Frames must be JSON text.")))


async def _handle(request: web.Request, client: Client, text: str) -> None:
    try:
        frame = parse_client_frame(text)
        if isinstance(frame, PingFrame):
            client.offer(reply(PONG_FRAME))
        elif isinstance(frame, OtpFrame):
            await request.app[SERVICE].submit_otp(await caller(request), client.hash, frame.otp)
        elif isinstance(frame, InputFrame):
            await request.app[SERVICE].submit_input(await caller(request), client.hash, frame.id, frame.value)
        elif isinstance(frame, ResendOtpFrame):
            await request.app[SERVICE].resend_otp(await caller(request), client.hash)
        elif isinstance(frame, CancelFrame):
            await request.app[SERVICE].cancel(await caller(request), client.hash)
    except ProtocolError as exc:
        client.offer(reply(error_frame("bad_frame", str(exc))))
    except ApiError as exc:
        client.offer(reply(error_frame(exc.code, exc.message)))
    except (RedisError, OSError):
        client.offer(reply(error_frame("unavailable", "The service is briefly unavailable; try again.")))
