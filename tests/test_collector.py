"""The collector schedule: long-lived objects frozen, and cyclic garbage among them still freed."""

from __future__ import annotations

import gc
import weakref

from server.infra.collector import CollectorSchedule, PauseLog, raise_young_threshold


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


def test_pause_log_measures_each_collection_until_uninstalled() -> None:
    pauses = PauseLog()
    pauses.install()
    try:
        gc.collect(1)
        gc.collect(0)
    finally:
        pauses.uninstall()
    taken = pauses.take()
    assert [generation for generation, _ in taken][-2:] == [1, 0]
    assert all(seconds >= 0 for _, seconds in taken)
    assert pauses.count == len(taken) and pauses.longest == max(seconds for _, seconds in taken)
    assert pauses.take() == []
    gc.collect()
    assert pauses.take() == []  # uninstalled: nothing more measured


def test_raising_the_young_threshold_keeps_the_older_ones() -> None:
    before = gc.get_threshold()
    try:
        raise_young_threshold(12_345)
        assert gc.get_threshold() == (12_345, *before[1:])
    finally:
        gc.set_threshold(*before)
