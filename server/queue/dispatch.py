"""RQ queues and job ids: how a request's phases reach the workers.

A job carries nothing but its id, ``{hash}-{phase}``; everything else (data,
the OTP) is read by the job itself from Redis. (With the hash as an argument
too, RQ's pickled call passes 64 bytes and Redis stores the job as a hash
table: 1.6 KB instead of 0.7 KB for every waiting request.) Ids are
deterministic, so a phase can be found (and cancelled) by hash and is never
enqueued twice under two names. RQ is synchronous: the web server calls this
in a thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.client import Pipeline
from rq import Callback, Queue, Retry
from rq.job import Job, JobStatus
from rq.rate_limit import RateLimit, RateLimitRegistry
from rq.registry import DeferredJobRegistry, ScheduledJobRegistry
from rq.results import Result
from rq.utils import as_text

from server.domain.catalog import PRIORITIES, Priority, Service
from server.settings import Settings

#: a phase's job is deleted as soon as it succeeds: its outcome is in the record, and keeping
#: the job (RQ: status and a full save into its hash, a result stream entry, the finished
#: registry) cost every request a transaction's worth of work and ~0.7 KB for 5 minutes
RESULT_TTL = 0
FAILURE_TTL = 7 * 24 * 3600
FAILURE_CALLBACK = Callback("jobs.tasks.on_job_failure", timeout=30)
_CANCELLABLE = {
    JobStatus.QUEUED,
    JobStatus.SCHEDULED,
    JobStatus.DEFERRED,
    JobStatus.RATE_LIMITED,
}


def queue_names(prefix: str = "") -> list[str]:
    """Queue names in the order workers take from them: high first."""
    return [f"{prefix}{p}" for p in PRIORITIES]


def phase_of(job_id: str) -> str:
    """run, otp, input, resend or cancel, from a job id ``{prefix}{hash}-{phase}{n}``."""
    return job_id.rsplit("-", 1)[-1].rstrip("0123456789") or "?"


def job_id(prefix: str, request_hash: str, phase: str) -> str:
    """``{prefix}{hash}-{phase}``: the prefix keeps each test's (or tenant's) jobs apart."""
    return f"{prefix}{request_hash}-{phase}"


def limit_key(prefix: str, slug: str) -> str:
    """The key of a service's concurrency limit (RQ's rate limit: its run jobs queued or running
    at once); the jobs beyond it wait in that limit's own line, not in the queue."""
    return f"{prefix}service:{slug}"


def job_keys(job: Job) -> list[str]:
    """Every key RQ keeps of a job that has no result to keep: its hash, its dependency sets,
    its executions and the results of earlier attempts (an operator's retry runs the same job
    again). Deleted together once the job is done with, or withdrawn before it ran."""
    return [
        job.key,
        job.dependents_key,
        job.dependencies_key,
        job.execution_registry.key,
        Result.get_key(job.id),  # type: ignore[no-untyped-call]
    ]


def withdraw(connection: Redis, job_id: str) -> bool:
    """Delete a job that has not started, from wherever it waits, in one transaction; False
    when it has started (or ended, or never was). A slot of its service's concurrency that it
    held goes to the next job waiting for one.

    RQ's ``Job.cancel`` keeps a cancelled job (its hash, which never expires, and an entry in
    the queue's cancelled registry, which nothing cleans) and reads the job step by step: a job
    that starts and ends meanwhile (a person cancelling at the moment the bot answers) made it
    raise, or left a hash of the job's status alone behind. Here the read is WATCHed: a job
    that moves on meanwhile is read again.
    """
    job = Job(id=job_id, connection=connection)
    read: dict[str, str] = {}  # the job's fields, as last read (a retried read replaces them)
    limit: list[RateLimitRegistry] = []  # the job's concurrency limit, if it has one

    def delete_if_waiting(pipe: Pipeline) -> None:
        fields = ("status", "origin", "rate_limit_key")
        read.clear()
        limit.clear()
        read.update((f, as_text(v)) for f, v in zip(fields, pipe.hmget(job.key, fields), strict=True) if v)
        if read.get("status") not in _CANCELLABLE or "origin" not in read:
            read.clear()
            return
        if "rate_limit_key" in read:
            limit.append(RateLimitRegistry(read["rate_limit_key"], connection))
        pipe.multi()
        pipe.lrem(Queue(read["origin"], connection=connection).key, 0, job_id)
        for waiting in (ScheduledJobRegistry, DeferredJobRegistry):
            pipe.zrem(waiting(read["origin"], connection=connection).key, job_id)
        for registry in limit:
            registry.cancel(job_id, pipeline=pipe)  # out of the line for a slot
        pipe.delete(*job_keys(job))

    connection.transaction(delete_if_waiting, job.key)
    for registry in limit:  # a slot it held goes to the next in line
        registry.release_stale_and_enqueue(job_id)
    return bool(read)


