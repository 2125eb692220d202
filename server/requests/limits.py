"""Rate limits for hot paths: Redis GCRA, charged in batches.

Creating a request is charged against Redis on every call (exact, atomic,
shared by all processes). Status polling is far hotter: charging Redis on
every poll would cost a round trip per answer. :class:`BatchedLimiter` counts
polls per client in this process and charges the counts to the same Redis
GCRA every ``flush`` seconds; a client Redis says is over its limit is refused
locally until the time Redis gave. A client can therefore run over by at most
one flush interval's worth of calls per process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from redis.exceptions import RedisError

from server.record import RecordStore

log = logging.getLogger("longrun.limits")

#: clients remembered as blocked, at most (the oldest are forgotten first)
MAX_BLOCKED = 100_000


class BatchedLimiter:
    def __init__(self, store: RecordStore, name: str, burst: int, per: float, *, flush: float = 0.2):
        self.store = store
        self.name = name
        self.burst = burst
        self.per = per
        self.flush = flush
        self.pending: Counter[str] = Counter()
        self.blocked: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def hit(self, who: str) -> float:
        """0 if ``who`` may go on, else seconds until it may (no I/O)."""
        until = self.blocked.get(who)
        if until is not None:
            wait = until - time.monotonic()
            if wait > 0:
                return wait
            del self.blocked[who]
        self.pending[who] += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._charge_soon())
        return 0.0

    async def _charge_soon(self) -> None:
        await asyncio.sleep(self.flush)
        batch, self.pending = self.pending, Counter()
        try:
            waits = await asyncio.gather(
                *(
                    self.store.hit_rate_limit(self.name, who, burst=self.burst, per=self.per, cost=n)
                    for who, n in batch.items()
                )
            )
        except (RedisError, OSError) as exc:
            log.warning("could not charge %d poll counts: %s", sum(batch.values()), exc.__class__.__name__)
            return
        now = time.monotonic()
        for who, wait in zip(batch, waits, strict=True):
            if wait > 0:
                self.blocked[who] = now + wait
        while len(self.blocked) > MAX_BLOCKED:
            self.blocked.pop(next(iter(self.blocked)))

    async def stop(self) -> None:
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=2.0)
