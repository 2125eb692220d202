"""What the person on call needs to know, gathered from Redis (and RQ) in a few round trips.

One owner for the operational figures: the dashboard renders them, ``/metrics``
exports them, the wait-time alerts are computed here. RQ's registries and
workers are read through RQ's own classes (synchronous: run in a thread).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from redis import Redis as SyncRedis
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.rate_limit import RateLimitRegistry
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from server.domain.catalog import PRIORITIES, SERVICES, find_service
from server.domain.status import Status
from server.history.backlog import archive_status
from server.infra.connections import AsyncClient
from server.ops.figures import FailedJob, QueueFigures, Snapshot, WorkerFigures, age, percentile
from server.queue.dispatch import Dispatcher, job_keys, limit_key, phase_of, queue_names, request_of
from server.record import SHARDS, Keys, RecordStore, text
from server.requests.lifecycle import Lifecycle
from server.requests.service import enqueue_run

log = logging.getLogger("longrun.ops")

#: a queue whose oldest job has waited longer than this (seconds) raises an alert, like
#: Laravel Horizon's long-wait detection; overridable per queue
WAIT_THRESHOLDS: Mapping[str, float] = {"high": 10.0, "default": 30.0, "low": 120.0}
CHART_MINUTES = 60
#: a web process that has not reported its socket count for this long is gone
SOCKETS_STALE = 30.0


class Operations:
    """Reads (and the few operator actions: retry, delete) over Redis and RQ."""

    def __init__(
        self,
        store: RecordStore,
        dispatcher: Dispatcher,
        thresholds: Mapping[str, float] | None = None,
        *,
        archive: bool = False,
        lifecycle: Lifecycle | None = None,
    ):
        """:param archive: whether an archive (``DATABASE_URL``) is configured; without one
        its figures are not reported (nothing takes from the stream: a backlog means nothing).
        :param lifecycle: what changes records (an operator's retry revives one)."""
        self.store = store
        self.lifecycle = lifecycle if lifecycle is not None else Lifecycle(store)
        self.archive_enabled = archive
        self.dispatcher = dispatcher
        self.redis: AsyncClient = store.redis
        self.sync: SyncRedis = dispatcher.connection
        self.keys: Keys = store.keys
        self.thresholds = {**WAIT_THRESHOLDS, **(thresholds or {})}
        names = queue_names(self.keys.prefix)
        self.queues = {p: Queue(n, connection=self.sync) for p, n in zip(PRIORITIES, names, strict=True)}
        #: each service's line of run jobs waiting for a slot of its concurrency, by its queue
        self._held_lines = [
            (s.priority, RateLimitRegistry(limit_key(self.keys.prefix, s.slug), self.sync).rate_limited_key)
            for s in SERVICES
        ]

    # ------------------------------------------------------------------ snapshot

    async def snapshot(self) -> Snapshot:
        now = time.time()
        queues, (workers, failed), requests, totals = await asyncio.gather(
            self._queues(now), asyncio.to_thread(self._rq_reads), self._requests(now), self._jobs_total()
        )
        charts, memory, sockets, archive = await asyncio.gather(
            self._charts(now), self.redis.info("memory"), self._sockets(now), self.archive()
        )
        by_status, by_service, waiting, longest = requests
        alerts = [
            f"Queue {q.name}: the oldest job has waited {q.oldest_wait:.0f} s (threshold {q.threshold:.0f} s)"
            for q in queues
            if q.alert and q.oldest_wait is not None
        ]
        return Snapshot(
            at=now,
            queues=queues,
            workers=workers,
            requests_by_status=by_status,
            requests_by_service=by_service,
            waiting_otp=waiting,
            longest_otp_wait=longest,
            failed_jobs=failed,
            jobs_total=totals,
            sockets=sockets,
            redis_memory=int(memory.get("used_memory", 0)),
            redis_memory_human=str(memory.get("used_memory_human", "")),
            charts=charts,
            alerts=alerts,
            archive=archive,
            waiting_by_kind=waiting_by_kind(by_status),
        )

    async def _queues(self, now: float) -> list[QueueFigures]:
        stamp = datetime.fromtimestamp(now, tz=UTC)
        minute = int(now // 60)
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in self.queues.values():
                pipe.llen(queue.key)
                pipe.lindex(queue.key, 0)
                pipe.zcard(ScheduledJobRegistry(queue.name, connection=self.sync).key)  # type: ignore[no-untyped-call]
                pipe.zcard(StartedJobRegistry(queue.name, connection=self.sync).key)
                pipe.zcard(FailedJobRegistry(queue.name, connection=self.sync).key)
            pipe.hgetall(self.keys.minute_stats(minute))
            for priority in self.queues:
                pipe.lrange(self.keys.runtimes(priority), 0, -1)
            for _, key in self._held_lines:
                pipe.zcard(key)
                pipe.zrange(key, 0, 0, withscores=True)
            replies = await pipe.execute()
        this_minute = {text(k): float(v) for k, v in replies[5 * len(self.queues)].items()}
        samples = replies[5 * len(self.queues) + 1 : 6 * len(self.queues) + 1]
        # Run jobs beyond their service's concurrency wait in its line, not in the queue: they
        # wait all the same (the queue's depth and oldest wait count them; RQ's enqueued_at of
        # a job let through later is its promotion, so the line's own score says since when).
        held: dict[str, int] = dict.fromkeys(self.queues, 0)
        held_since: dict[str, float] = {}
        lines = replies[6 * len(self.queues) + 1 :]
        for n, (priority, _) in enumerate(self._held_lines):
            count, first = lines[2 * n], lines[2 * n + 1]
            held[priority] += int(count)
            if first:
                since = float(first[0][1])
                held_since[priority] = min(since, held_since.get(priority, since))
        oldest_ids = [text(replies[5 * i + 1]) for i in range(len(self.queues)) if replies[5 * i + 1]]
        enqueued = await self._enqueued_at(oldest_ids)
        out = []
        for i, priority in enumerate(self.queues):
            depth, first, scheduled, running, failed = replies[5 * i : 5 * i + 5]
            runtimes = [float(x) for x in samples[i]]
            oldest = age(enqueued.get(text(first)), stamp) if first else None
            if priority in held_since:
                line = max(0.0, now - held_since[priority])
                oldest = line if oldest is None else max(oldest, line)
            threshold = self.thresholds.get(priority, 60.0)
            out.append(
                QueueFigures(
                    name=priority,
                    depth=int(depth) + held[priority],
                    # rounded up, so a wait that raised the alert never reads as the threshold itself
                    oldest_wait=None if oldest is None else math.ceil(oldest * 10) / 10,
                    scheduled=int(scheduled),
                    running=int(running),
                    failed=int(failed),
                    done_this_minute=int(this_minute.get(f"ok:{priority}", 0)),
                    runtime_p50=percentile(runtimes, 0.5),
                    runtime_p95=percentile(runtimes, 0.95),
                    runtime_p99=percentile(runtimes, 0.99),
                    threshold=threshold,
                    alert=oldest is not None and oldest > threshold,
                )
            )
        return out

    async def _enqueued_at(self, job_ids: Sequence[str]) -> dict[str, datetime]:
        if not job_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(Job.redis_job_namespace_prefix + job_id, "enqueued_at")
            stamps = await pipe.execute()
        out = {}
        for job_id, raw in zip(job_ids, stamps, strict=True):
            if raw:
                try:
                    out[job_id] = datetime.fromisoformat(text(raw).replace("Z", "+00:00"))
                except ValueError:
                    continue
        return out

    def _rq_reads(self, limit: int = 20) -> tuple[list[WorkerFigures], list[FailedJob]]:
        now = datetime.now(UTC)
        mine = {q.name for q in self.queues.values()}
        workers = []
        for w in Worker.all(connection=self.sync):
            names = w.queue_names()
            if not mine.intersection(names):
                continue
            workers.append(
                WorkerFigures(
                    name=w.name,
                    state=str(w.get_state()),
                    queues=[n[len(self.keys.prefix) :] for n in names],
                    running=sorted(e.job_id for e in w.get_current_executions()),
                    heartbeat_age=age(w.last_heartbeat, now),
                    successful=int(w.successful_job_count or 0),
                    failed=int(w.failed_job_count or 0),
                )
            )
        failed: list[FailedJob] = []
        for priority, queue in self.queues.items():
            registry = FailedJobRegistry(queue.name, connection=self.sync)
            ids = registry.get_job_ids(0, limit - 1, desc=True)
            for job in Job.fetch_many(ids, connection=self.sync):
                if job is None:
                    continue
                failed.append(self._failed_job(job, priority))
        failed.sort(key=lambda j: j.ended_at or "", reverse=True)
        return workers, failed[:limit]

    def _failed_job(self, job: Job, queue: str) -> FailedJob:
        result = job.latest_result()
        exc = result.exc_string if result is not None else None
        last_line = (exc or "").strip().splitlines()[-1:] or ["(no error recorded)"]
        request = request_of(job, self.dispatcher.settings.key_prefix)
        return FailedJob(
            id=job.id,
            request=request[:12],
            phase=phase_of(job.id),
            queue=queue,
            error=last_line[0][:300],
            ended_at=job.ended_at.isoformat() if job.ended_at else None,
        )

    async def _requests(self, now: float) -> tuple[dict[str, int], dict[str, dict[str, int]], int, float | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in range(SHARDS):
                pipe.hgetall(self.keys.counts(shard))
                pipe.zcard(self.keys.otp_waits(shard))
                pipe.zrange(self.keys.otp_waits(shard), 0, 0, withscores=True)
            replies = await pipe.execute()
        by_status: dict[str, int] = {}
        by_service: dict[str, dict[str, int]] = {}
        waiting = 0
        since: float | None = None
        for shard in range(SHARDS):
            counts, n, first = replies[3 * shard : 3 * shard + 3]
            for key, value in counts.items():
                status, _, slug = text(key).partition("|")
                count = int(value)
                if count <= 0:
                    continue
                by_status[status] = by_status.get(status, 0) + count
                by_service.setdefault(slug, {})[status] = by_service.get(slug, {}).get(status, 0) + count
            waiting += int(n)
            if first:
                since = first[0][1] if since is None else min(since, first[0][1])
        longest = None if since is None else round(max(0.0, now - since), 1)
        return by_status, by_service, waiting, longest

    async def check_waits(self) -> list[str]:
        """Log (at warning) each queue that starts waiting too long, and when it recovers.

        Run periodically by the cron process itself (not as a job: with every worker gone,
        the very case to report, a job would never run), so alerts are logged whether or
        not anyone looks at the dashboard. Several crons may check at once: SADD / SREM
        answer 1 to exactly one of them, which is the one that logs. Returns the queues now
        over their threshold."""
        queues = await self._queues(time.time())
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                if q.alert:
                    pipe.sadd(self.keys.alerts(), q.name)
                else:
                    pipe.srem(self.keys.alerts(), q.name)
            changed = await pipe.execute()
        for q, flipped in zip(queues, changed, strict=True):
            if not flipped:
                continue
            if q.alert:
                log.warning(
                    "queue %s: the oldest job has waited %.0f s (threshold %.0f s)",
                    q.name,
                    q.oldest_wait or 0,
                    q.threshold,
                )
            else:
                # Also a warning: whoever watches warnings sees each alert end, not just begin.
                log.warning("queue %s: waits are back under the threshold (%.0f s)", q.name, q.threshold)
        return [q.name for q in queues if q.alert]

    async def _sockets(self, now: float) -> dict[str, int]:
        """Sockets per web process that reported lately; the counts of one silent for longer
        (killed, or its last report outlived its stop) are deleted, else every restart left
        one behind for ever."""
        raw = await self.redis.hgetall(self.keys.socket_counts())
        out, silent = {}, []
        for process, value in raw.items():
            count, _, at = text(value).partition(" ")
            if at and now - float(at) < SOCKETS_STALE:
                out[text(process)] = int(count)
            else:
                silent.append(process)
        if silent:
            await self.redis.hdel(self.keys.socket_counts(), *silent)
        return out

    async def report_sockets(self, process: str, count: int) -> None:
        """A web process says how many sockets it holds (every few seconds)."""
        await self.redis.hset(self.keys.socket_counts(), process, f"{count} {time.time():.0f}")

    async def forget_process(self, process: str) -> None:
        await self.redis.hdel(self.keys.socket_counts(), process)

    async def archive(self) -> dict[str, Any]:
        if not self.archive_enabled:
            return {"enabled": False}
        return {"enabled": True, **(await archive_status(self.redis, self.keys)).as_dict()}

    async def _jobs_total(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.job_stats())
        return {text(k): int(v) for k, v in raw.items()}

    async def _charts(self, now: float) -> dict[str, list[float]]:
        """Per minute over the last hour: jobs done, failures, mean wait (s)."""
        first = int(now // 60) - CHART_MINUTES + 1
        async with self.redis.pipeline(transaction=False) as pipe:
            for minute in range(first, first + CHART_MINUTES):
                pipe.hgetall(self.keys.minute_stats(minute))
            rows = await pipe.execute()
        done, failures, waits = [], [], []
        for row in rows:
            fields = {text(k): float(v) for k, v in row.items()}
            done.append(sum(v for k, v in fields.items() if k.startswith("ok:")))
            failures.append(sum(v for k, v in fields.items() if k.startswith("failed:")))
            n = sum(v for k, v in fields.items() if k.startswith("wait_n:"))
            total = sum(v for k, v in fields.items() if k.startswith("wait_sum:"))
            waits.append(round(total / n, 2) if n else 0.0)
        return {"throughput": done, "failures": failures, "wait": waits}

    # ------------------------------------------------------------------ operator actions

    def _failed_registries(self) -> list[FailedJobRegistry]:
        return [FailedJobRegistry(q.name, connection=self.sync) for q in self.queues.values()]

    def _take_failed(self, job_id: str) -> bool:
        """Take a failed job off its list and delete it, unread; True for the one caller that
        took it (two operators, or a retry beside a delete, race for the same job).

        RQ's ``remove(..., delete_job=True)`` and ``requeue`` fetch the job and read its
        executions one by one first: a job deleted meanwhile made them raise, and so did a job
        a dead worker left, whose execution expires a minute after the job is failed."""
        with self.sync.pipeline(transaction=False) as pipe:
            for registry in self._failed_registries():
                pipe.zrem(registry.key, job_id)
            if not any(pipe.execute()):
                return False
        self.sync.delete(*job_keys(Job(id=job_id, connection=self.sync)))
        return True

    async def retry(self, job_id: str) -> bool:
        """Run a failed job's request again: the request (failed by then) goes back to pending
        and starts over with a fresh first phase (a later phase, a code check or a resend,
        cannot simply run again: the code is gone); the failed job is dropped. A failed job that
        was to tell the bot to stop (a cancelled request's) is run again. False when the job is
        not on the list (retried or deleted meanwhile), its request has expired, or is not
        failed (another of its failed jobs was retried first; the job then stays listed)."""
        try:
            job = await asyncio.to_thread(Job.fetch, job_id, connection=self.sync)
        except NoSuchJobError:
            return False
        h = request_of(job, self.dispatcher.settings.key_prefix)
        record = await self.store.get(h) if h else None
        service = find_service(str((record or {}).get("service_slug", "")))
        if record is None or service is None:
            return False  # the request has expired: nothing left to run
        if phase_of(job_id) == "cancel":  # the bot was never told to stop: tell it now
            if not await asyncio.to_thread(self._take_failed, job_id):
                return False
            await asyncio.to_thread(self.dispatcher.cancel, h, tell_bot=True)
            log.info("operator retried telling the bot to stop %s", h[:12])
            return True
        if record.get("status") != Status.FAILED.value:
            return False  # running or finished otherwise: nothing to start over (it stays listed)
        if not await asyncio.to_thread(self._take_failed, job_id):
            return False
        if (await self.lifecycle.revive(h)).outcome != "ok":
            return False
        await enqueue_run(self.lifecycle, self.dispatcher, h, service)
        log.info("operator retried the %s job of %s", phase_of(job_id), h[:12])
        return True

    async def delete(self, job_id: str) -> bool:
        """Drop a failed job (its request stays failed); False when it is not on the list."""
        return await asyncio.to_thread(self._take_failed, job_id)

    async def retry_all(self) -> int:
        ids = await asyncio.to_thread(lambda: [i for r in self._failed_registries() for i in r.get_job_ids()])
        return sum([await self.retry(i) for i in ids])

    async def delete_all(self) -> int:
        ids = await asyncio.to_thread(lambda: [i for r in self._failed_registries() for i in r.get_job_ids()])
        return sum([await self.delete(i) for i in ids])


def waiting_by_kind(by_status: dict[str, int]) -> dict[str, int]:
    """People waiting per kind of prompt, from the counts (the update script counts those
    waiting for an answer as ``waiting_input:{kind}``; the code is ``waiting_otp``)."""
    kinds = {"code": by_status.get("waiting_otp", 0)}
    for status, n in by_status.items():
        waiting, _, kind = status.partition(":")
        if waiting == "waiting_input" and kind:
            kinds[kind] = kinds.get(kind, 0) + n
    return {k: n for k, n in kinds.items() if n > 0}
