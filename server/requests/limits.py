"""Every rate limit the server applies to callers: one owner (:class:`RateLimits`).

All are Redis GCRA limits, shared by all processes: creating a request (per
user and per address; for an application, per API key and per app user),
operator logins (per address), status polls (per address; an application's
reads and lists per API key, since one backend speaks for many people). The
number of codes tried and sent for one request is counted by the
record's own scripts (``RecordStore.submit_otp``/``request_resend``) under the
limits :class:`server.requests.service.RequestService` passes them.

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

from server.domain.errors import RateLimited
from server.record import RecordStore
from server.settings import Settings

log = logging.getLogger("longrun.limits")

#: clients remembered as blocked, at most (the oldest are forgotten first)
MAX_BLOCKED = 100_000
#: operator password tries per address: (burst, per seconds)
LOGIN_RATE = (5, 60.0)

Rate = tuple[int, float]


def refuse(wait: float) -> None:
    """Raise the 429 for a limit that says wait ``wait`` seconds (nothing when 0)."""
    if wait > 0:
        raise RateLimited("Too many requests; slow down.", retry_after=wait)


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


class RateLimits:
    """The limits on callers, by name; each raises :class:`RateLimited` when over."""

    def __init__(
        self,
        store: RecordStore,
        *,
        create_per_user: Rate,
        create_per_address: Rate,
        poll_per_address: Rate,
        login_per_address: Rate = LOGIN_RATE,
        app_create_per_key: Rate = (60, 60.0),
        app_read_per_key: Rate = (600, 60.0),
    ):
        self.store = store
        self.create_per_user = create_per_user
        self.create_per_address = create_per_address
        self.login_per_address = login_per_address
        burst, per = poll_per_address
        self.polls = BatchedLimiter(store, "poll-addr", burst, per)
        self.app_create_per_key = app_create_per_key
        self.app_reads = BatchedLimiter(store, "read-key", *app_read_per_key)

    @classmethod
    def for_settings(cls, store: RecordStore, settings: Settings) -> RateLimits:
        return cls(
            store,
            create_per_user=settings.create_rate,
            create_per_address=settings.create_rate_per_address,
            poll_per_address=settings.poll_rate_per_address,
            app_create_per_key=settings.app_create_rate,
            app_read_per_key=settings.app_read_rate,
        )

    async def charge(self, name: str, who: str, limit: Rate) -> None:
        burst, per = limit
        refuse(await self.store.hit_rate_limit(name, who, burst=burst, per=per))

    async def create(self, user_id: str, address: str) -> None:
        """A new request: per user, then per address."""
        await self.charge("create-user", user_id, self.create_per_user)
        await self.charge("create-addr", address, self.create_per_address)

    async def create_for_app(self, key_id: str, user_id: str) -> None:
        """A new request from an application's backend: per API key, then per app user."""
        await self.charge("create-key", key_id, self.app_create_per_key)
        await self.charge("create-user", user_id, self.create_per_user)

    def app_read(self, key_id: str) -> None:
        """A read or list with an API key (batched like polls)."""
        refuse(self.app_reads.hit(key_id))

    async def operator_login(self, address: str) -> None:
        await self.charge("operator-login", address, self.login_per_address)

    def poll(self, address: str) -> None:
        """A status poll (batched: no I/O here)."""
        refuse(self.polls.hit(address))

    async def stop(self) -> None:
        await self.polls.stop()
        await self.app_reads.stop()
