"""The worker's tweaks over RQ: a dead scheduler's locks are freed in seconds, a dead
cleaner's in one maintenance interval; a job that ends, or is withdrawn before it ran, leaves
nothing of itself and frees its service's slot."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.client import Pipeline
from rq import Callback, Queue, get_current_job
from rq.defaults import RQ_KEY_PREFIX
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.rate_limit import RELEASE_AND_ENQUEUE_SCRIPT, RateLimit, RateLimitRegistry
from rq.registry import CanceledJobRegistry, FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.scheduler import RQScheduler

import jobs.stats
import jobs.worker
from jobs.worker import SCHEDULER_LOCK_TTL, SCHEDULER_STALE_AFTER, LongrunWorker, reclaim_stale_scheduler_locks
from server.queue.dispatch import queue_names, withdraw
from server.record import Keys
from server.settings import Settings


async def test_only_locks_left_unrefreshed_are_freed(redis: Redis, redis_url: str, prefix: str) -> None:
    high, default, low = queue_names(prefix)
    key = RQScheduler.get_locking_key
    # high: its scheduler refreshed it a second ago; default: silent for longer than the
    # stale window (a dead scheduler's lock, still a long way from expiring by itself)
    await redis.set(key(high), "alive", ex=SCHEDULER_LOCK_TTL - 1)
    await redis.set(key(default), "dead", ex=SCHEDULER_LOCK_TTL - SCHEDULER_STALE_AFTER - 2)
    sync = SyncRedis.from_url(redis_url)
    try:
        freed = reclaim_stale_scheduler_locks(sync, [high, default, low])
    finally:
        sync.close()
    assert freed == [default]
    assert await redis.get(key(high)) == b"alive"
    assert await redis.get(key(default)) is None
    assert await redis.get(key(low)) is None  # nothing there, nothing made up


#: what note_cleaning_lock saw: the TTL of its queue's cleaning lock while the cleaning ran
SEEN_LOCK_TTL: list[int] = []


def note_cleaning_lock(job: Job, connection: SyncRedis, *args: object) -> None:
    """A failure callback run by the cleaning itself (it fails the abandoned job), so while
    the cleaning lock is held: what a worker killed at that moment would leave behind."""
    SEEN_LOCK_TTL.append(int(connection.ttl(Queue(job.origin, connection=connection).registry_cleaning_key)))


def test_a_cleaning_lock_outlives_its_worker_by_one_interval_at_most(
    base_settings: Settings, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RQ's cleaning lock lasts 899 s: a worker killed while it cleaned a queue left that
    queue uncleaned for 15 minutes (and a killed worker's job there unnoticed). Ours lasts
    one maintenance interval."""
    config = base_settings.with_(maintenance_interval=3)
    monkeypatch.setattr(jobs.worker, "settings", lambda: config)
    sync = SyncRedis.from_url(redis_url)
    try:
        high = Queue(queue_names(prefix)[0], connection=sync)
        # a job a killed worker left running: started, its heartbeat long expired
        job = high.enqueue("jobs.tasks.run_bot", job_id=f"{prefix}abandoned", on_failure=Callback(note_cleaning_lock))
        job.set_status(JobStatus.STARTED)
        registry = StartedJobRegistry(high.name, connection=sync)
        sync.zadd(registry.key, {f"{job.id}:an-execution": time.time() - 60})  # "{job}:{execution}"
        high.remove(job)
        worker = LongrunWorker([high], connection=sync, name=f"{prefix}cleaner")
        SEEN_LOCK_TTL.clear()
        worker.clean_registries()
        assert len(SEEN_LOCK_TTL) == 1, "the abandoned job was not found by the cleaning"
        assert 0 < SEEN_LOCK_TTL[0] <= config.maintenance_interval
        assert sync.exists(high.registry_cleaning_key) == 0  # released once done
        assert Job.fetch(job.id, connection=sync).get_status() == JobStatus.FAILED
    finally:
        keys = list(sync.scan_iter(match=f"*{prefix}*"))
        if keys:
            sync.delete(*keys)
        sync.close()


#: the jobs finish_quietly ran, by id
FINISHED: list[str] = []


def finish_quietly() -> None:
    """A job that succeeds (what the worker does after it is the test's subject)."""
    job = get_current_job()
    FINISHED.append(job.id if job else "?")


