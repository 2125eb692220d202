"""Short garbage-collector pauses in a long-running server: long-lived objects frozen on a schedule.

CPython's full (generation 2) collection walks every tracked object that survived the younger
ones. In a web process holding thousands of sockets, that is every socket's objects (response,
protocol, queue, tasks): a walk of tens of milliseconds, taken in the middle of a fan-out and
seen by every browser as a late update, the p99 of socket delivery. ``gc.freeze()`` moves
everything alive into a permanent generation no collection walks; objects frozen and later
dropped are still freed by reference counting (most are), only cyclic garbage among them waits.

The young generation's threshold is raised too (``GEN0_THRESHOLD`` allocations instead of
CPython's 700): a fan-out of one update to thousands of sockets allocates thousands of
objects, almost all freed by reference counting at once, and collecting every 700 of them
was tens of collections per burst, each walking what the burst had not yet freed.
:class:`PauseLog` measures the pauses (gc callbacks) for ``/metrics`` and the benchmarks.

So, every ``freeze_every`` seconds: collect the young generations (cheap: new objects only, so
short-lived cycles are not frozen) and freeze what is left; every ``full_every`` seconds: unfreeze,
one full collection (the one long pause, rare and predictable, frees the cycles that died
frozen), and freeze again.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger("longrun.gc")

#: seconds between freezes of what survived the young collections: the young collection before
#: each walks what was made since the last one, so the shorter the interval, the shorter that
#: pause (every 10 s, with sockets opening, it walked ~100k objects: up to 100 ms)
FREEZE_EVERY = 1.0
#: seconds between full collections (the frozen objects included)
FULL_EVERY = 600.0
#: allocations (net of frees) of tracked objects between young collections (CPython: 700)
GEN0_THRESHOLD = 20_000


def raise_young_threshold(gen0: int = GEN0_THRESHOLD) -> None:
    """Collect the young generation every ``gen0`` allocations (the older thresholds kept)."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)


class PauseLog:
    """The collector's pauses, as its callbacks see them: how many, how long in all, the longest.

    The callback only takes the time and appends it (it runs inside whatever allocation set the
    collection off, so it must not take locks, Prometheus' included); :meth:`take` hands over
    what was measured since the last call, and :meth:`publish` puts it into the histogram.
    """

    def __init__(self) -> None:
        self._started = 0.0
        self._generation = 0
        #: (generation, seconds) of each collection since the last take()
        self.pauses: list[tuple[int, float]] = []
        #: the longest pause since install(), seconds
        self.longest = 0.0
        self.count = 0
        self.total = 0.0

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._generation = info.get("generation", 0)
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.pauses.append((self._generation, pause))
        self.count += 1
        self.total += pause
        if pause > self.longest:
            self.longest = pause

    def take(self) -> list[tuple[int, float]]:
        """The pauses measured since the last call, oldest first."""
        taken, self.pauses = self.pauses, []
        return taken

    def publish(self) -> None:
        """Observe the pauses since the last call into ``longrun_gc_pause_seconds``."""
        from server.infra.counters import GC_PAUSE

        for generation, pause in self.take():
            GC_PAUSE.labels(str(generation)).observe(pause)


class CollectorSchedule:
    """When to freeze and when to collect everything; :meth:`tick` does what is due."""

    def __init__(
        self, freeze_every: float = FREEZE_EVERY, full_every: float = FULL_EVERY, pauses: PauseLog | None = None
    ):
        #: where the collector's pauses are measured (published every tick of :meth:`run`)
        self.pauses = pauses
        self.freeze_every = freeze_every
        self.full_every = full_every
        now = time.monotonic()
        self.next_freeze = now + freeze_every
        self.next_full = now + full_every
        #: seconds the last full collection took (the pause it caused)
        self.last_full_pause = 0.0

    def tick(self, now: float | None = None) -> str | None:
        """Freeze or collect if due; returns which (``"full"``, ``"freeze"``) or None."""
        now = time.monotonic() if now is None else now
        if now >= self.next_full:
            started = time.perf_counter()
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self.last_full_pause = time.perf_counter() - started
            self.next_full = now + self.full_every
            self.next_freeze = now + self.freeze_every
            log.info(
                "full garbage collection: %.1f ms, %d objects frozen",
                self.last_full_pause * 1000,
                gc.get_freeze_count(),
            )
            return "full"
        if now >= self.next_freeze:
            gc.collect(1)
            gc.freeze()
            self.next_freeze = now + self.freeze_every
            return "freeze"
        return None

    async def run(self, stop: asyncio.Event) -> None:
        """Tick about every second until ``stop`` is set."""
        while not stop.is_set():
            try:
                async with asyncio.timeout(1.0):
                    await stop.wait()
            except TimeoutError:
                self.tick()
            if self.pauses is not None:
                self.pauses.publish()
