"""Retry waits: exponential backoff, capped, optionally jittered.

Every loop that waits for a store to come back (the hub's pub/sub, the archiver, migrations,
the cron process) takes its waits from one :class:`Backoff` instead of doubling by hand::

    backoff = Backoff(0.5, 5.0)
    while True:
        try: ...
        except DOWN: await asyncio.sleep(next(backoff))

A loop that got through starts a fresh ``Backoff`` (the shortest wait again).
"""

from __future__ import annotations

import random
from collections.abc import Iterator


class Backoff(Iterator[float]):
    """Waits of ``first`` seconds, doubling after each one up to ``cap``; with ``jitter`` each
    wait is scaled by a random factor in [0.5, 1.5) so that many clients do not retry in step."""

    __slots__ = ("cap", "delay", "jitter")

    def __init__(self, first: float, cap: float, *, jitter: bool = False) -> None:
        self.cap = cap
        self.jitter = jitter
        #: the next wait before jitter (what a log line announces)
        self.delay = first

    def __next__(self) -> float:
        wait = self.delay * (0.5 + random.random()) if self.jitter else self.delay
        self.delay = min(self.delay * 2, self.cap)
        return wait
