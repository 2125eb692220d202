"""Short garbage-collector pauses in a long-running server: long-lived objects frozen on a schedule.

CPython's full (generation 2) collection walks every tracked object that survived the younger
ones. In a web process holding thousands of sockets, that is every socket's objects (response,
protocol, queue, tasks): a walk of tens of milliseconds, taken in the middle of a fan-out and
seen by every browser as a late update, the p99 of socket delivery. ``gc.freeze()`` moves
everything alive into a permanent generation no collection walks; objects frozen and later
dropped are still freed by reference counting (most are), only cyclic garbage among them waits.

So, every ``freeze_every`` seconds: collect the young generations (cheap: new objects only, so
short-lived cycles are not frozen) and freeze what is left; every ``full_every`` seconds: unfreeze,
one full collection (the one long pause, rare and predictable, frees the cycles that died
frozen), and freeze again.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger("longrun.gc")

#: seconds between freezes of what survived the young collections
FREEZE_EVERY = 10.0
#: seconds between full collections (the frozen objects included)
FULL_EVERY = 600.0


class CollectorSchedule:
    """When to freeze and when to collect everything; :meth:`tick` does what is due."""

    def __init__(self, freeze_every: float = FREEZE_EVERY, full_every: float = FULL_EVERY):
        self.freeze_every = freeze_every
        self.full_every = full_every
        now = time.monotonic()
        self.next_freeze = now + freeze_every
        self.next_full = now + full_every
        #: seconds the last full collection took (the pause it caused)
        self.last_full_pause = 0.0

    def tick(self, now: float | None = None) -> str | None:
        """Freeze or collect if due; returns which (``"full"``, ``"freeze"``) or None."""
        now = time.monotonic() if now is None else now
        if now >= self.next_full:
            started = time.perf_counter()
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self.last_full_pause = time.perf_counter() - started
            self.next_full = now + self.full_every
            self.next_freeze = now + self.freeze_every
            log.info(
                "full garbage collection: %.1f ms, %d objects frozen",
                self.last_full_pause * 1000,
                gc.get_freeze_count(),
            )
            return "full"
        if now >= self.next_freeze:
            gc.collect(1)
            gc.freeze()
            self.next_freeze = now + self.freeze_every
            return "freeze"
        return None

    async def run(self, stop: asyncio.Event) -> None:
        """Tick about every second until ``stop`` is set."""
        while not stop.is_set():
            try:
                async with asyncio.timeout(1.0):
                    await stop.wait()
            except TimeoutError:
                self.tick()
