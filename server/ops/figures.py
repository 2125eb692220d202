"""The operational figures: what a dashboard snapshot holds (queues, workers, failed jobs,
requests, sockets, charts), as plain data, and the small sums they are made of.

Gathered by ``server.ops.operations.Operations``; rendered by the dashboard, exported
by ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any


def age(moment: datetime | None, now: datetime) -> float | None:
    """Seconds since ``moment`` (naive: UTC, as RQ stores it); None when there is none."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (now - moment).total_seconds())


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0-1) of ``values``, interpolated; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 3)


@dataclass
class QueueFigures:
    name: str
    depth: int
    oldest_wait: float | None
    scheduled: int
    running: int
    failed: int
    #: jobs of this queue that finished well in the current (partial) minute: the last point
    #: of the throughput chart, so the table and the chart never disagree
    done_this_minute: int
    runtime_p50: float | None
    runtime_p95: float | None
    runtime_p99: float | None
    threshold: float
    alert: bool


@dataclass
class WorkerFigures:
    name: str
    state: str
    queues: list[str]
    #: the jobs its threads run (a worker runs up to --jobs at once)
    running: list[str]
    heartbeat_age: float | None
    successful: int
    failed: int


@dataclass
class FailedJob:
    id: str
    request: str
    phase: str
    queue: str
    error: str
    ended_at: str | None


@dataclass
class Snapshot:
    at: float
    queues: list[QueueFigures]
    workers: list[WorkerFigures]
    requests_by_status: dict[str, int]
    requests_by_service: dict[str, dict[str, int]]
    waiting_otp: int
    longest_otp_wait: float | None
    failed_jobs: list[FailedJob]
    jobs_total: dict[str, int]
    sockets: dict[str, int]
    redis_memory: int
    redis_memory_human: str
    charts: dict[str, list[float]]
    alerts: list[str]
    archive: dict[str, Any] = field(default_factory=dict)
    #: people waiting for the person's answer, per kind of prompt ("code" for the one-time code)
    waiting_by_kind: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