@pytest.fixture
def sync(redis_url: str, base_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncRedis]:
    """A synchronous client, as RQ's, for a worker run in the test (on ``base_settings``, whose
    ``redis`` fixture deletes the test's keys at its end)."""
    monkeypatch.setattr(jobs.worker, "settings", lambda: base_settings)
    client = SyncRedis.from_url(redis_url)
    yield client
    client.close()


def limited_jobs(sync: SyncRedis, prefix: str, count: int) -> tuple[Queue, list[Job]]:
    """``count`` run jobs of finish_quietly on the high queue, sharing one concurrency slot."""
    high = Queue(queue_names(prefix)[0], connection=sync)
    limit = RateLimit(key=f"{prefix}service:test", concurrency=1)
    enqueued = [
        high.enqueue(finish_quietly, job_id=f"{prefix}req{n}-run", result_ttl=0, rate_limit=limit)
        for n in range(1, count + 1)
    ]
    return high, enqueued


@pytest.mark.parametrize("script", ["loaded", "not loaded"])
@pytest.mark.parametrize("counted", [True, False], ids=["a phase", "not a phase"])
def test_a_finished_job_leaves_nothing_of_itself_and_frees_its_slot(
    sync: SyncRedis, prefix: str, monkeypatch: pytest.MonkeyPatch, script: str, counted: bool
) -> None:
    """The success path deletes the job without reading it back (RQ's Job.delete reads its
    status and executions first), counts it and releases its concurrency slot in the same
    transaction: still nothing of the job is left, it is counted once, and its slot goes to
    the job waiting for it, which then runs and leaves nothing either."""
    high, (first, second) = limited_jobs(sync, prefix, 2)
    # what an earlier, failed attempt left: its result, kept for days (an operator's retry
    # runs the same job again)
    sync.xadd(Result.get_key(first.id), {"type": "2", "exc_string": "the bot was down"})  # type: ignore[no-untyped-call]
    registry = RateLimitRegistry.from_job(first)
    assert registry.get_allowed_job_ids() == [first.id]
    assert registry.get_rate_limited_job_ids() == [second.id]
    worker = LongrunWorker([high], connection=sync, name=f"{prefix}worker")
    if counted:  # counted as a request's phase is (jobs.tasks), which the cron's upkeep is not
        monkeypatch.setattr(jobs.stats, "PHASES_MODULE", f"{__name__}.")
    if script == "loaded":
        sync.script_load(RELEASE_AND_ENQUEUE_SCRIPT)
        assert sync.script_exists(worker._release.sha) == [True]
    else:
        # the release script as Redis has never seen it (as after a restart): the first
        # release falls back to loading it, the second finds it
        worker._release = sync.register_script(f"{RELEASE_AND_ENQUEUE_SCRIPT}\n-- {prefix}")
        assert sync.script_exists(worker._release.sha) == [False]
    FINISHED.clear()
    assert worker.work(burst=True)
    assert [first.id, second.id] == FINISHED  # the second was promoted by the first's release
    for job in (first, second):
        assert not sync.exists(job.key, job.execution_registry.key)
        assert not [k for k in sync.scan_iter(match=f"*{job.id}*")], "a key of the finished job was left"
    assert registry.get_allowed_job_ids() == [] and registry.get_rate_limited_job_ids() == []
    assert StartedJobRegistry(high.name, connection=sync).get_job_ids() == []
    assert not sync.smembers(f"{RQ_KEY_PREFIX}:worker:{worker.name}:executions")
    # counted for the dashboard in the same transaction, once each
    assert sync.hgetall(Keys(prefix).job_stats()) == ({b"high|run|ok": b"2"} if counted else {})


