"""Learned estimates: how long a service really takes, from its recent completions.

A service's ``estimated_duration`` (what the countdown on the live page starts
from) is the median of the last :data:`WINDOW` completed durations in the
archive — seconds of work, not counting time spent waiting for the person —
once there are at least :data:`MIN_SAMPLES`; until then it is the catalog's
value. The median, not the mean: one request stuck behind a slow portal
should not move everyone's countdown.

Per step, the median seconds spent in each step is learned the same way
(wall clock, so an OTP step includes the wait for the person); it is cached
next to the total for pages and the dashboard.

The archiver computes estimates after each batch and caches them in Redis
(``Keys.estimate``); the web only ever reads that cache, so creating a
request never queries PostgreSQL.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from psycopg import AsyncConnection
from redis.exceptions import RedisError

from server.domain.catalog import Service
from server.infra.connections import AsyncClient
from server.record import ESTIMATE_TTL, Keys

#: completed runs the median is taken over
WINDOW = 20
#: fewer completed runs than this: the catalog's value stands
MIN_SAMPLES = 5
#: a learned estimate is never below this many seconds (a countdown from 0 helps nobody)
FLOOR = 1.0

_RECENT = """
SELECT duration, steps FROM history
WHERE service_slug = %s AND status = 'completed' AND duration IS NOT NULL
ORDER BY finished_at DESC
LIMIT %s
"""


@dataclass(frozen=True)
class Estimate:
    """A learned estimate for one service."""

    #: median seconds of work
    duration: float
    #: completed runs it was learned from
    samples: int
    #: median seconds per step (steps seen in enough runs)
    steps: dict[str, float] = field(default_factory=dict)
    #: epoch seconds when it was computed
    at: float = 0.0

    def dumps(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: bytes | str | None) -> Estimate | None:
        """A cached estimate, or None if absent or unreadable (the caller falls back)."""
        if raw is None:
            return None
        try:
            data = orjson.loads(raw)
            steps = data.get("steps") or {}
            return cls(
                duration=float(data["duration"]),
                samples=int(data["samples"]),
                steps={str(k): float(v) for k, v in steps.items()},
                at=float(data.get("at") or 0.0),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None


def summarize(
    durations: Sequence[float], step_runs: Iterable[dict[str, float]], *, min_samples: int = MIN_SAMPLES
) -> Estimate | None:
    """The estimate from recent completed runs, or None when there are too few of them."""
    if len(durations) < max(1, min_samples):
        return None
    per_step: dict[str, list[float]] = {}
    for run in step_runs:
        for name, seconds in run.items():
            if isinstance(seconds, int | float):
                per_step.setdefault(name, []).append(float(seconds))
    steps = {n: round(statistics.median(v), 3) for n, v in per_step.items() if len(v) >= max(1, min_samples)}
    duration = max(FLOOR, round(statistics.median(durations), 3))
    return Estimate(duration=duration, samples=len(durations), steps=steps, at=time.time())


async def learn(
    conn: AsyncConnection[Any], slug: str, *, window: int = WINDOW, min_samples: int = MIN_SAMPLES
) -> Estimate | None:
    """Compute a service's estimate from the archive (the archiver calls this, never the web)."""
    cur = await conn.execute(_RECENT, [slug, max(1, window)])
    rows = await cur.fetchall()
    durations = [float(r[0]) for r in rows]
    steps = [r[1] for r in rows if isinstance(r[1], dict)]
    return summarize(durations, steps, min_samples=min_samples)


async def refresh(
    conn: AsyncConnection[Any],
    redis: AsyncClient,
    keys: Keys,
    slugs: Iterable[str],
    *,
    window: int = WINDOW,
    min_samples: int = MIN_SAMPLES,
) -> dict[str, Estimate | None]:
    """Recompute and cache the estimates of these services; a service with too little history
    loses its cached value, so readers fall back to the catalog."""
    learned: dict[str, Estimate | None] = {}
    for slug in sorted(set(slugs)):
        learned[slug] = await learn(conn, slug, window=window, min_samples=min_samples)
    async with redis.pipeline(transaction=False) as pipe:
        for slug, estimate in learned.items():
            if estimate is None:
                pipe.delete(keys.estimate(slug))
            else:
                pipe.set(keys.estimate(slug), estimate.dumps(), ex=ESTIMATE_TTL)
        await pipe.execute()
    return learned


async def cached(redis: AsyncClient, keys: Keys, slugs: Sequence[str]) -> dict[str, Estimate]:
    """The cached estimates of these services (those that have one)."""
    if not slugs:
        return {}
    raws = await redis.mget([keys.estimate(s) for s in slugs])
    out: dict[str, Estimate] = {}
    for slug, raw in zip(slugs, raws, strict=True):
        estimate = Estimate.loads(raw)
        if estimate is not None:
            out[slug] = estimate
    return out


async def estimated_duration(redis: AsyncClient, keys: Keys, service: Service) -> float:
    """Seconds a new request of this service is expected to take: learned, else the catalog's."""
    estimate = Estimate.loads(await redis.get(keys.estimate(service.slug)))
    return estimate.duration if estimate is not None else service.estimated_duration


async def estimated_durations(redis: AsyncClient, keys: Keys, services: Sequence[Service]) -> dict[str, float]:
    """Every service's expected seconds; the catalog's values when Redis does not answer (the
    catalog page should not fail because a cache is out of reach)."""
    try:
        learned = await cached(redis, keys, [s.slug for s in services])
    except (RedisError, OSError):
        learned = {}
    return {s.slug: learned[s.slug].duration if s.slug in learned else s.estimated_duration for s in services}
