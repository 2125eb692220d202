"""What workers count for the dashboard and ``/metrics``: jobs by queue, phase and outcome,
wait and run times, per minute, written from the worker's own (synchronous) connection: a
finished job's counts in the transaction that ends it, a failed one's in a pipelined round
trip of its own."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq.job import Job

from server.queue.dispatch import phase_of
from server.record import RUNTIME_SAMPLES, STATS_TTL, Keys

log = logging.getLogger("longrun.stats")

#: what became of one run of a job
OUTCOMES = ("ok", "retried", "failed")
#: the module of the jobs counted: Longrun's phases, not the cron's upkeep
PHASES_MODULE = "jobs.tasks."


def is_counted(job: Job) -> bool:
    """Whether the dashboard counts ``job``: one of a request's phases."""
    return (job.func_name or "").startswith(PHASES_MODULE)


def _seconds_between(a: datetime | None, b: datetime | None) -> float | None:
    if a is None or b is None:
        return None
    if a.tzinfo is None:
        a = a.replace(tzinfo=UTC)
    if b.tzinfo is None:
        b = b.replace(tzinfo=UTC)
    return max(0.0, (b - a).total_seconds())


def count_job(pipe: Pipeline, keys: Keys, job: Job, outcome: str) -> None:
    """Queue on ``pipe`` the counts of one finished run of a job, under its phase (nothing for
    a job that is not a request's phase: :func:`is_counted`). The worker's success handling
    counts in its own transaction: no round trip of its own."""
    if not is_counted(job):
        return
    phase = phase_of(job.id)
    queue = str(job.origin or "?")
    if keys.prefix and queue.startswith(keys.prefix):
        queue = queue[len(keys.prefix) :]
    now = datetime.now(UTC)
    waited = _seconds_between(job.enqueued_at, job.started_at)
    ran = _seconds_between(job.started_at, now)
    minute = int(time.time() // 60)
    pipe.hincrby(keys.job_stats(), f"{queue}|{phase}|{outcome}", 1)
    stats = keys.minute_stats(minute)
    pipe.hincrby(stats, f"{outcome}:{queue}", 1)
    if waited is not None:
        pipe.hincrbyfloat(stats, f"wait_sum:{queue}", waited)
        pipe.hincrby(stats, f"wait_n:{queue}", 1)
    pipe.expire(stats, STATS_TTL)
    if ran is not None:
        pipe.lpush(keys.runtimes(queue), f"{ran:.3f}")
        pipe.ltrim(keys.runtimes(queue), 0, RUNTIME_SAMPLES - 1)


def record_job(connection: Redis, keys: Keys, job: Job, outcome: str) -> None:
    """Count one finished run of a job in a round trip of its own (never fails the job:
    statistics are best-effort)."""
    try:
        with connection.pipeline(transaction=False) as pipe:
            count_job(pipe, keys, job, outcome)
            pipe.execute()
    except RedisError as exc:
        log.warning("could not record job statistics: %s", exc.__class__.__name__)
