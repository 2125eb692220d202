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
import contextlib
import importlib
import logging
import sys
import threading
import time
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.scheduler import RQScheduler
from rq.scripts import release_lock
from rq.utils import now
from rq.worker import WorkerStatus
from rq.worker_pool import WorkerPool

from jobs.context import settings
from server.infra import logs
from server.infra.connections import rq_connection
from server.infra.logs import short
from server.queue.dispatch import phase_of, queue_names, request_of

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
                request = short(request_of(self.job, settings().key_prefix))
                log.warning("heartbeat of the %s job for %s failed: %s", phase_of(self.job.id), request, exc)

    def stop(self) -> None:
        self.done.set()
        self.join()


class LongrunWorker(SimpleWorker):
    """RQ's in-process worker with Longrun's liveness settings.

    RQ gives an in-process job a heartbeat TTL of its whole timeout plus 60 s
    (nothing else would renew it); with the heartbeat thread the grace is two
    monitoring intervals, so a killed worker's job is found in seconds. Likewise
    a dead scheduler's locks are freed after 10 s of silence instead of a minute
    (:func:`reclaim_stale_scheduler_locks`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = settings()
        kwargs.setdefault("worker_ttl", 20)
        kwargs.setdefault("maintenance_interval", config.maintenance_interval)
        kwargs.setdefault("job_monitoring_interval", config.job_heartbeat_interval)
        kwargs.setdefault("log_job_description", False)
        super().__init__(*args, **kwargs)
        self.log_result_lifespan = False
        self._beaten_at = -ROUTINE_BEAT_EVERY  # monotonic time of the last routine heartbeat
        #: the stop signals handled so far (see request_force_stop)
        self._stop_signals: set[int] = set()

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's worker heartbeat; its routine beats at most once a second.

        RQ beats the worker's key (an HSET and two EXPIREs, a round trip each) before and after
        every dequeue, again after every job and once more in its suspension check: nine round
        trips and twelve commands a job for a key that lives ``worker_ttl`` + 60 s. Beats with a
        TTL of their own (preparing a job, the heartbeat thread) all go through.
        """
        if timeout is None:
            at = time.monotonic()
            if at - self._beaten_at < ROUTINE_BEAT_EVERY:
                return
            self._beaten_at = at
        super().heartbeat(timeout, pipeline)

    def set_state(self, state: str, pipeline: Any = None) -> None:
        # RQ sets IDLE after every job and again before every dequeue: the second write is a no-op.
        if pipeline is None and state == self._state:
            return
        super().set_state(state, pipeline)

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        # RQ beats the job once more here (an HSET, a round trip) to cover the success or failure
        # callback after a work horse ended; here the heartbeat thread runs until the job is settled.
        job.ended_at = now()

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        heartbeat = Heartbeat(self, job, execution)
        heartbeat.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            heartbeat.stop()
        self.set_state(WorkerStatus.IDLE)

    def request_stop(self, signum: int, frame: Any) -> None:
        self._stop_signals = {signum}
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def request_force_stop(self, signum: int, frame: Any) -> None:
        """A second stop signal is a cold shutdown, except the pool's copy of the first.

        The pool forwards its own stop to each worker as SIGINT, so when the whole process
        group gets SIGTERM (systemd, honcho, ``kill -- -pgid``) a worker sees both. RQ ignores
        a second signal handled within 1 s of the first, but a worker busy in its event loop
        was seen handling the pool's copy more than 1 s later, and then abandoned the job it
        was to finish. A signal of another number than any seen is that copy; a repeated
        one is a real second request.
        """
        if signum not in self._stop_signals:
            self._stop_signals.add(signum)
            self.log.debug("Worker %s: the pool's copy of the stop signal ignored", self.name)
            return
        super().request_force_stop(signum, frame)

    def run_maintenance_tasks(self) -> None:
        # Stopping: no new scheduler. One forked now could get the group's SIGTERM before it
        # installs its own handlers, and the worker would wait for it forever.
        if self._stop_requested:
            return
        # Before RQ's own upkeep, which starts this worker's scheduler when it can lock.
        if self.scheduler is not None:
            freed = reclaim_stale_scheduler_locks(self.connection, self.queue_names())
            if freed:
                self.log.warning("freed scheduler locks left by a dead scheduler: %s", ", ".join(freed))
        super().run_maintenance_tasks()  # type: ignore[no-untyped-call]

    def unsubscribe(self) -> None:
        """RQ's unsubscribe with the listener stopped before the UNSUBSCRIBE, not after.

        RQ sends UNSUBSCRIBE, then stops the listener thread (which reads with a 60 s
        timeout). redis-py 8.2's ``PubSubWorkerThread.stop`` waits for the thread without
        a bound, and when the thread took the UNSUBSCRIBE reply before the stop flag was
        cleared it went back to reading for 60 s: the worker hung after its last job,
        until a second signal cold-stopped it. Clearing the flag first lets the reply
        end the thread; the wait is bounded either way (the thread is a daemon).
        """
        thread = self.pubsub_thread
        if thread is None or self.pubsub is None:
            return
        self.log.info("Worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name)
        thread.stop(timeout=0)  # clears the flag only
        with contextlib.suppress(RedisError):
            self.pubsub.unsubscribe()
        thread.join(timeout=UNSUBSCRIBE_WAIT)
        if not thread.is_alive():
            self.pubsub.close()

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        interval = int(self.job_monitoring_interval)
        grace = interval * 2
        if job.timeout and job.timeout > 0:
            return int(min(float(job.timeout) - working_time, interval)) + grace
        return interval + grace


#: the least time between two of RQ's routine worker heartbeats (seconds; the key lives 80 s)
ROUTINE_BEAT_EVERY = 1.0

#: how long a stopping worker waits for its pub/sub listener to end (seconds)
UNSUBSCRIBE_WAIT = 2.0

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
    # Imported once here, before the pool forks its workers, rather than by each worker at its first job.
    importlib.import_module("jobs.tasks")
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
