"""``GET /metrics``: Prometheus text, with the official client.

What this process does is counted as it happens (HTTP requests and their
latency by route, sockets, relayed messages, pub/sub reconnects and resyncs, rate-limit
refusals); with several web processes the client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``) adds them up. What lives in Redis (queues,
jobs by outcome, requests in flight, archive lag) is read at scrape time
through :class:`server.ops.operations.Operations`.

The edge (``server.web.edge``) calls :func:`observe` once per request, which also writes
the one log line per request: method, route template (never the raw path, which holds a
request hash), status, time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from bisect import bisect_left
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector
from redis.exceptions import RedisError

from server.infra.counters import HTTP_BUCKETS, HTTP_REQUESTS, HTTP_SECONDS, RATE_LIMITED
from server.infra.deferred import DeferredCall
from server.infra.logs import ACCESS
from server.ops.figures import Snapshot as Figures
from server.web.typedefs import OPS

log = logging.getLogger("longrun.metrics")

#: seconds a scrape waits for the figures held in Redis
SNAPSHOT_TIMEOUT = 2.0

#: routes not worth a latency series or an access line of their own
_QUIET = frozenset({"/metrics", "/healthz", "/readyz"})
#: routes that answer with a stream (a WebSocket, an event stream)
_STREAMS = ("/ws/", "/sse/")


#: any other method (a client may send any token) is counted as "OTHER": series stay bounded
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _Tally:
    """One kind of answer (method, route, status), counted locally between flushes: a request
    adds to plain ints and floats here, and :meth:`_Batch.flush` hands the totals to
    prometheus_client (a counter's ``inc`` and a histogram's ``observe`` each take a lock, and
    in multiprocess mode write to a memory-mapped file: more than the status endpoint's own
    work)."""

    __slots__ = ("access_line", "buckets", "count", "counted", "route", "timed", "total")

    def __init__(self, method: str, route: str, status: int):
        self.route = route
        self.counted = HTTP_REQUESTS.labels(method, route, str(status))
        quiet = route in _QUIET
        # A socket's or an event stream's "latency" is how long a person watched: not timed
        streaming = route.startswith(_STREAMS)
        self.timed = None if quiet or streaming else HTTP_SECONDS.labels(method, route)
        self.count = 0
        self.buckets = [0] * len(_BOUNDS)
        self.total = 0.0
        # the health checks are logged only when they fail (why a load balancer dropped us)
        self.access_line = None if quiet and status < 500 else ACCESS.template(method, route, status)


#: the histogram's upper bounds, +Inf last (``bisect_left`` finds the bucket ``observe`` would)
_BOUNDS = (*HTTP_BUCKETS, float("inf"))


@functools.lru_cache(maxsize=2048)
def _tally(method: str, route: str, status: int) -> _Tally:
    return _Tally(method, route, status)


class _Batch:
    """The tallies touched since the last flush, and the flush's timer."""

    FLUSH_AFTER = 0.25

    def __init__(self) -> None:
        self.pending: list[_Tally] = []
        self._deferred = DeferredCall(self.flush, self.FLUSH_AFTER)

    def add(self, tally: _Tally) -> None:
        if not tally.count:
            self.pending.append(tally)
        self._deferred.schedule()

    def flush(self) -> None:
        """Hand the local tallies to prometheus_client."""
        self._deferred.done()
        pending, self.pending = self.pending, []
        for tally in pending:
            tally.counted.inc(tally.count)
            tally.count = 0
            timed = tally.timed
            if timed is None:
                continue
            # Histogram.observe takes one value at a time; n observations of one bucket are
            # added to it at once, and their total to the sum (the client's own fields, as
            # observe() writes them).
            timed._sum.inc(tally.total)
            buckets = tally.buckets
            for i, n in enumerate(buckets):
                if n:
                    timed._buckets[i].inc(n)
                    buckets[i] = 0
            tally.total = 0.0


BATCH = _Batch()


def observe(method: str, route: str, status: int, elapsed: float) -> None:
    """Count one answered request, time it, and write its access line (the edge calls this,
    with the template of the route it wrapped). The figures reach prometheus_client within
    ``_Batch.FLUSH_AFTER`` seconds, and before every scrape of this process."""
    tally = _tally(method if method in _METHODS else "OTHER", route, status)
    BATCH.add(tally)
    tally.count += 1
    if tally.timed is not None:
        tally.buckets[bisect_left(_BOUNDS, elapsed)] += 1
        tally.total += elapsed
    if tally.access_line is not None:
        ACCESS.write_line(tally.access_line, elapsed)
    if status == 429:
        RATE_LIMITED.labels(tally.route).inc()


