"""The sweeper: nothing stays stuck, nothing queued expires.

Every request in flight sits in its shard's in-flight index under the time it is
due to be looked at (the update scripts keep it there):

- running and silent past its service's heartbeat window, past its deadline, or
  waiting for a code past the code's life → failed with a message for people,
  and the bot is told to stop (the script checks again that it really is due, so
  a request that reported meanwhile is never failed by mistake);
- still queued → its record is kept alive however long the queue, until
  ``PENDING_MAX``, when it is given up;
- finished, but by an old-style bot that wrote its terminal status with a
  plain SETEX (DESIGN.md allows it), so no script archived it → adopted:
  handed to the archive and taken out of the index and the counts.

A Redis lock makes one sweep run at a time across all machines. RQ's cron enqueues
it for the workers (``jobs.maintenance``); the web tier runs it too, less often,
so a queue with no worker alive does not let requests expire.
"""

from __future__ import annotations

import asyncio
import logging
import time

from server.domain.messages import text
from server.domain.status import Status
from server.infra.logs import short
from server.queue.dispatch import Dispatcher
from server.record import SHARDS, RecordStore, is_terminal, private_view
from server.requests.lifecycle import Lifecycle

log = logging.getLogger("longrun.sweeper")

LOCK_TTL = 60.0
#: seconds a request may wait in the queue before it is given up
PENDING_MAX = 6 * 3600

# Why the sweeper failed a request: keyed messages, so pages say them in the reader's language.
SILENT = text("silent")
OVERDUE = text("overdue")
OTP_EXPIRED = text("otp_expired")
INPUT_EXPIRED = text("input_expired")
NEVER_STARTED = text("never_started")


async def sweep(store: RecordStore, life: Lifecycle, dispatcher: Dispatcher) -> int:
    """One pass over every shard; returns how many requests were failed (0 if another runs)."""
    token = await store.acquire_lock("sweep", LOCK_TTL)
    if token is None:
        return 0
    failed = 0
    try:
        for shard in range(SHARDS):
            for h in await store.overdue(shard, time.time()):
                failed += await _sweep_one(store, life, dispatcher, h)
    finally:
        await store.release_lock("sweep", token)
    return failed


async def _sweep_one(store: RecordStore, life: Lifecycle, dispatcher: Dispatcher, h: str) -> int:
    rec = await store.get(h)
    if rec is None:
        await store.forget_inflight(h)
        return 0
    if is_terminal(rec.get("status")):
        # Finished by an old-style bot (SETEX of a terminal status): no script archived it.
        if await life.adopt(h) == "adopted":
            log.info("adopted %s, finished by the bot itself", short(h))
        return 0
    p = private_view(rec)
    if rec.get("status") == Status.PENDING.value:
        created = p.get("created")
        if isinstance(created, int | float) and time.time() - created > PENDING_MAX:
            # only if still waiting: a worker may have started it since it was read
            given_up = await life.fail(h, NEVER_STARTED, expect=[Status.PENDING.value])
            return 1 if given_up.applied else 0
        await life.keepalive(h)
        return 0
    deadline = p.get("deadline")
    if rec.get("status") == Status.WAITING_OTP.value:
        reason = OTP_EXPIRED
    elif rec.get("status") == Status.WAITING_INPUT.value:
        reason = INPUT_EXPIRED
    elif isinstance(deadline, int | float) and deadline <= time.time():
        reason = OVERDUE
    else:
        reason = SILENT
    result = await life.fail(h, reason, sweep=True)
    if not result.applied:
        return 0
    log.warning("swept %s: %s", short(h), reason)
    await asyncio.to_thread(dispatcher.cancel, h, tell_bot=True)
    return 1
