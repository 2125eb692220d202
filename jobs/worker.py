"""Worker entry point: ``python -m jobs.worker [--workers N] [--burst]``.

Runs RQ's WorkerPool over the high, default and low queues with the
scheduler on (delayed retries), short heartbeats and frequent maintenance so
that a job abandoned by a dead worker is found in seconds, and without
logging job descriptions.

The workers do not fork a work horse per job (RQ's ``SimpleWorker``): a job
is a bot call and a few record updates, I/O that takes milliseconds, and a
fork plus a fresh event loop and clients per job cost ten times that (see the
README's benchmarks). Each worker runs up to ``--jobs`` jobs at once, one per
thread (a job waits on the bot, not the CPU: one process per running job
spent two cores switching between processes that mostly waited). What the
fork gave is kept otherwise: one monitor thread per worker beats the jobs that
run longer than the heartbeat interval, a job's timeout is enforced inside
its event loop (``jobs.context.run_job``) with the monitor's watchdog as the
backstop, and a killed worker's jobs are found by maintenance as before.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import logging
import os
import queue as queues
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from redis import ConnectionPool, Redis
from redis.exceptions import NoScriptError, RedisError
from rq import SimpleWorker
from rq.defaults import RQ_KEY_PREFIX
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.rate_limit import RELEASE_AND_ENQUEUE_SCRIPT, RateLimitRegistry
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ReadyJobRegistry,
    StartedJobRegistry,
)
from rq.scheduler import RQScheduler
from rq.scripts import release_lock
from rq.timeouts import BaseDeathPenalty
from rq.utils import current_timestamp, now, utcformat
from rq.worker import WorkerStatus
from rq.worker_pool import WorkerPool
from rq.worker_registration import clean_worker_registry

from jobs.context import settings
from jobs.stats import count_job, record_job
from server.infra import logs
from server.infra.connections import rq_connection
from server.infra.logs import short
from server.queue.dispatch import job_keys, phase_of, queue_names, request_of
from server.record import Keys

log = logging.getLogger("longrun.worker")


class WatchdogDeathPenalty(BaseDeathPenalty):
    """RQ's job timeout for a job that runs in a thread: a deadline the monitor enforces.

    RQ's default (SIGALRM) works in the main thread only, and its thread variant starts a timer
    thread per job. A job's coroutine is stopped by its own ``asyncio.timeout`` first
    (``jobs.context.run_job``); this is the backstop for code that blocks the thread: the
    worker's monitor raises the exception in the job's thread once the deadline has passed.
    """

    #: thread id -> (monotonic deadline, exception class), for the monitor
    deadlines: ClassVar[dict[int, tuple[float, type[BaseException]]]] = {}

    def setup_death_penalty(self) -> None:
        if self._timeout is not None and float(self._timeout) > 0:
            self.deadlines[threading.get_ident()] = (time.monotonic() + float(self._timeout), self._exception)

    def cancel_death_penalty(self) -> None:
        self.deadlines.pop(threading.get_ident(), None)

    @classmethod
    def enforce(cls) -> None:
        """Raise the timeout in every thread past its deadline (called by the monitor)."""
        at = time.monotonic()
        for ident, (deadline, exception) in list(cls.deadlines.items()):
            if at > deadline and cls.deadlines.pop(ident, None) is not None:
                log.warning("a job ran past its timeout in thread %s: stopping it", ident)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exception))


@dataclass
class Running:
    """A job a worker's thread runs, and when it was last beaten (monotonic)."""

    job: Job
    execution: Execution | None = None
    beaten_at: float = field(default_factory=time.monotonic)


class Monitor(threading.Thread):
    """Keeps the worker, the executions and the jobs alive in Redis while jobs run.

    RQ's forking worker does this from the parent while the horse works; here one thread per
    worker beats every job that has run for a heartbeat interval since its start or its last
    beat (a job shorter than that was born with enough TTL: no beat at all), and stops jobs past
    their timeout (:class:`WatchdogDeathPenalty`).
    """

    def __init__(self, worker: LongrunWorker):
        super().__init__(name="job monitor", daemon=True)
        self.worker = worker
        self.done = threading.Event()

    def run(self) -> None:
        interval = float(self.worker.job_monitoring_interval)
        while not self.done.wait(interval / 2):
            WatchdogDeathPenalty.enforce()
            for running in list(self.worker.running.values()):
                if running.execution is None or time.monotonic() - running.beaten_at < interval:
                    continue
                try:
                    self.worker.maintain_heartbeats(running.job, running.execution)
                    running.beaten_at = time.monotonic()
                except RedisError as exc:  # the next beat may get through; the job goes on meanwhile
                    request = short(request_of(running.job, settings().key_prefix))
                    log.warning("heartbeat of the %s job for %s failed: %s", phase_of(running.job.id), request, exc)

    def stop(self) -> None:
        self.done.set()
        self.join()


