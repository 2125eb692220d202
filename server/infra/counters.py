"""The Prometheus counters this process updates as things happen (see ``server.web.metrics``).

Kept apart so that low-level modules (the hub) can count without importing the app.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter("longrun_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
HTTP_SECONDS = Histogram(
    "longrun_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=HTTP_BUCKETS,
)
RATE_LIMITED = Counter("longrun_rate_limited_total", "Calls refused by a rate limit", ["route"])
SOCKETS_OPEN = Gauge("longrun_websockets_open", "WebSockets open", multiprocess_mode="livesum")
RELAYED = Counter("longrun_ws_messages_relayed_total", "Record updates relayed to sockets")
RECONNECTS = Counter("longrun_pubsub_reconnects_total", "Times the hub's pub/sub connection was re-established")
RESYNCED = Counter(
    "longrun_pubsub_resynced_total", "Watched records re-sent after a pub/sub reconnect because they changed meanwhile"
)
RESUMES = Counter(
    "longrun_stream_resumes_total",
    "Streams (re)started with a seq: every missed change replayed from the log, or a snapshot",
    ["via", "outcome"],
)
DELIVERY_LAG = Histogram(
    "longrun_delivery_lag_seconds",
    "From a record's publication (its updated_at, Redis' clock) to its write on a socket or stream",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
GC_PAUSE = Histogram(
    "longrun_gc_pause_seconds",
    "Garbage-collector pauses of the web process, by generation collected",
    ["generation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
