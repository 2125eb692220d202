"""Periodic upkeep, enqueued by RQ's cron (``jobs/cron.py``) and run by the workers.

``sweep`` fails every running request that went silent for longer than its
service's heartbeat window, overran its deadline, or waited for a code past
the code's life — and tells the bot to stop. It holds a Redis lock while it
runs, so however many cron schedulers enqueue it, one sweep runs at a time.
The update script re-checks that a request is overdue, so a request that
reported in the meantime is never failed by mistake.
"""

from __future__ import annotations

import asyncio
import logging
import time

from jobs.context import JobContext, settings
from jobs.tasks import job_connection, short
from server.ops import Operations
from server.record import SHARDS, is_terminal, private_view
from server.status import Status

log = logging.getLogger("longrun.sweeper")

SWEEP_LOCK_TTL = 60.0

SILENT = "The service stopped responding. Please try again."
OVERDUE = "The service did not finish in time. Please try again later."
OTP_EXPIRED = "The code was not entered in time. Please start a new request."


def sweep() -> int:
    """Fail overdue requests; returns how many were failed."""
    return asyncio.run(_sweep())


async def _sweep() -> int:
    async with JobContext.open(settings(), job_connection()) as ctx:
        token = await ctx.store.acquire_lock("sweep", SWEEP_LOCK_TTL)
        if token is None:
            return 0  # another sweep is running
        failed = 0
        try:
            for shard in range(SHARDS):
                for h in await ctx.store.overdue(shard, time.time()):
                    failed += await _sweep_one(ctx, h)
        finally:
            await ctx.store.release_lock("sweep", token)
        return failed


async def _sweep_one(ctx: JobContext, h: str) -> int:
    rec = await ctx.store.get(h)
    if rec is None or is_terminal(rec.get("status")):
        await ctx.store.forget_inflight(h)
        return 0
    deadline = private_view(rec).get("deadline")
    if rec.get("status") == Status.WAITING_OTP.value:
        reason = OTP_EXPIRED
    elif isinstance(deadline, int | float) and deadline <= time.time():
        reason = OVERDUE
    else:
        reason = SILENT
    result = await ctx.life.fail(h, reason, sweep=True)
    if not result.applied:
        return 0
    log.warning("swept %s: %s", short(h), reason)
    await asyncio.to_thread(ctx.dispatcher.cancel, h, tell_bot=True)
    return 1


def prune_tracking_list() -> int:
    """Drop hashes of expired records from ``local_requests_list``."""
    return asyncio.run(_prune())


async def _prune() -> int:
    async with JobContext.open(settings(), job_connection()) as ctx:
        return await ctx.store.prune_tracking_list()


def check_waits() -> list[str]:
    """Log queues whose oldest job waits past its threshold (the dashboard shows them too)."""
    return asyncio.run(_check_waits())


async def _check_waits() -> list[str]:
    config = settings()
    async with JobContext.open(config, job_connection()) as ctx:
        ops = Operations(ctx.store, ctx.dispatcher.connection, thresholds=config.wait_thresholds)
        return await ops.check_waits()
