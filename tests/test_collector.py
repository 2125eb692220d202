"""The collector schedule: long-lived objects frozen, and cyclic garbage among them still freed."""

from __future__ import annotations

import gc
import weakref

from server.infra.collector import CollectorSchedule


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only a collection frees it


def test_freezes_what_lives_and_a_full_collection_frees_cycles_that_died_frozen() -> None:
    gc.unfreeze()
    try:
        schedule = CollectorSchedule(freeze_every=10, full_every=100)
        start = schedule.next_freeze - 10
        assert schedule.tick(start + 1) is None
        node = Node()
        dead = weakref.ref(node)
        assert schedule.tick(start + 10) == "freeze"
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert dead() is not None  # frozen: no collection walks it, the cycle stays
        assert schedule.tick(start + 15) is None  # nothing due before the next interval
        assert schedule.tick(start + 100) == "full"
        assert dead() is None  # the full collection unfroze and freed it
        assert gc.get_freeze_count() > 0 and schedule.last_full_pause > 0
        assert schedule.next_full == start + 200
    finally:
        gc.unfreeze()