def families(figures: Figures, archive: Mapping[str, Any]) -> list[GaugeMetricFamily | CounterMetricFamily]:
    """The Redis-held figures as Prometheus metric families."""
    out: list[GaugeMetricFamily | CounterMetricFamily] = []

    def gauge(name: str, doc: str, labels: list[str], rows: list[tuple[list[str], float]]) -> None:
        family = GaugeMetricFamily(name, doc, labels=labels)
        for values, value in rows:
            family.add_metric(values, value)
        out.append(family)

    gauge("longrun_queue_depth", "Jobs waiting in a queue", ["queue"], [([q.name], q.depth) for q in figures.queues])
    gauge(
        "longrun_queue_oldest_wait_seconds",
        "How long the oldest waiting job has waited",
        ["queue"],
        [([q.name], q.oldest_wait or 0.0) for q in figures.queues],
    )
    gauge("longrun_queue_running", "Jobs running", ["queue"], [([q.name], q.running) for q in figures.queues])
    gauge(
        "longrun_queue_scheduled",
        "Jobs waiting for a retry",
        ["queue"],
        [([q.name], q.scheduled) for q in figures.queues],
    )
    gauge(
        "longrun_queue_failed", "Jobs in the failed registry", ["queue"], [([q.name], q.failed) for q in figures.queues]
    )
    jobs = CounterMetricFamily(
        "longrun_jobs", "Job runs by queue, phase and outcome", labels=["queue", "phase", "outcome"]
    )
    for key, value in sorted(figures.jobs_total.items()):
        queue, phase, outcome = [*key.split("|"), "?", "?"][:3]
        jobs.add_metric([queue, phase, outcome], value)
    out.append(jobs)
    gauge(
        "longrun_requests_unfinished",
        "Requests not yet finished, by status and service",
        ["status", "service"],
        [([status, slug], n) for slug, by in figures.requests_by_service.items() for status, n in by.items()],
    )
    waiting = "Requests waiting for the person (the code or another answer)"
    gauge("longrun_otp_waiting", waiting, [], [([], figures.waiting_otp)])
    gauge("longrun_otp_longest_wait_seconds", "Longest wait for a code", [], [([], figures.longest_otp_wait or 0.0)])
    # every state, 0 when no worker is in it (an alert on no worker alive needs a sample)
    states: dict[str, float] = dict.fromkeys(("busy", "idle", "started", "suspended"), 0)
    for w in figures.workers:
        states[w.state] = states.get(w.state, 0) + 1
    gauge("longrun_workers", "RQ workers by state", ["state"], [([s], n) for s, n in states.items()])
    gauge("longrun_redis_memory_bytes", "Redis used_memory", [], [([], figures.redis_memory)])
    for name, doc in (
        ("backlog", "Finished records not yet archived"),
        ("oldest_age", "Seconds the oldest has waited"),
    ):
        figure = archive.get(name)
        gauge(f"longrun_archive_{name}", doc, [], [([], float(figure))] if figure is not None else [])
    return out


class Snapshot(Collector):
    """Figures read from Redis for this scrape."""

    def __init__(self, families: list[GaugeMetricFamily | CounterMetricFamily]):
        self.families = families

    def collect(self):  # type: ignore[no-untyped-def]
        yield from self.families


def render(extra: list[GaugeMetricFamily | CounterMetricFamily]) -> bytes:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        process = generate_latest(registry)
    else:
        process = generate_latest(REGISTRY)
    snapshot = CollectorRegistry()
    snapshot.register(Snapshot(extra))
    return process + generate_latest(snapshot)


async def metrics_handler(request: web.Request) -> web.Response:
    """This process's figures always; Redis's when it answers within ``SNAPSHOT_TIMEOUT``
    (``longrun_redis_up`` says which): a Redis outage is when a process's own 503s and
    reconnects matter most."""
    app = request.app
    BATCH.flush()
    up = GaugeMetricFamily("longrun_redis_up", "Whether Redis answered this scrape's figures in time")
    extra: list[GaugeMetricFamily | CounterMetricFamily] = [up]
    try:
        async with asyncio.timeout(SNAPSHOT_TIMEOUT):
            figures = await app[OPS].snapshot()
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("metrics without Redis's figures: %s", exc.__class__.__name__)
        up.add_metric([], 0)
    else:
        up.add_metric([], 1)
        extra += families(figures, figures.archive)
    return web.Response(body=render(extra), headers={"Content-Type": CONTENT_TYPE_LATEST})
