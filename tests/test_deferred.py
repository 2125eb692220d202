"""server/infra/deferred.py: the one timer of a batch (the access log's lines, the HTTP metrics)."""

from __future__ import annotations

import asyncio

from server.infra.deferred import DeferredCall


async def test_a_deferred_flush_runs_once_per_batch_and_again_after_a_flush() -> None:
    """The access log's and the HTTP metrics' timer: many asks, one call; a flush made some
    other way (a full buffer, a scrape) lets the next ask schedule again."""
    calls: list[float] = []
    ran = asyncio.Event()

    def flush() -> None:
        calls.append(asyncio.get_running_loop().time())
        ran.set()

    deferred = DeferredCall(flush, 0.01)
    for _ in range(100):
        deferred.schedule()
    await asyncio.wait_for(ran.wait(), 5)
    assert len(calls) == 1
    ran.clear()
    deferred.schedule()  # a new batch after the call: a new call
    await asyncio.wait_for(ran.wait(), 5)
    assert len(calls) == 2
    deferred.schedule()
    deferred.done()  # flushed when full: the next ask schedules its own call
    deferred.schedule()
    while len(calls) < 4:  # the call already on the loop, and the new one
        ran.clear()
        await asyncio.wait_for(ran.wait(), 5)
    assert len(calls) == 4
