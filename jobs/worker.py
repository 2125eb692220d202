"""Worker entry point: ``python -m jobs.worker [--workers N] [--burst]``.

Runs RQ's WorkerPool over the high, default and low queues with the
scheduler on (delayed retries), short heartbeats and frequent maintenance so
that a job abandoned by a dead worker is found in seconds, and without
logging job descriptions.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from redis import Redis
from rq import Worker
from rq.job import Job
from rq.scheduler import RQScheduler
from rq.scripts import release_lock
from rq.worker_pool import WorkerPool

from jobs.context import settings
from jobs.queues import queue_names
from server import logs
from server.connections import rq_connection


class LongrunWorker(Worker):
    """RQ's forking worker with Longrun's liveness settings.

    RQ adds a fixed 60 s to every job heartbeat, so a killed worker's job would
    sit in the started registry for over a minute; here the grace is one
    monitoring interval. Likewise a dead scheduler's locks are freed after 10 s
    of silence instead of a minute (:func:`reclaim_stale_scheduler_locks`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = settings()
        kwargs.setdefault("worker_ttl", 20)
        kwargs.setdefault("maintenance_interval", config.maintenance_interval)
        kwargs.setdefault("job_monitoring_interval", config.job_heartbeat_interval)
        kwargs.setdefault("log_job_description", False)
        super().__init__(*args, **kwargs)
        self.log_result_lifespan = False

    def run_maintenance_tasks(self) -> None:
        # Before RQ's own upkeep, which starts this worker's scheduler when it can lock.
        if self.scheduler is not None:
            freed = reclaim_stale_scheduler_locks(self.connection, self.queue_names())
            if freed:
                self.log.warning("freed scheduler locks left by a dead scheduler: %s", ", ".join(freed))
        super().run_maintenance_tasks()  # type: ignore[no-untyped-call]

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        interval = int(self.job_monitoring_interval)
        grace = interval * 2
        if job.timeout and job.timeout > 0:
            return int(min(float(job.timeout) - working_time, interval)) + grace
        return interval + grace


#: RQ's scheduler holds each queue's lock for its interval (1 s) + 60 s and refreshes it every
#: interval; a lock not refreshed for this long belongs to a scheduler that is gone
SCHEDULER_LOCK_TTL = 1 + 60
SCHEDULER_STALE_AFTER = 10


def reclaim_stale_scheduler_locks(connection: Redis, queue_names: list[str]) -> list[str]:
    """Free the scheduler locks of queues whose scheduler stopped refreshing them.

    A scheduler dies without releasing its locks when its worker dies — a Redis outage
    kills every busy worker (RQ's heartbeat while a horse works does not survive a
    connection error) and with them their schedulers. The pool starts new workers, but
    their schedulers could not take the locks until they expired, a minute later, and no
    delayed retry is enqueued meanwhile: requests caught in a bot call by the outage sat
    "retrying" until the sweeper failed them as silent. Judged by the lock's own TTL
    (Redis' clock, no skew between machines); freed only if still held by the same owner.
    """
    freed = []
    for name in queue_names:
        key = RQScheduler.get_locking_key(name)
        owner = connection.get(key)
        if owner is None:
            continue
        left = connection.ttl(key)
        if isinstance(left, int) and 0 < left < SCHEDULER_LOCK_TTL - SCHEDULER_STALE_AFTER:
            owner_name = owner.decode() if isinstance(owner, bytes) else str(owner)
            if release_lock(connection, key, owner_name):
                freed.append(name)
    return freed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Longrun RQ workers")
    parser.add_argument("--workers", type=int, default=2, help="worker processes in the pool")
    parser.add_argument("--burst", action="store_true", help="quit when the queues are empty")
    args = parser.parse_args(argv)
    config = settings()
    logs.configure(config)
    connection = rq_connection(config)
    pool = WorkerPool(
        queue_names(config.key_prefix),
        connection=connection,
        num_workers=max(1, args.workers),
        worker_class=LongrunWorker,
    )
    pool.start(burst=args.burst, logging_level=config.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
