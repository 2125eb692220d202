"""Periodic upkeep, enqueued by RQ's cron (``jobs/cron.py``) and run by the workers:
the sweeper (``server.requests.sweeper``) and the tracking list's pruning; and the wait alerts,
which the cron process checks itself."""

from __future__ import annotations

from jobs.context import JobContext, run_job, settings
from server.ops.operations import Operations
from server.requests import sweeper


def sweep() -> int:
    """Fail overdue requests and keep queued ones alive; returns how many were failed."""
    return run_job(_sweep)


async def _sweep(ctx: JobContext) -> int:
    return await sweeper.sweep(ctx.store, ctx.life, ctx.dispatcher)


def prune_tracking_list() -> int:
    """Drop hashes of expired records from ``local_requests_list``."""
    return run_job(_prune)


async def _prune(ctx: JobContext) -> int:
    return await ctx.store.prune_tracking_list()


def check_waits() -> list[str]:
    """Log queues whose oldest job waits past its threshold (the dashboard shows them too).

    The cron process calls this itself, not through a queue: it must run when no worker does."""
    return run_job(_check_waits)


async def _check_waits(ctx: JobContext) -> list[str]:
    ops = Operations(ctx.store, ctx.dispatcher, thresholds=settings().wait_thresholds)
    return await ops.check_waits()
