"""The worker's liveness tweaks over RQ: a dead scheduler's locks are freed in seconds."""

from __future__ import annotations

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from rq.scheduler import RQScheduler

from jobs.worker import SCHEDULER_LOCK_TTL, SCHEDULER_STALE_AFTER, reclaim_stale_scheduler_locks
from server.queue.dispatch import queue_names


async def test_only_locks_left_unrefreshed_are_freed(redis: Redis, redis_url: str, prefix: str) -> None:
    high, default, low = queue_names(prefix)
    key = RQScheduler.get_locking_key
    # high: its scheduler refreshed it a second ago; default: silent for longer than the
    # stale window (a dead scheduler's lock, still a long way from expiring by itself)
    await redis.set(key(high), "alive", ex=SCHEDULER_LOCK_TTL - 1)
    await redis.set(key(default), "dead", ex=SCHEDULER_LOCK_TTL - SCHEDULER_STALE_AFTER - 2)
    sync = SyncRedis.from_url(redis_url)
    try:
        freed = reclaim_stale_scheduler_locks(sync, [high, default, low])
    finally:
        sync.close()
    assert freed == [default]
    assert await redis.get(key(high)) == b"alive"
    assert await redis.get(key(default)) is None
    assert await redis.get(key(low)) is None  # nothing there, nothing made up
