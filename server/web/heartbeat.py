"""One heartbeat for every browser connection of the process, instead of one per connection.

Every open WebSocket and event stream (a :class:`Peer`) is in :attr:`Heartbeat.peers`, a plain
set. One task visits them all every ``period`` seconds (``SOCKET_HEARTBEAT``, 12.5 by default):

- a WebSocket counts the visits since it last heard from its browser (any frame: a pong, a
  ping, a message); quiet for :data:`PING_AFTER` visits it is pinged, still quiet at the
  next one (its pong did not come within a period) its connection is dropped, and its
  handler ends as for any lost connection (``socket_client.Client.beat``). With the default
  period an idle browser that answers is pinged every 25 s and a dead one is gone a period
  after its ping: what aiohttp's own ``heartbeat=25`` did, without a timer and a ping task
  per socket;
- an event stream gets a keepalive comment (proxies do not time it out), and one whose
  browser left is ended (``sse.EventStream.beat``).

The sweep yields to the event loop every :data:`BATCH` peers, so ten thousand sockets do not
hold up the frames being relayed meanwhile. The same set is what shutdown walks to close
every socket with 1001 and end every stream (``socket_client.close_all``, ``sse.end_all``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

log = logging.getLogger("longrun.hub")

#: visits without a word from the browser before a socket is pinged, and before it is dropped
PING_AFTER = 2
DROP_AFTER = 3
#: peers visited between two yields to the event loop
BATCH = 256


class Peer(Protocol):
    """An open browser connection the heartbeat visits."""

    def beat(self) -> bool:
        """One visit (must not block): True when the peer should be pinged now."""
        ...

    async def ping(self) -> None:
        """Ask the browser for a sign of life; returns without waiting for the answer."""
        ...


class Heartbeat:
    """The process's open browser connections and the one task that keeps them honest."""

    def __init__(self, period: float):
        self.period = period
        self.peers: set[Peer] = set()
        #: sweeps completed
        self.sweeps = 0

    def add(self, peer: Peer) -> None:
        self.peers.add(peer)

    def discard(self, peer: Peer) -> None:
        self.peers.discard(peer)

    async def sweep(self) -> None:
        """Visit every peer once."""
        for i, peer in enumerate(list(self.peers)):
            if peer.beat():
                await peer.ping()
            if i % BATCH == BATCH - 1:
                await asyncio.sleep(0)
        self.sweeps += 1

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.period):
                    await stopping.wait()
            if not stopping.is_set():
                try:
                    await self.sweep()
                except Exception:  # one odd peer must not stop the heartbeat of all the others
                    log.exception("heartbeat sweep failed")
