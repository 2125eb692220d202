"""A call deferred to a moment later on the running loop, scheduled at most once.

For per-request work gathered and handed on in batches (the access log's lines, the HTTP
metrics' tallies): a request adds to the batch and asks for the flush; only the first ask
since the last flush schedules it. A loop that has since gone (tests make one per test) gets
a new timer on the loop that asks now.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class DeferredCall:
    __slots__ = ("_on", "callback", "delay")

    def __init__(self, callback: Callable[[], object], delay: float):
        self.callback = callback
        self.delay = delay
        self._on: asyncio.AbstractEventLoop | None = None  # the loop the call is scheduled on

    def schedule(self) -> None:
        """Call ``callback`` ``delay`` seconds from now, unless that is already arranged."""
        loop = asyncio.get_running_loop()
        if self._on is not loop:
            self._on = loop
            loop.call_later(self.delay, self._run)

    def _run(self) -> None:
        self._on = None
        self.callback()

    def done(self) -> None:
        """The work was done some other way (e.g. flushed when full, or before a scrape): the
        next ``schedule`` arranges a new call (one already on the loop runs anyway, harmlessly)."""
        self._on = None
