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

from rq import Worker
from rq.job import Job
from rq.worker_pool import WorkerPool

from jobs.context import settings
from jobs.queues import queue_names
from server import logs
from server.connections import rq_connection


class LongrunWorker(Worker):
    """RQ's forking worker with Longrun's liveness settings.

    RQ adds a fixed 60 s to every job heartbeat, so a killed worker's job would
    sit in the started registry for over a minute; here the grace is one
    monitoring interval.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = settings()
        kwargs.setdefault("worker_ttl", 20)
        kwargs.setdefault("maintenance_interval", config.maintenance_interval)
        kwargs.setdefault("job_monitoring_interval", config.job_heartbeat_interval)
        kwargs.setdefault("log_job_description", False)
        super().__init__(*args, **kwargs)
        self.log_result_lifespan = False

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        interval = int(self.job_monitoring_interval)
        grace = interval * 2
        if job.timeout and job.timeout > 0:
            return int(min(float(job.timeout) - working_time, interval)) + grace
        return interval + grace


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
