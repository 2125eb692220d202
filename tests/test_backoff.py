"""The retry waits every reconnect loop takes (server.infra.backoff)."""

from __future__ import annotations

from itertools import islice

from server.infra.backoff import Backoff


def test_waits_double_up_to_the_cap() -> None:
    assert list(islice(Backoff(0.5, 5.0), 6)) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_jittered_waits_stay_within_half_and_one_and_a_half_times() -> None:
    backoff = Backoff(1.0, 4.0, jitter=True)
    for expected in (1.0, 2.0, 4.0, 4.0):
        assert backoff.delay == expected
        assert 0.5 * expected <= next(backoff) < 1.5 * expected