class LongrunWorker(SimpleWorker):
    """RQ's in-process worker, running up to :attr:`slots` jobs at once, with Longrun's
    liveness settings.

    The main thread does what RQ's loop does (maintenance, dequeue, preparing the execution)
    and hands each job to one of ``slots`` threads, which run RQ's ``perform_job`` (the job,
    then RQ's success or failure handling). It dequeues only while a thread is free, so a job
    never waits in a worker while another could take it. RQ 3 keeps a worker's executions
    apart already (``worker.executions``); a stop lets the running jobs finish.

    RQ gives an in-process job a heartbeat TTL of its whole timeout plus 60 s
    (nothing else would renew it); with the heartbeat thread the grace is two
    monitoring intervals, so a killed worker's job is found in seconds. Likewise
    a dead scheduler's locks are freed after 10 s of silence instead of a minute
    (:func:`reclaim_stale_scheduler_locks`).
    """

    #: jobs a worker runs at once (``--jobs``; set before the pool forks its workers)
    slots: ClassVar[int] = 1
    death_penalty_class = WatchdogDeathPenalty

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = settings()
        kwargs.setdefault("worker_ttl", 20)
        kwargs.setdefault("maintenance_interval", config.maintenance_interval)
        kwargs.setdefault("job_monitoring_interval", config.job_heartbeat_interval)
        kwargs.setdefault("log_job_description", False)
        super().__init__(*args, **kwargs)
        self.log_result_lifespan = False
        self._beaten_at = -ROUTINE_BEAT_EVERY  # monotonic time of the last routine heartbeat
        self._suspension_checked_at = -ROUTINE_BEAT_EVERY
        #: the stop signals handled so far (see request_force_stop)
        self._stop_signals: set[int] = set()
        #: the jobs the threads run, by job id
        self.running: dict[str, Running] = {}
        self._free = threading.BoundedSemaphore(self.slots)
        self._work: queues.SimpleQueue[tuple[Job, Queue] | None] = queues.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._monitor: Monitor | None = None
        self._dequeuing = False
        self._cold = False
        os.register_at_fork(after_in_child=lambda: forget_inherited_sockets(self.connection.connection_pool))
        #: RQ's slot release, sent in the transaction that ends a job (see handle_job_success)
        self._release = self.connection.register_script(RELEASE_AND_ENQUEUE_SCRIPT)

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

    def check_for_suspension(self, burst: bool) -> None:
        # RQ reads the suspension flag (a GET, a round trip) before every job; once a second is
        # as good for ``rq suspend``, which a person types.
        at = time.monotonic()
        if at - self._suspension_checked_at < ROUTINE_BEAT_EVERY:
            return
        self._suspension_checked_at = at
        super().check_for_suspension(burst)

    def set_state(self, state: str, pipeline: Any = None) -> None:
        # RQ sets IDLE after every job and again before every dequeue: the second write is a no-op;
        # and the worker is busy, not idle, while one of its threads runs a job.
        if pipeline is None and (state == self._state or (state == WorkerStatus.IDLE and self.running)):
            return
        super().set_state(state, pipeline)

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        # RQ beats the job once more here (an HSET, a round trip) to cover the success or failure
        # callback after a work horse ended; here the monitor beats the job until it is settled.
        job.ended_at = now()

    def prepare_execution(self, job: Job) -> Execution:
        """RQ's two preparations of a job in one round trip: the execution (RQ's worker, before
        it forks) and the job's start (RQ's work horse, ``prepare_job_execution``): the same
        commands, but the job's ``last_heartbeat``, which RQ writes twice."""
        with self.connection.pipeline() as pipeline:
            ttl = self.get_heartbeat_ttl(job)
            execution = Execution.create(job, ttl, pipeline=pipeline, worker_name=self.name)
            self.executions[execution.id] = execution
            self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
            self.heartbeat(ttl, pipeline=pipeline)
            job.prepare_for_execution(self.name, pipeline=pipeline)
            pipeline.persist(job.key)
            if len(self.queues) == 1:
                pipeline.lrem(self.queues[0].intermediate_queue_key, 1, job.id)
            pipeline.execute()
        return execution

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """Done with the execution (:meth:`prepare_execution`)."""

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, execution: Execution
    ) -> None:
        """RQ's success handling in one transaction, the release of the job's concurrency slot
        included, for a job deleted on success.

        RQ WATCHes and reads the job's dependents first (a round trip each), reads the
        concurrency limit and releases the slot after its transaction (two more): Longrun
        enqueues no job that depends on another, the job carries its limit, and RQ's release
        script runs as well inside the transaction that ends the job, which also counts it for
        the dashboard. RQ's ``Job.delete`` reads the job's stored status and every execution of
        it (four round trips outside the transaction: HGET, ZREMRANGEBYSCORE, ZRANGE, HGETALL)
        to take them out of the started registry, which ``cleanup_execution`` does in the same
        transaction anyway: here the job ran and ended, so its keys go without being read (it
        has no result of its own: its TTL is 0). A failure of the counts alone is logged: the job
        still succeeded. Jobs that keep a result (the cron's upkeep, which is not counted), repeat
        or belong to a group go RQ's way.
        """
        if job.repeats_left or job.group_id or job.get_result_ttl(self.default_result_ttl) != 0:
            super().handle_job_success(job, queue, started_job_registry, execution)
            record_job(self.connection, Keys(settings().key_prefix), job, "ok")
            return
        with self.connection.pipeline() as pipeline:
            count_job(pipeline, Keys(settings().key_prefix), job, "ok")
            counts = len(pipeline.command_stack)
            self.increment_successful_job_count(pipeline=pipeline)
            if job.ended_at is not None and job.started_at is not None:
                self.increment_total_working_time(job.ended_at - job.started_at, pipeline)
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            pipeline.delete(*job_keys(job))
            job._status = JobStatus.FINISHED
            release = self._release_args(job)
            if release is not None:
                pipeline.evalsha(self._release.sha, 2, *release)
            replies = pipeline.execute(raise_on_error=False)
        if any(isinstance(r, RedisError) for r in replies[:counts]):
            log.warning(
                "could not count the %s job of %s", phase_of(job.id), short(request_of(job, settings().key_prefix))
            )
        failed = [r for r in replies[counts:] if isinstance(r, Exception) and not isinstance(r, NoScriptError)]
        if failed:
            raise failed[0]
        if release is not None and isinstance(replies[-1], NoScriptError):
            # The script was not in Redis yet (a Redis restarted meanwhile): sent again, with it.
            self._release(keys=release[:2], args=release[2:])
        self.log.info("Successfully completed job %s on worker %s", job.id, self.name)

    def _release_args(self, job: Job) -> list[Any] | None:
        """The keys and arguments of RQ's script that releases a finished job's concurrency slot
        and promotes the jobs waiting for it (``RateLimitRegistry.release_and_enqueue``, whose
        own call is a round trip of its own and reads the limit back from Redis: the job
        carries it), or None for a job without a limit."""
        if not job.has_rate_limit:
            return None
        limit = RateLimitRegistry.from_job(job)
        return [
            limit.allowed_key,
            limit.rate_limited_key,
            job.rate_limit_concurrency,
            current_timestamp(),
            utcformat(now()),
            Queue.redis_queue_namespace_prefix,
            Job.redis_job_namespace_prefix,
            job.id,
        ]

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """RQ's dequeue, once one of the threads is free (the slot is the job's from here on)."""
        while not self._free.acquire(timeout=SLOT_WAIT):
            if self._stop_requested:
                raise StopRequested()
            self.heartbeat()
        result = None
        try:
            self._dequeuing = True
            if self._stop_requested:
                raise StopRequested()
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        finally:
            self._dequeuing = False
            if result is None:
                self._free.release()
        return result

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Prepare the execution (as RQ's worker does before it forks) and hand the job to a thread."""
        running = self.running[job.id] = Running(job)
        try:
            running.execution = self.prepare_execution(job)
        except BaseException:
            self.running.pop(job.id, None)
            self._free.release()
            raise
        if len(self._threads) < self.slots:
            thread = threading.Thread(target=self._serve, name=f"job {len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()
        if self._monitor is None:
            self._monitor = Monitor(self)
            self._monitor.start()
        self._work.put((job, queue))

    def _serve(self) -> None:
        """One thread: runs the jobs handed to it until told to stop (``None``)."""
        while (item := self._work.get()) is not None:
            job, queue = item
            running = self.running.get(job.id)
            try:
                if running is not None and running.execution is not None:
                    self.perform_job(job, queue, running.execution)
            except Exception:  # RQ's handling of the job's end failed (Redis down): maintenance settles it
                log.exception("the %s job for %s ended without RQ's bookkeeping", phase_of(job.id), short(job.id))
            finally:
                self.running.pop(job.id, None)
                if not self.running:
                    self.set_state(WorkerStatus.IDLE)
                self._free.release()

    def _shutdown(self) -> None:
        """A stop waits for the running jobs; it interrupts only a dequeue (RQ: only an idle worker)."""
        if self._dequeuing or not self.running:
            raise StopRequested()
        self._stop_requested = True
        self.set_shutdown_requested_date()  # type: ignore[no-untyped-call]
        if self.scheduler:
            self.stop_scheduler()  # type: ignore[no-untyped-call]

    def teardown(self) -> None:
        """The running jobs end first (a warm stop); a cold stop leaves them to maintenance."""
        if not self._cold:
            for _ in self._threads:
                self._work.put(None)
            for thread in self._threads:
                thread.join()
        if self._monitor is not None:
            self._monitor.done.set()
        super().teardown()  # type: ignore[no-untyped-call]

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
        self._cold = True
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

    def clean_registries(self) -> None:
        """RQ's registry upkeep, done by one worker of all those on these queues per maintenance
        interval, and the rate-limit registries once, only Longrun's own.

        RQ's workers each run it every interval (its per-queue lock is released as soon as the
        cleaning ends, so eight workers clean eight times as often as one), and every queue's
        cleaning walks every rate-limit registry in Redis, other tenants' included: a
        status read per job holding a slot, and two scripts per registry. py-spy put it at 16% of
        the pool's time under load.
        """
        # the worker's own clock for its next upkeep, as RQ's sets it
        self.last_cleaned_at = now()  # type: ignore[assignment]
        config = settings()
        interval = max(1, int(self.maintenance_interval))
        if not self.connection.set(f"{RQ_KEY_PREFIX}:upkeep:{config.key_prefix}", self.name, nx=True, ex=interval):
            return
        for queue in self.queues:
            # RQ's per-queue lock, under RQ's key, but for one interval: RQ's own lasts 899 s,
            # so a worker killed while it cleaned (as a loaded worker may take a second) left
            # its queue uncleaned for 15 minutes, and a killed worker's job there unnoticed.
            if not queue.connection.set(queue.registry_cleaning_key, 1, nx=True, ex=interval):
                continue
            try:
                # every interval: routine, so not at info (4 lines each 5 s filled `make run`'s output)
                self.log.debug("Worker %s: cleaning registries for queue: %s", self.name, queue.name)
                options: dict[str, Any] = {"connection": queue.connection, "job_class": queue.job_class}
                FinishedJobRegistry(queue.name, serializer=queue.serializer, **options).cleanup()
                StartedJobRegistry(queue.name, serializer=queue.serializer, **options).cleanup(
                    exception_handlers=self._exc_handlers
                )
                for registry in (FailedJobRegistry, DeferredJobRegistry, ReadyJobRegistry):
                    registry(queue.name, serializer=queue.serializer, **options).cleanup()
                clean_worker_registry(queue)
                queue.intermediate_queue.cleanup(self, queue)
            finally:
                queue.release_maintenance_lock()  # type: ignore[no-untyped-call]
        for limit in RateLimitRegistry.all(self.connection):
            if limit.key.startswith(config.key_prefix):
                limit.cleanup()

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

#: how often a worker whose threads are all busy looks for a stop request (seconds)
SLOT_WAIT = 0.5

#: jobs a worker process runs at once by default
JOBS_PER_WORKER = 8

#: how long a stopping worker waits for its pub/sub listener to end (seconds)
UNSUBSCRIBE_WAIT = 2.0

#: RQ's scheduler holds each queue's lock for its interval (1 s) + 60 s and refreshes it every
#: interval; a lock not refreshed for this long belongs to a scheduler that is gone
SCHEDULER_LOCK_TTL = 1 + 60
SCHEDULER_STALE_AFTER = 10


def forget_inherited_sockets(pool: ConnectionPool) -> None:
    """In a process forked from a worker (RQ's scheduler), close the descriptors of the worker's
    Redis sockets, this process's copies only: nothing is sent, the worker's side stays open.

    Kept, they outlive the worker: a worker killed while blocked in BLPOP stays a blocked client
    for Redis as long as its scheduler holds the socket, and the next job pushed within the BLPOP's
    timeout went to that reply no one reads (a cancel lost after a worker was killed mid-check).
    redis-py's pool, seeing the new pid, starts afresh without touching them.
    """
    for conn in (*pool._available_connections, *pool._in_use_connections):  # private: no public view
        sock = getattr(conn, "_sock", None)
        if sock is not None:
            sock.close()


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
    parser.add_argument("--jobs", type=int, default=JOBS_PER_WORKER, help="jobs each worker runs at once")
    parser.add_argument("--burst", action="store_true", help="quit when the queues are empty")
    args = parser.parse_args(argv)
    LongrunWorker.slots = max(1, args.jobs)
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
