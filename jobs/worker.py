"""Worker entry point: ``python -m jobs.worker [--workers N] [--burst]``.

Runs RQ's WorkerPool over the high, default and low queues with the
scheduler on (delayed retries), short heartbeats and frequent maintenance so
that a job abandoned by a dead worker is found in seconds, and without
logging job descriptions.

The workers do not fork a work horse per job (RQ's ``SimpleWorker``): a job
is a bot call and a few record updates, I/O that takes milliseconds, and a
fork plus a fresh event loop and clients per job cost ten times that (see the
README's benchmarks). What the fork gave is kept otherwise: heartbeats come
from a thread while the job runs, a job's timeout is enforced inside its
event loop (``jobs.context.run_job``) with RQ's signal as the backstop, and a
killed worker's job is found by maintenance as before.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from typing import Any

from redis.exceptions import RedisError
from rq import SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.worker import WorkerStatus
from rq.worker_pool import WorkerPool

from jobs.context import settings
from jobs.queues import queue_names
from server import logs
from server.connections import rq_connection

log = logging.getLogger("longrun.worker")


class Heartbeat(threading.Thread):
    """Keeps the worker, the execution and the job alive in Redis while the job runs.

    RQ's forking worker does this from the parent while the horse works; a
    worker that runs the job itself needs another thread for it.
    """

    def __init__(self, worker: LongrunWorker, job: Job, execution: Execution):
        super().__init__(name=f"heartbeat {job.id}", daemon=True)
        self.worker = worker
        self.job = job
        self.execution = execution
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.worker.job_monitoring_interval):
            try:
                self.worker.maintain_heartbeats(self.job, self.execution)
            except RedisError as exc:  # the next beat may get through; the job goes on meanwhile
                log.warning("heartbeat for %s failed: %s", self.job.id[-24:], exc.__class__.__name__)

    def stop(self) -> None:
        self.done.set()
        self.join()


class LongrunWorker(SimpleWorker):
    """RQ's in-process worker with Longrun's liveness settings.

    RQ gives an in-process job a heartbeat TTL of its whole timeout plus 60 s
    (nothing else would renew it); with the heartbeat thread the grace is two
    monitoring intervals, so a killed worker's job is found in seconds.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = settings()
        kwargs.setdefault("worker_ttl", 20)
        kwargs.setdefault("maintenance_interval", config.maintenance_interval)
        kwargs.setdefault("job_monitoring_interval", config.job_heartbeat_interval)
        kwargs.setdefault("log_job_description", False)
        super().__init__(*args, **kwargs)
        self.log_result_lifespan = False

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        heartbeat = Heartbeat(self, job, execution)
        heartbeat.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            heartbeat.stop()
        self.set_state(WorkerStatus.IDLE)

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
