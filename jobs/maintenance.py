"""Periodic upkeep, enqueued by RQ's cron (``jobs/cron.py``) and run by the workers:
the sweeper (``server.sweeper``) and the tracking list's pruning; and the wait alerts,
which the cron process checks itself."""

from __future__ import annotations

import asyncio

from redis import Redis as SyncRedis

from jobs.context import JobContext, settings
from jobs.tasks import job_connection
from server import sweeper
from server.ops import Operations


def sweep() -> int:
    """Fail overdue requests and keep queued ones alive; returns how many were failed."""
    return asyncio.run(_sweep())


async def _sweep() -> int:
    async with JobContext.open(settings(), job_connection()) as ctx:
        return await sweeper.sweep(ctx.store, ctx.life, ctx.dispatcher)


def prune_tracking_list() -> int:
    """Drop hashes of expired records from ``local_requests_list``."""
    return asyncio.run(_prune())


async def _prune() -> int:
    async with JobContext.open(settings(), job_connection()) as ctx:
        return await ctx.store.prune_tracking_list()


def check_waits(connection: SyncRedis | None = None) -> list[str]:
    """Log queues whose oldest job waits past its threshold (the dashboard shows them too).

    The cron process calls this itself, on its own ``connection``: it must run when no
    worker does."""
    return asyncio.run(_check_waits(connection or job_connection()))


async def _check_waits(connection: SyncRedis | None) -> list[str]:
    config = settings()
    async with JobContext.open(config, connection) as ctx:
        ops = Operations(ctx.store, ctx.dispatcher, thresholds=config.wait_thresholds)
        return await ops.check_waits()