def request_of(job: Job, prefix: str = "") -> str:
    """The request a job works for: the hash its id names (jobs enqueued before ids carried
    it alone had it as their one argument)."""
    if job.args:
        return str(job.args[0])
    name = job.id[len(prefix) :] if prefix and job.id.startswith(prefix) else job.id
    return name.rsplit("-", 1)[0] if "-" in name else ""


class LeanJob(Job):
    """RQ's job, first saved without the empty fields RQ writes for a job that has not run.

    RQ stores ``''`` for every unset field (``started_at``, ``ended_at``, ``last_heartbeat``,
    ``worker_name``, ``group_id``, the success and stopped callbacks): ~120 B of every waiting
    job's hash. RQ reads a missing field as unset. Only before the job first starts: a later
    save may have to overwrite a field that held a value, so from then on RQ's ``''`` stays.
    """

    def to_dict(self, include_meta: bool = True, include_result: bool = True) -> dict[str, Any]:
        obj: dict[str, Any] = super().to_dict(include_meta=include_meta, include_result=include_result)
        if self.started_at is None:
            return {k: v for k, v in obj.items() if v != ""}
        return obj


class Dispatcher:
    """Enqueues the phases of a request on the right queue with the right RQ options."""

    def __init__(self, connection: Redis, settings: Settings):
        self.connection = connection
        self.settings = settings
        self.queues = {
            p: Queue(name, connection=connection, job_class=LeanJob)
            for p, name in zip(PRIORITIES, queue_names(settings.key_prefix), strict=True)
        }

    @property
    def retry_intervals(self) -> Sequence[int]:
        return self.settings.retry_intervals

    def _retry(self) -> Retry | None:
        intervals = list(self.retry_intervals)
        return Retry(max=len(intervals), interval=intervals) if intervals else None

    def _enqueue(self, priority: Priority, func: str, request_hash: str, phase: str, **options: Any) -> Job:
        return self.queues[priority].enqueue(
            func,
            job_id=job_id(self.settings.key_prefix, request_hash, phase),
            # The call string would show only the hash, but keep descriptions free of any
            # argument on principle: they end up in logs and dashboards.
            description=f"{phase} {request_hash[:12]}",
            result_ttl=RESULT_TTL,
            failure_ttl=FAILURE_TTL,
            on_failure=FAILURE_CALLBACK,
            **options,
        )

    def run(self, request_hash: str, service: Service) -> Job:
        """The first phase: call the bot's /run. Safe to retry (the bot dedups by idempotency key)."""
        return self._enqueue(
            service.priority,
            "jobs.tasks.run_request",
            request_hash,
            "run",
            job_timeout=service.limits(self.settings.time_scale).job_timeout,
            retry=self._retry(),
            rate_limit=RateLimit(
                key=limit_key(self.settings.key_prefix, service.slug), concurrency=service.concurrency
            ),
        )

    def check_otp(self, request_hash: str, service: Service, seq: int) -> Job:
        """Relay a submitted code. Not retried: the code was read once and is gone."""
        limits = service.limits(self.settings.time_scale)
        return self._enqueue("high", "jobs.tasks.check_otp", request_hash, f"otp{seq}", job_timeout=limits.job_timeout)

    def check_input(self, request_hash: str, service: Service, seq: int) -> Job:
        """Relay the answer to a prompt. Not retried, as the code: read once and gone."""
        limits = service.limits(self.settings.time_scale)
        return self._enqueue(
            "high", "jobs.tasks.check_input", request_hash, f"input{seq}", job_timeout=limits.job_timeout
        )

    def resend_otp(self, request_hash: str, service: Service, n: int) -> Job:
        return self._enqueue(
            "high", "jobs.tasks.resend_otp", request_hash, f"resend{n}", job_timeout=60, retry=self._retry()
        )

    def cancel(self, request_hash: str, *, tell_bot: bool) -> Job | None:
        """Withdraw a waiting run and, if the bot had started, tell it to stop."""
        withdraw(self.connection, job_id(self.settings.key_prefix, request_hash, "run"))
        if not tell_bot:
            return None
        return self._enqueue("high", "jobs.tasks.cancel_bot", request_hash, "cancel", job_timeout=60)