def test_a_job_whose_counts_cannot_be_written_still_succeeds(
    sync: SyncRedis, prefix: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The counts share the transaction that ends the job; their failure is logged, and the job
    still ends as a success: deleted, its slot released."""
    monkeypatch.setattr(jobs.stats, "PHASES_MODULE", f"{__name__}.")
    sync.set(Keys(prefix).job_stats(), "not a hash")  # every HINCRBY on it fails (WRONGTYPE)
    high, [job] = limited_jobs(sync, prefix, 1)
    worker = LongrunWorker([high], connection=sync, name=f"{prefix}worker")
    FINISHED.clear()
    assert worker.work(burst=True)
    assert [job.id] == FINISHED
    assert not [k for k in sync.scan_iter(match=f"*{job.id}*")], "a key of the finished job was left"
    assert RateLimitRegistry.from_job(job).get_allowed_job_ids() == []
    assert "could not count the run job of req" in caplog.text
    assert FailedJobRegistry(high.name, connection=sync).get_job_ids() == []


def test_a_withdrawn_job_leaves_nothing_and_its_slot_goes_to_the_next(sync: SyncRedis, prefix: str) -> None:
    """A cancelled request's waiting run is deleted from wherever it waits: the queue (holding
    its service's one slot), the line for that slot, the scheduled retries. Its slot goes to
    the next in line, which runs. RQ's cancel kept each such job for ever."""
    high, (first, second, third) = limited_jobs(sync, prefix, 3)
    registry = RateLimitRegistry.from_job(first)
    retry = high.enqueue_in(timedelta(minutes=5), finish_quietly, job_id=f"{prefix}req4-run", result_ttl=0)
    assert [first.id] == high.get_job_ids() and registry.get_rate_limited_job_ids() == [second.id, third.id]
    assert withdraw(sync, second.id) and withdraw(sync, retry.id)
    assert registry.get_rate_limited_job_ids() == [third.id]
    assert ScheduledJobRegistry(high.name, connection=sync).get_job_ids() == []
    assert withdraw(sync, first.id)
    assert registry.get_allowed_job_ids() == [third.id] == high.get_job_ids()  # promoted
    assert not withdraw(sync, first.id)  # once
    FINISHED.clear()
    assert LongrunWorker([high], connection=sync, name=f"{prefix}worker").work(burst=True)
    assert [third.id] == FINISHED
    assert not [k for k in sync.scan_iter(match=f"*{prefix}req*")], "a key of a withdrawn job was left"
    assert not sync.exists(CanceledJobRegistry(high.name, connection=sync).key)
    assert registry.get_allowed_job_ids() == [] and registry.get_rate_limited_job_ids() == []


class Interleaving(SyncRedis):
    """A client on which, right after a transaction's read (in WATCH mode), the next thing in
    ``meanwhile`` happens: what a worker does at that moment."""

    meanwhile: list[Callable[[], object]]

    def pipeline(self, transaction: bool = True, shard_hint: object = None) -> Pipeline:
        client = self

        class Interleaved(Pipeline):
            def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
                reply = super().immediate_execute_command(*args, **options)
                if args[0] == "HMGET" and client.meanwhile:
                    client.meanwhile.pop(0)()
                return reply

        return Interleaved(self.connection_pool, self.response_callbacks, transaction, shard_hint)


@pytest.mark.parametrize("ends", [False, True], ids=["starts", "starts and ends"])
def test_a_job_that_starts_while_it_is_withdrawn_is_left_to_its_worker(
    sync: SyncRedis, redis_url: str, prefix: str, ends: bool
) -> None:
    """The person cancels as a worker takes the job (and, as the bot answers, finishes it): the
    withdrawal sees the job move on, reads it again and leaves it to the worker, which ends it
    as usual. RQ's cancel raised here (the CI run's 500) or left the job's status behind."""
    high, [job] = limited_jobs(sync, prefix, 1)
    worker = LongrunWorker([high], connection=sync, name=f"{prefix}worker")
    FINISHED.clear()
    started: list[tuple[Job, Queue, Execution]] = []

    def take() -> None:
        taken, queue = worker.dequeue_job_and_maintain_ttl(timeout=1)
        started.append((taken, queue, worker.prepare_execution(taken)))
        if ends:
            worker.perform_job(*started[0])

    canceller = Interleaving.from_url(redis_url)
    canceller.meanwhile = [take]
    try:
        assert not withdraw(canceller, job.id)
    finally:
        canceller.close()
    assert len(started) == 1 and not canceller.meanwhile
    if not ends:
        assert Job.fetch(job.id, connection=sync).get_status() == JobStatus.STARTED
        worker.perform_job(*started[0])
    assert [job.id] == FINISHED
    assert not [k for k in sync.scan_iter(match=f"*{job.id}*")], "a key of the job was left"
    assert not sync.exists(CanceledJobRegistry(high.name, connection=sync).key)
    assert RateLimitRegistry.from_job(job).get_allowed_job_ids() == []
